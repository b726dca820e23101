"""The Python call a command makes: each command builds one ``Call`` from its arguments and invokes it.

``--print-api`` prints ``Call.source()`` (Python that makes the same call, with only the arguments that
differ from the API's defaults) and exits without running anything; otherwise the command runs
``Call.invoke()``, which calls the public function of ``edgekit`` the call names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WIDTH = 120  # a call longer than this (the project's line length) is written one argument a line


@dataclass(frozen=True)
class Expr:
    """Python source written as is (e.g. ``os.environ["EDGEKIT_SERVE_TOKEN"]``), with the imports it needs."""

    text: str
    imports: tuple[str, ...] = ()


@dataclass(frozen=True)
class Call:
    """``edgekit.<function>(*args, **kwargs)``; ``script`` replaces the one-line call when a command does more
    (``predict`` loops over its images); ``comments`` are written above the call."""

    function: str
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    script: str | None = None
    comments: tuple[str, ...] = ()

    def invoke(self, **runtime: Any) -> Any:
        """Call the public function, adding ``runtime`` keywords (a log callback: not part of the call shown)."""
        import edgekit

        return getattr(edgekit, self.function)(*self.args, **{**self.kwargs, **runtime})

    def source(self) -> str:
        imports = {"import edgekit"}
        values = [*self.args, *self.kwargs.values()]
        for value in _walk(values):
            if isinstance(value, Expr):
                imports.update(value.imports)
        call = self.script or render_call(f"edgekit.{self.function}", list(self.args), dict(self.kwargs), 0)
        head = "\n".join(sorted(imports))
        notes = "".join(f"# {c}\n" for c in self.comments)
        return f"{head}\n\n{notes}{call}\n"


def non_default(instance: Any) -> dict[str, Any]:
    """A dataclass instance's fields without a default, then those that differ from their defaults."""
    required = sorted(
        (f.name for f in dataclasses.fields(instance) if _required(f)), key=lambda n: _FIRST.get(n, len(_FIRST))
    )
    kept = {name: getattr(instance, name) for name in required}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if _required(f):
            continue
        if f.default is not dataclasses.MISSING and value == f.default:
            continue
        elif f.default_factory is not dataclasses.MISSING and value == f.default_factory():
            continue
        else:
            kept[f.name] = value
    return kept


_FIRST = {"model": 0, "target": 1, "output": 2, "val": 3, "bundle": 4}  # required fields in this order


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def render(value: Any, indent: int = 0) -> str:
    """Python source for ``value``: paths as strings, a dataclass as ``edgekit.<Class>(<non-default fields>)``."""
    if isinstance(value, Expr):
        return value.text
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return render_call(f"edgekit.{type(value).__name__}", [], non_default(value), indent)
    if isinstance(value, Path):
        return repr(str(value))
    if isinstance(value, tuple):
        inner = ", ".join(render(v, indent) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, list):
        return "[" + ", ".join(render(v, indent) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{render(k)}: {render(v, indent)}" for k, v in value.items()) + "}"
    return repr(value)


def render_call(name: str, args: list[Any], kwargs: dict[str, Any], indent: int = 0) -> str:
    """``name(args..., key=value...)`` as Python source, one argument a line when it is long."""
    parts = [render(a, indent + 4) for a in args] + [f"{k}={render(v, indent + 4)}" for k, v in kwargs.items()]
    one = f"{name}({', '.join(parts)})"
    if indent + len(one) <= WIDTH and "\n" not in one:
        return one
    pad = " " * (indent + 4)
    return f"{name}(\n" + "".join(f"{pad}{p},\n" for p in parts) + " " * indent + ")"


def _walk(values: Any):
    for value in values:
        yield value
        if isinstance(value, (tuple, list)):
            yield from _walk(value)
        elif isinstance(value, Mapping):
            yield from _walk(value.values())
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from _walk([getattr(value, f.name) for f in dataclasses.fields(value)])
