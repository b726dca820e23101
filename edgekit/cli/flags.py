"""Flag groups shared by commands, each defined once: ``compile`` and ``report`` take the same data, budget,
model-spec, preprocessing and trust flags, with the same syntax, types, choices and defaults.

Every shared flag's destination is the name of the ``CompileRequest`` field it fills (``SHARED_DESTS``
maps the few that differ), so ``compile`` and ``report`` hand the same values to the same API fields.
"""

from __future__ import annotations

import argparse
from typing import Any

from edgekit import request as rq
from edgekit.cli import _args
from edgekit.spec import COLOR_ORDERS, LAYOUTS, RESIZE_MODES

MODEL_HELP = "ONNX file, TorchScript file (.ts/.pt), or torch.export program (.pt2)"

# flag destination -> CompileRequest field, where the names differ (the others are the same name)
SHARED_DESTS = {"calib_percentile": "calibration_percentile"}


def add_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help=MODEL_HELP)


def add_shared(
    parser: argparse.ArgumentParser, *, val_help: str, val_required: bool = False, budget_title: str
) -> dict[str, Any]:
    """Add the shared groups to ``parser``; return them by name ("data", "budget", "spec", "preprocess") so a
    command can add its own flags beside them (compile's --calib-method, report's --max-latency-ms)."""
    g = parser.add_argument_group("data")
    g.add_argument("--calib", metavar="FOLDER", help="calibration images (searched recursively); needed for int8")
    g.add_argument("--calib-size", type=_args.positive_int, default=rq.CALIB_SIZE, metavar="N",
                   help=f"calibration images to sample deterministically (default {rq.CALIB_SIZE})")  # fmt: skip
    g.add_argument("--calib-percentile", type=float, default=rq.CALIBRATION_PERCENTILE, metavar="P",
                   help="with the percentile calibration method: the percentile of |activation| kept "
                   f"(default {rq.CALIBRATION_PERCENTILE:g})")  # fmt: skip
    g.add_argument("--val", metavar="FOLDER", required=val_required, help=val_help)
    b = parser.add_argument_group(budget_title)
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
    m = parser.add_argument_group("model spec (override what the model and --spec say)")
    m.add_argument("--spec", metavar="TOML", help="model-spec file: name, labels, [input], [preprocess] (default: "
                   "<model stem>.toml, else model.toml, beside the model, if there is one)")  # fmt: skip
    m.add_argument("--name", help="model name stored in the bundle")
    m.add_argument("--input-shape", type=_args.int_list, metavar="N,C,H,W", help="input shape, e.g. 1,3,224,224")
    m.add_argument("--layout", type=_args.choice(*LAYOUTS), choices=LAYOUTS,
                   help="input layout (default: read from the model)")  # fmt: skip
    m.add_argument("--labels", metavar="FILE", help="labels file, one a line (default: --val's class folders)")
    pre = parser.add_argument_group("preprocessing")
    pre.add_argument("--resize", type=_args.size, metavar="N|H,W", help="shorter side N, or exactly H,W")
    pre.add_argument("--resize-mode", type=_args.choice(*RESIZE_MODES), choices=RESIZE_MODES)
    pre.add_argument("--crop", type=_args.hw, metavar="N|H,W", help="centre crop after the resize")
    pre.add_argument("--color-order", type=_args.choice(*COLOR_ORDERS), choices=COLOR_ORDERS,
                     help="channel order the model expects")  # fmt: skip
    pre.add_argument("--scale", type=_args.scale, help="pixel multiplier before mean/std (default 1/255)")
    pre.add_argument("--mean", type=_args.float_triple, metavar="R,G,B", help="per-channel mean")
    pre.add_argument("--std", type=_args.float_triple, metavar="R,G,B", help="per-channel std")
    _args.add_trust_model_code(parser)
    return {"data": g, "budget": b, "spec": m, "preprocess": pre}


def shared_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The ``CompileRequest`` fields the shared flags give (``preprocess`` gathered into one mapping)."""
    fields = {
        SHARED_DESTS.get(dest, dest): getattr(args, dest)
        for dest in ("calib", "calib_size", "calib_percentile", "val", "max_accuracy_drop", "min_agreement",
                     "budget_confidence", "spec", "name", "input_shape", "layout", "labels", "trust_model_code")
    }  # fmt: skip
    fields["preprocess"] = {key: getattr(args, key) for key in rq.PREPROCESS_KEYS}
    return fields


def shared_actions() -> list[argparse.Action]:
    """The shared flags' actions, as ``add_shared`` defines them (read from a fresh parser)."""
    probe = argparse.ArgumentParser(add_help=False)
    add_shared(probe, val_help="", budget_title="")
    return list(probe._actions)
