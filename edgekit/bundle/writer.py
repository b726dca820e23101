"""Write a bundle atomically.

The backend writes into a hidden staging folder beside the output. Only when the manifest is complete
is the staging folder renamed into place, so a failed or interrupted compile leaves no half-written
bundle and leaves a previous bundle at the same path untouched.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from edgekit.bundle.manifest import MANIFEST, dumps, file_entry
from edgekit.errors import UsageError


def check_output_path(out: Path, *, pack: bool) -> None:
    """Fail before any work if ``out`` cannot become a bundle."""
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
        ) from None
    if out.is_dir():
        if pack:
            raise UsageError(f"'{out}' is a folder; --pack writes one file, so choose another -o")
        if any(out.iterdir()) and not (out / MANIFEST).is_file():
            raise UsageError(f"'{out}' is a non-empty folder that is not a bundle; choose another -o")
    elif out.exists():
        if not pack:
            raise UsageError(f"'{out}' is a file; a bundle is written as a folder (or use --pack)")
        if not zipfile.is_zipfile(out):
            raise UsageError(f"'{out}' exists and is not a packed bundle; choose another -o")


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

    def commit(self, manifest: dict[str, Any]) -> Path:
        """Checksum every staged file into the manifest, write it, and move the bundle into place."""
        manifest["files"] = {
            str(p.relative_to(self.staging)): file_entry(p)
            for p in sorted(self.staging.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        tmp = self.staging / (MANIFEST + ".tmp")
        tmp.write_text(dumps(manifest), encoding="utf-8")
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
