"""Detection metrics at build time: COCO mAP, precision/recall/F1 at a threshold, agreement with FP32, and the
INT8 score threshold that behaves as FP32's does.

Everything takes plain arrays, one entry a image: ground truth as ``GroundTruth`` (or a ``(boxes, class_ids)``
pair), detections as ``Detections`` (or anything with ``boxes``, ``scores`` and ``class_ids``, or a
``(boxes, scores, class_ids)`` triple); boxes x1, y1, x2, y2 in one image's pixels. Figures are fractions (0-1).

``coco_map`` is the COCO protocol through pycocotools' ``COCOeval`` (the reference implementation). The other
figures match greedily by score: each detection, best first, takes the unmatched reference box of its class
with the highest IoU, if that IoU is at least 0.5. A detection's match depends only on the detections scored
above it, so one matching at the lowest threshold gives the figures at every threshold (``Matches.at``).
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import DataError, require
from edgekit.tasks.detection.suppression import box_iou


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """One image's labelled boxes: ``boxes`` (N, 4) x1, y1, x2, y2 and ``class_ids`` (N,)."""

    boxes: np.ndarray
    class_ids: np.ndarray

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        class_ids = np.asarray(self.class_ids).reshape(-1).astype(np.int64)
        if boxes.shape[0] != class_ids.shape[0]:
            raise DataError(f"ground truth has {boxes.shape[0]} boxes but {class_ids.shape[0]} class ids")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "class_ids", class_ids)


@dataclass(frozen=True)
class CocoMap:
    """COCO box mAP: ``map50_95`` (AP averaged over IoU 0.5:0.95, the COCO headline), ``map50`` (AP at IoU 0.5),
    ``per_class`` (AP@[.5:.95] of each class that has ground truth). NaN when there is no ground truth."""

    map50_95: float
    map50: float
    per_class: dict[int, float]
    images: int
    ground_truth: int
    detections: int


@dataclass(frozen=True)
class PrecisionRecall:
    """Counts and figures at one score threshold. Precision is 1 when nothing is detected, recall 1 when there
    is nothing to find, F1 ``2 TP / (2 TP + FP + FN)`` (1 when both are empty)."""

    threshold: float
    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0


@dataclass(frozen=True, eq=False)
class Matches:
    """Every detection of a set, best score first across all images, and whether it matched a reference box;
    ``references`` counts the reference boxes. ``at(t)`` gives the figures at any threshold."""

    scores: np.ndarray  # (D,) float32, descending
    matched: np.ndarray  # (D,) bool
    references: int

    def at(self, threshold: float) -> PrecisionRecall:
        """The figures of the detections scored at least ``threshold``."""
        # compared in float32, as the decoder compares float32 scores (a score of 0.7 passes a threshold of 0.7)
        k = int(np.searchsorted(-self.scores, -np.float32(threshold), side="right"))
        tp = int(self.matched[:k].sum())
        return PrecisionRecall(float(threshold), tp, k - tp, self.references - tp)

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(k, tp, fp) for each cut that a threshold can make: keeping the best k detections (k = 0, and every k
        where the next score is lower), as int64 arrays."""
        d = self.scores.shape[0]
        tp = np.concatenate([[0], np.cumsum(self.matched)])
        ks = np.arange(d + 1)
        cut = np.ones(d + 1, bool)
        if d > 1:
            cut[1:d] = self.scores[:-1] > self.scores[1:]
        return ks[cut], tp[cut], (ks - tp)[cut]


@dataclass(frozen=True)
class Retuned:
    """The INT8 threshold whose precision and recall are closest to FP32's at the user's threshold.

    ``threshold`` (the user's own when it is among the best); ``precision``/``recall``: INT8's there;
    ``reference_precision``/``reference_recall``: FP32's at the user's threshold; ``at_user_threshold``: INT8's
    figures at the user's threshold, for comparison. Against ground truth when given, else against FP32's
    detections at the user's threshold (then FP32's figures are 1 and 1, and the threshold is the one of best
    agreement).
    """

    threshold: float
    precision: float
    recall: float
    reference_precision: float
    reference_recall: float
    at_user_threshold: PrecisionRecall
    against: str  # "ground truth" or "fp32"


def _gt(item: Any) -> GroundTruth:
    if isinstance(item, GroundTruth):
        return item
    if hasattr(item, "boxes") and hasattr(item, "class_ids"):
        return GroundTruth(item.boxes, item.class_ids)
    boxes, class_ids = item
    return GroundTruth(boxes, class_ids)


def _dets(item: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if hasattr(item, "boxes"):
        boxes, scores, class_ids = item.boxes, item.scores, item.class_ids
    else:
        boxes, scores, class_ids = item
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    class_ids = np.asarray(class_ids).reshape(-1).astype(np.int64)
    if not boxes.shape[0] == scores.shape[0] == class_ids.shape[0]:
        raise DataError(
            f"detections have {boxes.shape[0]} boxes, {scores.shape[0]} scores and {class_ids.shape[0]} class ids"
        )
    return boxes, scores, class_ids


def _pair(ground_truth: Sequence[Any], detections: Sequence[Any]) -> None:
    if len(ground_truth) != len(detections):
        raise DataError(
            f"{len(ground_truth)} images of ground truth but {len(detections)} of detections; give one entry a "
            "image to both, in the same order"
        )


def _best(scores: np.ndarray, threshold: float, limit: int | None) -> np.ndarray:
    """Indices of the scores at least ``threshold``, best first, at most ``limit``."""
    idx = np.flatnonzero(scores >= threshold)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    return idx if limit is None else idx[:limit]


def coco_map(
    ground_truth: Sequence[Any],
    detections: Sequence[Any],
    *,
    score_threshold: float = 0.001,
    max_detections: int = 100,
) -> CocoMap:
    """COCO box mAP of ``detections`` against ``ground_truth`` (one entry a image), through pycocotools'
    ``COCOeval``: the detections scored at least ``score_threshold``, the best ``max_detections`` of each image
    (COCO's protocol: 0.001 and 100). Every box counts (no crowd or ignored regions)."""
    coco_mod = require("pycocotools.coco", extra="compile", purpose="COCO mAP of a detector")
    eval_mod = require("pycocotools.cocoeval", extra="compile", purpose="COCO mAP of a detector")
    _pair(ground_truth, detections)
    images, annotations, results, categories = [], [], [], set()
    for i, (gt_item, det_item) in enumerate(zip(ground_truth, detections, strict=True), start=1):
        gt = _gt(gt_item)
        images.append({"id": i})
        for box, cid in zip(gt.boxes.astype(np.float64), gt.class_ids, strict=True):
            w, h = float(box[2] - box[0]), float(box[3] - box[1])
            annotations.append({
                "id": len(annotations) + 1, "image_id": i, "category_id": int(cid) + 1, "iscrowd": 0,
                "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h,
            })  # fmt: skip
            categories.add(int(cid) + 1)
        boxes, scores, class_ids = _dets(det_item)
        for j in _best(scores, score_threshold, max_detections):
            b = boxes[j].astype(np.float64)
            results.append([i, b[0], b[1], b[2] - b[0], b[3] - b[1], float(scores[j]), int(class_ids[j]) + 1])
    n_gt, n_det = len(annotations), len(results)
    if not annotations:
        return CocoMap(math.nan, math.nan, {}, len(images), 0, n_det)
    if not results:
        return CocoMap(0.0, 0.0, {c - 1: 0.0 for c in sorted(categories)}, len(images), n_gt, 0)
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        gt_coco = coco_mod.COCO()
        gt_coco.dataset = {
            "images": images, "annotations": annotations, "categories": [{"id": c} for c in sorted(categories)],
        }  # fmt: skip
        gt_coco.createIndex()
        dt_coco = gt_coco.loadRes(np.asarray(results, np.float64))
        ev = eval_mod.COCOeval(gt_coco, dt_coco, "bbox")
        ev.params.imgIds = [im["id"] for im in images]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]  # [IoU, recall, class, area, max dets]
    per_class = {}
    for k, cat in enumerate(ev.params.catIds):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        per_class[int(cat) - 1] = float(p.mean()) if p.size else math.nan
    stats = [math.nan if s < 0 else float(s) for s in ev.stats[:2]]
    return CocoMap(stats[0], stats[1], per_class, len(images), n_gt, n_det)


def match(references: Sequence[Any], detections: Sequence[Any], *, iou_threshold: float = 0.5) -> Matches:
    """Match every detection greedily by score (see the module's notes) against the reference boxes (ground
    truth, or another model's detections as ``GroundTruth``), same class, IoU at least ``iou_threshold``."""
    _pair(references, detections)
    all_scores, all_matched, total = [], [], 0
    for ref_item, det_item in zip(references, detections, strict=True):
        ref = _gt(ref_item)
        boxes, scores, class_ids = _dets(det_item)
        total += ref.boxes.shape[0]
        order = np.argsort(-scores, kind="stable")
        matched = np.zeros(order.size, bool)
        if order.size and ref.boxes.shape[0]:
            iou = box_iou(boxes[order], ref.boxes)
            iou[class_ids[order][:, None] != ref.class_ids[None, :]] = -1.0
            ok = iou >= iou_threshold
            used = np.zeros(ref.boxes.shape[0], bool)
            for r in np.flatnonzero(ok.any(axis=1)):  # only detections that can match; each takes one box
                free = ok[r] & ~used
                if free.any():
                    g = int(np.argmax(np.where(free, iou[r], -2.0)))
                    used[g] = True
                    matched[r] = True
        all_scores.append(scores[order])
        all_matched.append(matched)
    scores = np.concatenate(all_scores) if all_scores else np.zeros(0, np.float32)
    matched = np.concatenate(all_matched) if all_matched else np.zeros(0, bool)
    order = np.argsort(-scores, kind="stable")
    return Matches(scores[order], matched[order], total)


def precision_recall(
    ground_truth: Sequence[Any], detections: Sequence[Any], score_threshold: float, *, iou_threshold: float = 0.5
) -> PrecisionRecall:
    """Precision, recall and F1 of the detections scored at least ``score_threshold`` against the ground truth."""
    return match(ground_truth, detections, iou_threshold=iou_threshold).at(score_threshold)


def above(detections: Sequence[Any], threshold: float) -> list[GroundTruth]:
    """Each image's detections scored at least ``threshold``, as reference boxes (``GroundTruth``)."""
    out = []
    for item in detections:
        boxes, scores, class_ids = _dets(item)
        keep = scores >= threshold
        out.append(GroundTruth(boxes[keep], class_ids[keep]))
    return out


def agreement(
    detections: Sequence[Any], reference: Sequence[Any], score_threshold: float, *, iou_threshold: float = 0.5
) -> PrecisionRecall:
    """How far ``detections`` (INT8's) agree with ``reference`` (FP32's on the same images): both cut at
    ``score_threshold``, the reference's boxes taken as ground truth. Its ``f1`` is the agreement."""
    return precision_recall(above(reference, score_threshold), detections, score_threshold, iou_threshold=iou_threshold)


def retune_threshold(
    fp32: Sequence[Any],
    int8: Sequence[Any],
    threshold: float,
    *,
    ground_truth: Sequence[Any] | None = None,
    iou_threshold: float = 0.5,
) -> Retuned:
    """The INT8 score threshold whose precision and recall (against ``ground_truth``, else against FP32's
    detections at ``threshold``) are closest, in Euclidean distance, to FP32's at ``threshold``.

    ``fp32`` and ``int8`` are the two models' detections on the same images at a low threshold (0.001, say):
    the answer is never below the lowest INT8 score given. Ties go to the threshold nearest the user's.
    """
    against = "fp32" if ground_truth is None else "ground truth"
    reference = above(fp32, threshold) if ground_truth is None else list(ground_truth)
    target = precision_recall(reference, fp32, threshold, iou_threshold=iou_threshold)
    m = match(reference, int8, iou_threshold=iou_threshold)
    ks, tp, fp = m.curve()  # every cut a threshold can make, with PrecisionRecall's conventions for empty sets
    fn = m.references - tp
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    recall = np.where(tp + fn > 0, tp / np.maximum(tp + fn, 1), 1.0)
    dist = (precision - target.precision) ** 2 + (recall - target.recall) ** 2
    # keeping the best k detections is a threshold in (s[k], s[k - 1]]: lo and hi of each cut
    edges = np.concatenate([[np.inf], m.scores.astype(np.float64), [-np.inf]])
    hi, lo = edges[ks], edges[ks + 1]
    t32 = float(np.float32(threshold))  # scores are float32, and compared with a threshold in float32
    inside = (lo < t32) & (t32 <= hi)
    nearest = np.where(inside, 0.0, np.minimum(np.abs(t32 - hi), np.abs(t32 - lo)))
    best = int(np.lexsort((nearest, np.round(dist, 12)))[0])
    if inside[best]:
        value = float(threshold)
    elif not np.isfinite(hi[best]):  # keep nothing: just above the best score
        value = float(np.nextafter(np.float32(lo[best]), np.float32(np.inf)))
    elif not np.isfinite(lo[best]) or np.float32((hi[best] + lo[best]) / 2) <= lo[best]:
        value = float(hi[best])  # the lowest score kept
    else:
        value = float((hi[best] + lo[best]) / 2)
    return Retuned(
        threshold=value,
        precision=float(precision[best]),
        recall=float(recall[best]),
        reference_precision=target.precision,
        reference_recall=target.recall,
        at_user_threshold=m.at(threshold),
        against=against,
    )
