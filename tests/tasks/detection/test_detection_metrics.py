"""Detection metrics against hand-computed values: COCO mAP (pycocotools underneath), precision, recall and F1,
agreement with FP32, and the re-tuned INT8 threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit.errors import DataError
from edgekit.tasks.detection import Detections
from edgekit.tasks.detection.metrics import (
    GroundTruth,
    agreement,
    coco_map,
    match,
    precision_recall,
    retune_threshold,
)


def _dets(rows) -> Detections:
    """rows of (x1, y1, x2, y2, score, class)."""
    a = np.asarray(rows, np.float64).reshape(-1, 6)
    return Detections(a[:, :4], a[:, 4], a[:, 5].astype(int))


GT = [
    GroundTruth([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], [0, 0, 1]),
    GroundTruth(np.zeros((0, 4)), []),
]
DETS = [
    _dets([
        [0, 0, 10, 10, 0.9, 0],   # TP: the first box
        [1, 0, 11, 10, 0.8, 0],   # FP: a duplicate of it (IoU 90 / 110), which is taken
        [20, 20, 30, 36, 0.7, 0],  # TP: the second box at IoU 100 / 160 = 0.625
        [50, 50, 60, 60, 0.6, 0],  # FP: the third box's place, the wrong class
        [50, 50, 60, 60, 0.3, 1],  # TP: the third box
    ]),
    _dets([[0, 0, 5, 5, 0.95, 0]]),  # FP: an image with nothing in it
]  # fmt: skip


def test_precision_recall_and_f1_at_thresholds_by_hand():
    at = precision_recall(GT, DETS, 0.5)
    assert (at.tp, at.fp, at.fn) == (2, 3, 1)
    assert (at.precision, at.recall, at.f1) == pytest.approx((2 / 5, 2 / 3, 4 / 8))
    low = precision_recall(GT, DETS, 0.25)
    assert (low.tp, low.fp, low.fn, low.f1) == (3, 3, 0, pytest.approx(6 / 9))
    none = precision_recall(GT, DETS, 0.99)
    assert (none.tp, none.fp, none.fn, none.precision, none.recall, none.f1) == (0, 0, 3, 1.0, 0.0, 0.0)
    # a threshold is inclusive: 0.7 keeps the 0.7 detection
    assert precision_recall(GT, DETS, 0.7).tp == 2
    # one matching gives every threshold
    m = match(GT, DETS)
    assert m.references == 3 and m.scores.tolist() == pytest.approx([0.95, 0.9, 0.8, 0.7, 0.6, 0.3])
    assert m.matched.tolist() == [False, True, False, True, False, True]
    assert m.at(0.5) == at


def test_matching_takes_the_unmatched_box_of_highest_iou():
    gt = [GroundTruth([[0, 0, 10, 10], [2, 0, 12, 10]], [0, 0])]
    # the first detection overlaps both (IoU 80/120 with the first, 1 with the second): it takes the second, so
    # the next (IoU 0.7 with the first, 50/120 with the second) takes the first
    dets = [_dets([[2, 0, 12, 10, 0.9, 0], [0, 0, 7, 10, 0.8, 0]])]
    assert precision_recall(gt, dets, 0.0).tp == 2
    assert precision_recall(gt, dets, 0.0, iou_threshold=0.75).tp == 1


def test_inputs_as_plain_tuples_and_mismatched_lengths():
    gt = [(np.array([[0, 0, 10, 10]]), np.array([3]))]
    dets = [(np.array([[0, 0, 10, 10]]), np.array([0.5]), np.array([3]))]
    assert precision_recall(gt, dets, 0.1).f1 == 1.0
    with pytest.raises(DataError, match="2 images of ground truth but 1 of detections"):
        precision_recall(gt * 2, dets, 0.1)
    with pytest.raises(DataError, match="ground truth has 1 boxes but 2 class ids"):
        GroundTruth([[0, 0, 1, 1]], [0, 1])


def test_coco_map_of_perfect_detections_is_one_and_of_nothing_is_zero():
    perfect = [_dets(np.column_stack([g.boxes, np.ones(len(g.boxes)), g.class_ids])) for g in GT]
    m = coco_map(GT, perfect)
    assert (m.map50, m.map50_95) == (pytest.approx(1.0), pytest.approx(1.0))
    assert m.per_class == {0: pytest.approx(1.0), 1: pytest.approx(1.0)}
    assert (m.images, m.ground_truth, m.detections) == (2, 3, 3)
    empty = coco_map(GT, [Detections.empty(), Detections.empty()])
    assert (empty.map50, empty.map50_95, empty.detections) == (0.0, 0.0, 0)
    nothing = coco_map([GroundTruth(np.zeros((0, 4)), [])], [_dets([[0, 0, 1, 1, 0.9, 0]])])
    assert math.isnan(nothing.map50) and math.isnan(nothing.map50_95)


def test_coco_map_by_hand_over_iou_thresholds():
    gt = [GroundTruth([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0])]
    dets = [_dets([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 36, 0.8, 0]])]  # IoU 1 and 0.625
    m = coco_map(gt, dets)
    # IoU 0.5, 0.55, 0.6: both match, AP 1. From 0.65: only the first, recall 0.5 at precision 1: on COCO's 101
    # recall points, 51 of them (0 to 0.5) have precision 1: AP 51/101
    assert m.map50 == pytest.approx(1.0)
    assert m.map50_95 == pytest.approx((3 + 7 * 51 / 101) / 10)


def test_coco_map_counts_classes_with_ground_truth_and_keeps_the_best_100_per_image():
    # a class-1 detection on a class-0 box: class 0 has AP 0, class 1 (no ground truth) is not counted
    wrong = coco_map([GroundTruth([[0, 0, 10, 10]], [0])], [_dets([[0, 0, 10, 10, 0.9, 1]])])
    assert (wrong.map50, wrong.per_class) == (0.0, {0: 0.0})
    boxes = np.array([[i * 20, 0, i * 20 + 10, 10] for i in range(3)], np.float64)
    gt = [GroundTruth(boxes, [0, 0, 0])]
    dets = [_dets(np.column_stack([boxes, [0.9, 0.8, 0.7], [0, 0, 0]]))]
    assert coco_map(gt, dets).map50 == pytest.approx(1.0)
    # the best two only: recall 2/3, precision 1 up to it: 67 of the 101 recall points
    assert coco_map(gt, dets, max_detections=2).map50 == pytest.approx(67 / 101)
    assert coco_map(gt, dets, score_threshold=0.75).map50 == pytest.approx(67 / 101)


def test_agreement_is_f1_against_the_reference_at_the_threshold():
    fp32 = [_dets([[0, 0, 10, 10, 0.9, 0], [20, 20, 30, 30, 0.6, 1], [40, 40, 50, 50, 0.2, 0]])]
    int8 = [_dets([[0, 0, 10, 11, 0.85, 0], [20, 20, 30, 30, 0.4, 1], [40, 40, 50, 50, 0.55, 0]])]
    # at 0.5, FP32 has two boxes; INT8 finds the first, misses the second (0.4) and adds the third (0.55)
    a = agreement(int8, fp32, 0.5)
    assert (a.tp, a.fp, a.fn, a.f1) == (1, 1, 1, 0.5)
    assert agreement(fp32, fp32, 0.5).f1 == 1.0 and agreement(int8, fp32, 0.1).f1 == 1.0


def _scene(rng, n_images=40):
    """Ground truth, and FP32 detections: true boxes (score 0.3..1) and false ones (score 0..0.7)."""
    gt, fp32 = [], []
    for _ in range(n_images):
        k = int(rng.integers(1, 6))
        xy = rng.uniform(0, 500, (k, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(20, 80, (k, 2))], axis=1)
        classes = rng.integers(0, 3, k)
        gt.append(GroundTruth(boxes, classes))
        found = rng.random(k) < 0.9
        fxy = rng.uniform(0, 500, (3, 2))
        false = np.concatenate([fxy, fxy + 30], axis=1)
        rows = np.concatenate([
            np.column_stack([boxes[found] + rng.normal(0, 1, (found.sum(), 4)), rng.uniform(0.3, 1, found.sum()),
                             classes[found]]),
            np.column_stack([false, rng.uniform(0, 0.7, 3), rng.integers(0, 3, 3)]),
        ])  # fmt: skip
        fp32.append(_dets(rows))
    return gt, fp32


def _rescored(dets, factor):
    return [Detections(d.boxes, d.scores * factor, d.class_ids) for d in dets]


def test_retuned_threshold_recovers_a_uniform_score_shift():
    gt, fp32 = _scene(np.random.default_rng(0))
    int8 = _rescored(fp32, 0.8)  # INT8's scores: FP32's times 0.8, so FP32 at 0.5 is INT8 at 0.4
    scores = np.sort(np.concatenate([d.scores for d in int8]))
    below, kept = scores[scores < np.float32(0.4)].max(), scores[scores >= np.float32(0.4)].min()
    for ground_truth in (None, gt):
        r = retune_threshold(fp32, int8, 0.5, ground_truth=ground_truth)
        reference = ground_truth or [GroundTruth(d.boxes, d.class_ids) for d in _cut(fp32, 0.5)]
        fp32_at_t = precision_recall(reference, fp32, 0.5)
        assert r.against == ("fp32" if ground_truth is None else "ground truth")
        assert (r.reference_precision, r.reference_recall) == (fp32_at_t.precision, fp32_at_t.recall)
        if ground_truth is None:
            assert (r.reference_precision, r.reference_recall) == (1.0, 1.0)
        assert (r.precision, r.recall) == (pytest.approx(r.reference_precision), pytest.approx(r.reference_recall))
        # the same detections as FP32's at 0.5: a threshold above the INT8 score just under 0.4, up to 0.4's
        assert below < r.threshold <= kept
        same = precision_recall(reference, int8, r.threshold)
        assert (same.tp, same.fp, same.fn) == (fp32_at_t.tp, fp32_at_t.fp, fp32_at_t.fn)
        assert r.at_user_threshold.recall < r.recall  # at the user's 0.5, INT8 misses what FP32 finds


def _cut(dets, t):
    return [Detections(d.boxes[d.scores >= t], d.scores[d.scores >= t], d.class_ids[d.scores >= t]) for d in dets]


def test_retuned_threshold_keeps_the_users_threshold_when_int8_behaves_as_fp32():
    gt, fp32 = _scene(np.random.default_rng(1))
    r = retune_threshold(fp32, fp32, 0.45)
    assert r.threshold == 0.45 and (r.precision, r.recall) == (1.0, 1.0)
    r = retune_threshold(fp32, fp32, 0.45, ground_truth=gt)
    assert r.threshold == 0.45 and r.at_user_threshold.precision == r.precision


def test_retuned_threshold_of_empty_detections():
    empty = [Detections.empty(), Detections.empty()]
    r = retune_threshold(empty, empty, 0.3)
    assert r.threshold == 0.3 and (r.precision, r.recall) == (1.0, 1.0)
    one = [_dets([[0, 0, 10, 10, 0.9, 0]]), Detections.empty()]
    r = retune_threshold(empty, one, 0.3)  # FP32 finds nothing; INT8's one box must go: just above its score
    assert r.threshold > np.float32(0.9) and r.threshold == pytest.approx(0.9) and r.precision == 1.0
