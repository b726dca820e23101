"""A detector bundle's postprocess record is data from whoever sent the bundle: every bad part of it is one
BundleError line naming the bundle and the field, not an internal error with a traceback."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from support import LABELS, SAMPLE, run_cli

import edgekit
from edgekit.bundle.manifest import MANIFEST
from edgekit.errors import BundleError

IMAGE = next(iter(sorted((SAMPLE / "test" / "cat").iterdir())))


@pytest.fixture(scope="module")
def detector_bundle(tmp_path_factory):
    """A tiny yolov8-layout detector (a conv, boxes from a sigmoid scaled to the input, class scores), fp32."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((14, 3, 8, 8)).astype(np.float32) * 0.2, "w")
    scale = numpy_helper.from_array(np.array([32.0], np.float32), "scale")
    shape = numpy_helper.from_array(np.array([0, 14, 16], np.int64), "shape")
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], strides=[8, 8]),
        helper.make_node("Reshape", ["c", "shape"], ["r"]),
        helper.make_node("Sigmoid", ["r"], ["s"]),
        helper.make_node("Mul", ["s", "scale"], ["out"]),  # boxes in 0-32 px; scores 0-32 too, then clipped
        helper.make_node("Clip", ["out"], ["output"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny-det", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 14, 16])], [w, scale, shape],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path_factory.mktemp("det") / "det.onnx"
    onnx.save(model, str(path))
    spec = {"name": "tiny-det", "task": "detection", "labels": LABELS,
            "preprocess": {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)},
            "detection": {"format": "yolov8", "fit": "letterbox", "score_threshold": 0.5}}  # fmt: skip
    out = tmp_path_factory.mktemp("b") / "det.edgekit"
    edgekit.compile_model(path, target="cpu", precision="fp32", output=out, spec=spec)
    return out


@pytest.mark.slow  # runs the CLI
@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("input_hw", None, "'input_hw' is None"),
        ("input_hw", [10**9, 10**9], "'input_hw' is [1000000000, 1000000000]"),
        ("score_threshold", "high", "'score_threshold' is 'high'"),
        ("merged_outputs", {"box_values": "x"}, "'merged_outputs'"),
        ("detection", "x", "'detection' is not"),
        ("detection", {"format": "evil\x1b[31m"}, "format 'evil\\x1b[31m'"),
        ("detection", {"format": "yolov8", "max_detections": 10**12}, "max_detections 1000000000000"),
    ],
)
def test_a_bad_postprocess_record_is_one_escaped_bundle_error(detector_bundle, tmp_path, field, value, needle):
    bundle = tmp_path / "b.edgekit"
    shutil.copytree(detector_bundle, bundle)
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["postprocess"][field] = value
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BundleError) as err:
        edgekit.load_bundle(bundle)
    message = str(err.value)
    assert message.startswith(f"{bundle}: manifest field 'postprocess': ") and needle in message
    assert "\n" not in message and "\x1b" not in message
    res = run_cli("predict", str(bundle), str(IMAGE))
    assert res.returncode == 1 and "Traceback" not in res.stderr and "internal error" not in res.stderr
    with edgekit.load_bundle(detector_bundle) as good:  # the original still loads and predicts
        assert good.task.name == "detection" and good.predict(IMAGE).to_json()["detections"] is not None
