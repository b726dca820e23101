"""The one list of backends: the built-ins below plus the ``edgekit.backends`` entry-point group.

Every backend id edgekit accepts (a target file's ``backend``, a bundle's ``backend.name``) is looked up
here, and only here. A backend is a subclass of ``edgekit.backends.base.Backend``, named by a
``"module:Class"`` string and imported only when its id is asked for, so listing the ids imports nothing
and a backend's vendor packages load only when that backend is used.

A third-party backend registers in its own package's metadata, with no edit to edgekit::

    [project.entry-points."edgekit.backends"]
    fake = "edgekit_fake_backend.backend:FakeBackend"

The entry point's name is the backend id and must equal the class's ``id``. A built-in id cannot be taken
by a plugin (the built-in wins); of two plugins with one id, the first one found wins.

This module sits in the bottom layer: it names the backends by string and imports them by
``importlib``, so the runtime (below the backends) can find a bundle's runtime class through it.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING

from edgekit.errors import DependencyError, UsageError

if TYPE_CHECKING:  # pragma: no cover - for annotations only; the import-linter contract skips these
    from importlib.metadata import EntryPoint

    from edgekit.backends.base import Backend

GROUP = "edgekit.backends"

# Every built-in backend, id -> "module:Class". Greppable: this is the list.
BUILTINS: dict[str, str] = {
    "onnxruntime": "edgekit.backends.onnxruntime.backend:ONNXRuntimeBackend",
    "openvino": "edgekit.backends.openvino.backend:OpenVINOBackend",
    "tensorrt": "edgekit.backends.tensorrt.backend:TensorRTBackend",
}

_loaded: dict[str, type[Backend]] = {}


def _plugins() -> dict[str, EntryPoint]:
    """The entry points of the ``edgekit.backends`` group, by id (nothing is imported)."""
    from importlib.metadata import entry_points

    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        if ep.name not in BUILTINS:
            found.setdefault(ep.name, ep)
    return found


def backend_ids() -> list[str]:
    """Every registered backend id: the built-ins, then the plugins', sorted; nothing is imported."""
    return [*BUILTINS, *sorted(_plugins())]


def is_registered(backend_id: str) -> bool:
    """True if ``backend_id`` names a built-in or a plugin backend (nothing is imported)."""
    return isinstance(backend_id, str) and (backend_id in BUILTINS or backend_id in _plugins())


def find(backend_id: str) -> type[Backend] | None:
    """The backend class registered as ``backend_id``, or None if no backend has that id."""
    if backend_id in _loaded:
        return _loaded[backend_id]
    if backend_id in BUILTINS:
        module, _, name = BUILTINS[backend_id].partition(":")
        cls = getattr(importlib.import_module(module), name)
    else:
        ep = _plugins().get(backend_id)
        if ep is None:
            return None
        cls = _load_plugin(ep)
    _loaded[backend_id] = cls
    return cls


def backend(backend_id: str) -> type[Backend]:
    """The backend class registered as ``backend_id``; a UsageError naming the registered ids if none is."""
    cls = find(backend_id)
    if cls is None:
        raise UsageError(
            f"backend {backend_id!r} is not registered; registered backends: {', '.join(backend_ids())} "
            f"(a third-party backend registers in the '{GROUP}' entry-point group: install its package)"
        )
    return cls


def _load_plugin(ep: EntryPoint) -> type[Backend]:
    where = f"backend plugin '{ep.name}' ({ep.value}, entry-point group {GROUP})"
    try:
        cls = ep.load()
    except Exception as exc:  # a plugin's import can fail in any way; the message names the plugin
        raise DependencyError(
            f"{where} cannot be imported ({type(exc).__name__}: {exc}); reinstall or uninstall the plugin's package"
        ) from exc
    base = importlib.import_module("edgekit.backends.base").Backend
    if not (inspect.isclass(cls) and issubclass(cls, base)) or inspect.isabstract(cls):
        raise DependencyError(f"{where} is not a concrete subclass of edgekit.backends.base.Backend; fix the plugin")
    if cls.id != ep.name:
        raise DependencyError(f"{where} has id '{cls.id}', not '{ep.name}'; make the entry point's name its id")
    return cls


__all__ = ["BUILTINS", "GROUP", "backend", "backend_ids", "find", "is_registered"]
