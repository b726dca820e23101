"""Train the reference detector (model.py) on scenes composed from CIFAR-10 train photographs.

    nice -n 10 python examples/detection/train_detector.py --steps 6000

Every training scene is fresh: step ``i`` draws train scenes ``i * batch .. (i + 1) * batch - 1`` of
make_scenes.py, JPEG-encoded at quality 90 and decoded again like the written scenes, so no scene is
seen twice and a resumed run sees the same data. One scene in five is squashed along one axis and
padded with grey 114 back to the square, as letterboxing a non-square image does.

Assignment is anchor-free and static (FCOS-style centre sampling, Tian et al. 2019): a cell is
positive for a box when its centre lies inside the box, within 1.5 strides of the box centre, the
box's longer side is in the level's range (stride 8: up to 48 px, 16: 36-96, 32: 72 and up), and the
box is the topmost at that point (pasted later, so its pixels are what the cell sees). Losses: quality
focal loss for the classes, the target being the IoU of the predicted box (Li et al. 2020, GFL),
GIoU plus L1 in grid units for the boxes. AdamW, linear warm-up then cosine decay, an EMA of the
weights (what is evaluated and exported). One thread (the machine is shared).

Writes ``examples/models/detector/``: ``model.onnx`` (opset 17, dynamic batch, 128x128, output
``[B, 14, 336]`` in the YOLOv8 layout), ``model.toml`` and ``train_log.json``; checkpoints go to
``--work`` (default ``~/.cache/edgekit/detector``) every ``--eval-every`` steps and ``--resume`` picks
the last one up.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from copy import deepcopy
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from evaluation import coco_map, load_scenes, postprocess  # noqa: E402
from make_scenes import CLASSES, DEFAULT_DATA, SIZE, jpeg_roundtrip, load_photos, make_scene  # noqa: E402
from model import STRIDES, Detector, ExportWrapper  # noqa: E402

MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 train statistics, as the classifiers use
STD = (0.2470, 0.2435, 0.2616)
RANGES = {8: (0.0, 48.0), 16: (36.0, 96.0), 32: (72.0, 1e9)}  # longer box side per level, px
RADIUS = 1.5  # centre sampling radius, strides
OUT = HERE.parent / "models" / "detector"
SAMPLE = HERE.parent / "data" / "scenes" / "val"
MODEL_ARGS = {"widths": (24, 32, 64, 96, 112), "blocks": (1, 2, 2, 1), "neck": 56, "box_convs": 1}


def anchor_grid(size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres (N, 2) in pixels and strides (N,), in the output order of model.py."""
    centres, strides = [], []
    for s in STRIDES:
        n = size // s
        ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        centres.append((np.stack([xs.ravel(), ys.ravel()], 1) + 0.5) * s)
        strides.append(np.full(n * n, s, np.float32))
    return np.concatenate(centres).astype(np.float32), np.concatenate(strides)


def assign(boxes: np.ndarray, centres: np.ndarray, strides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Static centre-sampling assignment of one scene: per cell the index of its box (-1: background)."""
    n = len(centres)
    target = np.full(n, -1, np.int64)
    if len(boxes) == 0:
        return target, np.zeros((n, 4), np.float32)
    b = boxes.astype(np.float32)
    px, py = centres[:, 0:1], centres[:, 1:2]
    inside = (px > b[:, 0]) & (px < b[:, 2]) & (py > b[:, 1]) & (py < b[:, 3])  # (N, K)
    # The topmost box at each cell centre: boxes are in paste order, later ones on top.
    k_idx = np.arange(len(b))
    owner = np.where(inside.any(1), np.where(inside, k_idx, -1).max(1), -1)
    mine = owner[:, None] == k_idx
    side = np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])
    lo = np.array([RANGES[int(s)][0] for s in strides], np.float32)[:, None]
    hi = np.array([RANGES[int(s)][1] for s in strides], np.float32)[:, None]
    in_range = (side >= lo) & (side <= hi)
    r = RADIUS * strides[:, None]
    near = (np.abs(px - (b[:, 0] + b[:, 2]) / 2) < r) & (np.abs(py - (b[:, 1] + b[:, 3]) / 2) < r)
    cand = mine & in_range & near
    for k in range(len(b)):  # a box whose centre area is covered still gets its visible cells
        if not cand[:, k].any():
            cand[:, k] = mine[:, k] & in_range[:, k]
        if not cand[:, k].any():
            cand[:, k] = mine[:, k]
    pos = cand.any(1)
    target[pos] = cand[pos].argmax(1)
    return target, b[np.maximum(target, 0)]


def letterbox_augment(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Squash the scene along one axis by 0.6-1.0 and pad it back to square with grey 114, centred."""
    f = float(rng.uniform(0.6, 1.0))
    h, w = image.shape[:2]
    vertical = rng.random() < 0.5
    nw, nh = (w, round(h * f)) if vertical else (round(w * f), h)
    small = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA)
    out = np.full_like(image, 114)
    dx, dy = (w - nw) // 2, (h - nh) // 2
    out[dy : dy + nh, dx : dx + nw] = small
    sx, sy = nw / w, nh / h
    b = boxes.astype(np.float32) * np.array([sx, sy, sx, sy], np.float32) + np.array([dx, dy, dx, dy], np.float32)
    return out, b


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> normalised float NCHW (channels-last memory), the spec's preprocessing."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x.contiguous(memory_format=torch.channels_last)


def make_batch(photos, step: int, batch: int, seed: int, centres, strides):
    """Train scenes of one step with their targets: images, class per cell (-1 bg), box per cell (px)."""
    images, classes, boxes = [], [], []
    for index in range(step * batch, (step + 1) * batch):
        scene = make_scene(photos, "train", index, seed)
        image, b = jpeg_roundtrip(scene.image, 90), scene.boxes.astype(np.float32)
        rng = np.random.default_rng([seed, 3, index])
        if rng.random() < 0.2:
            image, b = letterbox_augment(image, b, rng)
        target, tbox = assign(b, centres, strides)
        classes.append(np.where(target >= 0, scene.classes[np.maximum(target, 0)], -1))
        boxes.append(tbox)
        images.append(image)
    return to_tensor(np.stack(images)), torch.from_numpy(np.stack(classes)), torch.from_numpy(np.stack(boxes))


def box_iou_giou(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """IoU and GIoU of paired boxes (K, 4) x1 y1 x2 y2."""
    iw = (torch.minimum(a[:, 2], b[:, 2]) - torch.maximum(a[:, 0], b[:, 0])).clamp(min=0)
    ih = (torch.minimum(a[:, 3], b[:, 3]) - torch.maximum(a[:, 1], b[:, 1])).clamp(min=0)
    inter = iw * ih
    union = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
    iou = inter / union.clamp(min=1e-6)
    cw = torch.maximum(a[:, 2], b[:, 2]) - torch.minimum(a[:, 0], b[:, 0])
    ch = torch.maximum(a[:, 3], b[:, 3]) - torch.minimum(a[:, 1], b[:, 1])
    hull = (cw * ch).clamp(min=1e-6)
    return iou, iou - (hull - union) / hull


def detection_loss(model: Detector, dist, logits, tcls, tbox) -> tuple[torch.Tensor, dict[str, float]]:
    """Quality focal loss (classes) + 2 GIoU + 0.25 L1 in grid units (boxes), normalised by positives."""
    pos = tcls >= 0
    num_pos = max(int(pos.sum()), 1)
    pred = model.decode(dist)[pos]
    target = tbox[pos]
    iou, giou = box_iou_giou(pred, target)
    soft = torch.zeros_like(logits)
    soft[pos, tcls[pos]] = iou.detach().clamp(min=0.0)
    p = logits.sigmoid()
    qfl = (F.binary_cross_entropy_with_logits(logits, soft, reduction="none") * (p - soft).abs().pow(2)).sum() / num_pos
    s = model.strides.expand(pos.shape)[pos][:, None]
    c = model.centres.expand(*pos.shape, 2)[pos]
    tdist = torch.cat([c - target[:, :2] / s, target[:, 2:] / s - c], 1)
    l1 = (dist[pos] - tdist).abs().sum() / num_pos
    box = (1.0 - giou).sum() / num_pos
    loss = qfl + 2.0 * box + 0.25 * l1
    return loss, {"qfl": qfl.item(), "giou": box.item(), "l1": l1.item(), "pos": num_pos}


class EMA:
    """Exponential moving average of the weights and BN statistics (decay ramps up, as in YOLOv5)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.9995) -> None:
        self.model = deepcopy(model).eval()
        self.decay = decay
        self.updates = 0
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / 1000))
        msd = model.state_dict()
        for k, v in self.model.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(msd[k].detach(), alpha=1 - d)
            else:
                v.copy_(msd[k])


@torch.no_grad()
def evaluate(model: Detector, images: list[np.ndarray], coco: dict, batch: int = 100) -> dict[str, float]:
    """COCO mAP of ``model`` on scenes (score threshold 0.001, per-class NMS at IoU 0.5, 100 detections)."""
    model.eval()
    wrapper = ExportWrapper(model).eval()
    outputs = []
    for i in range(0, len(images), batch):
        outputs.append(wrapper(to_tensor(np.stack(images[i : i + batch]))).numpy())
    out = np.concatenate(outputs)
    return coco_map(coco, [postprocess(o, 0.001, 0.5, 100) for o in out])


def export(model: Detector, out: Path, metrics: dict) -> None:
    """Write model.onnx (opset 17, dynamic batch) and model.toml, the spec edgekit reads."""
    out.mkdir(parents=True, exist_ok=True)
    wrapper = ExportWrapper(deepcopy(model).to(memory_format=torch.contiguous_format)).eval()
    torch.onnx.export(
        wrapper,
        (torch.zeros(1, 3, SIZE, SIZE),),
        str(out / "model.onnx"),
        input_names=["images"],
        output_names=["output0"],
        dynamic_axes={"images": {0: "batch"}, "output0": {0: "batch"}},
        opset_version=17,
        dynamo=False,
    )
    n = sum((SIZE // s) ** 2 for s in STRIDES)
    graph = onnx.load(str(out / "model.onnx"))  # the exporter names the static output dims symbolically
    for dim, value in zip(graph.graph.output[0].type.tensor_type.shape.dim[1:], (4 + len(CLASSES), n), strict=True):
        dim.dim_value = value
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(out / "model.onnx"))
    write_spec(out)
    (out / "train_log.json").write_text(json.dumps(metrics, indent=2) + "\n")


def write_spec(out: Path) -> None:
    """Write ``out/model.toml``: labels, input, preprocessing and how to decode the output."""
    n = sum((SIZE // s) ** 2 for s in STRIDES)
    labels = ", ".join(f'"{c}"' for c in CLASSES)
    (out / "model.toml").write_text(
        "# Model spec for edgekit: a single-stage anchor-free detector (examples/detection/), its input,\n"
        "# preprocessing and how to decode its output.\n"
        f'name = "scenes-detector"\ntask = "detection"\nlabels = [{labels}]\n\n'
        f'[input]\nname = "images"\nshape = [-1, 3, {SIZE}, {SIZE}]\nlayout = "NCHW"\ndtype = "float32"\n\n'
        f'[preprocess]\nresize = [{SIZE}, {SIZE}]\nresize_mode = "bilinear"\ncolor_order = "RGB"\n'
        f"scale = 0.00392156862745098\nmean = {list(MEAN)}\nstd = {list(STD)}\n\n"
        "# Output: one tensor [B, 4 + C, N]: rows centre-x, centre-y, width, height in input pixels, then the\n"
        f"# C class scores, sigmoid applied in the graph, no objectness; N = {n} cells (strides 8, 16, 32).\n"
        "# fit/pad_value: letterbox the image into the input (aspect kept, centred, grey padding before scale,\n"
        "# mean, std), map boxes back through it. The thresholds are for deployment; COCO mAP is measured\n"
        "# with score threshold 0.001, multi-label, per-class NMS at IoU 0.5, 100 detections.\n"
        '[detection]\nformat = "yolov8"\noutput = "output0"\nbox_format = "cxcywh"\nbox_units = "pixels"\n'
        f'num_classes = {len(CLASSES)}\nnum_boxes = {n}\nstrides = {list(STRIDES)}\nscores = "sigmoid"\n'
        'fit = "letterbox"\npad_value = 114\nscore_threshold = 0.25\niou_threshold = 0.5\n'
        'max_detections = 100\nnms = "per-class"\nmulti_label = false\n'
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--steps", type=int, default=6000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--precision",
        choices=("bf16", "fp32"),
        default="bf16",
        help="autocast the convolutions to bfloat16 in training (FP32 weights, losses and export); "
        "2x faster here (AMX), slow on CPUs without bf16 support",
    )
    p.add_argument("--work", type=Path, default=Path("~/.cache/edgekit/detector").expanduser())
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--resume", action="store_true")
    a = p.parse_args()

    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    photos = load_photos(a.data, "train")
    val_images, val_coco = load_scenes(SAMPLE)
    centres, strides = anchor_grid()
    model = Detector(num_classes=len(CLASSES), size=SIZE, **MODEL_ARGS).to(memory_format=torch.channels_last)
    decay, no_decay = [], []
    for prm in model.parameters():
        (decay if prm.ndim == 4 else no_decay).append(prm)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=a.lr
    )

    def lr_at(step: int) -> float:
        if step < a.warmup:
            return a.lr * (step + 1) / a.warmup
        t = (step - a.warmup) / max(a.steps - a.warmup, 1)
        return a.lr * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * t)))

    ema = EMA(model)
    log: dict = {"args": {k: str(v) for k, v in vars(a).items()}, "model": MODEL_ARGS, "evals": [], "losses": []}
    start, spent, cpu_spent = 0, 0.0, 0.0
    ckpt = a.work / "checkpoint.pt"
    if a.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        ema.model.load_state_dict(state["ema"])
        ema.updates = state["ema_updates"]
        opt.load_state_dict(state["opt"])
        start, spent, log = state["step"], state["seconds"], state["log"]
        cpu_spent = state.get("cpu_seconds", 0.0)
        print(f"resumed at step {start} ({spent:.0f}s of training so far)")
    params = sum(prm.numel() for prm in model.parameters())
    print(
        f"{params} parameters; {len(photos.images)} train photos, {len(val_images)} val scenes ({time.time() - t0:.1f}s)"
    )

    t_run, cpu_run = time.time(), time.process_time()
    running: dict[str, float] = {}
    for step in range(start, a.steps):
        model.train()
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        x, tcls, tbox = make_batch(photos, step, a.batch, a.seed, centres, strides)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.precision == "bf16"):
            dist, logits = model(x)
        loss, parts = detection_loss(model, dist, logits, tcls, tbox)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        ema.update(model)
        for k, v in parts.items():
            running[k] = running.get(k, 0.0) + v
        done = step + 1
        if done % 100 == 0:
            elapsed = spent + time.time() - t_run
            row = {"step": done, "seconds": round(elapsed), "lr": lr_at(step)}
            row.update({k: round(v / 100, 4) for k, v in running.items()})
            log["losses"].append(row)
            print(json.dumps(row), flush=True)
            running = {}
        if done % a.eval_every == 0 or done == a.steps:
            m = evaluate(ema.model, val_images, val_coco)
            elapsed = spent + time.time() - t_run
            log["evals"].append({"step": done, "seconds": round(elapsed), "val_sample": m})
            print(
                f"step {done}: val sample mAP@0.5 {m['map50']:.4f}, mAP@0.5:0.95 {m['map']:.4f} ({elapsed:.0f}s)",
                flush=True,
            )
            a.work.mkdir(parents=True, exist_ok=True)
            torch.save(
                {
                    "model": model.state_dict(),
                    "ema": ema.model.state_dict(),
                    "ema_updates": ema.updates,
                    "opt": opt.state_dict(),
                    "step": done,
                    "seconds": elapsed,
                    "cpu_seconds": cpu_spent + time.process_time() - cpu_run,
                    "log": log,
                },
                ckpt,
            )
    seconds = spent + time.time() - t_run
    log.update(
        {
            "train_seconds": round(seconds),
            "train_cpu_seconds": round(cpu_spent + time.process_time() - cpu_run),
            "train_scenes": a.steps * a.batch,
            "params": params,
            "torch": torch.__version__,
            "final_val_sample": log["evals"][-1]["val_sample"] if log["evals"] else None,
        }
    )
    export(ema.model, a.out, log)
    torch.save(ema.model.state_dict(), a.work / "final_ema.pt")
    print(f"trained {a.steps} steps in {seconds:.0f}s; wrote {a.out}")


if __name__ == "__main__":
    main()
