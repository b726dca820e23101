"""edgekit: compile trained conv-nets for edge targets into self-describing, self-testing bundles.

    import edgekit
    edgekit.compile_model("model.onnx", target="cpu", precision="int8", calib="calib/", output="m.edgekit")
    # or, the same as one typed value:
    edgekit.compile(edgekit.CompileRequest(model="model.onnx", target="cpu", output="m.edgekit"))
    bundle = edgekit.load_bundle("m.edgekit")
    print(bundle.predict("cat.jpg").top)

Every ``edgekit`` command is a thin shell over one of these (``edgekit COMMAND ... --print-api`` prints
the call it makes):

- ``compile(request: CompileRequest, *, log=None) -> CompiledBundle`` (and ``compile_model(model, *,
  target, output, log=None, **fields)``): ``edgekit compile``;
- ``report(request: ReportRequest | None = None, *, progress=True, **fields) -> dict``: ``edgekit report``;
- ``bench(bundle, options: BenchOptions | None = None, *, log=None, **fields) -> dict``: ``edgekit bench``;
  ``tune(bundle, *, output=None, log=None) -> dict``: ``edgekit bench --tune``;
- ``serve(config: ServeConfig | None = None, /, **fields) -> int``: ``edgekit serve``;
- ``inspect(path, *, check=False) -> BundleSummary``: ``edgekit inspect``;
- ``build_engine(bundle, *, cache_dir=None, force=False) -> EngineBuild``: ``edgekit build-engine``;
- ``load_bundle(path, *, device=None) -> Bundle`` (``Bundle.predict``): ``edgekit predict``;
  ``list_targets() -> list[Target]``: ``edgekit targets``.

``edgekit.report`` and ``edgekit.serve`` are also the packages of those names; each package is callable.
Attributes are imported on first use, so ``import edgekit`` stays light (no torch, no vendor runtime).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from edgekit._version import __version__

_LAZY = {
    "compile_model": "edgekit.pipeline",
    "compile": "edgekit.pipeline:compile_request",
    "CompileRequest": "edgekit.request",
    "CompiledBundle": "edgekit.pipeline",
    "load_bundle": "edgekit.runtime.session",
    "Bundle": "edgekit.runtime.session",
    "Prediction": "edgekit.runtime.session",
    "Target": "edgekit.targets",
    "get_target": "edgekit.targets",
    "list_targets": "edgekit.targets",
    "ModelSpec": "edgekit.spec",
    "InputSpec": "edgekit.spec",
    "PreprocessSpec": "edgekit.spec",
    "EdgekitError": "edgekit.errors",
    "report": "edgekit.report:",  # the package itself: it is callable (edgekit.report.report.report)
    "ReportRequest": "edgekit.report.report",
    "ReportOptions": "edgekit.report.report",
    "bench": "edgekit.measure.bench",
    "BenchOptions": "edgekit.measure.bench",
    "tune": "edgekit.measure.tune",
    "serve": "edgekit.serve:",  # the package itself: it is callable (edgekit.serve.daemon.serve)
    "ServeConfig": "edgekit.serve.config",
    "inspect": "edgekit.inspection",
    "BundleSummary": "edgekit.inspection",
    "build_engine": "edgekit.engine_build",
    "EngineBuild": "edgekit.engine_build",
}

# ``edgekit.compile`` and ``edgekit.inspect`` stay out of ``import *``, which would shadow the built-in
# ``compile`` and the standard library's ``inspect``.
__all__ = ["__version__", *sorted(n for n in _LAZY if n not in ("compile", "inspect"))]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, colon, attr = _LAZY[name].partition(":")
        if colon and not attr:
            return import_module(module)
        return getattr(import_module(module), attr or name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *_LAZY})
