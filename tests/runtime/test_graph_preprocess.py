"""Preprocessing inside the graph (edgekit.runtime.graph_front): frames in as uint8 HWC, the same results as
the float path (NumPy preprocessing, then the bundle's own graph), on real ONNX Runtime (cpu) and OpenVINO
(intel-cpu) bundles of the reference models."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from support import MODELS, ROOT, SAMPLE

import edgekit
from edgekit.errors import UsageError
from edgekit.runtime.graph_front import FRAME_INPUT, ORDER_INPUT, Front, onnx_front
from edgekit.runtime.preprocess import preprocess
from edgekit.runtime.selftest import normalised_error
from edgekit.spec import InputSpec, PreprocessSpec

RESNET = MODELS / "resnet"
DETECTOR = MODELS / "detector"
IMAGE = SAMPLE / "test" / "dog" / "0001.jpg"
SCENE = ROOT / "examples" / "data" / "scenes" / "val" / "000001.jpg"
SPEC = PreprocessSpec(resize=(32, 32), mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.2435, 0.2616))
INPUT = InputSpec(name="input", shape=(-1, 3, 32, 32))
TARGETS = ("cpu", "intel-cpu")


def _frames(n: int, hw=(32, 32), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *hw, 3), dtype=np.uint8)


def _close(a: np.ndarray, b: np.ndarray, tol: float) -> None:
    assert a.shape == b.shape
    assert normalised_error(a, b).max() <= tol
    assert (a.reshape(len(a), -1).argmax(1) == b.reshape(len(b), -1).argmax(1)).all()


# -- the front itself, no bundle -----------------------------------------------------------------------------


@pytest.mark.parametrize("order", ["RGB", "BGR"])
def test_onnx_front_gives_the_numpy_preprocessing_bit_for_bit(order):
    model = (RESNET / "model.onnx").read_bytes()
    front = Front.of(SPEC, INPUT)
    plain, fronted = ort.InferenceSession(model), ort.InferenceSession(onnx_front(model, front))
    assert [i.name for i in fronted.get_inputs()] == [FRAME_INPUT, ORDER_INPUT]
    frames = _frames(3)
    x = np.stack([preprocess(f, SPEC, INPUT, color_order=order) for f in frames])
    np.testing.assert_array_equal(front.tensors(frames, order), x)
    out = fronted.run(None, {FRAME_INPUT: frames, ORDER_INPUT: front.order(order)})[0]
    np.testing.assert_array_equal(out, plain.run(None, {"input": x})[0])


def test_onnx_front_is_a_valid_onnx_model():
    onnx = pytest.importorskip("onnx")  # compile-side only: the runtime builds the front without it
    model = onnx.load_from_string(onnx_front((RESNET / "model.onnx").read_bytes(), Front.of(SPEC, INPUT)))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == [FRAME_INPUT, ORDER_INPUT]


@pytest.mark.parametrize("layout,dtype", [("NCHW", "float32"), ("NHWC", "float32"), ("NCHW", "float16")])
def test_front_tensors_and_their_inverse(layout, dtype):
    shape = (-1, 3, 24, 20) if layout == "NCHW" else (-1, 24, 20, 3)
    inp = InputSpec(shape=shape, layout=layout, dtype=dtype)
    spec = dataclasses.replace(SPEC, resize=(24, 20), color_order="BGR")
    front = Front.of(spec, inp)
    frames = _frames(2, (24, 20))
    for order in ("RGB", "BGR"):
        x = np.stack([preprocess(f, spec, inp, color_order=order) for f in frames])
        np.testing.assert_array_equal(front.tensors(frames, order), x)
    back, exact = front.frames_of(front.tensors(frames, "BGR"))
    assert (exact or dtype == "float16") and np.array_equal(back, frames)
    _, exact = front.frames_of(np.random.default_rng(1).standard_normal((2, *shape[1:])).astype(dtype))
    assert not exact  # synthetic self-test inputs are no images


def test_no_front_for_inputs_it_cannot_take():
    assert Front.of(SPEC, InputSpec(shape=(-1, 1, 32, 32))) is None
    assert Front.of(SPEC, InputSpec(shape=(-1, 3, 32, 32), dtype="uint8")) is None


# -- bundles -------------------------------------------------------------------------------------------------


def _static_onnx(tmp) -> str:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(RESNET / "model.onnx"))
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    path = tmp / "resnet-static.onnx"
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The reference ResNet in INT8 for cpu and intel-cpu, and with a static batch of 1 in FP32."""
    tmp = tmp_path_factory.mktemp("graphpre")
    out = {}
    for target in TARGETS:
        out[target] = edgekit.compile_model(
            RESNET / "model.onnx", spec=RESNET / "model.toml", target=target, precision="int8",
            output=tmp / f"{target}.edgekit", calib=SAMPLE / "calib", calib_size=32,
        ).path  # fmt: skip
        out[target, "static"] = edgekit.compile_model(
            _static_onnx(tmp), spec=RESNET / "model.toml", target=target, precision="fp32",
            output=tmp / f"{target}-static.edgekit",
        ).path  # fmt: skip
    return out


def _pair(path):
    """The bundle with its graph front, and the same bundle preprocessing on the host."""
    fast, host = edgekit.load_bundle(path), edgekit.load_bundle(path, graph_preprocess=False)
    assert fast.preprocessing == "graph", fast.preprocessing
    assert host.preprocessing.startswith("host") and host.describe()["preprocessing"] == host.preprocessing
    return fast, host


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_frames_through_the_graph_match_the_float_path(bundles, target):
    fast, host = _pair(bundles[target])
    tol = float(fast.info.selftest.tolerance)
    with fast, host:
        bgr = cv2.imread(str(IMAGE))
        small = np.ascontiguousarray(cv2.resize(bgr, (32, 32), interpolation=cv2.INTER_AREA))
        big = cv2.resize(bgr, (640, 480))
        for order, frame in (("BGR", small), ("RGB", np.ascontiguousarray(small[:, :, ::-1]))):
            tensor = host.preprocess(frame, color_order=order)[None]
            _close(fast.infer_frames(frame[None], color_order=order), host.infer(tensor), tol)
            assert fast.predict(frame, color_order=order).top[:1] == host.predict(frame, color_order=order).top[:1]
        for order, image in (("BGR", big), ("RGB", big[:, :, ::-1])):  # resized on the host, then the graph
            a, b = fast.predict(image, color_order=order, top_k=3), host.predict(image, color_order=order, top_k=3)
            assert a.class_ids[0] == b.class_ids[0]
            assert abs(a.score - b.score) <= tol
        assert fast.predict(IMAGE).class_ids[0] == host.predict(IMAGE).class_ids[0]
        # a batch of eight: sizes and colour orders mixed, paths among them
        images = [big, small, IMAGE, big[:, :, ::-1].copy(), small, cv2.resize(bgr, (50, 40)), small, big]
        got = fast.predict_batch(images, color_order="BGR", top_k=2)
        want = host.predict_batch(images, color_order="BGR", top_k=2)
        assert [p.class_ids[0] for p in got] == [p.class_ids[0] for p in want]
        assert max(abs(p.score - q.score) for p, q in zip(got, want, strict=True)) <= tol


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_the_float_api_and_the_selftest_are_unchanged(bundles, target):
    fast, host = _pair(bundles[target])
    with fast, host:
        assert fast.selftest_result.passed and fast.selftest_result == host.selftest_result
        x = np.stack([host.preprocess(f) for f in _frames(3)])
        np.testing.assert_array_equal(fast.infer(x), host.infer(x))  # the bundle's own graph, as before
        np.testing.assert_array_equal(fast.preprocess(IMAGE), host.preprocess(IMAGE))
        with pytest.raises(UsageError, match="the model takes"):
            fast.infer(np.zeros((1, 32, 32, 3), np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_static_batch_bundles_take_frames(bundles, target):
    fast, host = _pair(bundles[target, "static"])
    with fast, host:
        assert fast.static_batch == 1
        frames = _frames(3)
        _close(fast.infer_frames(frames, color_order="BGR"),
               host.infer(np.stack([host.preprocess(f, color_order="BGR") for f in frames])),
               float(fast.info.selftest.tolerance))  # fmt: skip
        assert len(fast.predict_batch(list(frames))) == 3


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_a_front_that_fails_its_selftest_falls_back_to_the_host(bundles, target):
    with edgekit.load_bundle(bundles[target]) as b:
        wrong = dataclasses.replace(b._front, mean=(0.9, 0.1, 0.9), std=(0.05, 0.05, 0.05))
        b._run_frames = b.runtime.frame_runner(wrong)
        b._check_front()
        assert b.preprocessing.startswith("host: the graph front's self-test failed"), b.preprocessing
        frame = _frames(1)[0]
        np.testing.assert_array_equal(b.infer_frames(frame[None]), b.infer(b.preprocess(frame)[None]))


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_wrong_input_is_one_usage_line(bundles, target):
    with edgekit.load_bundle(bundles[target]) as b:
        bad = [
            lambda: b.predict(np.zeros((32, 32, 3), np.float32)),
            lambda: b.predict(np.zeros((32, 32), np.float64)),
            lambda: b.predict(np.zeros((32, 32, 5), np.uint8)),
            lambda: b.predict([[1, 2, 3]]),
            lambda: b.predict(np.zeros((32, 32, 3), np.uint8), color_order="YUV"),
            lambda: b.predict_batch([]),
            lambda: b.infer_frames(np.zeros((1, 40, 32, 3), np.uint8)),
            lambda: b.infer_frames(np.zeros((1, 32, 32, 3), np.float32)),
        ]
        for call in bad:
            with pytest.raises(UsageError) as info:
                call()
            assert "\n" not in str(info.value) and len(str(info.value)) < 300


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
def test_letterboxed_detector_frames_match_the_float_path(tmp_path, target):
    path = edgekit.compile_model(DETECTOR / "model.onnx", spec=DETECTOR / "model.toml", target=target,
                                 precision="fp32", output=tmp_path / "det.edgekit").path  # fmt: skip
    fast, host = _pair(path)
    with fast, host:
        assert fast.preprocess_spec.fit == "letterbox"
        scene = cv2.imread(str(SCENE))
        wide = np.ascontiguousarray(cv2.resize(scene, (200, 120)))  # letterboxed: resized and padded
        for image, order in ((wide, "BGR"), (np.ascontiguousarray(wide[:, :, ::-1]), "RGB"), (scene, "BGR")):
            a, b = fast.predict(image, color_order=order), host.predict(image, color_order=order)
            assert len(a.boxes) == len(b.boxes) and (a.class_ids == b.class_ids).all()
            np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
            np.testing.assert_allclose(a.scores, b.scores, atol=1e-3)
        got = fast.predict_batch([wide, scene], color_order="BGR")
        want = host.predict_batch([wide, scene], color_order="BGR")
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
