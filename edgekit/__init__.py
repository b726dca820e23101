"""edgekit: compile trained conv-nets for edge targets into self-describing, self-testing bundles.

    import edgekit
    edgekit.compile_model("model.onnx", target="cpu", precision="int8", calib="calib/", output="m.edgekit")
    # or, the same as one typed value:
    edgekit.compile(edgekit.CompileRequest(model="model.onnx", target="cpu", output="m.edgekit"))
    bundle = edgekit.load_bundle("m.edgekit")
    print(bundle.predict("cat.jpg").top)

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
}

# ``edgekit.compile`` stays out of ``import *``, which would shadow the built-in ``compile``.
__all__ = ["__version__", *sorted(n for n in _LAZY if n != "compile")]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, _, attr = _LAZY[name].partition(":")
        return getattr(import_module(module), attr or name)
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*__all__, *_LAZY})
