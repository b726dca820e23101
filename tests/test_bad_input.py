"""Every bad input gives a one-line error naming the problem and the fix, exit 2 (usage) or 1 (failure),
no traceback and no partial output."""

from __future__ import annotations

import os

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from support import run_cli, write_images

SPEC_ARGS = ("--resize", "32,32", "--mean", "0.49,0.48,0.45", "--std", "0.25,0.24,0.26")


def _check(res, code: int, *needles: str, out=None) -> None:
    lines = res.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("edgekit: error:")]
    assert res.returncode == code, res.stderr
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    if out is not None:
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")], "staging left behind"


def _compile(model, out, *extra):
    return run_cli("compile", str(model), "--target", "cpu", "-p", "fp32", "-o", str(out), *SPEC_ARGS, *extra)


@pytest.mark.slow
def test_missing_model(tmp_path):
    _check(_compile(tmp_path / "nope.onnx", tmp_path / "o"), 2, "does not exist", out=tmp_path / "o")


@pytest.mark.slow
def test_empty_model(tmp_path):
    (tmp_path / "empty.onnx").write_bytes(b"")
    _check(_compile(tmp_path / "empty.onnx", tmp_path / "o"), 1, "empty", out=tmp_path / "o")


@pytest.mark.slow
def test_corrupt_model(tmp_path, tiny_onnx):
    data = tiny_onnx.read_bytes()
    (tmp_path / "bad.onnx").write_bytes(data[: len(data) // 3])
    _check(_compile(tmp_path / "bad.onnx", tmp_path / "o"), 1, "bad.onnx", "export it again", out=tmp_path / "o")


@pytest.mark.slow
def test_unsupported_op(tmp_path):
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])
    node = helper.make_node("FancyPool", ["input"], ["out"], domain="com.acme")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[
        helper.make_opsetid("", 17), helper.make_opsetid("com.acme", 1)])  # fmt: skip
    onnx.save(model, str(tmp_path / "custom.onnx"))
    _check(_compile(tmp_path / "custom.onnx", tmp_path / "o"), 1, "com.acme::FancyPool", out=tmp_path / "o")


@pytest.mark.slow
def test_calibration_folder_without_images(tmp_path, tiny_onnx):
    (tmp_path / "calib").mkdir()
    (tmp_path / "calib" / "notes.txt").write_text("no images here")
    res = run_cli("compile", str(tiny_onnx), "-t", "cpu", "-p", "int8", "--calib", str(tmp_path / "calib"),
                  "-o", str(tmp_path / "o"), *SPEC_ARGS)  # fmt: skip
    _check(res, 1, "holds no JPEG, PNG, BMP or WebP images", out=tmp_path / "o")


@pytest.mark.slow
def test_unreadable_calibration_images_are_skipped_and_counted(tmp_path, tiny_onnx):
    calib = write_images(tmp_path / "calib", per_class=6)
    for i, path in enumerate(sorted(calib.rglob("*.jpg"))[:4]):
        path.write_bytes(b"not a jpeg" * i)
    res = run_cli("compile", str(tiny_onnx), "-t", "cpu", "-p", "int8", "--calib", str(calib),
                  "-o", str(tmp_path / "o"), *SPEC_ARGS)  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "4 calibration images could not be read and were skipped" in res.stderr
    for path in sorted(calib.rglob("*.png")):
        path.write_bytes(b"")
    res = run_cli("compile", str(tiny_onnx), "-t", "cpu", "-p", "int8", "--calib", str(calib),
                  "-o", str(tmp_path / "o2"), *SPEC_ARGS)  # fmt: skip
    _check(res, 1, "could be read", "at least 10 are needed", out=tmp_path / "o2")


@pytest.mark.slow
def test_input_shape_that_does_not_match(tmp_path, tiny_onnx):
    res = _compile(tiny_onnx, tmp_path / "o", "--input-shape", "1,1,32,32")
    _check(res, 2, "does not match the model's input", out=tmp_path / "o")


@pytest.mark.slow
def test_unknown_target(tmp_path, tiny_onnx):
    res = run_cli("compile", str(tiny_onnx), "-t", "jetsn", "-o", str(tmp_path / "o"))
    _check(res, 2, "target 'jetsn' not found", "intel-cpu (openvino, intel)", out=tmp_path / "o")


@pytest.mark.slow
def test_precision_the_target_does_not_support(tmp_path, tiny_onnx):
    target = tmp_path / "fp32only.toml"
    target.write_text('name = "box"\nbackend = "onnxruntime"\ndevice = "CPU"\nprecisions = ["fp32"]\n')
    res = run_cli("compile", str(tiny_onnx), "-t", str(target), "-p", "int8", "-o", str(tmp_path / "o"))
    _check(res, 2, "does not support int8; it supports: fp32", out=tmp_path / "o")


def _unwritable_folder(tmp_path):
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        return ro
    try:  # root ignores permission bits; sysfs refuses new files even to root
        open("/sys/.edgekit-probe", "w").close()
    except OSError:
        return __import__("pathlib").Path("/sys")
    pytest.skip("no folder here refuses writes to root")


@pytest.mark.slow
def test_unwritable_output_folder(tmp_path, tiny_onnx):
    ro = _unwritable_folder(tmp_path)
    _check(_compile(tiny_onnx, ro / "edgekit-out"), 2, "is not writable", out=ro / "edgekit-out")


@pytest.mark.slow
def test_output_in_a_missing_folder(tmp_path, tiny_onnx):
    _check(_compile(tiny_onnx, tmp_path / "no" / "such" / "o"), 2, "does not exist", "-o")


@pytest.mark.slow
def test_output_that_is_an_unrelated_folder(tmp_path, tiny_onnx):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("mine")
    _check(_compile(tiny_onnx, tmp_path / "docs"), 2, "not a bundle")
    assert (tmp_path / "docs" / "a.txt").read_text() == "mine"


@pytest.mark.slow
def test_bad_image_to_predict(tmp_path, tiny_onnx):
    out = tmp_path / "b"
    assert _compile(tiny_onnx, out).returncode == 0
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff garbage")
    cv2.imwrite(str(tmp_path / "ok.png"), np.zeros((32, 32, 3), np.uint8))
    res = run_cli("predict", str(out), str(tmp_path / "x.jpg"), str(tmp_path / "ok.png"))
    assert res.returncode == 1 and "not a decodable image" in res.stderr and "Traceback" not in res.stderr
    assert "ok.png:" in res.stdout
