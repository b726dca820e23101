"""Open and verify a bundle: schema, then the sha256 of every file. Packed bundles are extracted safely."""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.bundle.manifest import MANIFEST, bundle_hash, sha256_file, validate
from edgekit.errors import BundleError, UsageError

MAX_UNPACKED_BYTES = 8 << 30


@dataclass
class OpenBundle:
    """A verified bundle on disk. ``close()`` removes the extraction folder of a packed bundle."""

    path: Path
    root: Path
    manifest: dict[str, Any]
    hash: str
    _tmp: Path | None = field(default=None, repr=False)

    def close(self) -> None:
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


def read_manifest(root: Path, *, source: str) -> tuple[dict[str, Any], str]:
    path = root / MANIFEST
    if not path.is_file():
        raise BundleError(
            f"{source}: no manifest.json; this is not an edgekit bundle (compile one with edgekit compile)"
        )
    text = path.read_text(encoding="utf-8")
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BundleError(
            f"{source}: manifest.json is not valid JSON ({exc.msg}); the bundle is damaged, recompile it"
        ) from None
    return validate(manifest, source=source), bundle_hash(text)


def verify_files(root: Path, manifest: dict[str, Any], *, source: str) -> None:
    """Every listed file exists with its size and sha256; no unlisted file is present."""
    listed = manifest["files"]
    for name, entry in listed.items():
        path = root / name
        if not path.is_file():
            raise BundleError(f"{source}: file '{name}' is missing; the bundle is incomplete, copy or recompile it")
        if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            raise BundleError(
                f"{source}: checksum mismatch for '{name}'; the file was changed or damaged, recompile the bundle"
            )
    for path in root.rglob("*"):
        rel = str(path.relative_to(root))
        if path.is_file() and rel != MANIFEST and rel not in listed and not path.name.startswith("."):
            raise BundleError(f"{source}: unexpected file '{rel}' not listed in the manifest; remove it or recompile")


def _extract(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        total = 0
        for info in zf.infolist():
            name = info.filename
            mode = info.external_attr >> 16
            if name.startswith(("/", "\\")) or ".." in Path(name).parts or ":" in name:
                raise BundleError(f"{archive}: unsafe path '{name}' in the packed bundle; refusing to extract it")
            if stat.S_ISLNK(mode):
                raise BundleError(f"{archive}: symbolic link '{name}' in the packed bundle; refusing to extract it")
            total += info.file_size
            if total > MAX_UNPACKED_BYTES:
                raise BundleError(f"{archive}: unpacks to more than {MAX_UNPACKED_BYTES >> 30} GiB; refusing")
        zf.extractall(dest)


def open_bundle(path: str | Path) -> OpenBundle:
    """Verify a bundle folder or packed file and return it; raise BundleError with the reason otherwise."""
    path = Path(path)
    source = str(path)
    if not path.exists():
        raise UsageError(f"bundle '{path}' does not exist; compile one with: edgekit compile MODEL -o {path}")
    tmp = None
    root = path
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise BundleError(f"{source}: not a bundle (neither a bundle folder nor a packed .zip bundle)")
        tmp = Path(tempfile.mkdtemp(prefix="edgekit-bundle-"))
        root = tmp
        try:
            _extract(path, tmp)
        except (zipfile.BadZipFile, OSError) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise BundleError(f"{source}: the packed bundle is damaged ({exc}); copy or recompile it") from None
        except BundleError:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    try:
        manifest, digest = read_manifest(root, source=source)
        verify_files(root, manifest, source=source)
    except BaseException:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return OpenBundle(path=path, root=root, manifest=manifest, hash=digest, _tmp=tmp)
