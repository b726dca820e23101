"""``edgekit compile``: compile a model for a target into a verified bundle."""

from __future__ import annotations

import argparse
import sys

from edgekit import request as rq
from edgekit.cli import _args, flags
from edgekit.cli._api import Call
from edgekit.targets import CALIBRATION_METHODS, PRECISIONS

EPILOG = """examples:
  edgekit compile model.onnx --target cpu --precision int8 --calib calib/ --val val/ -o model.edgekit
  edgekit compile model.ts --input-shape 1,3,224,224 --target intel-cpu --precision fp32 -o m.edgekit
  edgekit compile model.onnx --target intel-npu --spec model.toml --calib calib/ -o npu.edgekit
  edgekit compile model.onnx --target cpu -o m.edgekit --print-api   # the Python call, not run

Preprocessing and labels are stored in the bundle; give them here or in a model-spec TOML (--spec).
Python: edgekit.compile(edgekit.CompileRequest(model=..., target=..., output=..., ...)).
"""

OUTPUT_FLAGS = ("json", "quiet")  # how the result is shown: not part of the API call


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compile", help="compile a model for a target into a bundle", description=__doc__.split(":", 1)[1].strip(),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    flags.add_model(p)
    p.add_argument(
        "-t", "--target", required=True, help="target name or alias (see 'edgekit targets'), or a .toml path"
    )
    p.add_argument("-p", "--precision", type=_args.choice(*PRECISIONS), choices=PRECISIONS,
                   help="default: the target's default")  # fmt: skip
    p.add_argument("-o", "--output", required=True, help="bundle path to write (a folder; one file with --pack)")
    p.add_argument("--pack", action="store_true", help="write the bundle as one file (a stored zip)")
    p.add_argument("--no-tune", dest="tune_runtime", action="store_false",
                   help="do not time the runtime's settings (threads, streams, batch) when the target is this "
                   "machine (default: time them and record the best; EDGEKIT_TUNE=0 also turns it off)")  # fmt: skip
    groups = flags.add_shared(
        p,
        val_help="validation images, one sub-folder a class: accuracy vs FP32",
        budget_title="accuracy budget (int8; needs --val; the most sensitive layers return to higher precision)",
    )
    groups["data"].add_argument(
        "--calib-method", type=_args.choice(*CALIBRATION_METHODS), choices=CALIBRATION_METHODS,
        help="activation range estimation (default: the target's, see 'edgekit targets'); mean-minmax is "
        "OpenVINO only, entropy is not offered on OpenVINO",
    )  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the manifest as JSON when done")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result")
    p.set_defaults(run=run, api=api_call)


def request_from(args: argparse.Namespace) -> rq.CompileRequest:
    """The ``CompileRequest`` that ``edgekit compile`` with these arguments makes (nothing is run)."""
    return rq.CompileRequest(
        model=args.model, target=args.target, output=args.output, precision=args.precision,
        calibration_method=args.calib_method, pack=args.pack, tune_runtime=args.tune_runtime,
        **flags.shared_fields(args),
    )  # fmt: skip


def api_call(args: argparse.Namespace) -> Call:
    """``edgekit.compile(CompileRequest(...))``."""
    return Call("compile", (request_from(args),))


def run(args: argparse.Namespace) -> int:
    log = None if args.quiet else (lambda msg: print(f"edgekit: {msg}", file=sys.stderr, flush=True))
    result = api_call(args).invoke(log=log)
    for warning in result.warnings:
        print(f"edgekit: warning: {warning}", file=sys.stderr)
    if args.json:
        import json

        print(json.dumps(result.manifest, indent=2))
        return 0
    from edgekit.inspection import summary_lines

    print(f"wrote {result.path}")
    for line in summary_lines(result.manifest, brief=True):
        print(line)
    return 0
