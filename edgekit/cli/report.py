"""``edgekit report``: compile a model for every target and precision, measure each, and report accuracy vs latency."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgekit.cli import _args, flags
from edgekit.cli._api import Call
from edgekit.report import defaults

EPILOG = """examples:
  edgekit report model.onnx --calib calib/ --val val/ --targets cpu,intel-cpu,jetson-orin-nano \\
      --precisions fp32,fp16,int8 -o report/
  edgekit bench report/bundles/jetson-orin-nano-int8.edgekit --json > orin-nano.json   # on the device
  edgekit report model.onnx --calib calib/ --val val/ --targets ... -o report/ --merge orin-nano.json

Writes report.json, report.csv, report.md and report.html (self-contained) into -o, plus one bundle and
one record a combination. A failing combination is reported and the rest go on; --resume continues an
interrupted run. Targets that are not present here get a roofline latency estimate, labelled as such.
The data, budget, model-spec and preprocessing flags are compile's own, with the same syntax.
Python: edgekit.report(edgekit.ReportRequest(model=..., output=..., val=..., ...)); see --print-api.
"""

OUTPUT_FLAGS = ("json",)  # how the result is shown: not part of the API call (-q is the API's progress=False)


def _names(text: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return values


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None


def add_parser(sub) -> None:
    p = sub.add_parser(
        "report", help="accuracy vs latency over targets and precisions", description=__doc__.split(":", 1)[1].strip(),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    flags.add_model(p)
    p.add_argument("-o", "--output", required=True, type=Path, help="report folder to write (created if missing)")
    p.add_argument("-t", "--targets", type=_names, default=defaults.TARGETS, metavar="T,T,...",
                   help=f"target names, aliases or .toml paths (default {','.join(defaults.TARGETS)})")  # fmt: skip
    p.add_argument("-p", "--precisions", type=_args.lower_names, default=defaults.PRECISIONS, metavar="P,P,...",
                   help=f"precisions to compile (default {','.join(defaults.PRECISIONS)})")  # fmt: skip
    p.add_argument("--calib-methods", type=_args.lower_names, default=defaults.CALIB_METHODS, metavar="M,M,...",
                   help="int8 calibration methods to compare: default (each target's own), minmax, entropy, "
                   "percentile, mse, mean-minmax (default: default)")  # fmt: skip
    groups = flags.add_shared(
        p,
        val_help="validation images, one sub-folder a class",
        val_required=True,
        budget_title="budget (the recommendations at the top use --max-accuracy-drop, default 1 point; given "
        "explicitly, each target also gets an int8 '-budget' combination compiled under it, as 'edgekit compile' does)",
    )
    groups["budget"].add_argument("--max-latency-ms", type=_number, metavar="MS", help="batch-1 p50 latency allowed")
    groups["budget"].add_argument("--include-estimates", action="store_true",
                                  help="let estimated latencies onto the Pareto front and into the recommendations "
                                  "(off: measured and merged figures only)")  # fmt: skip
    r = p.add_argument_group("runs")
    r.add_argument("--resume", action="store_true", help="keep the finished combinations of an earlier run in -o")
    r.add_argument("--merge", type=Path, action="append", default=[], metavar="BENCH.json",
                   help="fold in an 'edgekit bench --json' result from a device (repeatable; implies --resume)")  # fmt: skip
    r.add_argument("--bench-seconds", type=_number, default=defaults.BENCH_SECONDS, metavar="S",
                   help="batch-1 latency measuring time per combination (default 1)")  # fmt: skip
    r.add_argument("--no-bench", action="store_true", help="skip edgekit bench; use the compile-time latency")
    p.add_argument("--json", action="store_true", help="print report.json instead of the table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run, api=api_call)


def request_from(args: argparse.Namespace):
    """The ``ReportRequest`` that ``edgekit report`` with these arguments makes (nothing is run)."""
    from edgekit.report.report import ReportRequest

    return ReportRequest(
        model=args.model, output=args.output, targets=args.targets, precisions=args.precisions,
        calib_methods=args.calib_methods, max_latency_ms=args.max_latency_ms, resume=args.resume,
        merge=tuple(args.merge), bench_seconds=args.bench_seconds, bench=not args.no_bench,
        include_estimates=args.include_estimates,
        **flags.shared_fields(args),
    )  # fmt: skip


def api_call(args: argparse.Namespace) -> Call:
    """``edgekit.report(ReportRequest(...))`` (``progress=False`` with -q)."""
    return Call("report", (request_from(args),), {"progress": False} if args.quiet else {})


def run(args: argparse.Namespace) -> int:
    from edgekit.report.writers import text_table

    doc = api_call(args).invoke()
    if args.json:
        import json

        print(json.dumps(doc, indent=2))
        return 0
    print("\n".join(f"recommended: {r['text']}" for r in doc["recommendations"]))
    print()
    print(text_table(doc))
    print("\ntags: M measured here, D measured on the device (merged), S simulated, E estimated (with its band)")
    print(f"wrote {args.output}/report.html, report.json, report.csv, report.md")
    failed = [r for r in doc["results"] if r["status"] == "failed"]
    if failed:
        print(f"edgekit: warning: {len(failed)} combination(s) failed; see the table", file=sys.stderr)
    return 0
