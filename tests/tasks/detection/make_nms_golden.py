"""Make tests/tasks/detection/data/nms_golden.npz: torchvision's NMS on seeded random cases, the reference that
edgekit's NumPy NMS is tested against (test_detection_nms.py).

Recorded with torch 2.14.1 and torchvision 0.29.1 (CPU kernels). torchvision cannot be installed beside the
project's torch, so regenerate in a throwaway venv:

    python3 -m venv /tmp/tvenv && /tmp/tvenv/bin/pip install torch==2.14.1 torchvision==0.29.1 numpy
    /tmp/tvenv/bin/python tests/tasks/detection/make_nms_golden.py
    rm -rf /tmp/tvenv

Each case has boxes in clusters (many overlaps) and scattered, coordinates on a 1/8-pixel grid (exact in
float32, and still exact after batched_nms's per-class coordinate offsets), distinct scores (no ties, whose
order torchvision does not promise), and an IoU threshold moved to the middle of the gap between the pairs'
IoUs around it, so no pair sits within float rounding of it. The file records, per case, the keep indices of
``torchvision.ops.batched_nms`` and of class-agnostic ``torchvision.ops.nms``, in order; and a few
``torchvision.ops.box_iou`` matrices. Counts above 1,000 boxes take batched_nms's per-class path, below it
its coordinate-offset path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torchvision

OUT = Path(__file__).resolve().parent / "data" / "nms_golden.npz"
GRID = 8  # coordinates are multiples of 1/GRID pixel

# (boxes, classes, wanted IoU threshold, clusters[, spread of a cluster's centres, in box sizes])
CASES: list[tuple] = [
    (0, 1, 0.5, 1),
    (1, 1, 0.5, 1),
    (2, 1, 0.5, 1),
    (7, 2, 0.45, 2),
    (20, 1, 0.3, 2),
    (40, 3, 0.5, 5),
    (60, 1, 0.7, 3),
    (100, 5, 0.45, 10),
    (150, 80, 0.45, 20),
    (200, 1, 0.1, 4),
    (250, 10, 0.6, 15),
    (300, 20, 0.5, 30),
    (500, 3, 0.45, 40),
    (800, 80, 0.65, 60),
    (1200, 5, 0.45, 80),
    (2000, 20, 0.5, 120),
    (64, 1, 0.5, 1, 0.02),  # all in one tight cluster: the first suppresses (nearly) all
    (128, 4, 0.3, 1, 0.02),
    (300, 80, 0.45, 3, 0.03),  # few objects, many classes, heavy overlaps
    (64, 1, 0.5, 1),
]


def boxes_for(rng: np.random.Generator, n: int, clusters: int, spread: float = 0.12) -> np.ndarray:
    """Boxes in ``clusters`` clusters (about 3/4 of them) and scattered, in 1/GRID pixel units (int)."""
    centres = rng.uniform(40, 984, (clusters, 2))
    sizes = rng.uniform(12, 200, (clusters, 2))
    which = rng.integers(0, clusters, n)
    scattered = rng.random(n) < 0.25
    c = centres[which] + rng.normal(0, spread, (n, 2)) * sizes[which]
    wh = sizes[which] * rng.uniform(1 - 2.5 * spread, 1 + 2.5 * spread, (n, 2))
    c[scattered] = rng.uniform(0, 1024, (int(scattered.sum()), 2))
    wh[scattered] = rng.uniform(4, 300, (int(scattered.sum()), 2))
    x1y1 = np.clip(c - wh / 2, 0, 1023)
    x2y2 = np.clip(c + wh / 2, 1, 1024)
    q1 = np.floor(x1y1 * GRID)
    q2 = np.maximum(np.ceil(x2y2 * GRID), q1 + GRID)  # at least one pixel wide and high
    return np.concatenate([q1, q2], axis=1).astype(np.int16)


def iou64(b: np.ndarray) -> np.ndarray:
    b = b.astype(np.float64)
    w = np.clip(np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / (area[:, None] + area[None, :] - inter)


def safe_threshold(boxes: np.ndarray, classes: np.ndarray, wanted: float) -> float:
    """``wanted``, or the middle of the gap between the pair IoUs around it when a pair is within 1e-4 of it
    (all pairs count: the class-agnostic run sees every pair)."""
    if len(boxes) < 2:
        return wanted
    iou = iou64(boxes / GRID)
    values = np.unique(iou[np.triu_indices(len(boxes), 1)])
    below, above = values[values <= wanted], values[values > wanted]
    lo = below.max() if below.size else 0.0
    hi = above.min() if above.size else 1.0
    assert hi - lo > 1e-6, (len(boxes), lo, hi)
    return wanted if min(wanted - lo, hi - wanted) > 1e-4 else float((lo + hi) / 2)


def main() -> None:
    rng = np.random.default_rng(13)
    all_boxes, all_scores, all_classes, thresholds, counts = [], [], [], [], []
    keep_batched, keep_nms, n_batched, n_nms = [], [], [], []
    for n, n_classes, wanted, clusters, *spread in CASES:
        q = boxes_for(rng, n, clusters, *spread)
        scores = ((rng.permutation(n) + rng.uniform(0.1, 0.9, n)) / max(n, 1)).astype(np.float32)
        classes = rng.integers(0, n_classes, n).astype(np.int16)
        t = safe_threshold(q, classes, wanted)
        b = torch.from_numpy(q.astype(np.float32) / GRID)
        s, c = torch.from_numpy(scores), torch.from_numpy(classes.astype(np.int64))
        kb = torchvision.ops.batched_nms(b, s, c, t).numpy().astype(np.int32)
        kn = torchvision.ops.nms(b, s, t).numpy().astype(np.int32)
        all_boxes.append(q)
        all_scores.append(scores)
        all_classes.append(classes)
        thresholds.append(t)
        counts.append(n)
        keep_batched.append(kb)
        keep_nms.append(kn)
        n_batched.append(kb.size)
        n_nms.append(kn.size)
        print(f"{n:5d} boxes {n_classes:3d} classes IoU {t:.6f}: batched keeps {kb.size}, agnostic {kn.size}")
    iou_a, iou_b, iou_m = [], [], []
    for na, nb in ((5, 7), (30, 20), (1, 40)):
        a, b = boxes_for(rng, na, 2), boxes_for(rng, nb, 2)
        m = torchvision.ops.box_iou(torch.from_numpy(a / GRID).float(), torch.from_numpy(b / GRID).float())
        iou_a.append(a)
        iou_b.append(b)
        iou_m.append(m.numpy().astype(np.float32).reshape(-1))
    np.savez_compressed(
        OUT,
        torchvision=np.array(torchvision.__version__),
        grid=np.array(GRID),
        counts=np.array(counts, np.int32),
        thresholds=np.array(thresholds, np.float64),
        boxes=np.concatenate(all_boxes),
        scores=np.concatenate(all_scores),
        classes=np.concatenate(all_classes),
        keep_batched=np.concatenate(keep_batched),
        keep_batched_counts=np.array(n_batched, np.int32),
        keep_nms=np.concatenate(keep_nms),
        keep_nms_counts=np.array(n_nms, np.int32),
        iou_a=np.concatenate(iou_a),
        iou_a_counts=np.array([len(a) for a in iou_a], np.int32),
        iou_b=np.concatenate(iou_b),
        iou_b_counts=np.array([len(b) for b in iou_b], np.int32),
        iou=np.concatenate(iou_m),
    )
    print(f"wrote {OUT} ({OUT.stat().st_size / 1024:.0f} KB)")


if __name__ == "__main__":
    main()
