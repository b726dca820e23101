"""Write a bundle atomically.

The backend writes into a hidden staging folder beside the output. Only when the manifest is complete
is the staging folder renamed into place, so a failed or interrupted compile leaves no half-written
bundle and leaves a previous bundle at the same path untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from edgekit.bundle.manifest import MANIFEST, dumps, file_entry
from edgekit.bundle.reader import MAX_MANIFEST_BYTES
from edgekit.bundle.types import Manifest
from edgekit.errors import BundleError, UsageError


def check_output_path(out: Path, *, pack: bool) -> None:
    """Fail before any work if ``out`` cannot become a bundle.

    An existing ``out`` is replaced only when it is a previous edgekit bundle, recognised by its manifest
    (it parses and validates against the schema) and holding only the files that manifest lists, so that
    nothing else of the user's is deleted. Any other non-empty folder or file is refused.
    """
    parent = out.resolve().parent
    if not parent.is_dir():
        raise UsageError(f"cannot write '{out}': folder '{parent}' does not exist; create it or choose another -o")
    try:  # a real probe: permission bits do not tell root, read-only or special file systems apart
        fd, probe = tempfile.mkstemp(prefix=".edgekit-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(
            f"cannot write '{out}': folder '{parent}' is not writable ({exc.strerror}); choose another -o"
        ) from exc
    if out.is_symlink():
        raise UsageError(f"'{out}' is a symbolic link; choose another -o or remove it")
    if out.is_dir():
        if pack:
            raise UsageError(f"'{out}' is a folder; --pack writes one file, so choose another -o")
        if any(out.iterdir()):
            reason = _not_a_folder_bundle(out)
            if reason:
                raise UsageError(
                    f"'{out}' is a non-empty folder that is not a bundle ({reason}); choose another -o or remove it"
                )
    elif out.exists():
        if not pack:
            raise UsageError(f"'{out}' is a file; a bundle is written as a folder (or use --pack)")
        reason = _not_a_packed_bundle(out)
        if reason:
            raise UsageError(f"'{out}' exists and is not a packed bundle ({reason}); choose another -o or remove it")


def _manifest_reason(text: bytes, source: str) -> tuple[str | None, Manifest | None]:
    try:
        manifest = Manifest.from_dict(json.loads(text.decode("utf-8")), source=source)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        return "its manifest.json is not edgekit's", None
    except BundleError:
        return "its manifest.json is not an edgekit manifest", None
    return None, manifest


def _not_a_folder_bundle(out: Path) -> str | None:
    """Why ``out`` is not a previous edgekit bundle that may be replaced whole, or None."""
    path = out / MANIFEST
    if path.is_symlink() or not path.is_file():
        return "it has no manifest.json"
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        return "its manifest.json is not edgekit's"
    reason, manifest = _manifest_reason(path.read_bytes(), str(out))
    if reason:
        return reason
    listed = set(manifest.files) | {MANIFEST}
    for folder, dirs, files in os.walk(out, followlinks=False):
        for name in sorted(files + [d for d in dirs if os.path.islink(os.path.join(folder, d))]):
            rel = os.path.relpath(os.path.join(folder, name), out).replace(os.sep, "/")
            if rel not in listed:
                return f"it holds '{rel}', which its manifest does not list"
    return None


def _not_a_packed_bundle(out: Path) -> str | None:
    if not zipfile.is_zipfile(out):
        return "it is not a zip file"
    try:
        with zipfile.ZipFile(out) as zf:
            try:
                info = zf.getinfo(MANIFEST)
            except KeyError:
                return "it has no manifest.json"
            if info.file_size > MAX_MANIFEST_BYTES:
                return "its manifest.json is not edgekit's"
            reason, manifest = _manifest_reason(zf.read(info), str(out))
            if reason:
                return reason
            listed = set(manifest.files) | {MANIFEST}
            for name in zf.namelist():
                if not name.endswith("/") and name not in listed:
                    return f"it holds '{name}', which its manifest does not list"
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError):
        return "it is a damaged zip file"
    return None


class BundleWriter:
    """Context manager: ``with BundleWriter(out) as w: ...write into w.staging...; w.commit(manifest)``."""

    def __init__(self, out: str | Path, *, pack: bool = False) -> None:
        self.out = Path(out)
        self.pack = pack
        check_output_path(self.out, pack=pack)
        self.staging = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.resolve().parent))
        self.committed = False

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self, manifest: dict[str, Any] | Manifest) -> Path:
        """Checksum every staged file into the manifest, validate it, write it, and move the bundle into place.

        A dict manifest gets its ``files`` filled in place. What is written is the typed manifest's JSON, so a
        bundle that a reader would refuse is never put in place.
        """
        data = manifest.to_dict() if isinstance(manifest, Manifest) else manifest
        data["files"] = {
            str(p.relative_to(self.staging)): file_entry(p)
            for p in sorted(self.staging.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        try:
            typed = Manifest.from_dict(data, source=str(self.out))
        except BundleError as exc:
            raise BundleError(f"edgekit compiled an invalid manifest, a bug in edgekit: {exc}") from exc
        tmp = self.staging / (MANIFEST + ".tmp")
        tmp.write_text(dumps(typed.to_dict()), encoding="utf-8")
        _fsync(tmp)
        os.replace(tmp, self.staging / MANIFEST)
        if self.pack:
            self._commit_packed()
        else:
            self._commit_folder()
        self.committed = True
        return self.out

    def _commit_folder(self) -> None:
        if not self.out.exists():
            os.replace(self.staging, self.out)
            return
        old = self.out.with_name(f".{self.out.name}.old-{os.getpid()}")
        os.replace(self.out, old)
        try:
            os.replace(self.staging, self.out)
        except BaseException:
            os.replace(old, self.out)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def _commit_packed(self) -> None:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.out.name}.", suffix=".zip.tmp", dir=self.out.resolve().parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
                for p in sorted(self.staging.rglob("*")):
                    if p.is_file():
                        zf.write(p, str(p.relative_to(self.staging)))
            _fsync(tmp)
            os.replace(tmp, self.out)
        finally:
            tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())
