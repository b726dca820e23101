"""``edgekit predict``: run a bundle on image files and print the top-k labels."""

from __future__ import annotations

import argparse
import json
import sys

from edgekit.cli import _args
from edgekit.cli._api import Call, render_call

DEFAULT_TOP_K = 3  # the CLI's (Bundle.predict's own is 5, so the call always names it)


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a bundle", description=__doc__.split(":", 1)[1].strip())
    p.add_argument("bundle", help="bundle folder or packed file")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, BMP, WebP)")
    p.add_argument("-k", "--top-k", type=_args.positive_int, default=DEFAULT_TOP_K,
                   help=f"labels to show per image (default {DEFAULT_TOP_K})")  # fmt: skip
    p.add_argument("--device", help="run on another device of the backend (OpenVINO: CPU, GPU, NPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object a line")
    p.set_defaults(run=run, api=api_call)


OUTPUT_FLAGS = ("json",)  # how the result is shown: not part of the API call


def api_call(args: argparse.Namespace) -> Call:
    """``edgekit.load_bundle(BUNDLE, device=...)``, then ``bundle.predict(image, top_k=...)`` for each image."""
    kwargs = {"device": args.device} if args.device else {}
    opened = render_call("edgekit.load_bundle", [args.bundle], kwargs)
    script = (
        f"with {opened} as bundle:\n    for image in {args.images!r}:\n"
        f"        print(image, bundle.predict(image, top_k={args.top_k!r}).top)"
    )
    return Call("load_bundle", (args.bundle,), kwargs, script=script)


def run(args: argparse.Namespace) -> int:
    from edgekit.errors import EdgekitError

    failures = 0
    with api_call(args).invoke() as bundle:
        for image in args.images:
            try:
                pred = bundle.predict(image, top_k=args.top_k)
            except EdgekitError as exc:
                failures += 1
                print(f"edgekit: error: {exc}", file=sys.stderr)
                continue
            if args.json:
                print(json.dumps({"image": image, **pred.to_dict()}))
            else:
                print(f"{image}: {pred.to_text()}")
    return 1 if failures else 0
