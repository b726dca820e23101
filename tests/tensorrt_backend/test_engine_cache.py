"""The engine cache on a real file system: keying, reuse, invalidation, corrupt entries, atomic replacement.

No TensorRT here, so these tests stand in for the two TensorRT calls the cache makes: building a
serialized engine and ``Runtime.deserialize_cuda_engine``. The stand-in (``StandInTensorRT``) is minimal
and lives only in this file: its "engine" is bytes naming the TensorRT version that built it, and, like
TensorRT, it refuses (returns None) an engine serialized by another version or damaged. Everything else
(files, headers, checksums, renames) is the real code on a real folder.
"""

from __future__ import annotations

import json
import os

import pytest

from edgekit.backends.tensorrt.engine_cache import MAGIC, EngineCache, EngineKey, default_cache_dir
from edgekit.errors import BundleError


class StandInTensorRT:
    """The minimum of TensorRT the cache needs: serialize an engine, and deserialize (or refuse) one."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.builds = 0

    def build(self) -> bytes:
        self.builds += 1
        return f"ENGINE|{self.version}|build {self.builds}|".encode() + bytes(range(256))

    def deserialize(self, payload: bytes):
        parts = payload.split(b"|")
        if len(parts) < 4 or parts[0] != b"ENGINE" or parts[1].decode() != self.version:
            return None
        return {"engine": payload}


def key(**changes) -> EngineKey:
    base = dict(gpu_name="Orin", compute_capability="8.7", tensorrt_version="10.3.0", bundle_hash="ab" * 32)
    return EngineKey(**{**base, **changes})


def load(cache: EngineCache, trt: StandInTensorRT, k: EngineKey, **kw):
    return cache.load_or_build(k, build=trt.build, deserialize=trt.deserialize, **kw)


def test_first_load_builds_then_reuses(tmp_path):
    cache, trt = EngineCache(tmp_path / "engines"), StandInTensorRT("10.3.0")
    first = load(cache, trt, key())
    assert first.status == "built" and trt.builds == 1 and first.path.is_file()
    second = load(cache, trt, key())
    assert second.status == "reused" and trt.builds == 1
    assert second.engine == first.engine
    assert sorted(p.name for p in (tmp_path / "engines").iterdir()) == [first.path.name]


def test_entry_holds_header_with_every_key_field(tmp_path):
    cache = EngineCache(tmp_path)
    path = load(cache, StandInTensorRT("10.3.0"), key()).path
    data = path.read_bytes()
    assert data.startswith(MAGIC)
    header = json.loads(data[len(MAGIC) :].split(b"\n", 1)[0])
    assert header["key"] == {"gpu_name": "Orin", "compute_capability": "8.7", "tensorrt_version": "10.3.0",
                             "bundle_hash": "ab" * 32, "plan_hash": ""}  # fmt: skip
    assert header["size"] == len(data.split(b"\n", 2)[2])


def test_tensorrt_upgrade_rebuilds_and_replaces_the_entry(tmp_path):
    """A JetPack upgrade: same bundle, same GPU, new TensorRT -> the old entry is not trusted."""
    cache = EngineCache(tmp_path)
    old = load(cache, StandInTensorRT("8.6.2"), key(tensorrt_version="8.6.2"))
    trt10 = StandInTensorRT("10.3.0")
    new = load(cache, trt10, key(tensorrt_version="10.3.0"))
    assert new.path == old.path  # one entry per bundle and GPU: replaced, not piled up
    assert new.status == "rebuilt: the cached engine was built for another tensorrt version (8.6.2)"
    assert trt10.builds == 1 and load(cache, trt10, key()).status == "reused"


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"bundle_hash": "cd" * 32}, "built"),  # another bundle: another entry
        ({"gpu_name": "Xavier", "compute_capability": "7.2"}, "built"),  # another GPU: another entry
        ({"compute_capability": "8.6"}, "built"),
        ({"plan_hash": "0123456789abcdef"}, "rebuilt: the cached engine was built for another plan hash ()"),
    ],
)
def test_every_key_field_invalidates(tmp_path, change, expect):
    cache, trt = EngineCache(tmp_path), StandInTensorRT("10.3.0")
    load(cache, trt, key())
    assert load(cache, trt, key(**change)).status == expect
    assert trt.builds == 2


def test_a_header_that_lies_about_its_key_is_rebuilt(tmp_path):
    """An entry copied from another device under this device's file name: the header decides, not the name."""
    cache, trt = EngineCache(tmp_path), StandInTensorRT("10.3.0")
    path = load(cache, trt, key()).path
    other = EngineCache(tmp_path / "other")
    foreign = load(other, trt, key(gpu_name="Orin", compute_capability="8.7", tensorrt_version="10.3.0",
                                   bundle_hash="ab" * 32, plan_hash="feed")).path  # fmt: skip
    os.replace(foreign, path)
    assert load(cache, trt, key()).status.startswith("rebuilt: the cached engine was built for another plan hash")


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (lambda b: b[:-10], "size or checksum mismatch"),  # truncated
        (lambda b: b[: len(MAGIC) + 40], "bad header"),  # cut inside the header
        (lambda b: b[:-1] + bytes([b[-1] ^ 0xFF]), "size or checksum mismatch"),
        (lambda b: b"garbage" + b, "not an edgekit engine file"),
        (lambda b: MAGIC + b"{not json\n" + b, "bad header"),
        (lambda b: b"", "not an edgekit engine file"),
    ],
)
def test_corrupt_entries_are_rebuilt_never_trusted(tmp_path, damage, why):
    cache, trt = EngineCache(tmp_path), StandInTensorRT("10.3.0")
    path = load(cache, trt, key()).path
    path.write_bytes(damage(path.read_bytes()))
    again = load(cache, trt, key())
    assert again.status == f"rebuilt: the cached engine is corrupt ({why})"
    assert trt.builds == 2
    assert load(cache, trt, key()).status == "reused"  # and the rebuilt entry is sound


def test_engine_tensorrt_refuses_is_rebuilt(tmp_path):
    """The header is sound but TensorRT itself will not deserialize the payload: rebuild."""
    cache = EngineCache(tmp_path)
    load(cache, StandInTensorRT("10.3.0"), key())
    header_ok_but_foreign = StandInTensorRT("10.3.0")
    header_ok_but_foreign.version = "10.3.1"  # deserializes only its own engines
    result = load(cache, header_ok_but_foreign, key())
    assert result.status == "rebuilt: TensorRT refused the cached engine"


def test_failed_build_leaves_the_old_entry_and_no_temporary_file(tmp_path):
    cache, trt = EngineCache(tmp_path), StandInTensorRT("10.3.0")
    path = load(cache, trt, key()).path
    before = path.read_bytes()

    def broken_build() -> bytes:
        raise BundleError("TensorRT could not build the engine")

    with pytest.raises(BundleError):
        cache.load_or_build(key(), build=broken_build, deserialize=trt.deserialize, rebuild=True)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_replacement_is_atomic_the_old_entry_stays_whole_until_the_rename(tmp_path):
    """While the new engine is built (minutes on a Jetson) another process still reads the old entry."""
    cache, trt = EngineCache(tmp_path), StandInTensorRT("10.3.0")
    path = load(cache, trt, key()).path
    old_inode, old_bytes = path.stat().st_ino, path.read_bytes()
    seen = {}

    def build_while_watching() -> bytes:
        seen["during"] = EngineCache(tmp_path).read(key())  # a second reader, mid-build
        return trt.build()

    result = cache.load_or_build(key(), build=build_while_watching, deserialize=trt.deserialize, rebuild=True)
    payload, status = seen["during"]
    assert status == "reused" and payload == old_bytes.split(b"\n", 2)[2]
    assert result.status == "rebuilt: a rebuild was asked for"
    assert path.stat().st_ino != old_inode  # a new file renamed over the old one, not rewritten in place
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_a_leftover_temporary_file_is_ignored(tmp_path):
    """A crash mid-write leaves '.<name>.<random>.tmp'; it is never read as an entry."""
    cache, trt = EngineCache(tmp_path), StandInTensorRT("10.3.0")
    (tmp_path / f".{key().filename()}.x1y2.tmp").write_bytes(MAGIC + b"half")
    assert load(cache, trt, key()).status == "built"


def test_cache_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_ENGINE_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("EDGEKIT_ENGINE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "edgekit" / "engines"


def test_file_name_is_safe_and_names_bundle_and_gpu():
    name = key(gpu_name="NVIDIA Jetson/Orin (nvgpu)").filename()
    assert name == f"{'ab' * 8}-nvidia-jetson-orin-nvgpu-sm87.engine"
