"""NMS against torchvision's (recorded by make_nms_golden.py), against a plain greedy loop written out here, and
on hand-computed cases: weighted NMS's averages, zero boxes, all boxes overlapping, max detections."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgekit.tasks.detection import box_iou, nms, weighted_nms

GOLDEN = Path(__file__).parent / "data" / "nms_golden.npz"


def _golden_cases():
    g = np.load(GOLDEN)
    box_at = np.concatenate([[0], np.cumsum(g["counts"])])
    kb_at = np.concatenate([[0], np.cumsum(g["keep_batched_counts"])])
    kn_at = np.concatenate([[0], np.cumsum(g["keep_nms_counts"])])
    for i, t in enumerate(g["thresholds"]):
        sl = slice(box_at[i], box_at[i + 1])
        yield (
            g["boxes"][sl].astype(np.float32) / g["grid"],
            g["scores"][sl],
            g["classes"][sl].astype(np.int64),
            float(t),
            g["keep_batched"][kb_at[i] : kb_at[i + 1]].astype(np.int64),
            g["keep_nms"][kn_at[i] : kn_at[i + 1]].astype(np.int64),
        )


CASES = list(_golden_cases())


def test_the_golden_file_is_small_and_covers_the_cases():
    assert GOLDEN.stat().st_size < 300_000
    g = np.load(GOLDEN)
    assert str(g["torchvision"]).startswith("0.29.1")
    counts = g["counts"]
    assert len(CASES) >= 15 and counts.min() == 0 and counts.max() >= 2000 and (counts > 1000).sum() >= 2
    assert len(set(g["classes"].tolist())) >= 80
    # the tight clusters: most boxes suppressed
    assert any(len(kb) < 0.3 * len(b) for b, _, _, _, kb, _ in CASES if len(b) >= 60)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_per_class_nms_keeps_what_torchvision_batched_nms_keeps_in_its_order(case):
    boxes, scores, classes, t, keep_batched, _ = CASES[case]
    assert np.array_equal(nms(boxes, scores, t, class_ids=classes), keep_batched)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_class_agnostic_nms_keeps_what_torchvision_nms_keeps(case):
    boxes, scores, _, t, _, keep_nms = CASES[case]
    assert np.array_equal(nms(boxes, scores, t), keep_nms)


@pytest.mark.parametrize("case", range(len(CASES)))
def test_max_detections_is_the_best_of_the_full_nms(case):
    boxes, scores, classes, t, keep_batched, keep_nms = CASES[case]
    for limit in (1, 3, 50, 100, 300):
        assert np.array_equal(nms(boxes, scores, t, class_ids=classes, max_detections=limit), keep_batched[:limit])
        assert np.array_equal(nms(boxes, scores, t, max_detections=limit), keep_nms[:limit])
        keep, _ = weighted_nms(boxes, scores, t, class_ids=classes, max_detections=limit)
        assert np.array_equal(keep, keep_batched[:limit])  # weighted NMS clusters exactly as hard NMS keeps


def test_box_iou_matches_torchvision():
    g = np.load(GOLDEN)
    a_at = np.concatenate([[0], np.cumsum(g["iou_a_counts"])])
    b_at = np.concatenate([[0], np.cumsum(g["iou_b_counts"])])
    m_at = 0
    for i in range(len(g["iou_a_counts"])):
        a = g["iou_a"][a_at[i] : a_at[i + 1]].astype(np.float32) / g["grid"]
        b = g["iou_b"][b_at[i] : b_at[i + 1]].astype(np.float32) / g["grid"]
        expected = g["iou"][m_at : m_at + len(a) * len(b)].reshape(len(a), len(b))
        m_at += len(a) * len(b)
        np.testing.assert_allclose(box_iou(a, b), expected, rtol=1e-6, atol=1e-7)


def test_box_iou_by_hand():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 0, 0]], np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 4) and iou.dtype == np.float32
    assert iou[0].tolist() == pytest.approx([50 / 150, 1.0, 0.0, 0.0])
    assert iou[1].tolist() == [0.0, 0.0, 0.0, 0.0]  # no area: 0, not NaN


def _plain_greedy(boxes, scores, t, classes=None):
    """Greedy NMS as the papers write it, one candidate at a time; per kept box its cluster (the boxes it
    suppressed, itself first)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # sorted() is stable: ties keep index order
    iou = box_iou(boxes, boxes).astype(np.float64)
    alive, clusters = set(order), []
    for i in order:
        if i not in alive:
            continue
        members = [j for j in order if j in alive and (classes is None or classes[j] == classes[i])
                   and (j == i or iou[i, j] > t)]  # fmt: skip
        alive -= set(members)
        clusters.append(members)
    return clusters


def _random_boxes(rng, n, spread=60.0):
    centres = rng.uniform(0, 400, (max(1, n // 8), 2))
    c = centres[rng.integers(0, len(centres), n)] + rng.normal(0, spread / 6, (n, 2))
    wh = rng.uniform(10, spread, (n, 2))
    return np.concatenate([c - wh / 2, c + wh / 2], axis=1).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_nms_and_weighted_nms_match_a_plain_greedy_loop(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(50, 400))
    boxes = _random_boxes(rng, n)
    scores = (rng.permutation(n) + 1).astype(np.float32) / n
    scores[: n // 10] = scores[n // 10]  # some ties: kept in index order, as a stable sort keeps them
    classes = rng.integers(0, 1 + seed, n)
    t = 0.3 + 0.05 * seed
    for cls in (None, classes):
        clusters = _plain_greedy(boxes, scores, t, cls)
        assert nms(boxes, scores, t, class_ids=cls).tolist() == [c[0] for c in clusters]
        keep, merged = weighted_nms(boxes, scores, t, class_ids=cls)
        assert keep.tolist() == [c[0] for c in clusters]
        for members, box in zip(clusters, merged, strict=True):
            w = scores[members].astype(np.float64)
            np.testing.assert_allclose(box, (boxes[members] * w[:, None]).sum(0) / w.sum(), rtol=1e-5)
        # an early stop still gives each kept box its whole cluster, as MediaPipe does
        for limit in (1, 7, 64):
            keep, merged = weighted_nms(boxes, scores, t, class_ids=cls, max_detections=limit)
            assert keep.tolist() == [c[0] for c in clusters[:limit]]
            for members, box in zip(clusters[:limit], merged, strict=True):
                w = scores[members].astype(np.float64)
                np.testing.assert_allclose(box, (boxes[members] * w[:, None]).sum(0) / w.sum(), rtol=1e-5)


def test_a_limited_nms_over_many_candidates_sorts_only_what_it_needs_and_is_still_exact():
    rng = np.random.default_rng(7)
    n = 6000  # more than twice the sorted head: the rest is sorted only if NMS reaches it
    boxes = _random_boxes(rng, n, spread=40)
    scores = rng.random(n).astype(np.float32)
    scores[::3] = scores[1::3][: len(scores[::3])]  # ties across the head's edge
    classes = rng.integers(0, 80, n)
    full = nms(boxes, scores, 0.45, class_ids=classes)
    for limit in (10, 100, 300):
        assert np.array_equal(nms(boxes, scores, 0.45, class_ids=classes, max_detections=limit), full[:limit])
    # one tight cluster: the first box suppresses everything, so NMS runs through the whole list
    one = np.tile(np.array([[100, 100, 200, 200]], np.float32), (n, 1)) + rng.uniform(0, 2, (n, 4)).astype(np.float32)
    assert nms(one, scores, 0.5, max_detections=100).tolist() == [int(np.argmax(scores))]
    many = np.concatenate([one[:3000], _random_boxes(rng, 3000) + 1000])
    s2 = np.concatenate([scores[:3000] + 1, scores[3000:]]).astype(np.float32)
    keep = nms(many, s2, 0.5, max_detections=50)
    assert keep[0] == int(np.argmax(s2[:3000])) and len(keep) == 50 and (keep[1:] >= 3000).all()
    assert np.array_equal(keep, nms(many, s2, 0.5)[:50])


def test_zero_boxes_and_a_limit_of_zero():
    empty = np.zeros((0, 4), np.float32)
    assert nms(empty, np.zeros(0, np.float32), 0.5).tolist() == []
    keep, merged = weighted_nms(empty, np.zeros(0, np.float32), 0.5, class_ids=np.zeros(0, np.int64))
    assert keep.shape == (0,) and merged.shape == (0, 4)
    boxes = np.array([[0, 0, 1, 1]], np.float32)
    assert nms(boxes, np.ones(1, np.float32), 0.5, max_detections=0).tolist() == []


def test_all_boxes_overlapping_keep_the_best_one_per_class():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10.5], [0.5, 0, 10, 10], [0, 0, 9.5, 10]], np.float32)
    scores = np.array([0.6, 0.9, 0.7, 0.8], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [1]
    assert nms(boxes, scores, 0.5, class_ids=np.array([0, 0, 1, 1])).tolist() == [1, 3]
    # IoU exactly at the threshold does not suppress (strictly above does): IoU of these two is 0.5
    half = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)
    assert nms(half, np.array([0.9, 0.8], np.float32), 0.5).tolist() == [0, 1]
    assert nms(half, np.array([0.9, 0.8], np.float32), 0.49).tolist() == [0]


def test_boxes_of_no_area_are_kept_and_suppress_nothing():
    boxes = np.array([[5, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10]], np.float32)
    assert nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.5).tolist() == [0, 1, 2]
    assert nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 1.0).tolist() == [0, 1, 2]


def test_weighted_nms_averages_a_cluster_by_score_by_hand():
    boxes = np.array([
        [0, 0, 10, 10],    # 0.9: kept, its cluster is itself, 1 and 2
        [1, 1, 11, 11],    # 0.6: IoU 81 / 119 with box 0
        [0, 0, 10, 12],    # 0.3: IoU 100 / 120 with box 0
        [50, 50, 60, 60],  # 0.5: alone
        [2, 2, 12, 12],    # 0.1, class 1: its own class, alone
    ], np.float32)  # fmt: skip
    scores = np.array([0.9, 0.6, 0.3, 0.5, 0.1], np.float32)
    classes = np.array([0, 0, 0, 0, 1])
    keep, merged = weighted_nms(boxes, scores, 0.5, class_ids=classes)
    assert keep.tolist() == [0, 3, 4]
    x1 = (0 * 0.9 + 1 * 0.6 + 0 * 0.3) / 1.8
    y2 = (10 * 0.9 + 11 * 0.6 + 12 * 0.3) / 1.8
    np.testing.assert_allclose(merged[0], [x1, x1, (10 * 0.9 + 11 * 0.6 + 10 * 0.3) / 1.8, y2], rtol=1e-6)
    np.testing.assert_allclose(merged[1:], boxes[[3, 4]])
    # class-agnostic: box 4 (IoU 64 / 136 with box 0, below 0.5) is still alone; at 0.4 it joins box 0
    keep, merged = weighted_nms(boxes, scores, 0.4)
    assert keep.tolist() == [0, 3]
    w = np.array([0.9, 0.6, 0.3, 0.1])
    np.testing.assert_allclose(merged[0], (boxes[[0, 1, 2, 4]] * w[:, None]).sum(0) / w.sum(), rtol=1e-6)
    # hard NMS keeps the same boxes, unmoved
    assert nms(boxes, scores, 0.4).tolist() == [0, 3]


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="2 boxes but 3 scores"):
        nms(np.zeros((2, 4), np.float32), np.zeros(3, np.float32), 0.5)
    with pytest.raises(ValueError, match="2 boxes but 1 class ids"):
        nms(np.zeros((2, 4), np.float32), np.zeros(2, np.float32), 0.5, class_ids=np.zeros(1))
