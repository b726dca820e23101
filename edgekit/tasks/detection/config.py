"""The ``[detection]`` section of a model spec: what a detector's outputs are and how to turn them into boxes.

``DetectionConfig.from_dict(section)`` checks every key (an unknown one, a wrong type or range, or a key that
does not apply to the format is one UsageError line naming the key and the fix); ``to_dict()`` is the record a
bundle's manifest keeps. ``check_outputs(output_shapes)`` checks the spec against the model's outputs (a wrong
count, rank, class count or candidate count is one ModelError line naming the expected and the actual shapes)
and says which output is which.

Formats (B: batch, N: candidates, C: classes):

- ``yolov8``: one output [B, 4 + C, N]: centre x, centre y, width, height in input pixels, then C class scores
  (no objectness). Ultralytics YOLOv8 to YOLO11, YOLOv9 and YOLOv10 without its NMS-free head export this.
- ``yolov5``: one output [B, N, 5 + C]: the box as above, objectness, then C class scores; a candidate's score
  for a class is objectness times the class score (YOLOv5, YOLOv7, YOLOX).
- ``ssd``: two outputs, box deltas [B, N, K >= 4] (extra coordinates, such as keypoints, are ignored) and class
  scores [B, N, C] (or C + 1 with ``background_class``), with anchors (``anchors`` listed, or
  ``[detection.anchor_generator]``). ``box_coding`` ``exponential``: ``cx = dx * vx * aw + ax``,
  ``w = exp(dw * vw) * aw`` (SSD, Faster R-CNN; ``variances`` default 0.1, 0.1, 0.2, 0.2); ``linear``:
  ``w = dw * vw * aw``, with the variances one over the input size by default (MediaPipe's detectors, whose
  deltas are in input pixels). ``box_order`` is the order of the four deltas (TF's is ``yxhw``).
- ``boxes``: one output [B, N, 6]: x1, y1, x2, y2, score, class, already decoded; by default the graph ran NMS
  (``nms_in_graph``), as Ultralytics' ``nms=True`` export and ONNX graphs with NMS give.

A candidate is kept when its score is at least ``score_threshold``. With ``nms_in_graph`` the host runs no NMS
and the graph's baked thresholds bound the host's: the score threshold is never below
``graph_score_threshold``, nor the detection count above ``graph_max_detections``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgekit.errors import ModelError, UsageError
from edgekit.tasks.detection.anchors import AnchorGenerator, ssd_anchors
from edgekit.tasks.detection.geometry import FITS

FORMATS = ("yolov8", "yolov5", "ssd", "boxes")
NMS_KINDS = ("hard", "weighted")
ACTIVATIONS = ("none", "sigmoid", "softmax")
BOX_CODINGS = ("exponential", "linear")
BOX_ORDERS = ("xywh", "yxhw")
EXPONENTIAL_VARIANCES = (0.1, 0.1, 0.2, 0.2)

_ALL = frozenset(FORMATS)
_SSD = frozenset({"ssd"})
# key -> the formats it applies to
_APPLIES: dict[str, frozenset[str]] = {
    "format": _ALL,
    "num_classes": _ALL,
    "fit": _ALL,
    "pad_value": _ALL,
    "score_threshold": _ALL,
    "iou_threshold": _ALL,
    "max_detections": _ALL,
    "max_candidates": _ALL,
    "class_agnostic": _ALL,
    "nms": _ALL,
    "multi_label": frozenset({"yolov8", "yolov5", "ssd"}),
    "score_activation": frozenset({"yolov8", "yolov5", "ssd"}),
    "normalized": frozenset({"yolov8", "yolov5", "boxes"}),
    "box_coding": _SSD,
    "box_order": _SSD,
    "variances": _SSD,
    "anchors": _SSD,
    "anchor_generator": _SSD,
    "background_class": _SSD,
    "nms_in_graph": frozenset({"boxes"}),
    "graph_score_threshold": frozenset({"boxes"}),
    "graph_iou_threshold": frozenset({"boxes"}),
    "graph_max_detections": frozenset({"boxes"}),
}
_HOST_NMS_KEYS = ("iou_threshold", "class_agnostic", "nms")
_WHERE = "[detection]"


@dataclass(frozen=True, kw_only=True)
class DetectionConfig:
    """A checked ``[detection]`` section. See the module's notes for the formats and ``from_dict`` for the keys.

    ``num_classes`` None: taken from the model's outputs (``check_outputs``). ``pad_value`` is the letterbox's
    border, in source pixel values (0-255). ``max_candidates`` bounds the candidates NMS sees (the best by
    score). ``multi_label``: a candidate gives one box for each class whose score passes, not only its best.
    ``normalized``: box coordinates are 0-1 of the input size, not pixels.
    """

    format: str
    num_classes: int | None = None
    fit: str = "letterbox"
    pad_value: int = 114
    score_threshold: float = 0.25
    iou_threshold: float = 0.45
    max_detections: int = 100
    max_candidates: int = 30000
    class_agnostic: bool = False
    nms: str = "hard"
    multi_label: bool = False
    score_activation: str = "none"
    normalized: bool = False
    box_coding: str = "exponential"
    box_order: str = "xywh"
    variances: tuple[float, float, float, float] | None = None
    anchors: tuple[tuple[float, float, float, float], ...] | None = None
    anchor_generator: AnchorGenerator | None = None
    background_class: bool = False
    nms_in_graph: bool | None = None  # None: True for format 'boxes', else False
    graph_score_threshold: float | None = None
    graph_iou_threshold: float | None = None
    graph_max_detections: int | None = None

    def __post_init__(self) -> None:
        _choice("format", self.format, FORMATS)
        if self.nms_in_graph is None:
            object.__setattr__(self, "nms_in_graph", self.format == "boxes")
        _check_values(self)
        defaults = _DEFAULTS
        for f in dataclasses.fields(self):
            if self.format not in _APPLIES[f.name] and getattr(self, f.name) != defaults[f.name]:
                raise UsageError(_not_for(f.name, self.format))
        if self.format == "ssd" and (self.anchors is None) == (self.anchor_generator is None):
            what = "give 'anchors' or [detection.anchor_generator], not both" if self.anchors else "add 'anchors'"
            raise UsageError(
                f"{_WHERE} format 'ssd' needs its anchors: {what} ('anchors' lists [x_centre, y_centre, width, "
                "height], 0-1, one a candidate; the table gives the SSD anchor generator's strides, min_scale, ...)"
            )
        if self.score_activation == "softmax" and self.format != "ssd":
            raise UsageError(
                f"{_WHERE} score_activation 'softmax' applies to format 'ssd' only (YOLO scores are "
                "independent per class); use 'sigmoid' or 'none'"
            )
        if self.nms_in_graph and self.format == "boxes":
            for name, host, graph, bad in (
                ("score_threshold", self.score_threshold, self.graph_score_threshold, lambda h, g: h < g),
                ("max_detections", self.max_detections, self.graph_max_detections, lambda h, g: h > g),
            ):
                if graph is not None and bad(host, graph):
                    raise UsageError(
                        f"{_WHERE} {name} {host} is {'below' if name == 'score_threshold' else 'above'} the "
                        f"graph's baked graph_{name} {graph}, which its NMS already applied; set {name} to "
                        f"{graph} or {'above' if name == 'score_threshold' else 'below'}, or fix graph_{name}"
                    )
        elif any(getattr(self, k) is not None for k in _GRAPH_KEYS):
            raise UsageError(
                f"{_WHERE} graph_* thresholds describe an NMS inside the graph; remove them or set nms_in_graph = true"
            )

    def effective_variances(self, input_hw: tuple[int, int]) -> tuple[float, float, float, float]:
        """The SSD delta multipliers (x, y, w, h) used: the given ``variances``, else the coding's default."""
        if self.variances is not None:
            return self.variances
        if self.box_coding == "exponential":
            return EXPONENTIAL_VARIANCES
        h, w = input_hw
        return (1.0 / w, 1.0 / h, 1.0 / w, 1.0 / h)

    def bounded(self, score_threshold: float | None, max_detections: int | None) -> tuple[float, int]:
        """A caller's score threshold and detection count (None: the config's) within the graph's baked bounds:
        an evaluation at score threshold 0.001 still sees only what the graph's NMS let through."""
        score = self.score_threshold if score_threshold is None else float(score_threshold)
        count = self.max_detections if max_detections is None else int(max_detections)
        if self.nms_in_graph:
            if self.graph_score_threshold is not None:
                score = max(score, self.graph_score_threshold)
            if self.graph_max_detections is not None:
                count = min(count, self.graph_max_detections)
        return score, count

    @classmethod
    def from_dict(cls, section: Mapping[str, Any]) -> DetectionConfig:
        """A config from the ``[detection]`` table of a model spec (TOML's types: lists, tables, numbers).

        Every key is checked: an unknown one, a key that does not apply to the format, a wrong type or an out of
        range value is one UsageError line naming the key and the fix.
        """
        if not isinstance(section, Mapping):
            raise UsageError(f"{_WHERE} must be a table of keys, not {type(section).__name__}")
        allowed = set(_APPLIES)
        unknown = sorted(set(section) - allowed)
        if unknown:
            raise UsageError(f"unknown key '{_WHERE} {unknown[0]}'; allowed: {', '.join(sorted(allowed))}")
        if "format" not in section:
            raise UsageError(f"{_WHERE} needs 'format', one of {', '.join(FORMATS)}")
        fmt = section["format"]
        _choice("format", fmt, FORMATS)
        for key in section:
            if fmt not in _APPLIES[key]:
                raise UsageError(_not_for(key, fmt))
        nms_in_graph = section.get("nms_in_graph", fmt == "boxes")
        if nms_in_graph is True:
            for key in _HOST_NMS_KEYS:
                if key in section:
                    raise UsageError(
                        f"{_WHERE} {key} has no effect with nms_in_graph = true (the graph's NMS is used); "
                        f"remove it, or set nms_in_graph = false to run NMS on the host"
                    )
        if fmt == "ssd" and "score_activation" not in section:
            raise UsageError(
                f"{_WHERE} format 'ssd' needs 'score_activation': 'sigmoid' or 'softmax' if the scores output "
                "holds logits, 'none' if it holds probabilities"
            )
        values: dict[str, Any] = {}
        for key, value in section.items():
            if key == "anchor_generator":
                values[key] = _generator_from(value)
            elif key == "anchors":
                values[key] = _anchors_from(value)
            elif key == "variances":
                values[key] = _floats(key, value, 4)
            else:
                values[key] = value
        if nms_in_graph is True:  # the baked bounds are the host's defaults
            for key in ("score_threshold", "max_detections"):
                baked = section.get(f"graph_{key}")
                if key not in section and isinstance(baked, (int, float)) and not isinstance(baked, bool):
                    values[key] = baked
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The record a manifest keeps: every key that applies to the format (None values left out), in TOML's
        and JSON's types; ``from_dict(to_dict())`` gives the same config."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if self.format not in _APPLIES[f.name] or value is None:
                continue
            if f.name in _HOST_NMS_KEYS and self.nms_in_graph:
                continue
            if f.name == "anchor_generator":
                value = {k: _listed(v) for k, v in dataclasses.asdict(value).items() if v is not None}
            else:
                value = _listed(value)
            out[f.name] = value
        return out

    def check_outputs(
        self, output_shapes: Sequence[Sequence[Any]], input_hw: tuple[int, int] | None = None
    ) -> OutputLayout:
        """Check the model's output shapes (in the model's output order; a dimension that is not a positive int is
        dynamic and matches anything) against this config; returns which output is which and the class count.
        A mismatch is one ModelError line naming the expected and the actual shapes. ``input_hw`` lets the
        anchor generator's anchor count be checked too."""
        return _check_outputs(self, [tuple(s) for s in output_shapes], input_hw)


@dataclass(frozen=True)
class OutputLayout:
    """What ``check_outputs`` found: the output holding the boxes (and, for ``ssd``, the scores), the class
    count (None: unknown, as for ``boxes``) and the candidate count (None: dynamic)."""

    boxes: int
    scores: int | None
    num_classes: int | None
    num_candidates: int | None


_GRAPH_KEYS = ("graph_score_threshold", "graph_iou_threshold", "graph_max_detections")


def _not_for(key: str, fmt: str) -> str:
    formats = sorted(_APPLIES[key])
    which = f"format '{formats[0]}'" if len(formats) == 1 else "formats " + ", ".join(f"'{f}'" for f in formats)
    return f"{_WHERE} {key} applies to {which} only, not '{fmt}'; remove it or fix 'format'"


def _choice(key: str, value: Any, choices: Sequence[str]) -> None:
    if value not in choices:
        raise UsageError(f"{_WHERE} {key} {value!r} is not one of {', '.join(choices)}")


def _number(key: str, value: Any, *, integer: bool = False, where: str = _WHERE) -> float:
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or (not integer and not math.isfinite(value)):
        kind = "an integer" if integer else "a number"
        example = _DEFAULTS.get(key) if where == _WHERE else None
        example = example if isinstance(example, (int, float)) else (3 if integer else 0.5)
        raise UsageError(f"{where} {key} {value!r} is not {kind}; write e.g. {key} = {example}")
    return value


def _in_range(key: str, value: float, lo: float, hi: float, what: str, where: str = _WHERE) -> None:
    if not lo <= value <= hi:
        raise UsageError(f"{where} {key} {value} is out of range; it must be {what}")


def _flag(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise UsageError(f"{_WHERE} {key} {value!r} is not true or false")


def _check_values(c: DetectionConfig) -> None:
    if c.num_classes is not None:
        _in_range("num_classes", _number("num_classes", c.num_classes, integer=True), 1, 1e9, "at least 1")
    _choice("fit", c.fit, FITS)
    _in_range("pad_value", _number("pad_value", c.pad_value, integer=True), 0, 255, "a pixel value, 0 to 255")
    _in_range("score_threshold", _number("score_threshold", c.score_threshold), 0, 1, "between 0 and 1")
    _in_range("iou_threshold", _number("iou_threshold", c.iou_threshold), 0, 1, "between 0 and 1")
    _in_range(
        "max_detections", _number("max_detections", c.max_detections, integer=True), 1, 1e9, "from 1 to 1,000,000,000"
    )
    _in_range("max_candidates", _number("max_candidates", c.max_candidates, integer=True), 1, 1e9, "at least 1")
    if c.max_candidates < c.max_detections:
        raise UsageError(
            f"{_WHERE} max_candidates {c.max_candidates} is below max_detections {c.max_detections}; "
            "raise max_candidates (NMS picks the detections from the candidates)"
        )
    for key in ("class_agnostic", "multi_label", "normalized", "background_class", "nms_in_graph"):
        _flag(key, getattr(c, key))
    _choice("nms", c.nms, NMS_KINDS)
    _choice("score_activation", c.score_activation, ACTIVATIONS)
    _choice("box_coding", c.box_coding, BOX_CODINGS)
    _choice("box_order", c.box_order, BOX_ORDERS)
    if c.variances is not None:
        if len(c.variances) != 4 or any(_number("variances", v) <= 0 for v in c.variances):
            raise UsageError(f"{_WHERE} variances {list(c.variances)} must be four positive numbers (x, y, w, h)")
    if c.anchors is not None:
        if not c.anchors:
            raise UsageError(f"{_WHERE} anchors is empty; list one [x_centre, y_centre, width, height] a candidate")
    if c.anchor_generator is not None and not isinstance(c.anchor_generator, AnchorGenerator):
        raise UsageError(f"{_WHERE} anchor_generator must be a table of the SSD anchor generator's parameters")
    for key, hi in (("graph_score_threshold", 1), ("graph_iou_threshold", 1), ("graph_max_detections", 1e9)):
        value = getattr(c, key)
        if value is not None:
            lo = 1 if key == "graph_max_detections" else 0
            _number(key, value, integer=key == "graph_max_detections")
            _in_range(key, value, lo, hi, f"between {lo} and {hi:g}")


def _floats(key: str, value: Any, n: int, where: str = _WHERE) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n:
        raise UsageError(f"{where} {key} {value!r} must be a list of {n} numbers")
    return tuple(float(_number(key, v, where=where)) for v in value)


def _anchors_from(value: Any) -> tuple[tuple[float, float, float, float], ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise UsageError(
            f"{_WHERE} anchors must be a list of [x_centre, y_centre, width, height] (0-1), one a candidate"
        )
    out = []
    for i, row in enumerate(value):
        if not isinstance(row, (list, tuple)) or len(row) != 4:
            raise UsageError(
                f"{_WHERE} anchors[{i}] {row!r} is not [x_centre, y_centre, width, height]; give four numbers (0-1)"
            )
        cx, cy, w, h = (float(_number(f"anchors[{i}]", v)) for v in row)
        if w <= 0 or h <= 0:
            raise UsageError(f"{_WHERE} anchors[{i}] {list(row)} has a width or height that is not positive")
        out.append((cx, cy, w, h))
    return tuple(out)


_GEN_WHERE = "[detection.anchor_generator]"


def _generator_from(value: Any) -> AnchorGenerator:
    if not isinstance(value, Mapping):
        raise UsageError(f"{_WHERE} anchor_generator must be a table ([detection.anchor_generator]), not {value!r}")
    fields = {f.name for f in dataclasses.fields(AnchorGenerator)}
    unknown = sorted(set(value) - fields)
    if unknown:
        raise UsageError(f"unknown key '{_GEN_WHERE} {unknown[0]}'; allowed: {', '.join(sorted(fields))}")
    for key in ("strides", "min_scale", "max_scale"):
        if key not in value:
            raise UsageError(f"{_GEN_WHERE} needs '{key}' (strides, min_scale and max_scale are required)")
    out: dict[str, Any] = {}
    for key, v in value.items():
        if key in ("strides", "aspect_ratios"):
            if not isinstance(v, (list, tuple)) or not v:
                raise UsageError(f"{_GEN_WHERE} {key} {v!r} must be a non-empty list of numbers")
            integer = key == "strides"
            out[key] = tuple(_number(key, x, integer=integer, where=_GEN_WHERE) for x in v)
            if not integer:
                out[key] = tuple(float(x) for x in out[key])
        elif key in ("reduce_boxes_in_lowest_layer", "fixed_anchor_size"):
            if not isinstance(v, bool):
                raise UsageError(f"{_GEN_WHERE} {key} {v!r} is not true or false")
            out[key] = v
        elif key == "feature_map_sizes":
            if not isinstance(v, (list, tuple)) or not all(isinstance(s, (list, tuple)) and len(s) == 2 for s in v):
                raise UsageError(f"{_GEN_WHERE} feature_map_sizes must list [height, width] a layer")
            out[key] = tuple(tuple(int(_number(key, x, integer=True, where=_GEN_WHERE)) for x in s) for s in v)
        elif key == "input_size":
            if not isinstance(v, (list, tuple)) or len(v) != 2:
                raise UsageError(f"{_GEN_WHERE} input_size must be [height, width] in pixels")
            out[key] = tuple(int(_number(key, x, integer=True, where=_GEN_WHERE)) for x in v)
        else:
            out[key] = float(_number(key, v, where=_GEN_WHERE))
    return AnchorGenerator(**out)


def _listed(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_listed(v) for v in value]
    return value


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(DetectionConfig) if f.default is not dataclasses.MISSING}
_DEFAULTS["nms_in_graph"] = False  # what a format other than 'boxes' resolves it to


# --- outputs ------------------------------------------------------------------------------------------------


def _dim(d: Any) -> int | None:
    return d if isinstance(d, int) and not isinstance(d, bool) and d > 0 else None


def _show(shape: Sequence[Any]) -> str:
    return "[" + ", ".join(str(d) if _dim(d) is not None else "?" for d in shape) + "]"


def _mismatch(c: DetectionConfig, actual: str, expected: str, fix: str) -> ModelError:
    return ModelError(
        f"the model's outputs {actual} do not match {_WHERE} format '{c.format}': expected {expected}; {fix}"
    )


def _check_outputs(
    c: DetectionConfig,
    shapes: list[tuple[Any, ...]],
    input_hw: tuple[int, int] | None,
    *,
    anchor_count: int | None = None,
) -> OutputLayout:
    actual = ", ".join(_show(s) for s in shapes) or "(none)"
    nc = c.num_classes
    classes = f"{nc} classes" if nc else "C classes"
    if c.format in ("yolov8", "yolov5", "boxes"):
        extra = {"yolov8": 4, "yolov5": 5, "boxes": 6}[c.format]
        if c.format == "yolov8":
            expected = f"one output [batch, {4 + nc if nc else '4 + C'}, candidates] (4 box values, then {classes})"
        elif c.format == "yolov5":
            expected = (
                f"one output [batch, candidates, {5 + nc if nc else '5 + C'}] (4 box values, objectness, "
                f"then {classes})"
            )
        else:
            expected = "one output [batch, candidates, 6] (x1, y1, x2, y2, score, class)"
        fix = "fix num_classes (or the labels) or format" if c.format != "boxes" else "fix format"
        if len(shapes) != 1 or len(shapes[0]) != 3:
            raise _mismatch(c, actual, expected, fix)
        shape = shapes[0]
        axis = 1 if c.format == "yolov8" else 2
        width, count = _dim(shape[axis]), _dim(shape[3 - axis])
        if c.format == "boxes":
            if width is not None and width != 6:
                raise _mismatch(c, actual, expected, fix)
            return OutputLayout(0, None, nc, count)
        found = None if width is None else width - extra
        # transposed: the candidates where the box values and scores belong (told only with the class count known)
        transposed = nc is not None and count == extra + nc and width != extra + nc
        if found is not None and (found < 1 or (nc is not None and found != nc) or transposed):
            raise _mismatch(c, actual + (" (the output looks transposed)" if transposed else ""), expected, fix)
        return OutputLayout(0, None, nc if nc is not None else found, count)
    # ssd: box deltas [B, N, K >= 4] and scores [B, N, C (+1)]
    bg = 1 if c.background_class else 0
    want = None if nc is None else nc + bg
    cols = f"{want}" if want else ("C + 1" if bg else "C")
    expected = (
        f"two outputs, box deltas [batch, candidates, 4 or more] and scores [batch, candidates, {cols}] "
        f"({classes}{' and the background' if bg else ''})"
    )
    fix = "fix num_classes (or the labels), background_class or format"
    if len(shapes) != 2 or any(len(s) != 3 for s in shapes):
        raise _mismatch(c, actual, expected, fix)
    last = [_dim(s[2]) for s in shapes]
    boxes = _which_boxes(last, want)
    if boxes is None:
        raise _mismatch(c, actual, expected, fix)
    scores = 1 - boxes
    width = last[scores]
    found = None if width is None else width - bg
    if found is not None and found < 1:
        raise _mismatch(c, actual, expected, fix)
    counts = {_dim(s[1]) for s in shapes} - {None}
    if len(counts) > 1:
        raise _mismatch(c, actual, expected + ", the same candidate count in both", fix)
    count = counts.pop() if counts else None
    anchors = anchor_count
    if anchors is None and c.anchors is not None:
        anchors = len(c.anchors)
    elif anchors is None and c.anchor_generator is not None and (c.anchor_generator.input_size or input_hw):
        anchors = len(ssd_anchors(c.anchor_generator, input_hw or c.anchor_generator.input_size))
    if anchors is not None and count is not None and anchors != count:
        source = "anchors list gives" if c.anchors is not None else "anchor_generator makes"
        raise ModelError(
            f"the model's outputs {actual} have {count} candidates, but the {_WHERE} {source} {anchors} anchors; "
            "fix the anchors (strides, aspect_ratios, feature_map_sizes, ...) to the model's"
        )
    return OutputLayout(boxes, scores, nc if nc is not None else found, count)


def _which_boxes(last: list[int | None], want: int | None) -> int | None:
    """Which of two ssd outputs holds the box deltas, from their last dimensions: the one that can be boxes
    (K >= 4) while the other can be scores (``want`` columns when known); the model's order if both can."""
    fits = []
    for b in (0, 1):
        k, s = last[b], last[1 - b]
        box_ok = k is None or k >= 4
        score_ok = s is None or want is None or s == want
        if box_ok and score_ok:
            fits.append(b)
    if len(fits) == 2 and want is None and last[0] is not None and last[1] is not None:
        # class count unknown: exactly-4 columns are boxes
        four = [b for b in (0, 1) if last[b] == 4]
        if len(four) == 1:
            return four[0]
    return fits[0] if fits else None
