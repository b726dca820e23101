"""``edgekit build-engine``: build a TensorRT bundle's engine ahead of time, on the device, and self-test it."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    p = sub.add_parser(
        "build-engine",
        help="build a TensorRT bundle's engine now (on the Jetson), into the engine cache",
        description=__doc__.split(":", 1)[1].strip()
        + " Loading the bundle reuses the cached engine; it is rebuilt when the GPU, TensorRT or bundle changes.",
    )
    p.add_argument("bundle", help="bundle folder or packed file compiled for a jetson-* target")
    p.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="engine cache folder (default: $EDGEKIT_ENGINE_CACHE, else ~/.cache/edgekit/engines)",
    )
    p.add_argument("--force", action="store_true", help="rebuild even if a sound cached engine exists")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from edgekit.bundle import open_bundle
    from edgekit.errors import BundleError, UsageError
    from edgekit.runtime import selftest

    opened = open_bundle(args.bundle)
    try:
        backend = opened.manifest["backend"]["name"]
        if backend != "tensorrt":
            raise UsageError(
                f"'{args.bundle}' is a {backend} bundle; build-engine builds TensorRT engines (bundles compiled "
                "for a jetson-* target)"
            )
        from edgekit.backends.tensorrt.runtime import TensorRTRuntime

        runtime = TensorRTRuntime(opened.root, opened.manifest, cache_dir=args.cache_dir, rebuild=args.force)
        try:
            result = selftest.run(runtime.infer, opened.root, opened.manifest["selftest"],
                                  tuple(opened.manifest["input"]["shape"]), source=str(args.bundle))  # fmt: skip
            info = runtime.describe()
        finally:
            runtime.close()
    finally:
        opened.close()
    print(f"engine:       {info['engine']}: {info['engine_file']}")
    print(f"device:       {info['device']}, TensorRT {info['backend_version']}")
    print(f"self-test:    {result.describe()}")
    if not result.passed:
        raise BundleError(
            "the engine does not reproduce the compiled model (self-test failed); the bundle will be refused "
            "at load time: recompile it, or report the TensorRT version and GPU above"
        )
    return 0
