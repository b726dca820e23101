"""``edgekit serve``: the on-device daemon, from a camera to results over HTTP, MQTT and files.

    from edgekit.serve import build_config, serve
    serve(build_config(flag_values={"bundle": "m.edgekit", "source": "0"}))

It runs bundles through ``edgekit.runtime`` only (numpy, OpenCV, one vendor runtime; never torch).
Attributes load on first use, so importing this package (and ``edgekit --help``) stays fast.

The package is callable: ``edgekit.serve(...)`` is ``edgekit.serve.daemon.serve(...)`` (a ``ServeConfig``,
or its fields as keywords), so the public function and this package share one name.
"""

from __future__ import annotations

import sys
import types
from importlib import import_module
from typing import Any

_LAZY = {
    "ServeConfig": "edgekit.serve.config",
    "build_config": "edgekit.serve.config",
    "load_toml": "edgekit.serve.config",
    "Daemon": "edgekit.serve.daemon",
    "serve": "edgekit.serve.daemon",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'edgekit.serve' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


class _CallablePackage(types.ModuleType):
    """``edgekit.serve(...)`` calls the public ``serve`` function (imported on first call)."""

    @property
    def __wrapped__(self) -> Any:  # inspect.signature(edgekit.serve) and help() show the function's
        return import_module("edgekit.serve.daemon").serve

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.__wrapped__(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
