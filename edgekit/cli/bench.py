"""``edgekit bench``: measure a bundle on this machine: latency, throughput, preprocessing, memory, CPU (with
--tune: time the runtime settings instead and record the best in the bundle)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from edgekit.cli import _args
from edgekit.cli._api import Call
from edgekit.errors import UsageError

EPILOG = """examples:
  edgekit bench model.edgekit                       # 3 s of batch-1 latency, then the other phases
  edgekit bench model.edgekit --runs 1000 --json > orin-nano.json
  edgekit bench model.edgekit --val val/ --json     # also top-1 on this device
  edgekit report model.onnx ... --merge orin-nano.json   # fold a device run into a report
  edgekit bench model.edgekit --runs 100 --print-api   # prints: edgekit.bench('model.edgekit', runs=100)
  edgekit bench model.edgekit --tune                # on the device: time the runtime settings, record the best
  edgekit bench model.edgekit --tune -o tuned.edgekit   # ... in a copy (prints: edgekit.tune(..., output=...))

Runs with numpy, OpenCV and the bundle's runtime only. The JSON schema is in docs/report.md.
"""


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"'{text}' must be positive")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser(
        "bench", help="measure a bundle on this machine", description=__doc__.split(":", 1)[1].strip(),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("bundle", help="bundle folder or packed file")
    # no argparse defaults: a flag not given leaves BenchOptions' own default (tests check the help matches it)
    p.add_argument("--seconds", type=_positive_float, help="batch-1 latency for this long (default 3)")
    p.add_argument("--runs", type=_args.positive_int, help="batch-1 latency over exactly this many runs instead")
    p.add_argument("--warmup", type=int, help="warm-up runs before timing (default 20)")
    p.add_argument("--batch-sizes", type=_args.int_list, metavar="N,N,...",
                   help="throughput batch sizes (default 1,2,4,8,16,32; a static-shape bundle: its own)")  # fmt: skip
    p.add_argument("--image", type=Path, help="encoded image for the end-to-end cost (default: a synthetic VGA JPEG)")
    p.add_argument("--val", type=Path, metavar="FOLDER", help="also measure accuracy on this class-folder tree")
    p.add_argument("--device", help="run on another device of the backend (OpenVINO: CPU, GPU, NPU)")
    t = p.add_argument_group("tuning (instead of measuring)")
    t.add_argument("--tune", action="store_true",
                   help="time the runtime settings (threads, streams, the daemon's batch) on this machine, the "
                   "bundle's target, and record the best in the bundle (docs/bundle.md: runtime_settings)")  # fmt: skip
    t.add_argument("-o", "--output", type=Path, metavar="BUNDLE",
                   help="with --tune: write the tuned bundle here instead of rewriting BUNDLE in place")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the results as JSON (schema: docs/report.md)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    p.set_defaults(run=run, api=api_call)


OUTPUT_FLAGS = ("json", "quiet")  # how the result is shown: not part of the API call


BENCH_FIELDS = ("seconds", "runs", "warmup", "batch_sizes", "image", "val", "device")


def api_call(args: argparse.Namespace) -> Call:
    """``edgekit.bench(BUNDLE, <the BenchOptions fields given>)``, or with --tune ``edgekit.tune(BUNDLE, output=...)``."""
    given = {key: getattr(args, key) for key in BENCH_FIELDS}
    if args.tune:
        extra = [key for key, value in given.items() if value is not None]
        if extra:
            flag = "--" + extra[0].replace("_", "-")
            raise UsageError(f"--tune times the runtime settings only and takes no {flag}; drop it, or run "
                             "edgekit bench again without --tune to measure the tuned bundle")  # fmt: skip
        return Call("tune", (args.bundle,), {"output": args.output} if args.output is not None else {})
    if args.output is not None:
        raise UsageError("-o/--output is where --tune writes the tuned bundle; add --tune, or drop -o")
    return Call("bench", (args.bundle,), {k: v for k, v in given.items() if v is not None})


def _tune_lines(r: dict[str, Any]) -> list[str]:
    from edgekit.inspection import settings_lines

    return [f"bundle:       {r['bundle']} (hash {r['hash'][:16]}…, was {r['previous_hash'][:16]}…)",
            *settings_lines(r["runtime_settings"])]  # fmt: skip


def _lines(r: dict[str, Any]) -> list[str]:
    lat, cpu, mem = r["latency"], r["cpu"], r["memory"]
    lines = [
        f"bundle:       {r['bundle']['path']} ({r['bundle']['model']}, {r['bundle']['target']}, "
        f"{r['bundle']['precision']}; hash {r['bundle']['hash'][:16]}…)",
        f"machine:      {r['machine']['summary']}",
        f"runtime:      {', '.join(f'{k} {v}' for k, v in r['software']['runtime'].items())}",
        f"latency:      batch 1: p50 {lat['p50_ms']:.3f} ms, p90 {lat['p90_ms']:.3f}, p99 {lat['p99_ms']:.3f}, "
        f"mean {lat['mean_ms']:.3f} ({lat['runs']} runs)",
    ]
    lines += [
        f"throughput:   batch {t['batch']:>3}: {t['images_per_s']:>10.1f} images/s ({t['batch_p50_ms']:.3f} ms a batch)"
        for t in r["throughput"]
    ]
    lines += [
        f"decode:       p50 {r['decode']['p50_ms']:.3f} ms ({r['settings']['image']})",
        f"preprocess:   p50 {r['preprocess']['p50_ms']:.3f} ms",
        f"end to end:   p50 {r['end_to_end']['p50_ms']:.3f} ms ({r['end_to_end']['what']})",
        f"memory:       peak RSS {mem['peak_rss_mb']} MB (after loading {mem['rss_after_load_mb']} MB)",
        f"CPU:          {cpu['percent_of_one_core']:.0f}% of one core ({cpu['percent_of_all_cores']:.0f}% of "
        f"{cpu['usable_cores']} cores) during batch-1 latency",
    ]
    if r.get("accuracy"):
        acc = r["accuracy"]
        lines.append(
            f"accuracy:     top-1 {acc['top1']:.2f}%, top-5 {acc['top5']:.2f}% on {acc['dataset']['images']} images"
        )
    return lines


def run(args: argparse.Namespace) -> int:
    log = None if args.quiet else (lambda msg: print(f"edgekit: bench: {msg}", file=sys.stderr, flush=True))
    call = api_call(args)
    result = call.invoke(log=log)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print("\n".join(_tune_lines(result) if call.function == "tune" else _lines(result)))
    return 0
