"""``edgekit compile``: compile a model for a target into a verified bundle."""

from __future__ import annotations

import argparse
import sys

from edgekit import request as rq
from edgekit.cli import _args
from edgekit.spec import COLOR_ORDERS, LAYOUTS, RESIZE_MODES
from edgekit.targets import CALIBRATION_METHODS, PRECISIONS

EPILOG = """examples:
  edgekit compile model.onnx --target cpu --precision int8 --calib calib/ --val val/ -o model.edgekit
  edgekit compile model.ts --input-shape 1,3,224,224 --target intel-cpu --precision fp32 -o m.edgekit
  edgekit compile model.onnx --target intel-npu --spec model.toml --calib calib/ -o npu.edgekit

Preprocessing and labels are stored in the bundle; give them here or in a model-spec TOML (--spec).
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "compile", help="compile a model for a target into a bundle", description=__doc__.split(":", 1)[1].strip(),
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("model", help="ONNX file, TorchScript file (.ts/.pt), or torch.export program (.pt2)")
    p.add_argument(
        "-t", "--target", required=True, help="target name or alias (see 'edgekit targets'), or a .toml path"
    )
    p.add_argument("-p", "--precision", type=_args.choice(*PRECISIONS), choices=PRECISIONS,
                   help="default: the target's default")  # fmt: skip
    p.add_argument("-o", "--output", required=True, help="bundle path to write (a folder; one file with --pack)")
    p.add_argument("--pack", action="store_true", help="write the bundle as one file (a stored zip)")
    g = p.add_argument_group("data")
    g.add_argument("--calib", metavar="FOLDER", help="calibration images (searched recursively); needed for int8")
    g.add_argument("--calib-size", type=_args.positive_int, default=rq.CALIB_SIZE, metavar="N",
                   help=f"calibration images to sample deterministically (default {rq.CALIB_SIZE})")  # fmt: skip
    g.add_argument("--calib-method", type=_args.choice(*CALIBRATION_METHODS), choices=CALIBRATION_METHODS,
                   help="activation range estimation (default: the target's, see 'edgekit targets'); mean-minmax is "
                   "OpenVINO only, entropy is not offered on OpenVINO")  # fmt: skip
    g.add_argument("--calib-percentile", type=float, default=rq.CALIBRATION_PERCENTILE, metavar="P",
                   help="with --calib-method percentile: the percentile of |activation| kept "
                   f"(default {rq.CALIBRATION_PERCENTILE:g})")  # fmt: skip
    g.add_argument("--val", metavar="FOLDER", help="validation images, one sub-folder a class: accuracy vs FP32")
    b = p.add_argument_group(
        "accuracy budget (int8; needs --val; the most sensitive layers return to higher precision)"
    )
    bx = b.add_mutually_exclusive_group()
    bx.add_argument(
        "--max-accuracy-drop",
        metavar="B",
        help="top-1 points of drop allowed vs FP32 (labelled --val); B%% is relative",
    )
    bx.add_argument(
        "--min-agreement", metavar="A", help="minimum %% top-1 agreement with FP32 (--val may be unlabelled frames)"
    )
    b.add_argument(
        "--budget-confidence",
        type=float,
        default=rq.BUDGET_CONFIDENCE,
        metavar="P",
        help="probability that images the search never saw confirm the budget: the search keeps that much "
        f"to spare (default {rq.BUDGET_CONFIDENCE:g})",
    )
    m = p.add_argument_group("model spec (override what the model and --spec say)")
    m.add_argument("--spec", metavar="TOML", help="model-spec file: name, labels, [input], [preprocess] (default: "
                   "<model stem>.toml, else model.toml, beside the model, if there is one)")  # fmt: skip
    m.add_argument("--name", help="model name stored in the bundle")
    m.add_argument("--input-shape", type=_args.int_list, metavar="N,C,H,W", help="input shape, e.g. 1,3,224,224")
    m.add_argument("--layout", type=_args.choice(*LAYOUTS), choices=LAYOUTS,
                   help="input layout (default: read from the model)")  # fmt: skip
    m.add_argument("--labels", metavar="FILE", help="labels file, one a line (default: --val's class folders)")
    pre = p.add_argument_group("preprocessing")
    pre.add_argument("--resize", type=_args.size, metavar="N|H,W", help="shorter side N, or exactly H,W")
    pre.add_argument("--resize-mode", type=_args.choice(*RESIZE_MODES), choices=RESIZE_MODES)
    pre.add_argument("--crop", type=_args.hw, metavar="N|H,W", help="centre crop after the resize")
    pre.add_argument("--color-order", type=_args.choice(*COLOR_ORDERS), choices=COLOR_ORDERS,
                     help="channel order the model expects")  # fmt: skip
    pre.add_argument("--scale", type=_args.scale, help="pixel multiplier before mean/std (default 1/255)")
    pre.add_argument("--mean", type=_args.float_triple, metavar="R,G,B", help="per-channel mean")
    pre.add_argument("--std", type=_args.float_triple, metavar="R,G,B", help="per-channel std")
    _args.add_trust_model_code(p)
    p.add_argument("--json", action="store_true", help="print the manifest as JSON when done")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result")
    p.set_defaults(run=run)


def request_from(args: argparse.Namespace) -> rq.CompileRequest:
    """The ``CompileRequest`` that ``edgekit compile`` with these arguments makes (nothing is run)."""
    preprocess = {key: getattr(args, key) for key in rq.PREPROCESS_KEYS}
    return rq.CompileRequest(
        model=args.model, target=args.target, output=args.output, precision=args.precision, calib=args.calib,
        val=args.val, calib_size=args.calib_size, calibration_method=args.calib_method,
        calibration_percentile=args.calib_percentile, max_accuracy_drop=args.max_accuracy_drop,
        min_agreement=args.min_agreement, budget_confidence=args.budget_confidence, spec=args.spec,
        name=args.name, input_shape=args.input_shape, layout=args.layout, labels=args.labels,
        preprocess=preprocess, pack=args.pack, trust_model_code=args.trust_model_code,
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from edgekit.pipeline import compile_request

    log = None if args.quiet else (lambda msg: print(f"edgekit: {msg}", file=sys.stderr, flush=True))
    result = compile_request(request_from(args), log=log)
    for warning in result.warnings:
        print(f"edgekit: warning: {warning}", file=sys.stderr)
    if args.json:
        import json

        print(json.dumps(result.manifest, indent=2))
        return 0
    from edgekit.cli.inspect import summary_lines

    print(f"wrote {result.path}")
    for line in summary_lines(result.manifest, brief=True):
        print(line)
    return 0
