"""The detection task through compile, the bundle, predict and the runtime, on the committed reference
detector (examples/models/detector, trained on scenes of real CIFAR-10 photographs) and the committed scenes.

Real ONNX Runtime and OpenVINO; the figures are the bundles' own measurements on the committed 200 scenes.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from support import MODELS, ROOT, run_cli

import edgekit
from edgekit.errors import ModelError, UsageError
from edgekit.tasks.detection import Detections

DETECTOR = MODELS / "detector"
SCENES = ROOT / "examples" / "data" / "scenes"
SCENE = SCENES / "val" / "000001.jpg"

pytestmark = pytest.mark.slow  # each compile measures 200 scenes and runs COCO's evaluation


def _compile(tmp, target, precision, **kw):
    return edgekit.compile_model(
        DETECTOR / "model.onnx", spec=DETECTOR / "model.toml", target=target, precision=precision,
        output=tmp / f"{target}-{precision}.edgekit", calib=SCENES / "calib", val=SCENES / "val", **kw,
    )  # fmt: skip


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("det")
    return {(t, p): _compile(tmp, t, p) for t, p in [("cpu", "fp32"), ("cpu", "int8"), ("intel-cpu", "int8")]}


def test_compile_measures_map_and_int8_keeps_the_boxes(bundles):
    fp32 = bundles["cpu", "fp32"].manifest
    acc = fp32["accuracy"]
    assert fp32["model"]["task"] == "detection" and acc["metric"] == "map50_95"
    assert acc["value"]["map50_95"] > 20 and acc["value"]["map50"] >= acc["value"]["map50_95"]
    assert acc["dataset"]["images"] == 200 and acc["agreement_with_fp32"] == 100.0
    assert fp32["preprocess"]["fit"] == "letterbox" and fp32["postprocess"]["detection"]["format"] == "yolov8"
    assert fp32["output"]["shape"][1] == 4 + 10
    for key in (("cpu", "int8"), ("intel-cpu", "int8")):
        m = bundles[key].manifest
        # the decoding, the sigmoid and the box/score concatenation stay in float, and the record says so
        tail = m["quantization"]["output_tail_in_float"]
        assert any("Sigmoid" in n for n in tail) and any("Concat" in n for n in tail)
        assert abs(m["accuracy"]["drop_points"]) < 2.0, (key, m["accuracy"])  # mAP points, not top-1
        assert m["accuracy"]["agreement_with_fp32"] > 90  # F1 of INT8's boxes against FP32's
        # the score threshold is re-tuned for INT8 against the ground truth, and the bundle ships with it
        tuned = m["accuracy"]["score_threshold"]
        assert tuned["user"] == 0.25 and tuned["against"] == "ground truth"
        assert m["postprocess"]["score_threshold"] == tuned["shipped"] == m["accuracy"]["value"]["score_threshold"]
    assert "score_threshold" not in acc and fp32["postprocess"]["score_threshold"] == 0.25
    with edgekit.load_bundle(bundles["cpu", "int8"].path) as b:
        assert b.predict(SCENE).scores.min() >= b.manifest["postprocess"]["score_threshold"] - 1e-6


def test_without_the_float_tail_onnx_runtime_int8_loses_the_boxes(tmp_path):
    """What the detection recipe prevents: the same model quantized as a classifier is (the whole graph)."""
    import onnx
    import onnxruntime as ort

    from edgekit import calibration
    from edgekit.imagesets import load_calibration
    from edgekit.quantize import onnxruntime_qdq as q
    from edgekit.spec import build_spec, load_spec_file

    spec = build_spec(model_input={"name": "images", "shape": (-1, 3, 128, 128), "layout": "NCHW"},
                      overrides=load_spec_file(DETECTOR / "model.toml"))  # fmt: skip
    model = onnx.load(str(DETECTOR / "model.onnx"))
    calib = load_calibration(SCENES / "calib", spec, size=100)
    recipe = calibration.qdq_recipe("ort-qdq-u8s8-per-channel")
    scores = {}
    for tail in (False, True):
        out = tmp_path / f"q{tail}.onnx"
        q.quantize(model, calib, out, recipe=recipe, input_name="images", keep_output_tail=tail)
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        y = sess.run(None, {"images": calib.head(16)})[0]
        scores[tail] = y[:, 4:, :]
    ref = ort.InferenceSession(str(DETECTOR / "model.onnx"), providers=["CPUExecutionProvider"])
    want = ref.run(None, {"images": calib.head(16)})[0][:, 4:, :]
    err = {tail: float(np.abs(s - want).max()) for tail, s in scores.items()}
    assert err[True] < err[False]


def test_predict_gives_boxes_in_the_source_images_pixels(bundles, tmp_path):
    path = bundles["cpu", "fp32"].path
    with edgekit.load_bundle(path) as b:
        assert b.task.name == "detection" and b.selftest_result.passed
        small = b.predict(SCENE)
        assert isinstance(small, Detections) and len(small) >= 1
        # the same scene at twice the size (and a letterboxed non-square one): the boxes scale with it
        image = cv2.imread(str(SCENE))
        big = b.predict(cv2.resize(image, (256, 256), interpolation=cv2.INTER_LINEAR), color_order="BGR")
        wide = b.predict(cv2.copyMakeBorder(image, 0, 0, 0, 64, cv2.BORDER_CONSTANT, value=(114, 114, 114)),
                         color_order="BGR")  # fmt: skip
    # a 2x upscale, decoded from (nearly) the same 128x128 input: every box has its double, same class (the
    # order may differ where two scores are close)
    for box, cls in zip(small.boxes[:3], small.class_ids[:3], strict=True):
        gap = np.abs(big.boxes - 2 * box).max(axis=1)
        assert gap.min() < 6.0 and big.class_ids[gap.argmin()] == cls, (box, big.boxes[:5])
    assert wide.boxes[:, 2].max() <= 192 and wide.class_ids[0] == small.class_ids[0]
    res = run_cli("predict", str(path), str(SCENE), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout.splitlines()[0])
    first = doc["detections"][0]
    assert set(first) == {"box", "score", "class_id", "label"} and first["label"] == small.label(0)
    text = run_cli("predict", str(path), str(SCENE))
    assert text.returncode == 0 and small.label(0) in text.stdout


def test_inspect_shows_the_detectors_figures(bundles):
    res = run_cli("inspect", str(bundles["cpu", "int8"].path))
    assert res.returncode == 0, res.stderr
    assert "mAP@[.5:.95]" in res.stdout and "agreement with FP32 (F1)" in res.stdout


def test_a_spec_that_does_not_match_the_outputs_is_one_line(tmp_path):
    spec = (DETECTOR / "model.toml").read_text().replace("labels = [", 'labels = ["extra", ')
    path = tmp_path / "wrong.toml"
    path.write_text(spec)
    with pytest.raises(ModelError) as err:
        edgekit.compile_model(DETECTOR / "model.onnx", spec=path, target="cpu", precision="fp32",
                              output=tmp_path / "b")  # fmt: skip
    message = str(err.value)
    assert "\n" not in message and "[1, 14, " in message and "11 classes" in message
    assert not (tmp_path / "b").exists()
    res = run_cli("compile", str(DETECTOR / "model.onnx"), "--spec", str(path), "-t", "cpu", "--precision",
                  "fp32", "-o", str(tmp_path / "c"))  # fmt: skip
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("edgekit: error: the model's outputs [1, 14, 336]")


def test_a_detection_spec_needs_its_section(tmp_path):
    path = tmp_path / "nosection.toml"
    path.write_text('name = "d"\ntask = "detection"\nlabels = ["a"]\n')
    with pytest.raises(UsageError, match=r"needs a \[detection\] section"):
        edgekit.compile_model(DETECTOR / "model.onnx", spec=path, target="cpu", precision="fp32",
                              output=tmp_path / "b")  # fmt: skip


def _as_ssd(tmp_path):
    """The reference detector re-exported the SSD way: two outputs, box values [B, N, 4] and class scores
    [B, N, 10], with one anchor a cell listed in the spec. Linear coding with anchors (0, 0, 1, 1) and the
    default variances (one over the input size) makes the deltas the boxes in input pixels, so its detections
    must be the yolov8 bundle's."""
    import onnx
    from onnx import helper

    model = onnx.load(str(DETECTOR / "model.onnx"))
    graph = model.graph
    out = graph.output[0].name
    graph.node.extend([
        helper.make_node("Transpose", [out], ["ssd_t"], perm=[0, 2, 1]),
        helper.make_node("Split", ["ssd_t", "ssd_split"], ["deltas", "scores"], axis=2),
    ])  # fmt: skip
    graph.initializer.append(onnx.numpy_helper.from_array(np.array([4, 10], np.int64), "ssd_split"))
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("deltas", onnx.TensorProto.FLOAT, ["batch", 336, 4]),
                         helper.make_tensor_value_info("scores", onnx.TensorProto.FLOAT, ["batch", 336, 10])])  # fmt: skip
    path = tmp_path / "ssd.onnx"
    onnx.save(model, str(path))
    spec = (DETECTOR / "model.toml").read_text()
    section = spec[spec.index("[detection]") :]
    candidates = 336
    anchors = ", ".join(["[0.0, 0.0, 1.0, 1.0]"] * candidates)
    keep = [line for line in section.splitlines()[1:] if line.split("=")[0].strip() in
            ("fit", "pad_value", "score_threshold", "iou_threshold", "max_detections")]  # fmt: skip
    ssd = (
        spec[: spec.index("[detection]")]
        + "[detection]\n"
        + "\n".join(
            ['format = "ssd"', 'box_coding = "linear"', 'score_activation = "none"', f"anchors = [{anchors}]", *keep]
        )
        + "\n"
    )
    (tmp_path / "ssd.toml").write_text(ssd)
    return path, tmp_path / "ssd.toml"


def test_an_ssd_style_detector_with_two_outputs_compiles_runs_and_quantizes(bundles, tmp_path):
    model, spec = _as_ssd(tmp_path)
    fp32 = edgekit.compile_model(model, spec=spec, target="cpu", precision="fp32", output=tmp_path / "s32",
                                 calib=SCENES / "calib", val=SCENES / "val")  # fmt: skip
    m = fp32.manifest
    assert m["postprocess"]["merged_outputs"]["outputs"] == ["deltas", "scores"]
    ref = bundles["cpu", "fp32"].manifest["accuracy"]["value"]
    assert m["accuracy"]["value"]["map50_95"] == pytest.approx(ref["map50_95"], abs=0.01)
    with edgekit.load_bundle(fp32.path) as ssd, edgekit.load_bundle(bundles["cpu", "fp32"].path) as yolo:
        a, b = ssd.predict(SCENE), yolo.predict(SCENE)
    assert a.class_ids.tolist() == b.class_ids.tolist()
    np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
    int8 = edgekit.compile_model(model, spec=spec, target="cpu", precision="int8", output=tmp_path / "s8",
                                 calib=SCENES / "calib", val=SCENES / "val")  # fmt: skip
    assert abs(int8.manifest["accuracy"]["drop_points"]) < 2.0
