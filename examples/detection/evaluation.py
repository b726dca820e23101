"""Decode, NMS and COCO-protocol mAP for detectors with the YOLOv8 output layout, in NumPy.

The layout: one output ``[B, 4 + C, N]``, rows centre-x, centre-y, width, height in input pixels, then
C class scores in [0, 1] (no objectness). ``postprocess`` turns one image's ``[4 + C, N]`` into boxes,
scores and classes the way the COCO evaluation of YOLOv8 does: every (cell, class) pair above the
score threshold is a candidate (multi-label), NMS runs per class, the best ``max_detections`` stay.
``coco_map`` scores detections with pycocotools (the reference COCO implementation): mAP@0.5:0.95
and mAP@0.5 over all classes, 100 detections an image.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import cv2
import numpy as np


def letterbox(image: np.ndarray, size: int, pad_value: int = 114) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Fit ``image`` (H, W, 3) into ``size`` x ``size`` keeping its aspect, centred, padded with ``pad_value``.

    Returns the fitted image, the scale applied and the (x, y) padding offset, so that a box in the
    fitted image maps back to the original as ``(box - offset) / scale``.
    """
    h, w = image.shape[:2]
    scale = min(size / w, size / h)
    nw, nh = round(w * scale), round(h * scale)
    if (nw, nh) != (w, h):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    out = np.full((size, size, 3), pad_value, np.uint8)
    dx, dy = (size - nw) // 2, (size - nh) // 2
    out[dy : dy + nh, dx : dx + nw] = image
    return out, scale, (dx, dy)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, max_keep: int = 0) -> np.ndarray:
    """Greedy NMS over boxes (K, 4) x1 y1 x2 y2; the kept indices, best score first, at most ``max_keep`` (0: all)."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size and (max_keep <= 0 or len(keep) < max_keep):
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iw = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        ih = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = iw * ih
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, np.int64)


def postprocess(
    output: np.ndarray, score_threshold: float = 0.001, iou_threshold: float = 0.5, max_detections: int = 100
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's ``[4 + C, N]`` output -> boxes (K, 4) x1 y1 x2 y2, scores (K,), classes (K,); per-class NMS."""
    xywh = output[:4].T.astype(np.float32)
    scores = output[4:].T.astype(np.float32)  # (N, C)
    cell, cls = np.nonzero(scores > score_threshold)
    if cell.size == 0:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    sc = scores[cell, cls]
    if sc.size > 30 * max_detections:  # bound the NMS work, as YOLOv8's max_nms does
        top = np.argsort(-sc, kind="stable")[: 30 * max_detections]
        cell, cls, sc = cell[top], cls[top], sc[top]
    c = xywh[cell]
    boxes = np.stack([c[:, 0] - c[:, 2] / 2, c[:, 1] - c[:, 3] / 2, c[:, 0] + c[:, 2] / 2, c[:, 1] + c[:, 3] / 2], 1)
    offset = cls[:, None].astype(np.float32) * (boxes.max() + 1.0)  # per-class NMS in one pass
    keep = nms(boxes + offset, sc, iou_threshold, max_detections)
    return boxes[keep], sc[keep], cls[keep].astype(np.int64)


def load_scenes(folder: Path) -> tuple[list[np.ndarray], dict]:
    """The RGB images of a scenes folder (see make_scenes.py), in annotation order, and its COCO dict."""
    coco = json.loads((folder / "annotations.json").read_text())
    images = []
    for entry in coco["images"]:
        img = cv2.imread(str(folder / entry["file_name"]), cv2.IMREAD_COLOR)
        if img is None:
            raise SystemExit(f"{folder / entry['file_name']}: cannot read the image")
        images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return images, coco


def coco_map(
    coco: dict, detections: list[tuple[np.ndarray, np.ndarray, np.ndarray]], agnostic: bool = False
) -> dict[str, float]:
    """mAP@0.5:0.95, mAP@0.5 (and the rest of COCO's 12 figures) of per-image detections, pycocotools.

    ``detections[i]`` belongs to ``coco["images"][i]``: boxes x1 y1 x2 y2 in that image's pixels, scores,
    class indices (= category ids of make_scenes.py). ``agnostic`` ignores the classes (COCOeval's
    ``useCats = 0``): how well objects are found and boxed, whatever their class. Adds ``ap50_<class>``,
    each class's AP@0.5, unless agnostic.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    results = []
    for entry, (boxes, scores, classes) in zip(coco["images"], detections, strict=True):
        for b, s, c in zip(boxes.tolist(), scores.tolist(), classes.tolist(), strict=True):
            results.append(
                {
                    "image_id": entry["id"],
                    "category_id": int(c),
                    "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                    "score": s,
                }
            )
    names = ["map", "map50", "map75", "map_small", "map_medium", "map_large"]
    names += ["ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large"]
    if not results:
        return dict.fromkeys(names, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {k: coco[k] for k in ("images", "annotations", "categories")}
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(results), "bbox")
        ev.params.maxDets = [1, 10, 100]
        ev.params.useCats = 0 if agnostic else 1
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    out = {n: round(float(v), 4) for n, v in zip(names, ev.stats, strict=True)}
    if not agnostic:  # precision[T, R, K, A, M]: IoU 0.5, all recall points, class k, all areas, 100 dets
        for k, cat in enumerate(ev.params.catIds):
            p = ev.eval["precision"][0, :, k, 0, 2]
            name = next(c["name"] for c in coco["categories"] if c["id"] == cat)
            out[f"ap50_{name}"] = round(float(p[p > -1].mean()) if (p > -1).any() else -1.0, 4)
    return out
