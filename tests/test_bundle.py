from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from support import CIFAR_SPEC, SAMPLE, run_cli

import edgekit
from edgekit.bundle.manifest import MANIFEST, file_entry
from edgekit.errors import BundleError, DataError


@pytest.fixture
def bundle(tiny_onnx, tmp_path):
    return edgekit.compile_model(tiny_onnx, target="cpu", precision="fp32", output=tmp_path / "b", spec=CIFAR_SPEC).path


def _rewrite_manifest(path, change):
    manifest = json.loads((path / MANIFEST).read_text())
    change(manifest)
    (path / MANIFEST).write_text(json.dumps(manifest))


def test_manifest_has_every_design_field(bundle):
    m = json.loads((bundle / MANIFEST).read_text())
    for key in ("schema_version", "model", "input", "preprocess", "labels", "postprocess", "target", "backend",
                "precision", "quantization", "accuracy", "files", "selftest", "edgekit_version"):  # fmt: skip
        assert key in m
    assert set(m["preprocess"]) == {"resize", "resize_mode", "crop", "color_order", "scale", "mean", "std"}
    assert m["target"]["toml"].startswith("#") and m["backend"]["version"]
    assert set(m["files"]) == {"model.onnx", "selftest.npz"}
    for name, entry in m["files"].items():
        assert entry == file_entry(bundle / name)


def test_tampered_file_is_refused(bundle):
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="checksum mismatch for 'model.onnx'"):
        edgekit.load_bundle(bundle)


def test_missing_and_unlisted_files_are_refused(bundle):
    (bundle / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match="unexpected file 'extra.bin'"):
        edgekit.load_bundle(bundle)
    (bundle / "extra.bin").unlink()
    (bundle / "selftest.npz").unlink()
    with pytest.raises(BundleError, match="'selftest.npz' is missing"):
        edgekit.load_bundle(bundle)


@pytest.mark.slow
def test_newer_schema_is_refused(bundle):
    _rewrite_manifest(bundle, lambda m: m.update(schema_version=99))
    res = run_cli("inspect", str(bundle))
    assert res.returncode == 1 and "schema version 99 is newer" in res.stderr and "upgrade edgekit" in res.stderr


def test_failing_self_test_is_refused(bundle):
    with np.load(bundle / "selftest.npz") as data:
        inputs, expected = data["inputs"], data["expected"]
    np.savez(bundle / "selftest.npz", inputs=inputs, expected=expected[:, ::-1].copy())
    _rewrite_manifest(bundle, lambda m: m["files"].update({"selftest.npz": file_entry(bundle / "selftest.npz")}))
    with pytest.raises(BundleError, match="self-test FAILED"):
        edgekit.load_bundle(bundle)
    with edgekit.load_bundle(bundle, self_test=False) as loaded:  # an explicit opt-out still loads
        assert loaded.selftest_result is None


def test_failed_compile_leaves_previous_bundle_intact(bundle, tiny_onnx, tmp_path):
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError):
        edgekit.compile_model(tiny_onnx, target="cpu", precision="int8", output=bundle, spec=CIFAR_SPEC, calib=empty)
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "empty"]


def test_successful_recompile_replaces_the_bundle(bundle, tiny_onnx, tmp_path):
    edgekit.compile_model(tiny_onnx, target="cpu", precision="fp16", output=bundle, spec=CIFAR_SPEC)
    assert json.loads((bundle / MANIFEST).read_text())["precision"]["requested"] == "fp16"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


@pytest.mark.slow
def test_interrupted_compile_leaves_no_partial_bundle(bundle, tiny_onnx, tmp_path):
    before = (bundle / MANIFEST).read_bytes()
    cmd = [sys.executable, "-m", "edgekit", "compile", str(tiny_onnx), "-t", "intel-cpu", "-p", "int8",
           "--calib", str(SAMPLE / "calib"), "--val", str(SAMPLE / "test"), "-o", str(bundle),
           "--resize", "32,32"]  # fmt: skip
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # wait until the backend is writing into its staging folder
        if "compiling for" in line:
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (bundle / MANIFEST).read_bytes() == before
    edgekit.load_bundle(bundle).close()


def test_packed_bundle_with_unsafe_paths_is_refused(bundle, tmp_path):
    evil = tmp_path / "evil.edgekit"
    with zipfile.ZipFile(evil, "w") as zf:
        for p in bundle.iterdir():
            zf.write(p, p.name)
        zf.writestr("../escape.txt", "x")
    with pytest.raises(BundleError, match="unsafe path '../escape.txt'"):
        edgekit.load_bundle(evil)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_not_a_bundle(tmp_path):
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(BundleError, match="not a bundle"):
        edgekit.load_bundle(tmp_path / "x.txt")
    with pytest.raises(BundleError, match="no manifest.json"):
        edgekit.load_bundle(tmp_path)
