"""The bundle manifest: validation, checksums, the files it names.

``manifest.json`` is the bundle's contract with the device. Its fields are defined once, as the typed
dataclasses of ``edgekit.bundle.types`` (which holds ``SCHEMA_VERSION``); ``SCHEMA`` is derived from them and
docs/bundle.md describes them.

``validate`` checks the type and range of every field that the runtime, the backends, the daemon's
summary and ``edgekit inspect`` read, so a damaged or hostile manifest is one ``BundleError`` line naming
the field, never a traceback later. ``named_files`` lists every bundle file the manifest names, so the
reader can require each to be a listed, checksummed file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgekit.bundle.checks import (  # noqa: F401 - the checks, re-exported under the names they have always had
    MANIFEST,
    MAX_LIST,
    SHA256,
    Check,
    Invalid,
    _Invalid,
    _is_num,
    anything,
    boolean,
    bundle_file,
    dict_of,
    either,
    integer,
    list_of,
    number,
    obj,
    one_of,
    optional,
    safe_name,
    string,
)
from edgekit.bundle.checks import shown as _shown
from edgekit.bundle.types import DTYPES, MAX_SELFTEST_TOLERANCE, SCHEMA_VERSION, Manifest  # noqa: F401
from edgekit.errors import BundleError, EdgekitError

REQUIRED = Manifest.required_keys()
TAMPERED = "the bundle is damaged or was tampered with, recompile it"
SCHEMA = Manifest.CHECK  # derived from the typed manifest's fields (edgekit/bundle/types.py)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def dumps(manifest: dict[str, Any] | Manifest) -> str:
    """manifest.json's text, as the writer writes it."""
    data = manifest.to_dict() if isinstance(manifest, Manifest) else manifest
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def _field_error(source: str, exc: _Invalid) -> BundleError:
    if exc.want == "present":
        return BundleError(f"{source}: manifest.json lacks the field '{exc.field}'; {TAMPERED}")
    return BundleError(f"{source}: manifest field '{exc.field}' must be {exc.want}, got {_shown(exc.got)}; {TAMPERED}")


def validate(manifest: Any, *, source: str) -> dict[str, Any]:
    """Check the schema version, then the type and range of every field; return the manifest."""
    if not isinstance(manifest, dict):
        raise BundleError(f"{source}: manifest.json is not a JSON object; the bundle is damaged, recompile it")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool):
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
    try:
        SCHEMA(manifest, "")
    except _Invalid as exc:
        raise _field_error(source, exc) from exc
    except RecursionError as exc:
        raise BundleError(f"{source}: manifest.json is nested too deeply; {TAMPERED}") from exc
    _check_backend_options(manifest, source=source)
    return manifest


def _check_backend_options(manifest: dict[str, Any], *, source: str) -> None:
    """A registered backend's options must build its typed options, as the runtime will build them (a
    backend not registered here is not checked: inspecting such a bundle works, loading it says why not)."""
    import dataclasses

    from edgekit import registry

    name = manifest["backend"]["name"]
    backend = registry.find(name)
    if backend is None:
        return
    cls = backend.options_type
    options = manifest["target"].get("backend_options", {})
    for f in dataclasses.fields(cls):
        if f.name not in options:
            continue
        value, field = options[f.name], f"target.backend_options.{f.name}"
        default = f.default
        try:
            if isinstance(default, bool):
                boolean(value, field)
            elif isinstance(default, int):
                integer()(value, field)
            elif isinstance(default, str):
                string(value, field)
            elif isinstance(default, tuple):
                list_of(string)(value, field)
        except _Invalid as exc:
            raise _field_error(source, exc) from exc
    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise BundleError(
            f"{source}: manifest field 'target.backend_options.{unknown[0]}' is not an option of backend "
            f"{name}; {TAMPERED}"
        )
    try:
        cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    except EdgekitError as exc:
        raise BundleError(f"{source}: manifest field 'target.backend_options': {exc}; {TAMPERED}") from exc


def named_files(manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(field, file name) for every bundle file the (validated) manifest names: the model file and the
    self-test, and the backend's own (``Backend.named_files``: OpenVINO's weights, TensorRT's build plan files)."""
    from edgekit import registry

    backend = manifest["backend"]
    named = [("backend.model_file", backend["model_file"]), ("selftest.file", manifest["selftest"]["file"])]
    found = registry.find(backend["name"])
    return named + (found.named_files(manifest) if found is not None else [])


def bundle_hash(manifest_text: str) -> str:
    """The bundle's identity: the sha256 of its manifest, which holds the sha256 of every other file."""
    return hashlib.sha256(manifest_text.encode("utf-8")).hexdigest()
