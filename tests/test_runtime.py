from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from support import CIFAR_SPEC, SAMPLE

import edgekit
from edgekit.runtime.preprocess import preprocess
from edgekit.spec import InputSpec, PreprocessSpec

IMAGE = SAMPLE / "test" / "dog" / "0001.jpg"


@pytest.fixture(scope="module")
def bundles(tiny_onnx, tmp_path_factory):
    out = tmp_path_factory.mktemp("rt")
    paths = {}
    for target in ("cpu", "intel-cpu"):
        paths[target] = edgekit.compile_model(
            tiny_onnx, target=target, precision="int8", output=out / target, spec=CIFAR_SPEC,
            calib=SAMPLE / "calib", calib_size=32,
        ).path  # fmt: skip
    return paths


@pytest.mark.parametrize("target", ["cpu", "intel-cpu"])
def test_runtime_imports_no_torch(bundles, target):
    code = (
        "import sys, json, edgekit\n"
        f"b = edgekit.load_bundle({str(bundles[target])!r})\n"
        f"p = b.predict({str(IMAGE)!r})\n"
        "print(json.dumps({'label': p.label, 'mods': sorted(m for m in ('torch', 'onnx', 'nncf', 'edgekit.frontends',"
        " 'edgekit.quantize', 'edgekit.pipeline') if m in sys.modules)}))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["mods"] == [] and out["label"]


def test_path_rgb_and_bgr_arrays_agree(bundles):
    bgr = cv2.imread(str(IMAGE))
    with edgekit.load_bundle(bundles["cpu"]) as b:
        from_path = b.predict(IMAGE, top_k=3)
        from_rgb = b.predict(bgr[:, :, ::-1].copy(), top_k=3)
        from_bgr = b.predict(bgr, top_k=3, color_order="BGR")
        wrong = b.preprocess(bgr, color_order="RGB")
    assert from_path.top == from_rgb.top == from_bgr.top
    assert not np.allclose(wrong, b.preprocess(bgr, color_order="BGR"))
    assert abs(sum(p for _, p in b.predict(IMAGE, top_k=10).top) - 1.0) < 1e-4


def test_preprocess_resize_shorter_side_then_crop():
    img = np.arange(60 * 80 * 3, dtype=np.uint8).reshape(60, 80, 3)
    spec = PreprocessSpec(resize=30, resize_mode="nearest", crop=(30, 30), color_order="BGR", scale=1.0,
                          mean=(1, 2, 3), std=(2, 2, 2))  # fmt: skip
    x = preprocess(img, spec, InputSpec(shape=(1, 3, 30, 30)), color_order="BGR")
    resized = cv2.resize(img, (40, 30), interpolation=cv2.INTER_NEAREST)[:, 5:35].astype(np.float32)
    expected = ((resized - np.array([1, 2, 3], np.float32)) / 2).transpose(2, 0, 1)
    np.testing.assert_allclose(x, expected)
    nhwc = preprocess(img, spec, InputSpec(shape=(1, 30, 30, 3), layout="NHWC"), color_order="BGR")
    np.testing.assert_allclose(nhwc, expected.transpose(1, 2, 0))


def test_grayscale_and_rgba_arrays_are_accepted(bundles):
    gray = cv2.imread(str(IMAGE), cv2.IMREAD_GRAYSCALE)
    rgba = cv2.cvtColor(cv2.imread(str(IMAGE)), cv2.COLOR_BGR2RGBA)
    with edgekit.load_bundle(bundles["intel-cpu"]) as b:
        assert b.predict(gray).label in b.labels
        assert b.predict(rgba).top == b.predict(IMAGE).top
