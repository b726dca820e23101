"""Field checks for the bundle manifest: each checks a JSON value, describes itself as JSON Schema and builds
the value's typed form.

A check is called as ``check(value, field)`` and raises ``Invalid(field, want, got)`` (the reader turns that
into one ``BundleError`` line naming the dotted field); ``check.schema`` is the same rule as a JSON Schema
(draft 2020-12) fragment; ``check.build(value)`` turns a value that passed into what the typed manifest holds
(lists become tuples, objects of a record type become that dataclass, free-form objects are copied).
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Callable
from typing import Any

MANIFEST = "manifest.json"
MAX_LIST = 100_000  # labels, notes, files: far beyond any real bundle
MAX_NAME = 1024
SHA256 = re.compile(r"[0-9a-f]{64}")
# safe_name as a regular expression (ECMA 262 and Python): '/'-separated parts, none empty, '.' or '..',
# no backslash, ':' or NUL; the first character is not '/'
_PART = r"(?!\.\.?(?:/|$))[^/\\:\x00]+"
SAFE_NAME_PATTERN = rf"^{_PART}(?:/{_PART})*$"


class Invalid(Exception):
    def __init__(self, field: str, want: str, got: Any) -> None:
        super().__init__(field)
        self.field, self.want, self.got = field, want, got


_Invalid = Invalid  # the name manifest.py's checks have always used


def shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _copy(value: Any) -> Any:
    return copy.deepcopy(value) if isinstance(value, (dict, list)) else value


class Check:
    """One rule: ``fn(value, field)`` raises Invalid; ``schema`` is its JSON Schema; ``build`` its typed form."""

    def __init__(
        self,
        fn: Callable[[Any, str], None],
        schema: dict[str, Any],
        build: Callable[[Any], Any] = _copy,
    ) -> None:
        self.fn, self.schema, self.build = fn, schema, build

    def __call__(self, value: Any, field: str) -> None:
        self.fn(value, field)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _string(v: Any, f: str) -> None:
    if not isinstance(v, str):
        raise Invalid(f, "a string", v)


string = Check(_string, {"type": "string"})


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    def check(v: Any, f: str) -> None:
        if not isinstance(v, int) or isinstance(v, bool) or (lo is not None and v < lo) or (hi is not None and v > hi):
            want = "an integer" + (f" from {lo}" if lo is not None else "") + (f" to {hi}" if hi is not None else "")
            raise Invalid(f, want, v)

    schema: dict[str, Any] = {"type": "integer"}
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return Check(check, schema)


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False) -> Check:
    def check(v: Any, f: str) -> None:
        bad = not _is_num(v)
        if not bad and lo is not None:
            bad = v <= lo if lo_open else v < lo
        if not bad and hi is not None:
            bad = v > hi
        if bad:
            rng = f" from {lo:g} to {hi:g}" if lo is not None and hi is not None else ""
            rng += " (not 0)" if lo_open and lo == 0 and not rng else ""
            raise Invalid(f, f"a number{rng}", v)

    schema: dict[str, Any] = {"type": "number"}
    if lo is not None:
        schema["exclusiveMinimum" if lo_open else "minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return Check(check, schema)


def _boolean(v: Any, f: str) -> None:
    if not isinstance(v, bool):
        raise Invalid(f, "true or false", v)


boolean = Check(_boolean, {"type": "boolean"})
anything = Check(lambda v, f: None, {})


def one_of(*choices: Any) -> Check:
    def check(v: Any, f: str) -> None:
        if not isinstance(v, (str, int, type(None))) or v not in choices or isinstance(v, bool):
            raise Invalid(f, "one of " + ", ".join(map(str, choices)), v)

    return Check(check, {"enum": list(choices)})


def optional(inner: Check) -> Check:
    """``inner`` or null."""

    def check(v: Any, f: str) -> None:
        if v is not None:
            inner(v, f)

    def build(v: Any) -> Any:
        return None if v is None else inner.build(v)

    return Check(check, {"anyOf": [{"type": "null"}, inner.schema]}, build)


def either(*options: Check, want: str) -> Check:
    def check(v: Any, f: str) -> None:
        for option in options:
            try:
                option(v, f)
                return
            except Invalid:
                continue
        raise Invalid(f, want, v)

    def build(v: Any) -> Any:
        for option in options:
            try:
                option(v, "")
            except Invalid:
                continue
            return option.build(v)
        raise AssertionError("build of an unchecked value")

    return Check(check, {"anyOf": [o.schema for o in options]}, build)


def list_of(inner: Check, *, length: int | None = None, max_len: int = MAX_LIST, what: str = "a list") -> Check:
    def check(v: Any, f: str) -> None:
        if not isinstance(v, list) or (length is not None and len(v) != length) or len(v) > max_len:
            raise Invalid(f, what if length is None else f"a list of {length}", v)
        for i, item in enumerate(v):
            inner(item, f"{f}[{i}]")

    schema: dict[str, Any] = {"type": "array", "items": inner.schema}
    if length is not None:
        schema.update(minItems=length, maxItems=length)
    else:
        schema["maxItems"] = max_len
    return Check(check, schema, lambda v: tuple(inner.build(x) for x in v))


def refine(base: Check, test: Callable[[Any], bool], want: str, schema: dict[str, Any]) -> Check:
    """``base``, and then ``test(value)`` must hold (else Invalid with ``want``); ``schema`` replaces base's."""

    def check(v: Any, f: str) -> None:
        base(v, f)
        if not test(v):
            raise Invalid(f, want, v)

    return Check(check, schema, base.build)


def obj(
    fields: dict[str, Check],
    *,
    optional_keys: tuple[str, ...] = (),
    closed: bool = False,
    build: Callable[[Any], Any] = _copy,
    doc: str = "",
) -> Check:
    """A JSON object with ``fields`` (required unless in ``optional_keys``); ``closed`` allows no others."""

    def check(v: Any, f: str) -> None:
        if not isinstance(v, dict):
            raise Invalid(f, "an object", v)
        for key, inner in fields.items():
            sub = f"{f}.{key}" if f else key
            if key not in v:
                if key in optional_keys:
                    continue
                raise Invalid(sub, "present", None)
            inner(v[key], sub)
        if closed:
            extra = sorted(set(v) - set(fields))
            if extra:
                raise Invalid(f"{f}.{extra[0]}", "absent (not a field of this schema)", v[extra[0]])

    schema: dict[str, Any] = {"type": "object"}
    if doc:
        schema["description"] = doc
    schema["properties"] = {key: inner.schema for key, inner in fields.items()}
    schema["required"] = [key for key in fields if key not in optional_keys]
    if closed:
        schema["additionalProperties"] = False
    return Check(check, schema, build)


def dict_of(value: Check, *, max_len: int = MAX_LIST) -> Check:
    def check(v: Any, f: str) -> None:
        if not isinstance(v, dict) or len(v) > max_len:
            raise Invalid(f, "an object", v)
        for key, item in v.items():
            value(item, f"{f}.{key}")

    schema = {"type": "object", "additionalProperties": value.schema, "maxProperties": max_len}
    return Check(check, schema, lambda v: {k: value.build(x) for k, x in v.items()})


def safe_name(name: Any) -> str | None:
    """Why ``name`` is not a safe bundle file name (relative, normalised, '/'-separated), or None."""
    if not isinstance(name, str) or not name:
        return "is empty or not a string"
    if "\\" in name or ":" in name or "\x00" in name:
        return "has a backslash, a drive letter or a NUL"
    if name.startswith("/"):
        return "is an absolute path"
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return "is not a normalised relative path (empty, '.' or '..' parts)"
    if len(name) > MAX_NAME:
        return "is too long"
    return None


_NAME_SCHEMA = {"type": "string", "pattern": SAFE_NAME_PATTERN, "maxLength": MAX_NAME}


def _bundle_file(v: Any, f: str) -> None:
    reason = safe_name(v)
    if reason:
        raise Invalid(f, "a relative file name inside the bundle", v)


bundle_file = Check(_bundle_file, dict(_NAME_SCHEMA))


def _sha_check(v: Any, f: str) -> None:
    if not isinstance(v, str) or not SHA256.fullmatch(v):
        raise Invalid(f, "64 lowercase hex digits", v)


sha256 = Check(_sha_check, {"type": "string", "pattern": "^[0-9a-f]{64}$"})

_POSITIVE = {"type": "integer", "minimum": 1}
shape = refine(
    list_of(integer(), length=4),
    lambda v: (v[0] == -1 or v[0] >= 1) and all(d >= 1 for d in v[1:]),
    "4 positive integers (the batch may be -1)",
    {
        "type": "array",
        "prefixItems": [{"anyOf": [{"const": -1}, _POSITIVE]}, _POSITIVE, _POSITIVE, _POSITIVE],
        "items": False,
        "minItems": 4,
    },
)
std = refine(
    list_of(number(), length=3),
    lambda v: all(x != 0 for x in v),
    "three non-zero numbers",
    {"type": "array", "items": {"type": "number", "not": {"const": 0}}, "minItems": 3, "maxItems": 3},
)


def files_of(entry: Check) -> Check:
    """The ``files`` table: safe names other than the manifest's, each to an ``entry``."""
    table = dict_of(entry)

    def check(v: Any, f: str) -> None:
        table(v, f)
        for name in v:
            reason = safe_name(name)
            if reason or name == MANIFEST:
                raise Invalid(f"{f}.{name}" if name else f, "a relative file name inside the bundle", name)

    schema = dict(table.schema)
    schema["propertyNames"] = {**_NAME_SCHEMA, "not": {"const": MANIFEST}}
    return Check(check, schema, table.build)
