"""Raw detector outputs -> candidate boxes -> NMS -> detections in the original image's pixels, in NumPy.

``Decoder(config, input_hw)`` is built once per model (it makes the SSD anchors once); calling it on a batch's
outputs gives one ``Detections`` a image. ``Decoder.candidates`` is the first half alone: per image the boxes
x1, y1, x2, y2 in input pixels whose score passes the threshold, before NMS.

The work is vectorised over candidates: the score threshold is applied to the raw scores (for a sigmoid, to
the logits, through its inverse), and boxes are decoded and activations applied only for the candidates that
pass, so 8,400 x 80 YOLO scores cost one max over the class axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgekit.errors import ModelError
from edgekit.tasks.detection.anchors import ssd_anchors
from edgekit.tasks.detection.config import DetectionConfig, OutputLayout, _check_outputs
from edgekit.tasks.detection.geometry import Fit, _size, fit_image, to_source
from edgekit.tasks.detection.result import Detections
from edgekit.tasks.detection.suppression import nms, weighted_nms

# exp() of a size delta is clipped here (torchvision's box coder's log(1000 / 16)): a wild delta gives a box
# 62.5 times its anchor, not an overflow
_EXP_CLIP = math.log(1000.0 / 16)

SourceSizes = Sequence[tuple[int, int]] | tuple[int, int] | None


@dataclass(frozen=True, eq=False)
class Candidates:
    """One image's candidates before NMS: ``boxes`` (N, 4) float32 x1, y1, x2, y2 in input pixels, ``scores``
    (N,) float32, ``class_ids`` (N,) int64."""

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


class Decoder:
    """Decodes a detector's outputs as its ``DetectionConfig`` says, for an input of ``input_hw`` (height, width).

    ``output_shapes`` (optional) checks the model's outputs up front (``DetectionConfig.check_outputs``); the
    outputs given to the decoder are checked in any case, once per distinct set of shapes.
    """

    def __init__(
        self,
        config: DetectionConfig,
        input_hw: tuple[int, int],
        output_shapes: Sequence[Sequence[object]] | None = None,
    ) -> None:
        self.config = config
        self.input_hw = _size(input_hw, "input size")
        self.anchors: np.ndarray | None = None
        if config.format == "ssd":
            if config.anchors is not None:
                self.anchors = np.asarray(config.anchors, np.float32)
            else:
                assert config.anchor_generator is not None
                self.anchors = ssd_anchors(config.anchor_generator, self.input_hw)
            self._variances = np.asarray(config.effective_variances(self.input_hw), np.float32)
        self._checked: dict[tuple[tuple[object, ...], ...], OutputLayout] = {}
        if output_shapes is not None:
            self.check([tuple(s) for s in output_shapes])

    def check(self, shapes: Sequence[tuple[object, ...]]) -> OutputLayout:
        """The layout of outputs of these shapes; a ModelError line if they do not match the config."""
        key = tuple(tuple(s) for s in shapes)
        layout = self._checked.get(key)
        if layout is None:
            count = None if self.anchors is None else len(self.anchors)
            layout = _check_outputs(self.config, list(key), self.input_hw, anchor_count=count)
            if len(self._checked) >= 16:  # outputs of ever new shapes (a dynamic candidate count): keep a few
                self._checked.clear()
            self._checked[key] = layout
        return layout

    def candidates(
        self, outputs: np.ndarray | Sequence[np.ndarray], *, score_threshold: float | None = None
    ) -> list[Candidates]:
        """Per image, the candidates whose score is at least the threshold (the config's, within the graph's
        bounds), at most ``max_candidates`` of them (the best)."""
        arrays = [outputs] if isinstance(outputs, np.ndarray) else list(outputs)
        layout = self.check([a.shape for a in arrays])
        t, _ = self.config.bounded(score_threshold, None)
        main = np.asarray(arrays[layout.boxes])
        batch = main.shape[0]
        if layout.scores is not None and np.shape(arrays[layout.scores])[0] != batch:
            raise ModelError(
                f"the model's box and score outputs have different batch sizes ({batch} and "
                f"{np.shape(arrays[layout.scores])[0]}); they must be outputs of the same images"
            )
        fmt, out = self.config.format, []
        for b in range(batch):
            if fmt == "yolov8":
                cand = self._yolov8(main[b], t)
            elif fmt == "yolov5":
                cand = self._yolov5(main[b], t)
            elif fmt == "ssd":
                cand = self._ssd(main[b], np.asarray(arrays[layout.scores])[b], t)
            else:
                cand = self._boxes(main[b], t)
            out.append(self._top(cand, self.config.max_candidates))
        return out

    def suppress(self, cand: Candidates, *, max_detections: int | None = None) -> Candidates:
        """NMS of one image's candidates as the config says (none with ``nms_in_graph``), best first, at most
        ``max_detections`` (the config's, within the graph's bounds)."""
        c = self.config
        _, limit = c.bounded(None, max_detections)
        if c.nms_in_graph:
            return self._top(cand, limit, ordered=True)
        classes = None if c.class_agnostic else cand.class_ids
        if c.nms == "weighted":
            keep, boxes = weighted_nms(
                cand.boxes, cand.scores, c.iou_threshold, class_ids=classes, max_detections=limit
            )
        else:
            keep = nms(cand.boxes, cand.scores, c.iou_threshold, class_ids=classes, max_detections=limit)
            boxes = cand.boxes[keep]
        return Candidates(boxes, cand.scores[keep], cand.class_ids[keep])

    def __call__(
        self,
        outputs: np.ndarray | Sequence[np.ndarray],
        source_hw: SourceSizes = None,
        *,
        labels: Sequence[str] = (),
        score_threshold: float | None = None,
        max_detections: int | None = None,
    ) -> list[Detections]:
        """One ``Detections`` a image of the batch: decoded, NMS applied, boxes mapped to the source image.

        ``source_hw`` is each image's original (height, width) (one pair for the whole batch, or one a image);
        None leaves the boxes in input pixels, clipped to the input. ``score_threshold`` and ``max_detections``
        override the config's (an evaluation at 0.001, say), within the graph's baked bounds.
        """
        cands = self.candidates(outputs, score_threshold=score_threshold)
        sources = _sources(source_hw, len(cands), self.input_hw)
        labels = tuple(labels)
        out = []
        for cand, src in zip(cands, sources, strict=True):
            kept = self.suppress(cand, max_detections=max_detections)
            fit = fit_image(src, self.input_hw, self.config.fit if source_hw is not None else "stretch")
            out.append(Detections(to_source(kept.boxes, fit), kept.scores, kept.class_ids, labels))
        return out

    def fit(self, source_hw: tuple[int, int]) -> Fit:
        """How an image of ``source_hw`` is fitted into this decoder's input (``fit`` and ``pad_value`` of the
        config say how preprocessing must fit it)."""
        return fit_image(source_hw, self.input_hw, self.config.fit)

    # --- formats ------------------------------------------------------------------------------------------

    def _yolov8(self, out: np.ndarray, t: float) -> Candidates:
        """out (4 + C, N): cx, cy, w, h, then the class scores."""
        scores = out[4:]
        anchor, cls, score = _select(
            scores, t, self.config.score_activation, self.config.multi_label, axis=0, limit=self.config.max_candidates
        )
        box = out[:4, anchor].T
        return Candidates(self._xywh(box), score, cls)

    def _yolov5(self, out: np.ndarray, t: float) -> Candidates:
        """out (N, 5 + C): cx, cy, w, h, objectness, then the class scores; score = objectness x class score."""
        act = self.config.score_activation
        obj_raw = out[:, 4]
        # objectness bounds the score (class scores are at most 1): a cheap first cut on the raw column
        rows = np.flatnonzero(obj_raw >= _raw_threshold(t, act))
        sub = out[rows]
        obj = _activate(sub[:, 4], act)
        conf = _activate(sub[:, 5:], act) * obj[:, None]
        r, cls, score = _select(conf, t, "none", self.config.multi_label, axis=1, limit=self.config.max_candidates)
        return Candidates(self._xywh(sub[r, :4]), score, cls)

    def _ssd(self, deltas: np.ndarray, logits: np.ndarray, t: float) -> Candidates:
        """deltas (N, K >= 4), logits (N, C (+1)): boxes relative to the anchors, scores per class."""
        c = self.config
        if c.score_activation == "softmax":
            z = logits.astype(np.float32, copy=True)
            z -= z.max(axis=1, keepdims=True)
            np.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
            probs, act = z, "none"
        else:
            probs, act = logits, c.score_activation
        if c.background_class:
            probs = probs[:, 1:]
        anchor, cls, score = _select(probs, t, act, c.multi_label, axis=1, limit=c.max_candidates)
        assert self.anchors is not None
        d = deltas[anchor, :4].astype(np.float32)
        if c.box_order == "yxhw":
            d = d[:, [1, 0, 3, 2]]
        d = d * self._variances
        a = self.anchors[anchor]
        cx = d[:, 0] * a[:, 2] + a[:, 0]
        cy = d[:, 1] * a[:, 3] + a[:, 1]
        if c.box_coding == "exponential":
            w = np.exp(np.minimum(d[:, 2], _EXP_CLIP)) * a[:, 2]
            h = np.exp(np.minimum(d[:, 3], _EXP_CLIP)) * a[:, 3]
        else:
            w, h = d[:, 2] * a[:, 2], d[:, 3] * a[:, 3]
        ih, iw = self.input_hw
        boxes = np.stack([(cx - w / 2) * iw, (cy - h / 2) * ih, (cx + w / 2) * iw, (cy + h / 2) * ih], axis=1)
        return Candidates(boxes.astype(np.float32), score, cls)

    def _boxes(self, out: np.ndarray, t: float) -> Candidates:
        """out (N, 6): x1, y1, x2, y2, score, class; rows with a negative class (padding) are dropped."""
        rows = np.flatnonzero((out[:, 4] >= t) & (out[:, 5] >= 0))
        sub = out[rows].astype(np.float32)
        boxes = sub[:, :4]
        if self.config.normalized:
            ih, iw = self.input_hw
            boxes = boxes * np.array([iw, ih, iw, ih], np.float32)
        return Candidates(boxes, sub[:, 4], np.rint(sub[:, 5]).astype(np.int64))

    def _xywh(self, box: np.ndarray) -> np.ndarray:
        box = box.astype(np.float32)
        if self.config.normalized:
            ih, iw = self.input_hw
            box = box * np.array([iw, ih, iw, ih], np.float32)
        half = box[:, 2:] / 2
        return np.concatenate([box[:, :2] - half, box[:, :2] + half], axis=1)

    @staticmethod
    def _top(cand: Candidates, k: int, *, ordered: bool = False) -> Candidates:
        """The ``k`` best candidates (all if fewer); sorted best first when ``ordered``."""
        n = len(cand)
        if n > k:
            idx = np.argpartition(-cand.scores, k - 1)[:k]
            if ordered:
                idx = idx[np.argsort(-cand.scores[idx], kind="stable")]
            else:
                idx.sort()
        elif ordered:
            idx = np.argsort(-cand.scores, kind="stable")
        else:
            return cand
        return Candidates(cand.boxes[idx], cand.scores[idx], cand.class_ids[idx])


def _raw_threshold(t: float, activation: str) -> float:
    """The raw-score threshold equivalent to ``t`` after ``activation`` (monotone): the logit for a sigmoid."""
    if activation != "sigmoid":
        return t
    if t <= 0:
        return -math.inf
    if t >= 1:
        return math.inf
    return math.log(t / (1 - t)) - 1e-6  # a hair lower: the exact check runs on the activated scores


def _activate(x: np.ndarray, activation: str) -> np.ndarray:
    x = x.astype(np.float32)
    if activation == "sigmoid":
        return (1.0 / (1.0 + np.exp(-np.clip(x, -88.0, 88.0)))).astype(np.float32)
    return x


def _select(
    scores: np.ndarray, t: float, activation: str, multi_label: bool, *, axis: int, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates whose score passes ``t``: (candidate index, class id, activated score), from scores laid out
    classes along ``axis`` (0: (C, N), 1: (N, C)). One per candidate (its best class) unless ``multi_label``;
    ``limit`` lets a multi-label selection drop early what ``max_candidates`` would drop later."""
    raw_t = _raw_threshold(t, activation)
    if multi_label:
        mask = scores >= raw_t
        if limit is not None and np.count_nonzero(mask) > 2 * limit:
            # far more (candidate, class) pairs pass than NMS may see: cut at the limit-th best score first
            kth = np.partition(scores.reshape(-1), scores.size - limit)[scores.size - limit]
            mask = scores >= max(kth, raw_t)
        hits = np.nonzero(mask)
        cls, anchor = hits if axis == 0 else hits[::-1]
        raw = scores[hits]
    elif scores.shape[axis] == 0:
        anchor, cls, raw = (np.zeros(0, np.int64),) * 2 + (np.zeros(0, np.float32),)
    else:
        best = scores.max(axis=axis)
        anchor = np.flatnonzero(best >= raw_t)
        raw = best[anchor]
        if anchor.size * 8 > best.size:  # most pass: the first class equal to the best, over the whole array
            cls = (scores == (best if axis == 0 else best[:, None])).argmax(axis=axis)[anchor]
        else:
            cls = (scores[:, anchor] if axis == 0 else scores[anchor]).argmax(axis=axis)
    score = _activate(raw, activation)
    if activation == "sigmoid":  # the exact check, on the activated scores
        ok = score >= t
        if not ok.all():
            anchor, cls, score = anchor[ok], cls[ok], score[ok]
    return anchor.astype(np.int64), cls.astype(np.int64), score.astype(np.float32)


def _sources(source_hw: SourceSizes, batch: int, input_hw: tuple[int, int]) -> list[tuple[int, int]]:
    if source_hw is None:
        return [input_hw] * batch
    if len(source_hw) == 2 and all(isinstance(v, (int, np.integer)) for v in source_hw):
        return [tuple(source_hw)] * batch  # type: ignore[list-item]
    sizes = [tuple(s) for s in source_hw]  # type: ignore[union-attr]
    if len(sizes) != batch:
        raise ValueError(f"{len(sizes)} source image sizes for a batch of {batch}")
    return sizes  # type: ignore[return-value]
