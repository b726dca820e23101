"""``edgekit report``: compile a model for every target and precision, measure each, and report accuracy vs latency."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edgekit import request as rq
from edgekit.cli import _args

EPILOG = """examples:
  edgekit report model.onnx --calib calib/ --val val/ --targets cpu,intel-cpu,jetson-orin-nano \\
      --precisions fp32,fp16,int8 -o report/
  edgekit bench report/bundles/jetson-orin-nano-int8.edgekit --json > orin-nano.json   # on the device
  edgekit report model.onnx --calib calib/ --val val/ --targets ... -o report/ --merge orin-nano.json

Writes report.json, report.csv, report.md and report.html (self-contained) into -o, plus one bundle and
one record a combination. A failing combination is reported and the rest go on; --resume continues an
interrupted run. Targets that are not present here get a roofline latency estimate, labelled as such.
"""


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
    p.add_argument("model", help="ONNX file, TorchScript file (.ts/.pt), or torch.export program (.pt2)")
    p.add_argument("-o", "--output", required=True, type=Path, help="report folder to write (created if missing)")
    p.add_argument("--targets", type=_names, default=("cpu", "intel-cpu"), metavar="T,T,...",
                   help="target names, aliases or .toml paths (default cpu,intel-cpu)")  # fmt: skip
    p.add_argument("--precisions", type=_args.lower_names, default=("fp32", "fp16", "int8"), metavar="P,P,...",
                   help="precisions to compile (default fp32,fp16,int8)")  # fmt: skip
    p.add_argument("--calib-methods", type=_args.lower_names, default=("default",), metavar="M,M,...",
                   help="int8 calibration methods to compare: default (each target's own), minmax, entropy, "
                   "percentile, mse, mean-minmax (default: default)")  # fmt: skip
    g = p.add_argument_group("data")
    g.add_argument(
        "--val", type=Path, required=True, metavar="FOLDER", help="validation images, one sub-folder a class"
    )
    g.add_argument("--calib", type=Path, metavar="FOLDER", help="calibration images (needed for int8)")
    g.add_argument("--calib-size", type=_args.positive_int, default=rq.CALIB_SIZE, metavar="N",
                   help=f"calibration sample (default {rq.CALIB_SIZE})")  # fmt: skip
    m = p.add_argument_group("model spec")
    m.add_argument("--spec", type=Path, metavar="TOML", help="model-spec file: name, labels, [input], [preprocess] "
                   "(default: <model stem>.toml, else model.toml, beside the model, if there is one)")  # fmt: skip
    m.add_argument("--name", help="model name")
    m.add_argument(
        "--labels", type=Path, metavar="FILE", help="labels file (default: the spec's, else --val's folders)"
    )
    m.add_argument("--input-shape", type=_args.int_list, metavar="N,C,H,W", help="input shape, e.g. 1,3,224,224")
    b = p.add_argument_group(
        "budget (the recommendations at the top; given explicitly, each target also gets an int8 '-budget' "
        "combination compiled under it, as 'edgekit compile' does)"
    )
    bx = b.add_mutually_exclusive_group()
    bx.add_argument(
        "--max-accuracy-drop", type=_number, metavar="POINTS", help="top-1 drop allowed vs FP32 (default 1.0)"
    )
    bx.add_argument(
        "--min-agreement", type=_number, metavar="A", help="int8 '-budget' rows: minimum %% top-1 agreement with FP32"
    )
    b.add_argument(
        "--budget-confidence", type=_number, metavar="P",
        help=f"int8 '-budget' rows: probability the check images confirm the budget (default {rq.BUDGET_CONFIDENCE:g})",
    )  # fmt: skip
    b.add_argument("--max-latency-ms", type=_number, metavar="MS", help="batch-1 p50 latency allowed")
    r = p.add_argument_group("runs")
    r.add_argument("--resume", action="store_true", help="keep the finished combinations of an earlier run in -o")
    r.add_argument("--merge", type=Path, action="append", default=[], metavar="BENCH.json",
                   help="fold in an 'edgekit bench --json' result from a device (repeatable; implies --resume)")  # fmt: skip
    r.add_argument("--bench-seconds", type=_number, default=1.0, metavar="S",
                   help="batch-1 latency measuring time per combination (default 1)")  # fmt: skip
    r.add_argument("--no-bench", action="store_true", help="skip edgekit bench; use the compile-time latency")
    _args.add_trust_model_code(p)
    p.add_argument("--json", action="store_true", help="print report.json instead of the table")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.report.report import ReportOptions, run_report
    from edgekit.report.writers import text_table
    from edgekit.spec import spec_beside, spec_beside_note

    if args.spec is None and (beside := spec_beside(args.model)) is not None:
        args.spec = beside
        if not args.quiet:
            print(f"edgekit: {spec_beside_note(beside)}", file=sys.stderr, flush=True)
    options = ReportOptions(
        val=args.val, targets=args.targets, precisions=args.precisions, calib=args.calib, calib_size=args.calib_size,
        calib_methods=args.calib_methods, spec=args.spec, labels=args.labels, name=args.name,
        input_shape=args.input_shape, resume=args.resume, merge=tuple(args.merge),
        max_accuracy_drop=args.max_accuracy_drop, min_agreement=args.min_agreement, budget_confidence=args.budget_confidence,
        max_latency_ms=args.max_latency_ms,
        bench_seconds=args.bench_seconds, bench=not args.no_bench, trust_model_code=args.trust_model_code,
    )  # fmt: skip
    doc = run_report(args.model, output=args.output, options=options, progress=not args.quiet)
    if args.json:
        import json

        print(json.dumps(doc, indent=2))
        return 0
    print("\n".join(f"recommended: {r['text']}" for r in doc["recommendations"]))
    print()
    print(text_table(doc))
    print("\ntags: M measured here, D measured on the device (merged), S simulated, E estimated (roofline)")
    print(f"wrote {args.output}/report.html, report.json, report.csv, report.md")
    failed = [r for r in doc["results"] if r["status"] == "failed"]
    if failed:
        print(f"edgekit: warning: {len(failed)} combination(s) failed; see the table", file=sys.stderr)
    return 0
