"""The tasks edgekit compiles and runs, by the name a model spec's and a bundle manifest's ``task`` give.

``get_task(name)`` returns the ``Task`` (see ``edgekit.tasks.base``); an unknown or not yet supported name is a
one-line UsageError listing the supported ones. The built-in tasks are imported on first use, so checking a
name (``unsupported``, ``task_names``) imports nothing heavy; ``register_task`` adds one in-process.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from edgekit.errors import UsageError

if TYPE_CHECKING:
    from edgekit.tasks.base import Task

# name -> "module:class", imported on first use
_BUILTIN = {
    "classification": "edgekit.tasks.classification:Classification",
    "detection": "edgekit.tasks.detection.task:Detection",
}
# names edgekit knows of but does not run yet: a spec or bundle naming one is refused as "not supported yet"
PLANNED = ("segmentation",)

_registered: dict[str, Task] = {}
_loaded: dict[str, Task] = {}


def task_names() -> tuple[str, ...]:
    """The tasks this edgekit runs, in the order they were added (the built-in ones first)."""
    return (*_BUILTIN, *(n for n in _registered if n not in _BUILTIN))


def unsupported(name: object) -> str | None:
    """Why ``name`` is not a task this edgekit runs (one clause naming the supported ones), or None if it is."""
    supported = ", ".join(task_names())
    if isinstance(name, str) and (name in _BUILTIN or name in _registered):
        return None
    if name in PLANNED:
        return f"task '{name}' is not supported yet; supported: {supported}"
    if not isinstance(name, str):
        return f"task {name!r} is not a task name (a string); supported: {supported}"
    return f"unknown task '{name}'; supported: {supported}"


def get_task(name: str) -> Task:
    """The task called ``name``; a UsageError (one line, naming the supported tasks) for any other name."""
    if name in _registered:
        return _registered[name]
    why = unsupported(name)
    if why is not None:
        raise UsageError(why)
    if name not in _loaded:
        module, cls = _BUILTIN[name].split(":")
        _loaded[name] = getattr(importlib.import_module(module), cls)()
    return _loaded[name]


def register_task(task: Task, *, replace: bool = False) -> Task:
    """Add ``task`` (an instance) under ``task.name``, for this process; the runtime, the daemon, evaluation and
    the budget then run bundles and specs that name it. A taken name is refused unless ``replace``."""
    from edgekit.tasks.base import Task

    if not isinstance(task, Task):
        raise TypeError(f"register_task takes a Task instance, not {type(task).__name__}")
    if not replace and task.name in task_names():
        raise UsageError(f"task '{task.name}' is already registered; pass replace=True to replace it")
    _registered[task.name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove a task added by ``register_task`` (built-in tasks stay)."""
    _registered.pop(name, None)


__all__ = ["PLANNED", "get_task", "register_task", "task_names", "unregister_task", "unsupported"]
