"""``edgekit targets``: list every target with its aliases, backend, device and precisions."""

from __future__ import annotations

import argparse
import json

from edgekit.cli._api import Call


def add_parser(sub) -> None:
    p = sub.add_parser("targets", help="list the hardware targets", description=__doc__.split(":", 1)[1].strip())
    p.add_argument("--json", action="store_true", help="print the targets as JSON")
    p.set_defaults(run=run, api=api_call)


OUTPUT_FLAGS = ("json",)  # how the result is shown: not part of the API call


def api_call(args: argparse.Namespace) -> Call:
    """``edgekit.list_targets()``."""
    return Call("list_targets")


def run(args: argparse.Namespace) -> int:
    targets = api_call(args).invoke()
    if args.json:
        rows = [{"name": t.name, "aliases": list(t.aliases), "backend": t.backend, "device": t.device,
                 "precisions": list(t.precisions), "default_precision": t.default_precision,
                 "calibration_method": t.calibration_method, "description": t.description} for t in targets]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0
    header = ("TARGET", "ALIASES", "BACKEND", "DEVICE", "PRECISIONS (default first)", "INT8 CALIBRATION")
    rows = [
        (t.name, ", ".join(t.aliases) or "-", t.backend, t.device,
         ", ".join([t.default_precision] + [p for p in t.precisions if p != t.default_precision]),
         t.calibration_method if "int8" in t.precisions else "-")
        for t in targets
    ]  # fmt: skip
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0
