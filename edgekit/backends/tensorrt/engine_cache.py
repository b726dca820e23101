"""The on-disk TensorRT engine cache: built once on the device, reused, never trusted blindly.

An engine is valid only for one GPU model, one TensorRT version and one bundle, so an entry is keyed by
all of them (and by the build plan). One file per bundle and GPU, named from the bundle hash and the GPU:

    EDGEKIT-TRT-ENGINE 1\\n
    {"key": {...}, "sha256": "...", "size": N, "created": "..."}\\n
    <the serialized engine, N bytes>

Loading checks the magic line, the header, every key field (a JetPack upgrade changes the TensorRT
version, so the entry is rebuilt and replaced) and the payload's sha256; TensorRT's own deserializer has
the last word. Anything that fails is rebuilt. Entries are written to a temporary file in the same
folder, fsynced and renamed over the old one, so a reader sees the old entry or the new one, never half
of one, and a failed build leaves the old entry in place. Standard library only.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import BundleError

MAGIC = b"EDGEKIT-TRT-ENGINE 1\n"
ENV_VAR = "EDGEKIT_ENGINE_CACHE"


@dataclass(frozen=True, kw_only=True)
class EngineKey:
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    bundle_hash: str
    plan_hash: str = ""

    def filename(self) -> str:
        gpu = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu_name).strip("-").lower() or "gpu"
        return f"{self.bundle_hash[:16]}-{gpu}-sm{self.compute_capability.replace('.', '')}.engine"


def default_cache_dir() -> Path:
    """$EDGEKIT_ENGINE_CACHE, else $XDG_CACHE_HOME/edgekit/engines, else ~/.cache/edgekit/engines."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgekit" / "engines"


def plan_hash(plan: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Loaded:
    """What the cache gave back: the deserialized engine, and how ("reused", "built", "rebuilt: why")."""

    engine: Any
    status: str
    path: Path


class EngineCache:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()

    def path(self, key: EngineKey) -> Path:
        return self.root / key.filename()

    def read(self, key: EngineKey) -> tuple[bytes | None, str]:
        """The cached payload for ``key``, or None and why it cannot be used."""
        path = self.path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None, "no cached engine"
        except OSError as exc:
            return None, f"the cached engine cannot be read ({exc.strerror})"
        if not data.startswith(MAGIC):
            return None, "the cached engine is corrupt (not an edgekit engine file)"
        header_line, sep, payload = data[len(MAGIC) :].partition(b"\n")
        try:
            header = json.loads(header_line) if sep else None
        except (json.JSONDecodeError, UnicodeDecodeError):
            header = None
        if not isinstance(header, dict) or not isinstance(header.get("key"), dict):
            return None, "the cached engine is corrupt (bad header)"
        cached, wanted = header["key"], asdict(key)
        changed = [k for k in wanted if cached.get(k) != wanted[k]]
        if changed:
            field = changed[0]
            return None, f"the cached engine was built for another {field.replace('_', ' ')} ({cached.get(field)})"
        if len(payload) != header.get("size") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            return None, "the cached engine is corrupt (size or checksum mismatch)"
        return payload, "reused"

    def write(self, key: EngineKey, payload: bytes) -> Path:
        """Store ``payload`` for ``key`` atomically (temp file in the same folder, fsync, rename)."""
        self.root.mkdir(parents=True, exist_ok=True)
        header = {
            "key": asdict(key),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "size": len(payload),
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        path = self.path(key)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a service user may load what root built
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)
        return path

    def load_or_build(
        self,
        key: EngineKey,
        *,
        build: Callable[[], bytes],
        deserialize: Callable[[bytes], Any],
        rebuild: bool = False,
        log: Callable[[str], None] = lambda _msg: None,
    ) -> Loaded:
        """Reuse the cached engine for ``key`` if it is sound and deserializes; else build, store, load."""
        path = self.path(key)
        payload, why = (None, "a rebuild was asked for") if rebuild else self.read(key)
        if payload is not None:
            engine = deserialize(payload)
            if engine is not None:
                return Loaded(engine, "reused", path)
            why = "TensorRT refused the cached engine"
        log(f"{why}: building the TensorRT engine (first start on this device; this takes minutes on a Jetson)")
        payload = build()
        engine = deserialize(payload)
        if engine is None:
            raise BundleError("TensorRT could not load the engine it has just built; check the TensorRT log above")
        self.write(key, payload)
        return Loaded(engine, "built" if why == "no cached engine" else f"rebuilt: {why}", path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["ENV_VAR", "MAGIC", "EngineCache", "EngineKey", "Loaded", "default_cache_dir", "plan_hash"]
