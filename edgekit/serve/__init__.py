"""``edgekit serve``: the on-device daemon, from a camera to results over HTTP, MQTT and files.

    from edgekit.serve import build_config, serve
    serve(build_config(flag_values={"bundle": "m.edgekit", "source": "0"}))

It runs bundles through ``edgekit.runtime`` only (numpy, OpenCV, one vendor runtime; never torch).
Attributes load on first use, so importing this package (and ``edgekit --help``) stays fast.
"""

from __future__ import annotations

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
