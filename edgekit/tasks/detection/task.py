"""The ``detection`` task: a detector's outputs decoded to boxes (``Decoder``), scored by COCO mAP, compared
with FP32 by the F1 of one's detections against the other's, drawn as labelled boxes.

A detection ``Task`` is bound to one model's ``postprocess`` record (``bind``): its ``[detection]`` config and
input size, which every method needs. The unbound instance that ``get_task("detection")`` returns binds on each
``decode`` call from the record it is given. Boxes come back in the source image's pixels when ``decode`` is
given the images' sizes, else in input pixels. Accuracy is measured in input pixels, against ground truth
mapped into them (``GroundTruth`` per image): a letterbox or a stretch is an axis-wise scale and shift, which
leaves every IoU unchanged, so the figures are those of the source images.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import UsageError
from edgekit.tasks.base import Comparison, Metrics, Task, draw_text_rows
from edgekit.tasks.detection.config import DetectionConfig
from edgekit.tasks.detection.decode import Decoder
from edgekit.tasks.detection.result import Detections

# COCO's protocol: mAP over the detections scored at least 0.001, at most 100 an image
MAP_SCORE_THRESHOLD = 0.001
MAP_MAX_DETECTIONS = 100


@dataclass(frozen=True)
class DetectionEvaluation(Metrics):
    """COCO mAP@[.5:.95] and mAP@.5, and precision, recall and F1 at the shipped score threshold, in %."""

    map50_95: float
    map50: float
    precision: float
    recall: float
    f1: float
    score_threshold: float
    per_class: dict[str, float] = field(default_factory=dict)  # AP@[.5:.95] per class, %
    images: int = 0
    objects: int = 0

    def summary(self) -> dict[str, Any]:
        return {"map50_95": _r(self.map50_95), "map50": _r(self.map50), "precision": _r(self.precision),
                "recall": _r(self.recall), "f1": _r(self.f1), "score_threshold": self.score_threshold}  # fmt: skip

    @property
    def score(self) -> float:
        return self.map50_95


def _r(v: float) -> float | None:
    return None if v is None or math.isnan(v) else round(float(v), 3)


class Detection(Task):
    name = "detection"
    metric = "map50_95"
    mismatch_name = "detection mismatches"
    keeps_output_tail_in_float = True
    agreement_is_per_image = False  # an F1 over boxes

    def __init__(self, postprocess: Mapping[str, Any] | None = None) -> None:
        self._postprocess = dict(postprocess) if postprocess else None
        self._decoders: dict[str, Decoder] = {}

    # -- binding
    def bind(self, postprocess: Mapping[str, Any]) -> Detection:
        """This task for one model's postprocess record, checked now (a bundle's record is data from someone
        else): ValueError naming the bad part, which the runtime reports as a damaged bundle."""
        task = Detection(postprocess)
        hw = postprocess.get("input_hw")
        if not (isinstance(hw, list) and len(hw) == 2 and all(_int_in(v, 1, 1 << 16) for v in hw)):
            raise ValueError(f"'input_hw' is {_shown(hw)}, not [height, width] in pixels")
        t = postprocess.get("score_threshold", 0.25)
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 1:
            raise ValueError(f"'score_threshold' is {_shown(t)}, not a score from 0 to 1")
        merged = postprocess.get("merged_outputs")
        if merged is not None and not (isinstance(merged, dict) and _int_in(merged.get("box_values"), 1, 1 << 16)):
            raise ValueError(f"'merged_outputs' is {_shown(merged)}, not a record with an integer 'box_values'")
        if not isinstance(postprocess.get("detection"), dict):
            raise ValueError("'detection' is not the detector's [detection] record")
        try:
            task._decoder()
        except UsageError as exc:
            raise ValueError(str(exc)) from exc
        return task

    def _decoder(self, postprocess: Mapping[str, Any] | None = None) -> Decoder:
        record = postprocess if postprocess is not None else self._postprocess
        if not record or "detection" not in record:
            raise ValueError("a detection task needs the bundle's postprocess record (Task.bind(postprocess))")
        key = json.dumps([record["detection"], record.get("input_hw")], sort_keys=True)
        if key not in self._decoders:
            config = DetectionConfig.from_dict(record["detection"])
            self._decoders[key] = Decoder(config, tuple(record["input_hw"]))
        return self._decoders[key]

    @property
    def record(self) -> dict[str, Any]:
        """The postprocess record this task is bound to."""
        return dict(self._postprocess or {})

    @property
    def config(self) -> DetectionConfig:
        return self._decoder().config

    # -- running
    def decode(
        self,
        outputs: np.ndarray,
        postprocess: Mapping[str, Any],
        labels: Sequence[str],
        *,
        top_k: int = 5,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[Detections]:
        """Boxes at the shipped score threshold (the ``score_threshold`` of the record's ``detection``), at most
        ``max_detections`` an image (``top_k`` does not apply); in the source images' pixels given ``sizes``."""
        decoder = self._decoder(postprocess)
        return decoder(_split(outputs, postprocess), sizes, labels=tuple(labels),
                       score_threshold=postprocess.get("score_threshold"))  # fmt: skip

    def postprocess_record(self, output_kind: str, output_shape: Sequence[int], *, spec: Any = None) -> dict[str, Any]:
        if spec is None or spec.detection is None:
            raise ValueError("a detector's postprocess record needs its model spec (the [detection] section)")
        config = DetectionConfig.from_dict(spec.detection)
        return {
            "activation": config.score_activation or "none",
            "top_k": config.max_detections,
            "detection": config.to_dict(),
            "input_hw": list(spec.input.hw),
            "score_threshold": config.score_threshold,
        }

    def _dets(self, outputs: np.ndarray, threshold: float, limit: int | None = None) -> list[Detections]:
        return self._decoder()(_split(outputs, self._postprocess), None, score_threshold=threshold,
                               max_detections=limit)  # fmt: skip

    @property
    def threshold(self) -> float:
        """The score threshold the bundle ships with (re-tuned for its precision, see ``retune``)."""
        record = self._postprocess or {}
        return float(record.get("score_threshold", self.config.score_threshold))

    @property
    def user_threshold(self) -> float:
        """The threshold the spec gave: FP32's, the reference every precision is re-tuned against."""
        return float(self.config.score_threshold)

    def retune(self, outputs: np.ndarray, reference: np.ndarray, labels: Any) -> dict[str, Any]:
        """The score threshold for this precision: the one whose precision and recall (against the ground truth
        in ``labels``, else against FP32's detections at the user's threshold) come closest to FP32's at the
        user's threshold (``metrics.retune_threshold``). INT8 shifts confidences, so the best threshold moves."""
        from edgekit.tasks.detection import metrics

        t = self.user_threshold
        low = self._dets(outputs, MAP_SCORE_THRESHOLD, MAP_MAX_DETECTIONS)
        ref = self._dets(reference, MAP_SCORE_THRESHOLD, MAP_MAX_DETECTIONS)
        r = metrics.retune_threshold(ref, low, t, ground_truth=None if labels is None else list(labels))
        at = r.at_user_threshold
        return {
            "user": t, "shipped": round(r.threshold, 6), "against": r.against,
            "fp32_at_user": {"precision": round(100 * r.reference_precision, 3), "recall": round(100 * r.reference_recall, 3)},
            "this_at_user": {"precision": round(100 * at.precision, 3), "recall": round(100 * at.recall, 3)},
            "this_at_shipped": {"precision": round(100 * r.precision, 3), "recall": round(100 * r.recall, 3)},
        }  # fmt: skip

    # -- measuring
    def evaluate(self, outputs: np.ndarray, labels: Any, names: Sequence[str]) -> DetectionEvaluation:
        """``labels``: one ``GroundTruth`` an image, in input pixels."""
        from edgekit.tasks.detection import metrics

        gt = list(labels)
        low = self._dets(outputs, MAP_SCORE_THRESHOLD, MAP_MAX_DETECTIONS)
        coco = metrics.coco_map(gt, low, score_threshold=MAP_SCORE_THRESHOLD, max_detections=MAP_MAX_DETECTIONS)
        pr = metrics.precision_recall(gt, low, self.threshold)
        per_class = {
            (names[c] if 0 <= c < len(names) else f"class_{c}"): round(100.0 * ap, 3)
            for c, ap in coco.per_class.items()
            if not math.isnan(ap)
        }
        return DetectionEvaluation(100.0 * coco.map50_95, 100.0 * coco.map50, 100.0 * pr.precision,
                                   100.0 * pr.recall, 100.0 * pr.f1, self.threshold, per_class, len(gt),
                                   sum(len(g.boxes) for g in gt))  # fmt: skip

    def agreement(self, outputs: np.ndarray, reference: np.ndarray) -> float:
        """F1 of these detections at the shipped threshold against the reference's (FP32's) at the user's,
        matched at IoU 0.5 and the same class, in %."""
        from edgekit.tasks.detection import metrics

        t, ref_t = self.threshold, self.user_threshold
        reference_boxes = metrics.above(self._dets(reference, ref_t), ref_t)
        return 100.0 * metrics.precision_recall(reference_boxes, self._dets(outputs, t), t).f1

    def compare(self, outputs: np.ndarray, reference: np.ndarray, labels: Any) -> Comparison:
        agreement = self.agreement(outputs, reference)
        if labels is None:
            return Comparison(agreement)
        names: tuple[str, ...] = ()
        ref, this = self.evaluate(reference, labels, names), self.evaluate(outputs, labels, names)
        return Comparison(agreement, ref.score, this.score)

    def selftest_mismatches(self, outputs: np.ndarray, expected: np.ndarray) -> int:
        """Inputs whose detections at the shipped threshold differ from the stored ones (not every box of one
        matched by a box of the other, same class, IoU at least 0.5)."""
        from edgekit.tasks.detection import metrics

        t = self.threshold
        got, want = self._dets(outputs, t), self._dets(expected, t)
        return sum(metrics.agreement([g], [w], t).f1 < 1.0 for g, w in zip(got, want, strict=True))

    def selftest_margin(self, outputs: np.ndarray) -> np.ndarray:
        """How far every candidate's score is from the shipped threshold (the nearest one decides), over the
        threshold; inputs with no detection at all count half, so the stored ones show boxes."""
        t = self.threshold
        decoder = self._decoder()
        margins = []
        cands = decoder.candidates(_split(outputs, self._postprocess), score_threshold=t / 2)
        for cand, dets in zip(cands, self._dets(outputs, t), strict=True):
            near = np.abs(cand.scores - t).min() if len(cand) else t
            margins.append(float(near) / t * (1.0 if len(dets) else 0.5))
        return np.asarray(margins)

    def draw(self, image: np.ndarray, result: Mapping[str, Any]) -> int:
        """Each box with its label and score, in a colour of its class; a count line at the top left."""
        import cv2

        items = result.get("detections") or []
        scale = max(0.4, image.shape[1] / 1000)
        thick = max(1, round(scale * 2))
        for d in items:
            x1, y1, x2, y2 = (round(float(v)) for v in d["box"])
            colour = _colour(int(d.get("class_id", 0)))
            cv2.rectangle(image, (x1, y1), (x2, y2), colour, thick)
            text = f"{d['label']} {d['score'] * 100:.0f}%"
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
            top = max(0, y1 - th - base - 4)
            cv2.rectangle(image, (x1, top), (x1 + tw + 4, top + th + base + 4), colour, -1)
            cv2.putText(image, text, (x1 + 2, top + th + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick,
                        cv2.LINE_AA)  # fmt: skip
        counts: dict[str, int] = {}
        for d in items:
            counts[d["label"]] = counts.get(d["label"], 0) + 1
        line = f"{len(items)} detection{'s' if len(items) != 1 else ''}" + (
            ": " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) if counts else ""
        )
        return draw_text_rows(image, [(line, (255, 255, 255))])


def _int_in(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _shown(v: Any) -> str:
    return repr(v)[:60].encode("ascii", "backslashreplace").decode()


def _split(outputs: np.ndarray, postprocess: Mapping[str, Any] | None) -> np.ndarray | list[np.ndarray]:
    """An SSD's joined output [B, N, K + C] back into its box deltas and scores (``merged_outputs``)."""
    merged = (postprocess or {}).get("merged_outputs")
    if not merged:
        return outputs
    k = int(merged["box_values"])
    return [outputs[..., :k], outputs[..., k:]]


def _colour(class_id: int) -> tuple[int, int, int]:
    """A bright colour a class (BGR), the same on every frame."""
    hue = (class_id * 47) % 180
    import cv2

    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)
