"""The bundle manifest: its schema version, required fields and checks.

``manifest.json`` is the bundle's contract with the device. Its fields are documented in
docs/bundle.md; this module is the one place that knows the schema version.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgekit.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED = (
    "schema_version", "edgekit_version", "created", "model", "input", "output", "preprocess", "labels",
    "postprocess", "target", "backend", "precision", "quantization", "accuracy", "latency", "selftest",
    "files",
)  # fmt: skip


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def dumps(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=False) + "\n"


def validate(manifest: Any, *, source: str) -> dict[str, Any]:
    """Check the schema version and required fields; return the manifest."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{source}: manifest.json is not a JSON object; the bundle is damaged, recompile it")
    version = manifest.get("schema_version")
    if not isinstance(version, int):
        raise BundleError(f"{source}: manifest.json has no schema_version; it is not an edgekit bundle")
    if version > SCHEMA_VERSION:
        raise BundleError(
            f"{source}: bundle schema version {version} is newer than this edgekit reads "
            f"({SCHEMA_VERSION}); upgrade edgekit on this device"
        )
    if version < 1:
        raise BundleError(f"{source}: bundle schema version {version} is not supported; recompile the bundle")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise BundleError(
            f"{source}: manifest.json lacks the field '{missing[0]}'; the bundle is damaged, recompile it"
        )
    return manifest


def bundle_hash(manifest_text: str) -> str:
    """The bundle's identity: the sha256 of its manifest, which holds the sha256 of every other file."""
    return hashlib.sha256(manifest_text.encode("utf-8")).hexdigest()
