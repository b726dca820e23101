"""Bring your own detector (issue 13, point 8): a user's detector, described by its spec's [detection] section
alone, compiles, quantizes, runs and serves, and its boxes are the user's own model's.

The detector is built here: a small anchor-free net (two levels, strides 8 and 16, one box-distance and one
class-logit map each) trained with a fixed seed for a few hundred steps on the committed calibration scenes,
letterboxed into a non-square 96x160 input. Its reference output is its own, in torch: the head's distances
decoded to x1, y1, x2, y2, the sigmoid of its logits, the score threshold, a greedy per-class NMS written
here (torchvision does not install beside torch 2.13.0), on the image letterboxed as Ultralytics' LetterBox
does. Nothing of edgekit's decoding or geometry is used for it. Its boxes are mapped back to the source image
twice: as Ultralytics' ``scale_boxes`` does (by its gain: the bundle's boxes must be at IoU >= 0.95 with
those), and by the exact inverse of OpenCV's resize (resized / source size on each axis: within 0.02 px).

Two exports of the same net:

- the YOLOv8 layout, as Ultralytics exports it: one output [B, 4 + C, N] (centre x, centre y, width, height
  in input pixels, then the sigmoid class scores), opset 17, dynamic batch; the spec says format "yolov8";
- NMS inside the graph, as Ultralytics' ``nms=True`` export gives it: the same graph with a tail written with
  ``onnx.helper`` (best class a candidate, ONNX's NonMaxSuppression with the class offset that makes it
  per-class, Gather, rows padded with zeros to a fixed [1, 300, 6]); the spec says format "boxes" with the
  graph's baked thresholds.

The scenes checked are validation scenes (never trained on) at their own 128x128 and resized to sizes whose
letterbox pads the other axis, an odd number of pixels, or scales down, so the geometry is exercised.

Each graph compiles to FP32 on ``cpu`` (ONNX Runtime) and ``intel-cpu`` (OpenVINO) and to INT8 on both,
and the YOLOv8 bundle is served by ``edgekit serve``. The NMS graph's INT8 on ``cpu`` is expected to fail
while ``onnxruntime_qdq.output_tail`` skips nodes without a name (the unnamed NMS tail is quantized); the
same graph with named nodes keeps its tail in float.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from support import ROOT

import edgekit

SCENES = ROOT / "examples" / "data" / "scenes"
LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
INPUT_HW = (96, 160)  # height, width: not the reference detector's 128x128, and not square
STRIDES = (8, 16)
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
SCORE_THRESHOLD, IOU_THRESHOLD = 0.3, 0.5
GRAPH_MAX_DETECTIONS = 300  # the rows of the NMS graph's output, as Ultralytics' max_det
TRAIN_STEPS = 240
# validation scenes and the (height, width) each is resized to before the detectors see it (None: as it is)
CASES = (
    (0, None), (1, None), (2, None), (3, None), (4, None), (5, None),
    (6, (128, 201)),  # letterboxed to 96x151: 4 px of padding left and 5 right
    (7, (240, 180)),  # tall: scaled by 0.4 to 96x72, padded 44 px each side
    (8, (64, 320)),  # wide: scaled by 0.5 to 32x160, padded 32 px top and bottom
    (9, (257, 131)),  # both sides odd: 96x49, padded 55 px left and 56 right
)  # fmt: skip

pytestmark = pytest.mark.slow  # training, exports and compiles


# -- the user's detector, in torch
def _net_class() -> tuple[type, type]:
    import torch
    from torch import nn
    from torch.nn import functional as F

    def cbr(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class Net(nn.Module):
        """Two feature levels (strides 8 and 16) with a decoupled head each: four box distances (left, top,
        right, bottom from the cell's centre, in strides, through a softplus) and one logit a class."""

        def __init__(self, classes: int = len(LABELS)) -> None:
            super().__init__()
            self.body8 = nn.Sequential(cbr(3, 16, 2), cbr(16, 32, 2), cbr(32, 48, 2), cbr(48, 48))
            self.body16 = nn.Sequential(cbr(48, 64, 2), cbr(64, 64))
            self.heads = nn.ModuleList(nn.Sequential(cbr(c, 48), cbr(48, 48)) for c in (48, 64))
            self.box = nn.ModuleList(nn.Conv2d(48, 4, 1) for _ in STRIDES)
            self.cls = nn.ModuleList(nn.Conv2d(48, classes, 1) for _ in STRIDES)
            for conv in self.cls:
                nn.init.constant_(conv.bias, -4.0)
            centres, strides = [], []
            for s in STRIDES:
                gh, gw = INPUT_HW[0] // s, INPUT_HW[1] // s
                ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
                centres.append((torch.stack([xs.flatten(), ys.flatten()], 1).float() + 0.5) * s)
                strides.append(torch.full((gh * gw,), float(s)))
            self.register_buffer("centres", torch.cat(centres), persistent=False)  # (N, 2), input pixels
            self.register_buffer("strides", torch.cat(strides), persistent=False)  # (N,)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Distances (B, N, 4) in strides and class logits (B, N, C)."""
            f8 = self.body8(x)
            dist, logits = [], []
            for i, f in enumerate((f8, self.body16(f8))):
                h = self.heads[i](f)
                dist.append(self.box[i](h).flatten(2))
                logits.append(self.cls[i](h).flatten(2))
            return F.softplus(torch.cat(dist, 2)).transpose(1, 2), torch.cat(logits, 2).transpose(1, 2)

    class Yolov8Layout(nn.Module):
        """The deployable graph, Ultralytics' YOLOv8 layout: [B, 4 + C, N], centre x, centre y, width, height in
        input pixels, then the sigmoid class scores."""

        def __init__(self, net: Net) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            dist, logits = self.net(x)
            s = self.net.strides[:, None]
            centre = self.net.centres + (dist[..., 2:] - dist[..., :2]) * s / 2
            size = (dist[..., :2] + dist[..., 2:]) * s
            return torch.cat([centre, size, torch.sigmoid(logits)], -1).transpose(1, 2)

    return Net, Yolov8Layout


@dataclass(frozen=True)
class Letterbox:
    """Ultralytics' LetterBox of one image (auto=False, centred, grey 114, bilinear)."""

    source_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    gain: float  # Ultralytics' ratio: min(input / source) over the axes
    pad: tuple[int, int]  # left, top

    def ultralytics(self, boxes: np.ndarray) -> np.ndarray:
        """Ultralytics' scale_boxes: input pixels -> the source image's, by its gain, clipped to the image."""
        return self._back(boxes, self.gain, self.gain)

    def exact(self, boxes: np.ndarray) -> np.ndarray:
        """The exact inverse of the resize: OpenCV maps pixel edges by resized / source size on each axis,
        which the rounded size makes differ from the gain (151 / 201 is not 0.75)."""
        (sh, sw), (rh, rw) = self.source_hw, self.resized_hw
        return self._back(boxes, rw / sw, rh / sh)

    def _back(self, boxes: np.ndarray, sx: float, sy: float) -> np.ndarray:
        out = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.pad[0]) / sx).clip(0, self.source_hw[1])
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.pad[1]) / sy).clip(0, self.source_hw[0])
        return out


def letterbox(image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
    """The image fitted into the input the way Ultralytics' LetterBox does, and how it was fitted."""
    h, w = image.shape[:2]
    r = min(INPUT_HW[0] / h, INPUT_HW[1] / w)
    nw, nh = round(w * r), round(h * r)
    dw, dh = (INPUT_HW[1] - nw) / 2, (INPUT_HW[0] - nh) / 2
    if (nw, nh) != (w, h):
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, bottom, left, right = round(dh - 0.1), round(dh + 0.1), round(dw - 0.1), round(dw + 0.1)
    image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return image, Letterbox((h, w), (nh, nw), r, (left, top))


def to_tensor(image_bgr: np.ndarray) -> np.ndarray:
    """A letterboxed BGR image -> the model's input (3, H, W): RGB, 0-1, normalised."""
    x = (image_bgr[:, :, ::-1].astype(np.float32) / 255 - np.float32(MEAN)) / np.float32(STD)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (len(a), len(b)) of x1, y1, x2, y2 boxes."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    w = (np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])).clip(0)
    h = (np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])).clip(0)
    area_a, area_b = ((x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1]) for x in (a, b))
    inter = w * h
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def torch_nms(boxes: Any, scores: Any, classes: Any, iou_threshold: float) -> Any:
    """Greedy NMS per class, in torch (torchvision's batched_nms semantics: a box is dropped when its IoU with
    a kept box of its class exceeds the threshold); the kept indices, best score first."""
    import torch

    order = torch.argsort(scores, descending=True, stable=True)
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    suppressed = torch.zeros(len(scores), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        inter = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0) * (
            torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)
        ).clamp(min=0)
        iou = inter / (area[i] + area - inter).clamp(min=1e-9)
        suppressed |= (iou > iou_threshold) & (classes == classes[i])
    return torch.tensor(keep, dtype=torch.long)


@dataclass(frozen=True)
class Reference:
    """The user's own decoded output of one image: boxes in input pixels, scores, classes, and the fit."""

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    fit: Letterbox


def torch_detections(net: Any, image_bgr: np.ndarray) -> Reference:
    """The torch model's own decoding of one image: distances to x1, y1, x2, y2, sigmoid, threshold, NMS."""
    import torch

    fitted, fit = letterbox(image_bgr)
    with torch.no_grad():
        dist, logits = net(torch.from_numpy(to_tensor(fitted))[None])
    dist, logits = dist[0], logits[0]
    c, s = net.centres, net.strides[:, None]
    boxes = torch.cat([c - dist[:, :2] * s, c + dist[:, 2:] * s], 1)
    scores, classes = torch.sigmoid(logits).max(1)
    passed = scores >= SCORE_THRESHOLD
    boxes, scores, classes = boxes[passed], scores[passed], classes[passed]
    keep = torch_nms(boxes, scores, classes, IOU_THRESHOLD)
    return Reference(boxes[keep].numpy(), scores[keep].numpy(), classes[keep].numpy(), fit)


def case_image(index: int, size: tuple[int, int] | None) -> np.ndarray:
    """Validation scene ``index`` (BGR), resized to ``size`` (height, width) when given."""
    image = cv2.imread(str(SCENES / "val" / f"{index:06d}.jpg"), cv2.IMREAD_COLOR)
    return image if size is None else cv2.resize(image, size[::-1], interpolation=cv2.INTER_AREA)


# -- training (a few hundred steps: a detector whose scores mean something, not a good one)
def _scenes(folder: Path) -> tuple[np.ndarray, list[list[list[float]]], list[list[int]]]:
    """The letterboxed scenes of a folder as one input batch, with their boxes in input pixels and classes."""
    coco = json.loads((folder / "annotations.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    xs, boxes, classes = [], [], []
    for entry in coco["images"]:
        fitted, fit = letterbox(cv2.imread(str(folder / entry["file_name"]), cv2.IMREAD_COLOR))
        xs.append(to_tensor(fitted))
        gain, (dx, dy) = fit.gain, fit.pad
        found = by_image.get(entry["id"], [])
        boxes.append([[x * gain + dx, y * gain + dy, (x + w) * gain + dx, (y + h) * gain + dy]
                      for x, y, w, h in (a["bbox"] for a in found)])  # fmt: skip
        classes.append([a["category_id"] for a in found])
    return np.stack(xs), boxes, classes


def _targets(net: Any, boxes: list[list[list[float]]], classes: list[list[int]]) -> tuple[Any, Any, Any]:
    """FCOS-style static assignment: cells of the box's level (stride 8 up to 40 px a side, else 16) whose
    centre is inside the box and within 1.5 strides of its centre (else the nearest cell); later boxes win."""
    import torch

    c, s = net.centres, net.strides
    n = len(s)
    cls_t, box_t = torch.zeros(len(boxes), n, len(LABELS)), torch.zeros(len(boxes), n, 4)
    pos = torch.zeros(len(boxes), n, dtype=torch.bool)
    for b, (image_boxes, image_classes) in enumerate(zip(boxes, classes, strict=True)):
        for (x1, y1, x2, y2), k in zip(image_boxes, image_classes, strict=True):
            level = 8.0 if max(x2 - x1, y2 - y1) <= 40 else 16.0
            mx, my = (x1 + x2) / 2, (y1 + y2) / 2
            inside = (c[:, 0] > x1) & (c[:, 0] < x2) & (c[:, 1] > y1) & (c[:, 1] < y2)
            near = ((c[:, 0] - mx).abs() < 1.5 * s) & ((c[:, 1] - my).abs() < 1.5 * s)
            cells = inside & near & (s == level)
            if not cells.any():
                cells = torch.zeros(n, dtype=torch.bool)
                cells[(((c[:, 0] - mx) ** 2 + (c[:, 1] - my) ** 2) + (s != level) * 1e9).argmin()] = True
            cls_t[b, cells] = 0
            cls_t[b, cells, k] = 1
            pos[b, cells] = True
            box_t[b, cells] = torch.stack([c[cells, 0] - x1, c[cells, 1] - y1, x2 - c[cells, 0],
                                           y2 - c[cells, 1]], 1) / s[cells, None]  # fmt: skip
    return cls_t, box_t, pos


def train_detector(steps: int = TRAIN_STEPS) -> Any:
    """The net trained on the 100 committed calibration scenes: focal-weighted BCE for the classes, L1 on the
    distances, AdamW with a cosine decay, batches of 16, seeded, one thread."""
    import math

    import torch
    from torch.nn import functional as F

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        net_class, _ = _net_class()
        net = net_class()
        x, boxes, classes = _scenes(SCENES / "calib")
        x = torch.from_numpy(x)
        cls_t, box_t, pos = _targets(net, boxes, classes)
        opt = torch.optim.AdamW(net.parameters(), 3e-3, weight_decay=1e-4)
        picks = torch.Generator().manual_seed(0)
        for step in range(steps):
            idx = torch.randint(0, len(x), (16,), generator=picks)
            dist, logits = net(x[idx])
            p, target = pos[idx], cls_t[idx]
            n = max(1, int(p.sum()))
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            loss = (bce * (target - torch.sigmoid(logits)).abs().pow(2)).sum() / n
            loss = loss + F.l1_loss(dist[p], box_t[idx][p], reduction="sum") / n
            opt.zero_grad()
            loss.backward()
            opt.step()
            for group in opt.param_groups:
                group["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * (step + 1) / steps))
    finally:
        torch.set_num_threads(threads)
    return net.eval()


# -- the exports and their specs
def export_yolov8(net: Any, path: Path, *, dynamic_batch: bool = True) -> Path:
    """The YOLOv8-layout graph at opset 17: input "images" [B, 3, 96, 160], output "output0" [B, 4 + C, N]."""
    import torch

    _, layout = _net_class()
    axes = {"images": {0: "batch"}, "output0": {0: "batch"}} if dynamic_batch else None
    torch.onnx.export(layout(net).eval(), (torch.zeros(1, 3, *INPUT_HW),), str(path), input_names=["images"],
                      output_names=["output0"], dynamic_axes=axes, opset_version=17, dynamo=False)  # fmt: skip
    return path


def add_nms(yolov8: Path, path: Path, *, named: bool = False) -> Path:
    """The YOLOv8-layout graph (batch 1) with NMS inside, as Ultralytics' ``nms=True`` export: output0 becomes
    [1, 300, 6] rows x1, y1, x2, y2, score, class, best first, padded with zero rows. Each candidate keeps its
    best class; ONNX's NonMaxSuppression runs once over boxes shifted by class x 4096 px, so boxes of
    different classes never overlap (per-class NMS), with the thresholds baked in.

    The added nodes have no names, as ``onnx.helper`` writes them (and some converters do), unless ``named``
    (each then named as torch's exporter names nodes, ``/nms/<op>_<i>``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(yolov8))
    graph = model.graph
    (raw,) = graph.output
    raw.name = "yolo"
    for node in graph.node:
        node.output[:] = ["yolo" if o == "output0" else o for o in node.output]
    consts = {
        "split_sizes": np.array([4, len(LABELS)], np.int64), "two": np.array([2], np.int64),
        "zero": np.array([0], np.int64), "four": np.array([4], np.int64), "class_offset": np.array(4096, np.float32),
        "half": np.array(0.5, np.float32), "max_out": np.array([GRAPH_MAX_DETECTIONS], np.int64),
        "iou": np.array([IOU_THRESHOLD], np.float32), "score": np.array([SCORE_THRESHOLD], np.float32),
        "box_column": np.array(2, np.int64), "rows": np.array([GRAPH_MAX_DETECTIONS], np.int64),
        "pad_head": np.array([0, 0], np.int64), "pad_tail": np.array([0], np.int64),
        "zero_value": np.array(0, np.float32),
    }  # fmt: skip
    graph.initializer.extend(numpy_helper.from_array(v, f"nms/{k}") for k, v in consts.items())
    k = lambda name: f"nms/{name}"  # noqa: E731
    n = helper.make_node
    graph.node.extend([
        n("Transpose", ["yolo"], [k("t")], perm=[0, 2, 1]),  # [1, N, 4 + C]
        n("Split", [k("t"), k("split_sizes")], [k("xywh"), k("scores")], axis=2),
        n("ReduceMax", [k("scores")], [k("best")], axes=[2], keepdims=1),  # [1, N, 1]
        n("ArgMax", [k("scores")], [k("cls_i")], axis=2, keepdims=1),
        n("Cast", [k("cls_i")], [k("cls")], to=TensorProto.FLOAT),
        n("Slice", [k("xywh"), k("zero"), k("two"), k("two")], [k("xy")]),
        n("Slice", [k("xywh"), k("two"), k("four"), k("two")], [k("wh")]),
        n("Mul", [k("cls"), k("class_offset")], [k("offset")]),
        n("Add", [k("xy"), k("offset")], [k("xy_shifted")]),
        n("Concat", [k("xy_shifted"), k("wh")], [k("nms_boxes")], axis=2),
        n("Transpose", [k("best")], [k("nms_scores")], perm=[0, 2, 1]),  # [1, 1, N]
        n("NonMaxSuppression", [k("nms_boxes"), k("nms_scores"), k("max_out"), k("iou"), k("score")],
          [k("selected")], center_point_box=1),  # [K, 3]: batch, class, box
        n("Gather", [k("selected"), k("box_column")], [k("index")], axis=1),  # [K]
        n("Mul", [k("wh"), k("half")], [k("half_wh")]),
        n("Sub", [k("xy"), k("half_wh")], [k("x1y1")]),
        n("Add", [k("xy"), k("half_wh")], [k("x2y2")]),
        n("Concat", [k("x1y1"), k("x2y2"), k("best"), k("cls")], [k("rows_all")], axis=2),  # [1, N, 6]
        n("Squeeze", [k("rows_all"), k("zero")], [k("rows_n")]),
        n("Gather", [k("rows_n"), k("index")], [k("dets")], axis=0),  # [K, 6]
        n("Shape", [k("dets")], [k("dets_shape")], end=1),
        n("Sub", [k("rows"), k("dets_shape")], [k("missing")]),
        n("Concat", [k("pad_head"), k("missing"), k("pad_tail")], [k("pads")], axis=0),
        n("Pad", [k("dets"), k("pads"), k("zero_value")], [k("padded")]),  # [300, 6], zero rows after the last
        n("Unsqueeze", [k("padded"), k("zero")], ["output0"]),
    ])  # fmt: skip
    if named:
        for i, node in enumerate(graph.node):
            node.name = node.name or f"/nms/{node.op_type}_{i}"
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, GRAPH_MAX_DETECTIONS, 6]))
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


PREPROCESS = f"""
[preprocess]
color_order = "RGB"
scale = {1 / 255!r}
mean = {list(MEAN)}
std = {list(STD)}
"""


def write_spec(path: Path, detection: str) -> Path:
    """A user's spec: name, task, labels, the normalisation, and the [detection] section given."""
    labels = ", ".join(f'"{label}"' for label in LABELS)
    path.write_text(f'name = "byo"\ntask = "detection"\nlabels = [{labels}]\n{PREPROCESS}\n[detection]\n{detection}')
    return path


YOLOV8_SECTION = f'format = "yolov8"\nscore_threshold = {SCORE_THRESHOLD}\niou_threshold = {IOU_THRESHOLD}\n'
BOXES_SECTION = (
    f'format = "boxes"\nnms_in_graph = true\ngraph_score_threshold = {SCORE_THRESHOLD}\n'
    f"graph_iou_threshold = {IOU_THRESHOLD}\ngraph_max_detections = {GRAPH_MAX_DETECTIONS}\n"
)


# -- fixtures: the trained net, its exports, the bundles (compiled when first asked for)
@pytest.fixture(scope="module")
def net() -> Any:
    return train_detector()


@pytest.fixture(scope="module")
def models(net: Any, tmp_path_factory: Any) -> Path:
    """A folder with the user's files: yolov8.onnx/.toml, nms.onnx/.toml (unnamed NMS nodes) and
    nms-named.onnx/.toml."""
    folder = tmp_path_factory.mktemp("byo")
    export_yolov8(net, folder / "yolov8.onnx")
    write_spec(folder / "yolov8.toml", YOLOV8_SECTION)
    single = export_yolov8(net, folder / "yolov8-batch1.onnx", dynamic_batch=False)
    for name, named in (("nms", False), ("nms-named", True)):
        add_nms(single, folder / f"{name}.onnx", named=named)
        write_spec(folder / f"{name}.toml", BOXES_SECTION)
    return folder


@pytest.fixture(scope="module")
def references(net: Any) -> list[tuple[np.ndarray, Reference]]:
    """(image, the torch model's own detections) for each case."""
    return [(image, torch_detections(net, image)) for image in (case_image(i, size) for i, size in CASES)]


@pytest.fixture(scope="module")
def bundle(models: Path) -> Any:
    """``bundle(model, target, precision)``: the path of that bundle, compiled once (calibrated on the
    committed calibration scenes)."""
    made: dict[tuple[str, str, str], Path] = {}

    def get(model: str, target: str, precision: str) -> Path:
        key = (model, target, precision)
        if key not in made:
            made[key] = edgekit.compile_model(
                models / f"{model}.onnx", spec=models / f"{model}.toml", target=target, precision=precision,
                output=models / f"{model}-{target}-{precision}.edgekit", calib=SCENES / "calib",
                compare_int8_with_fp32=False,
            ).path  # fmt: skip
        return made[key]

    return get


def pair(got: Any, want: np.ndarray, want_classes: np.ndarray) -> list[tuple[int, int, float]]:
    """(got index, want index, IoU) for each want box: the got box of its class with the largest IoU, each got
    box used once."""
    iou = box_iou(got.boxes, want) * (got.class_ids[:, None] == want_classes[None, :])
    pairs, used = [], set()
    for j in range(len(want)):
        i = int(np.argmax(iou[:, j])) if len(got) else -1
        if i < 0 or i in used or iou[i, j] <= 0:
            pairs.append((-1, j, 0.0))
            continue
        used.add(i)
        pairs.append((i, j, float(iou[i, j])))
    return pairs


def f1(got: Any, want: np.ndarray, want_classes: np.ndarray) -> tuple[int, int, int]:
    """(matched, got, wanted) at IoU 0.5 and the same class, greedy by the got boxes' scores."""
    iou = box_iou(got.boxes, want) * (got.class_ids[:, None] == want_classes[None, :])
    free = np.ones(len(want), bool)
    matched = 0
    for i in np.argsort(-got.scores, kind="stable"):
        if free.any():
            j = int(np.argmax(np.where(free, iou[i], -1)))
            if free[j] and iou[i, j] >= 0.5:
                free[j] = False
                matched += 1
    return matched, len(got), len(want)


def assert_same(got: Any, ref: Reference, *, score: float = 1e-4, px: float = 0.02) -> None:
    """The bundle's detections are the reference's: the same count and classes; each box at IoU >= 0.95 with
    the reference mapped back as Ultralytics' scale_boxes does, and within ``px`` of it mapped back exactly."""
    assert len(got) == len(ref.scores), (got.to_text(), ref)
    exact, ultralytics = ref.fit.exact(ref.boxes), ref.fit.ultralytics(ref.boxes)
    for i, j, _ in pair(got, exact, ref.classes):
        assert i >= 0, (got.to_text(), ref)
        assert box_iou(got.boxes[i], ultralytics[j])[0, 0] >= 0.95
        assert np.abs(got.boxes[i] - exact[j]).max() <= px, (got.boxes[i], exact[j])
        assert abs(got.scores[i] - ref.scores[j]) <= score
    assert sorted(got.class_ids.tolist()) == sorted(ref.classes.tolist())


def total_f1(bundle_path: Path, references: list[tuple[np.ndarray, Reference]]) -> tuple[float, int]:
    """The F1 of a bundle's detections against the references (IoU 0.5, same class) over all cases, and the
    references' box count."""
    matched = found = wanted = 0
    with edgekit.load_bundle(bundle_path) as b:
        assert b.selftest_result.passed
        for image, ref in references:
            m, g, w = f1(b.predict(image, color_order="BGR"), ref.fit.exact(ref.boxes), ref.classes)
            matched, found, wanted = matched + m, found + g, wanted + w
    return 2 * matched / max(1, found + wanted), wanted


# -- the YOLOv8 layout
@pytest.mark.parametrize("target", ["cpu", "intel-cpu"])
def test_a_yolov8_layout_bundle_gives_the_torch_models_own_detections(bundle, references, target):
    path = bundle("yolov8", target, "fp32")
    with edgekit.load_bundle(path) as b:
        m = b.manifest
        assert m["input"]["shape"][1:] == [3, *INPUT_HW] and m["postprocess"]["input_hw"] == list(INPUT_HW)
        assert m["preprocess"]["fit"] == "letterbox" and m["preprocess"]["pad_value"] == 114
        assert m["output"]["shape"][1:] == [4 + len(LABELS), 12 * 20 + 6 * 10]
        assert m["postprocess"]["detection"]["format"] == "yolov8" and m["postprocess"]["score_threshold"] == 0.3
        assert b.selftest_result.passed
        for image, ref in references:
            assert_same(b.predict(image, color_order="BGR"), ref)
        # a batch of images of different sizes: each in its own pixels
        images = [image for image, _ in references[5:]]
        for got, (_, ref) in zip(b.predict_batch(images, color_order="BGR"), references[5:], strict=True):
            assert_same(got, ref)
    assert sum(len(ref.scores) for _, ref in references) >= 30  # the comparison is over boxes, not empty lists


@pytest.mark.parametrize("target", ["cpu", "intel-cpu"])
def test_int8_keeps_the_yolov8_models_detections(bundle, references, target):
    path = bundle("yolov8", target, "int8")
    with edgekit.load_bundle(path) as b:
        tail = b.manifest["quantization"]["output_tail_in_float"]
        assert any("Sigmoid" in name for name in tail) and any("Concat" in name for name in tail)
    score, wanted = total_f1(path, references)
    assert wanted >= 30 and score >= 0.9, score  # measured: 0.985 (cpu), 0.970 (intel-cpu)


def test_a_spec_that_calls_the_nms_graph_yolov8_is_one_line(models, tmp_path):
    from edgekit.errors import ModelError

    spec = write_spec(tmp_path / "wrong.toml", YOLOV8_SECTION)
    with pytest.raises(ModelError) as err:
        edgekit.compile_model(models / "nms.onnx", spec=spec, target="cpu", precision="fp32", output=tmp_path / "b")
    message = str(err.value)
    assert "\n" not in message and "[1, 300, 6]" in message and "yolov8" in message
    assert not (tmp_path / "b").exists()


# -- NMS inside the graph
def _graph_rows(model: Path, image: np.ndarray) -> tuple[np.ndarray, Letterbox]:
    """ONNX Runtime's raw output rows of the NMS graph for one image, and the fit."""
    import onnxruntime as ort

    fitted, fit = letterbox(image)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    (rows,) = session.run(None, {"images": to_tensor(fitted)[None]})
    assert rows.shape == (1, GRAPH_MAX_DETECTIONS, 6)
    return rows[0], fit


@pytest.mark.parametrize("target", ["cpu", "intel-cpu"])
def test_a_bundle_with_nms_in_the_graph_gives_the_graphs_rows(bundle, models, references, target):
    path = bundle("nms", target, "fp32")
    with edgekit.load_bundle(path) as b:
        m = b.manifest
        assert m["output"]["shape"][1:] == [GRAPH_MAX_DETECTIONS, 6]
        detection = m["postprocess"]["detection"]
        assert detection["format"] == "boxes" and detection["nms_in_graph"] is True
        assert "iou_threshold" not in detection and detection["max_detections"] == GRAPH_MAX_DETECTIONS
        assert m["postprocess"]["score_threshold"] == SCORE_THRESHOLD and b.selftest_result.passed
        for image, ref in references:
            rows, fit = _graph_rows(models / "nms.onnx", image)
            above = rows[rows[:, 4] >= SCORE_THRESHOLD]
            assert (rows[len(above) :] == 0).all()  # the padding: zero rows after the last detection
            got = b.predict(image, color_order="BGR")
            # the graph's rows, best first, in the source image's pixels
            assert got.class_ids.tolist() == above[:, 5].astype(int).tolist()
            assert np.abs(got.scores - above[:, 4]).max(initial=0) <= 1e-4
            assert np.abs(got.boxes - fit.exact(above[:, :4])).max(initial=0) <= 0.02
            # and the graph's NMS is the torch model's own
            assert_same(got, ref)


def _float_tail(path: Path) -> list[str]:
    """The ops of a Q/DQ ONNX graph between its last convolutions and its output or NMS inputs that are
    quantized (DequantizeLinear nodes met walking back from them, stopping at each Conv)."""
    import onnx

    graph = onnx.load(str(path / "model.onnx")).graph
    producer = {o: n for n in graph.node for o in n.output}
    starts = [o.name for o in graph.output] + [i for n in graph.node if n.op_type == "NonMaxSuppression"
                                              for i in n.input]  # fmt: skip
    seen, found, todo = set(), [], list(starts)
    while todo:
        node = producer.get(todo.pop())
        if node is None or id(node) in seen or node.op_type == "Conv":
            continue
        seen.add(id(node))
        if node.op_type == "DequantizeLinear":
            found.append(node.output[0])
        todo.extend(node.input)
    return found


@pytest.mark.parametrize(
    ("model", "target"),
    [
        ("nms", "cpu"),  # unnamed nodes: named by the pre-processing, so they can be kept in float
        ("nms-named", "cpu"),
        ("nms", "intel-cpu"),
    ],
)  # fmt: skip
def test_int8_keeps_the_nms_graph_in_float(bundle, references, model, target):
    path = bundle(model, target, "int8")
    if target == "cpu":
        assert _float_tail(path) == []  # nothing after the last convolutions is quantized, NMS inputs included
    score, wanted = total_f1(path, references)
    assert wanted >= 30 and score >= 0.9, score  # measured: 0.985 (cpu, named), 0.945 (intel-cpu)


# -- served
def _serve_support() -> Any:
    """tests/serve/serve_support.py (the daemon as a process), importable from here."""
    import importlib
    import sys

    folder = str(ROOT / "tests" / "serve")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return importlib.import_module("serve_support")


def test_the_daemon_answers_with_the_torch_models_detections(bundle, references, tmp_path):
    """``edgekit serve`` on the yolov8 bundle: POST /v1/predict of PNG images of three sizes gives the torch
    model's own boxes in each image's pixels, and the looping source's latest result those of its frame."""
    import signal

    from edgekit.tasks.detection import Detections

    serve = _serve_support()
    frames = tmp_path / "frames"
    frames.mkdir()
    looped, looped_ref = references[-1]
    for i in range(3):
        cv2.imwrite(str(frames / f"frame{i}.png"), looped)
    daemon = serve.DaemonProcess([str(bundle("yolov8", "cpu", "fp32")), "--source", str(frames), "--loop",
                                  "--realtime", "--fps", "5", "--port", "0", "--device-id", "byo"])  # fmt: skip
    try:
        daemon.wait_listening()
        serve.wait_until(lambda: daemon.request("GET", "/readyz")[0] == 200, timeout=30, what="/readyz")
        for image, ref in (references[1], references[6], references[7]):
            png = cv2.imencode(".png", image)[1].tobytes()
            status, _, body = daemon.request("POST", "/v1/predict", png, {"Content-Type": "image/png"})
            assert status == 200, body
            answer = json.loads(body)
            assert answer["image"] == {"width": image.shape[1], "height": image.shape[0]}
            items = answer["detections"]
            assert [d["label"] for d in items] == [LABELS[d["class_id"]] for d in items]
            got = Detections([d["box"] for d in items], [d["score"] for d in items], [d["class_id"] for d in items])
            assert_same(got, ref, px=0.03)  # the answer rounds boxes to 0.01 px
        serve.wait_until(lambda: daemon.request("GET", "/v1/latest")[0] == 200, timeout=20, what="a result")
        items = daemon.get_json("/v1/latest")["detections"]
        got = Detections([d["box"] for d in items], [d["score"] for d in items], [d["class_id"] for d in items])
        assert_same(got, looped_ref, px=0.03)
        code, _ = daemon.stop(signal.SIGTERM)
        assert code == 0 and "Traceback" not in daemon.log
    finally:
        daemon.kill()
