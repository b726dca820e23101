"""``build_engine``: build a TensorRT bundle's engine ahead of time, on the device, and self-test it.

    built = edgekit.build_engine("orin.edgekit")       # on the Jetson; the engine goes into the engine cache
    print(built.engine_file, built.selftest.describe())

Loading the bundle later reuses the cached engine; it is rebuilt when the GPU, TensorRT or bundle changes.
TensorRT is imported only here, when an engine is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgekit.runtime.selftest import SelfTestResult


@dataclass(frozen=True)
class EngineBuild:
    """The engine built (or found sound in the cache) for a bundle, and its self-test on this device."""

    bundle: Path
    engine: str  # "built" or "cached", as the runtime describes it
    engine_file: str
    device: str
    backend_version: str
    selftest: SelfTestResult
    info: dict[str, Any]  # everything the TensorRT runtime describes


def build_engine(bundle: str | Path, *, cache_dir: str | Path | None = None, force: bool = False) -> EngineBuild:
    """Build the TensorRT engine of ``bundle`` (compiled for a jetson-* target) into the engine cache
    (``cache_dir``, default ``$EDGEKIT_ENGINE_CACHE``, else ``~/.cache/edgekit/engines``) and self-test it.

    ``force`` rebuilds even if a sound cached engine exists. Raises ``UsageError`` for a bundle of another
    backend and ``BundleError`` when the engine does not reproduce the compiled model (its ``build``
    attribute is the ``EngineBuild``, so the caller can show the device and TensorRT version).
    """
    from edgekit import registry
    from edgekit.bundle import open_bundle
    from edgekit.errors import BundleError, UsageError
    from edgekit.runtime import selftest
    from edgekit.tasks import get_task

    opened = open_bundle(bundle)
    try:
        m = opened.typed_manifest
        backend = m.backend.name
        if not registry.backend(backend).builds_engines:
            raise UsageError(
                f"'{bundle}' is a {backend} bundle; build-engine builds TensorRT engines (bundles compiled "
                "for a jetson-* target)"
            )
        # the backend's runtime takes the manifest's JSON object (see edgekit.backends.base.Runtime)
        runtime = registry.backend(backend).build_engine(
            opened.root, opened.manifest, cache_dir=cache_dir, rebuild=force
        )
        try:
            result = selftest.run(runtime.infer, opened.root, m.selftest, tuple(m.input.shape), source=str(bundle),
                                  task=get_task(m.model.task))  # fmt: skip
            info = runtime.describe()
        finally:
            runtime.close()
    finally:
        opened.close()
    built = EngineBuild(
        bundle=Path(bundle), engine=str(info["engine"]), engine_file=str(info["engine_file"]),
        device=str(info["device"]), backend_version=str(info["backend_version"]), selftest=result, info=info,
    )  # fmt: skip
    if not result.passed:
        error = BundleError(
            "the engine does not reproduce the compiled model (self-test failed); the bundle will be refused "
            "at load time: recompile it, or report the TensorRT version and GPU above"
        )
        error.build = built  # type: ignore[attr-defined]  # what was built, for the caller to show
        raise error
    return built


__all__ = ["EngineBuild", "build_engine"]
