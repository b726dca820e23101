"""``edgekit inspect``: show a bundle's target, precision, accuracy, preprocessing and files."""

from __future__ import annotations

import argparse
import json

from edgekit.cli._api import Call


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show what a bundle holds", description=__doc__.split(":", 1)[1].strip())
    p.add_argument("bundle", help="bundle folder or packed file")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("--check", action="store_true", help="also load the bundle and run its self-test")
    p.set_defaults(run=run, api=api_call)


OUTPUT_FLAGS = ("json",)  # how the result is shown: not part of the API call


def api_call(args: argparse.Namespace) -> Call:
    """``edgekit.inspect(BUNDLE, check=...)``."""
    return Call("inspect", (args.bundle,), {"check": True} if args.check else {})


def run(args: argparse.Namespace) -> int:
    summary = api_call(args).invoke()
    if args.json:
        print(json.dumps(summary.manifest, indent=2))
        if summary.selftest is not None:
            print(summary.selftest.describe())
    else:
        print("\n".join(summary.lines()))
    return 0
