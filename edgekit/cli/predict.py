"""``edgekit predict``: run a bundle on image files and print the top-k labels."""

from __future__ import annotations

import argparse
import json
import sys

from edgekit.cli import _args


def add_parser(sub) -> None:
    p = sub.add_parser("predict", help="classify images with a bundle", description=__doc__.split(":", 1)[1].strip())
    p.add_argument("bundle", help="bundle folder or packed file")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, BMP, WebP)")
    p.add_argument("-k", "--top-k", type=_args.positive_int, default=3, help="labels to show per image (default 3)")
    p.add_argument("--device", help="run on another device of the backend (OpenVINO: CPU, GPU, NPU)")
    p.add_argument("--json", action="store_true", help="print one JSON object a line")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.errors import EdgekitError
    from edgekit.runtime import load_bundle

    failures = 0
    with load_bundle(args.bundle, device=args.device) as bundle:
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
                print(f"{image}: " + ", ".join(f"{label} {p:.3f}" for label, p in pred.top))
    return 1 if failures else 0
