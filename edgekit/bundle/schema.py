"""The manifest's JSON Schema (draft 2020-12), generated from the typed manifest (edgekit/bundle/types.py).

The generated file ships in the wheel as ``edgekit/bundle/manifest.schema.json``; a test regenerates it and
compares, so it cannot drift from the types. Regenerate it after changing a type with::

    python -m edgekit.bundle.schema

The schema states the same rules as ``Manifest.from_dict`` except the few no JSON Schema can: a number must
be finite, an integer must not be written as ``1.0``, and ``target.backend_options`` must be options of the
named backend. ``from_dict`` is what edgekit itself applies.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from edgekit.bundle.types import SCHEMA_VERSION, Manifest

DRAFT = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FILE = "manifest.schema.json"


def manifest_schema() -> dict[str, Any]:
    """The JSON Schema of manifest.json for this edgekit's ``SCHEMA_VERSION``, generated from the types."""
    defs: dict[str, Any] = {}
    body = _hoist(Manifest.CHECK.schema, defs, top=True)
    body.pop("title", None)
    return {
        "$schema": DRAFT,
        "title": f"edgekit bundle manifest.json, schema version {SCHEMA_VERSION}",
        **body,
        "$defs": dict(sorted(defs.items())),
    }


def _hoist(node: Any, defs: dict[str, Any], *, top: bool = False) -> Any:
    """Copy ``node`` with every record's schema (a dataclass of types.py, with a title) moved into ``defs``."""
    if isinstance(node, list):
        return [_hoist(v, defs) for v in node]
    if not isinstance(node, dict):
        return node
    copied = {k: _hoist(v, defs) for k, v in node.items()}
    title = node.get("title")
    if top or not isinstance(title, str):
        return copied
    defs[title] = copied
    return {"$ref": f"#/$defs/{title}"}


def schema_text() -> str:
    """``manifest_schema()`` as the shipped file's text."""
    return json.dumps(manifest_schema(), indent=2, ensure_ascii=False) + "\n"


def shipped_schema_text() -> str:
    """The schema file shipped in the package (what ``python -m edgekit.bundle.schema`` last wrote)."""
    return resources.files("edgekit.bundle").joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Write the schema file beside this module (``--check``: only report whether it is up to date)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(__file__).with_name(SCHEMA_FILE)
    text = schema_text()
    current = path.read_text(encoding="utf-8") if path.is_file() else None
    if "--check" in args:
        if current != text:
            print(f"{path} is out of date; run: python -m edgekit.bundle.schema", file=sys.stderr)
            return 1
        return 0
    if current != text:
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
