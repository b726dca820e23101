"""Decoding each output format into detections in the source image's pixels, against hand-computed boxes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit.errors import ModelError
from edgekit.tasks.detection import AnchorGenerator, Decoder, DetectionConfig, Detections


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _yolov8_output() -> np.ndarray:
    """[1, 4 + 3, 5] for a 64 x 64 input."""
    columns = [
        # cx, cy, w, h, class scores
        [32, 32, 20, 10, 0.1, 0.9, 0.2],  # class 1, 0.9: box 22, 27, 42, 37
        [33, 32, 20, 10, 0.3, 0.8, 0.0],  # class 1, 0.8: IoU 190 / 210 with the first, suppressed
        [33, 32, 20, 10, 0.1, 0.0, 0.7],  # class 2, 0.7: same box, another class
        [50, 50, 4, 4, 0.2, 0.2, 0.2],  # below 0.25
        [10, 10, 4, 4, 0.25, 0.0, 0.0],  # class 0 at exactly the threshold: kept
    ]
    return np.array(columns, np.float32).T[None]


def test_yolov8_hand_computed_with_per_class_nms_and_letterbox_inverse():
    decoder = Decoder(DetectionConfig(format="yolov8"), (64, 64))
    (det,) = decoder(_yolov8_output(), (96, 128), labels=["cat", "dog", "bird"])
    # 96 x 128 letterboxed into 64 x 64: scale 0.5, resized 48 x 64, 8 rows of padding above
    assert det.class_ids.tolist() == [1, 2, 0]
    assert det.scores.tolist() == pytest.approx([0.9, 0.7, 0.25])
    np.testing.assert_allclose(det.boxes, [[44, 38, 84, 58], [46, 38, 86, 58], [16, 0, 24, 8]])
    assert det.items()[0] == {"box": [44.0, 38.0, 84.0, 58.0], "score": 0.9, "class_id": 1, "label": "dog"}
    assert det.to_json() == {"detections": det.items()} and det.label(2) == "cat"
    assert det.to_text() == "dog 0.900 [44, 38, 84, 58], bird 0.700 [46, 38, 86, 58], cat 0.250 [16, 0, 24, 8]"


def test_yolov8_class_agnostic_multi_label_sigmoid_and_normalized():
    out = _yolov8_output()
    agnostic = Decoder(DetectionConfig(format="yolov8", class_agnostic=True), (64, 64))(out)[0]
    assert agnostic.class_ids.tolist() == [1, 0]  # the class-2 box falls to the class-1 box over it
    np.testing.assert_allclose(agnostic.boxes, [[22, 27, 42, 37], [8, 8, 12, 12]])  # no source: input pixels
    multi = Decoder(DetectionConfig(format="yolov8", multi_label=True), (64, 64))(out)[0]
    assert multi.class_ids.tolist() == [1, 2, 0, 0]  # the second column's class 0 (0.3) is a candidate too
    assert multi.scores.tolist() == pytest.approx([0.9, 0.7, 0.3, 0.25])
    logits = out.copy()
    logits[0, 4:] = np.vectorize(lambda p: _logit(min(max(p, 1e-6), 1 - 1e-6)))(out[0, 4:])
    sig = Decoder(DetectionConfig(format="yolov8", score_activation="sigmoid"), (64, 64))(logits, (96, 128))[0]
    plain = Decoder(DetectionConfig(format="yolov8"), (64, 64))(out, (96, 128))[0]
    assert sig.class_ids.tolist() == plain.class_ids.tolist()
    np.testing.assert_allclose(sig.scores, plain.scores, rtol=1e-5)
    norm = out.copy()
    norm[0, :4] /= 64
    n = Decoder(DetectionConfig(format="yolov8", normalized=True), (64, 64))(norm, (96, 128))[0]
    np.testing.assert_allclose(n.boxes, plain.boxes, rtol=1e-5)


def test_yolov5_score_is_objectness_times_class_score():
    rows = [
        [32, 32, 20, 10, 0.9, 0.1, 0.5, 0.4],  # class 1, 0.45
        [32, 32, 20, 10, 0.2, 1.0, 1.0, 1.0],  # objectness 0.2: below 0.25 whatever its classes
        [8, 8, 8, 8, 1.0, 0.3, 0.0, 0.0],  # class 0, 0.3
    ]
    out = np.array([rows], np.float32)
    (det,) = Decoder(DetectionConfig(format="yolov5"), (64, 64))(out, (64, 64))
    assert det.class_ids.tolist() == [1, 0] and det.scores.tolist() == pytest.approx([0.45, 0.3])
    np.testing.assert_allclose(det.boxes, [[22, 27, 42, 37], [4, 4, 12, 12]])
    multi = Decoder(DetectionConfig(format="yolov5", multi_label=True), (64, 64))(out)[0]
    assert multi.class_ids.tolist() == [1, 2, 0] and multi.scores.tolist() == pytest.approx([0.45, 0.36, 0.3])
    raw = out.copy()
    raw[0, :, 4:] = np.vectorize(lambda p: _logit(min(max(p, 1e-6), 1 - 1e-6)))(out[0, :, 4:])
    sig = Decoder(DetectionConfig(format="yolov5", score_activation="sigmoid"), (64, 64))(raw)[0]
    assert sig.class_ids.tolist() == [1, 0] and sig.scores.tolist() == pytest.approx([0.45, 0.3], rel=1e-4)


ANCHORS = ((0.5, 0.5, 0.2, 0.2), (0.25, 0.25, 0.1, 0.1))
# anchor 0 with deltas (1, -1, 0, ln 2 / 0.2): centre (0.52, 0.48), size (0.2, 0.4); on a 100 x 200 input
SSD_BOX_0 = [84, 28, 124, 68]
SSD_BOX_1 = [40, 20, 60, 30]  # anchor 1, zero deltas: the anchor itself


def _ssd_deltas(order: str = "xywh") -> np.ndarray:
    d = np.array([[[1.0, -1.0, 0.0, math.log(2) / 0.2], [0.0, 0.0, 0.0, 0.0]]], np.float32)
    return d[..., [1, 0, 3, 2]] if order == "yxhw" else d


def test_ssd_exponential_coding_with_softmax_and_a_background_class():
    config = DetectionConfig(format="ssd", anchors=ANCHORS, score_activation="softmax", background_class=True)
    logits = np.array([[[0.0, 2.0, 0.0], [3.0, 0.0, 0.0]]], np.float32)  # background, class 0, class 1
    (det,) = Decoder(config, (100, 200))([_ssd_deltas(), logits])
    e2 = math.exp(2)
    assert det.class_ids.tolist() == [0] and det.scores.tolist() == pytest.approx([e2 / (e2 + 2)])
    np.testing.assert_allclose(det.boxes, [SSD_BOX_0], rtol=1e-5)  # anchor 1 is background (1 / (e^3 + 2))


def test_ssd_exponential_coding_with_sigmoid_no_background_and_tf_delta_order():
    logits = np.array([[[-5.0, 2.0], [0.0, -1.0]]], np.float32)
    for order in ("xywh", "yxhw"):
        config = DetectionConfig(format="ssd", anchors=ANCHORS, score_activation="sigmoid", box_order=order)
        # the model's outputs in either order: told apart by their widths
        for outputs in ([_ssd_deltas(order), logits], [logits, _ssd_deltas(order)]):
            (det,) = Decoder(config, (100, 200))(outputs)
            assert det.class_ids.tolist() == [1, 0]
            assert det.scores.tolist() == pytest.approx([1 / (1 + math.exp(-2)), 0.5])
            np.testing.assert_allclose(det.boxes, [SSD_BOX_0, SSD_BOX_1], rtol=1e-5)


def test_ssd_linear_coding_as_mediapipe_blazeface_with_keypoints_ignored():
    gen = AnchorGenerator(strides=(8, 16, 16, 16), min_scale=0.1484375, max_scale=0.75, fixed_anchor_size=True)
    config = DetectionConfig(format="ssd", box_coding="linear", anchor_generator=gen, score_activation="sigmoid")
    decoder = Decoder(config, (128, 128))
    assert decoder.anchors is not None and decoder.anchors.shape == (896, 4)
    deltas = np.zeros((1, 896, 16), np.float32)  # 4 box values, then 6 keypoints (x, y)
    scores = np.full((1, 896, 1), -10.0, np.float32)
    i = 512 + 6 * (3 * 8 + 4)  # a cell of the 8 x 8 grid: row 3, column 4; centre (4.5 / 8, 3.5 / 8)
    deltas[0, i, :4] = [6.4, -12.8, 32, 64]  # in input pixels: the variances are 1 / 128
    deltas[0, i, 4:] = 99.0
    scores[0, i, 0] = 3.0
    (det,) = decoder([deltas, scores], (256, 256))
    cx, cy = 4.5 / 8 + 0.05, 3.5 / 8 - 0.1
    expected = np.array([cx - 0.125, cy - 0.25, cx + 0.125, cy + 0.25]) * 256
    assert det.class_ids.tolist() == [0] and det.scores.tolist() == pytest.approx([1 / (1 + math.exp(-3))])
    np.testing.assert_allclose(det.boxes, [expected], rtol=1e-5)


def test_boxes_format_takes_the_graphs_nms_and_its_bounds():
    rows = [[10, 10, 50, 50, 0.9, 2], [0, 0, 0, 0, 0, -1], [12, 12, 52, 52, 0.8, 2], [5, 5, 6, 6, 0.3, 0],
            [5, 5, 6, 6, 0.1, 0]]  # fmt: skip
    out = np.array([rows], np.float32)
    (det,) = Decoder(DetectionConfig(format="boxes"), (64, 64))(out)
    assert det.scores.tolist() == pytest.approx([0.9, 0.8, 0.3]) and det.class_ids.tolist() == [2, 2, 0]
    host = Decoder(DetectionConfig(format="boxes", nms_in_graph=False), (64, 64))(out)[0]
    assert host.scores.tolist() == pytest.approx([0.9, 0.3])  # the host's NMS suppresses the second
    baked = DetectionConfig.from_dict({"format": "boxes", "graph_score_threshold": 0.5, "graph_max_detections": 1})
    assert (baked.score_threshold, baked.max_detections) == (0.5, 1)
    low = Decoder(baked, (64, 64))(out, score_threshold=0.001, max_detections=100)[0]
    assert low.scores.tolist() == pytest.approx([0.9])  # bounded by what the graph let through
    norm = out.copy()
    norm[0, :, :4] /= 64
    n = Decoder(DetectionConfig(format="boxes", normalized=True), (64, 64))(norm, (128, 128))[0]
    np.testing.assert_allclose(n.boxes[0], [20, 20, 100, 100], rtol=1e-6)


def test_weighted_nms_through_the_decoder_averages_the_cluster():
    (det,) = Decoder(DetectionConfig(format="yolov8", nms="weighted"), (64, 64))(_yolov8_output())
    # the class-1 cluster: the 0.9 box (22..42) and the 0.8 box (23..43)
    x1 = (22 * 0.9 + 23 * 0.8) / 1.7
    np.testing.assert_allclose(det.boxes[0], [x1, 27, x1 + 20, 37], rtol=1e-6)
    assert det.scores[0] == pytest.approx(0.9)


def test_zero_detections_batches_and_max_detections():
    out = np.zeros((3, 7, 100), np.float32)
    out[:, :4] = np.array([32, 32, 10, 10])[None, :, None]
    decoder = Decoder(DetectionConfig(format="yolov8", max_detections=5), (64, 64))
    dets = decoder(out, [(64, 64), (128, 128), (32, 64)])
    assert len(dets) == 3 and all(len(d) == 0 for d in dets)
    assert dets[0].boxes.shape == (0, 4) and dets[0].to_json() == {"detections": []}
    assert dets[0].to_text() == "no detections" and len(Detections.empty()) == 0
    rng = np.random.default_rng(0)
    out[1, 0] = rng.uniform(0, 64, 100)  # 100 boxes that hardly overlap, scores 0.3..0.99
    out[1, 1] = rng.uniform(0, 64, 100)
    out[1, 2:4] = 1.0
    out[1, 5] = np.linspace(0.3, 0.99, 100)
    dets = decoder(out)
    assert [len(d) for d in dets] == [0, 5, 0]
    assert dets[1].scores.tolist() == pytest.approx(np.linspace(0.3, 0.99, 100)[::-1][:5].tolist())
    few = Decoder(DetectionConfig(format="yolov8", max_candidates=10, max_detections=10), (64, 64))
    assert few(out)[1].scores.tolist() == pytest.approx(np.linspace(0.3, 0.99, 100)[::-1][:10].tolist())
    assert len(decoder(out, max_detections=50)[1]) == 50


def test_outputs_that_do_not_match_the_config_are_a_model_error_line():
    decoder = Decoder(DetectionConfig(format="yolov8", num_classes=3), (64, 64))
    with pytest.raises(ModelError) as err:
        decoder(np.zeros((1, 8, 10), np.float32))
    assert str(err.value) == (
        "the model's outputs [1, 8, 10] do not match [detection] format 'yolov8': expected one output "
        "[batch, 7, candidates] (4 box values, then 3 classes); fix num_classes (or the labels) or format"
    )
    ssd = Decoder(DetectionConfig(format="ssd", anchors=ANCHORS, score_activation="none"), (64, 64))
    with pytest.raises(ModelError, match="have 3 candidates, but the .* anchors list gives 2 anchors"):
        ssd([np.zeros((1, 3, 4), np.float32), np.zeros((1, 3, 2), np.float32)])
    with pytest.raises(ModelError, match="different batch sizes"):
        ssd([np.zeros((2, 2, 4), np.float32), np.zeros((1, 2, 2), np.float32)])


def test_the_fast_paths_over_large_outputs_agree_with_the_plain_computation():
    rng = np.random.default_rng(3)
    out = np.empty((1, 4 + 20, 3000), np.float32)
    out[0, :2] = rng.uniform(0, 320, (2, 3000))
    out[0, 2:4] = rng.uniform(4, 60, (2, 3000))
    out[0, 4:] = rng.random((20, 3000)).astype(np.float32) ** 4  # most candidates' best class passes 0.3
    scores = out[0, 4:]
    single = Decoder(DetectionConfig(format="yolov8", score_threshold=0.3), (320, 320)).candidates(out)[0]
    best, cls = scores.max(0), scores.argmax(0)
    passing = np.flatnonzero(best >= np.float32(0.3))
    assert passing.size > 3000 / 8  # the whole-array argmax path
    assert single.class_ids.tolist() == cls[passing].tolist() and np.array_equal(single.scores, best[passing])
    few = Decoder(DetectionConfig(format="yolov8", score_threshold=0.99), (320, 320)).candidates(out)[0]
    rare = np.flatnonzero(best >= np.float32(0.99))
    assert 0 < rare.size < 3000 / 8 and few.class_ids.tolist() == cls[rare].tolist()  # the gathered path
    # multi-label with far more passing pairs than max_candidates: the best max_candidates pairs
    config = DetectionConfig(format="yolov8", score_threshold=0.01, multi_label=True, max_candidates=500)
    multi = Decoder(config, (320, 320)).candidates(out)[0]
    c, a = np.nonzero(scores >= np.float32(0.01))
    top = np.argsort(-scores[c, a], kind="stable")[:500]
    assert len(multi) == 500
    assert sorted(zip(multi.class_ids.tolist(), multi.scores.tolist(), strict=True)) == sorted(
        zip(c[top].tolist(), scores[c, a][top].tolist(), strict=True))  # fmt: skip
    # and the whole pipeline at a low threshold equals NMS over every candidate, cut to max_detections
    decoder = Decoder(DetectionConfig(format="yolov8", score_threshold=0.001, max_detections=100), (320, 320))
    cand = decoder.candidates(out)[0]
    from edgekit.tasks.detection import nms

    keep = nms(cand.boxes, cand.scores, 0.45, class_ids=cand.class_ids)[:100]
    (det,) = decoder(out)
    np.testing.assert_array_equal(det.boxes, np.clip(cand.boxes[keep], 0, 320))
    assert det.class_ids.tolist() == cand.class_ids[keep].tolist()
