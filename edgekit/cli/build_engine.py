"""``edgekit build-engine``: build a TensorRT bundle's engine ahead of time, on the device, and self-test it."""

from __future__ import annotations

import argparse

from edgekit.cli._api import Call


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
    p.set_defaults(run=run, api=api_call)


OUTPUT_FLAGS = ()


def api_call(args: argparse.Namespace) -> Call:
    """``edgekit.build_engine(BUNDLE, cache_dir=..., force=...)``."""
    kwargs = {"cache_dir": args.cache_dir, "force": args.force or None}
    return Call("build_engine", (args.bundle,), {k: v for k, v in kwargs.items() if v is not None})


def run(args: argparse.Namespace) -> int:
    from edgekit import registry
    from edgekit.bundle import open_bundle
    from edgekit.errors import BundleError, UsageError

    opened = open_bundle(args.bundle)  # the backend check, before the API call loads TensorRT
    try:
        backend = opened.typed_manifest.backend.name
        if not registry.backend(backend).builds_engines:
            raise UsageError(
                f"'{args.bundle}' is a {backend} bundle; build-engine builds TensorRT engines (bundles compiled "
                "for a jetson-* target)"
            )
    finally:
        opened.close()
    try:
        built = api_call(args).invoke()
    except BundleError as exc:
        if getattr(exc, "build", None) is not None:  # the self-test failed: show what was built, then the error
            _print(exc.build)
        raise
    _print(built)
    return 0


def _print(built) -> None:
    print(f"engine:       {built.engine}: {built.engine_file}")
    print(f"device:       {built.device}, TensorRT {built.backend_version}")
    print(f"self-test:    {built.selftest.describe()}")
