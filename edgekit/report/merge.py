"""Fold ``edgekit bench --json`` results from devices into a report's records.

A bench result names the bundle it measured by the bundle's hash (the sha256 of its manifest) and the
model's source sha256. It is merged into the record whose bundle has that hash; a result from another
model, from a bundle this report did not build, or in a schema this edgekit does not know is refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edgekit.errors import DataError, UsageError
from edgekit.measure.bench import SCHEMA, SCHEMA_VERSION

REQUIRED = {
    "bundle": ("hash", "model_sha256", "target", "precision"),
    "machine": ("summary",),
    "latency": ("p50_ms", "p90_ms", "p99_ms", "mean_ms"),
}


def load_bench_file(path: str | Path) -> dict[str, Any]:
    """Read and check one bench result; raise a one-line error naming the file and the fix."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--merge file '{path}' does not exist; produce it with: edgekit bench BUNDLE --json > {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"--merge file '{path}' is not JSON ({exc}); pass the output of edgekit bench --json") from exc
    schema = doc.get("schema") if isinstance(doc, dict) else None
    if schema != SCHEMA:
        raise DataError(
            f"--merge file '{path}' is not an edgekit bench result (schema {schema!r}, expected {SCHEMA!r}); "
            "produce one with: edgekit bench BUNDLE --json"
        )
    version = doc.get("schema_version")
    if not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise DataError(
            f"--merge file '{path}' has bench schema version {version!r}, which this edgekit does not know "
            f"(it reads versions up to {SCHEMA_VERSION}); run the same edgekit version on the device and here"
        )
    for section, keys in REQUIRED.items():
        missing = [k for k in keys if not isinstance(doc.get(section), dict) or k not in doc[section]]
        if missing:
            raise DataError(
                f"--merge file '{path}' lacks '{section}.{missing[0]}'; it is damaged, run edgekit bench again"
            )
    return doc


def attach(
    docs: list[tuple[Path, dict[str, Any]]], records: dict[str, dict[str, Any]], *, model_sha256: str, model: str
) -> list[str]:
    """Put each bench result into the record of the bundle it measured; return the ids merged into."""
    merged = []
    for path, doc in docs:
        b = doc["bundle"]
        if b["model_sha256"] != model_sha256:
            raise UsageError(
                f"--merge file '{path}' measured a bundle of another model ('{b.get('model')}', source sha256 "
                f"{b['model_sha256'][:12]}…), not of {model} (sha256 {model_sha256[:12]}…); "
                "bench a bundle from this report"
            )
        match = [r for r in records.values() if r.get("status") == "ok" and r["bundle"]["hash"] == b["hash"]]
        if not match:
            raise UsageError(
                f"--merge file '{path}' measured bundle {b['hash'][:12]}… ({b['target']}, {b['precision']}, built "
                f"{b.get('created', '?')}), which is not a bundle of this report; bench the bundle the report wrote "
                "in its bundles/ folder (a re-run without --resume builds new bundles)"
            )
        match[0]["merged"] = {"file": path.name, "bench": doc}
        merged.append(match[0]["id"])
    return merged
