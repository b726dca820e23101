"""Compose detection scenes from the real CIFAR-10 photographs, with exact boxes.

    python examples/detection/make_scenes.py --split val --count 2000 --out ~/.cache/edgekit/scenes/val
    python examples/detection/make_scenes.py --sample      # rebuild the committed examples/data/scenes/

No detection data or weights can be fetched here, so the reference detector learns from scenes built
out of the CIFAR-10 JPEGs in ``../shared/datasets/cifar10`` (read straight from ``train.zip`` and
``test.zip``). A scene is a ``SIZE`` x ``SIZE`` RGB image:

- background: one photograph, or a mosaic of two to four, upscaled to the scene size, heavily blurred
  (Gaussian sigma 3 to 6 px) and colour-jittered. At that blur a 32x32 photograph is texture and
  colour, not a recognisable object, so the only sharp CIFAR objects in a scene are the pasted ones;
  the mosaic seams still give the detector straight edges that are not objects.
- objects: 1 to 5 whole photographs of the 10 classes, each resized (bilinear up, area down) to a side
  of ``MIN_SIDE`` to ``MAX_SIDE`` px (log-uniform, aspect jitter 0.8 to 1.25), maybe mirrored,
  pasted at integer positions. The box is the pasted rectangle: exact, ``[x1, y1, x2, y2)`` in
  pixels. Later objects cover earlier ones, within bounds that keep every box meaningful: two boxes
  overlap with IoU < ``MAX_IOU``, and at least ``MIN_VISIBLE`` of each box's area stays visible.

Train scenes use CIFAR train photographs only, validation scenes CIFAR test photographs only: no
photograph is in both. Within a scene the background photographs are never its object photographs.

Determinism: scene ``i`` of a split depends only on ``(seed, split, i)`` and the sorted list of zip
member names: not on the zip's member order, on ``--count`` or on which other scenes are generated. So
the first 200 validation scenes of any run are the committed sample, and training can draw fresh
scenes by index. Annotations are in paste order (a later annotation lies on top of earlier ones);
each records the zip member it was made from.

Output per split: ``OUT/NNNNNN.jpg`` (JPEG quality ``--quality``) and ``OUT/annotations.json`` in COCO
format: ``bbox = [x, y, w, h]`` in pixels, ``category_id`` = the class index 0..9 (the detector's output
channel, alphabetical CIFAR names), image and annotation ids from 1 (pycocotools treats 0 as "unmatched").
"""

from __future__ import annotations

import argparse
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parent
DEFAULT_DATA = EXAMPLES.parents[1] / "shared" / "datasets" / "cifar10"

SIZE = 128  # scene side, px; the detector's input is SIZE x SIZE
MIN_SIDE, MAX_SIDE = 24, 88  # object size range (geometric mean of width and height), px; CIFAR is 32x32
MAX_OBJECTS = 5
MAX_IOU = 0.5  # any two boxes of a scene overlap less than this
MIN_VISIBLE = 0.6  # fraction of each box's area left uncovered by later objects
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = {"train": ("train.zip", 1), "val": ("test.zip", 2)}  # split -> (CIFAR archive, seed stream id)


@dataclass
class Photos:
    """Every photograph of one CIFAR split, decoded: images (N, 32, 32, 3) RGB, labels, member names."""

    images: np.ndarray
    labels: np.ndarray
    names: list[str]


@dataclass
class Scene:
    """One composed scene: the RGB image and its objects in paste order (later ones on top)."""

    image: np.ndarray
    boxes: np.ndarray  # (K, 4) int32 x1, y1, x2, y2 (x2, y2 exclusive)
    classes: np.ndarray  # (K,) int64 class index
    sources: list[str] = field(default_factory=list)  # zip member of each object
    background: list[str] = field(default_factory=list)  # zip members of the background


def load_photos(data: Path, split: str) -> Photos:
    """Decode every photograph of ``split``'s CIFAR archive, in sorted member-name order."""
    archive = data / SPLITS[split][0]
    if not archive.is_file():
        raise SystemExit(f"{archive} not found: pass --data DIR holding CIFAR-10's train.zip and test.zip")
    index = {c: i for i, c in enumerate(CLASSES)}
    images, labels, names = [], [], []
    with zipfile.ZipFile(archive) as zf:
        for name in sorted(n for n in zf.namelist() if n.lower().endswith(".jpg")):
            cls = Path(name).parent.name
            if cls not in index:
                raise SystemExit(f"{archive}: member {name!r} is not in a CIFAR-10 class folder")
            img = cv2.imdecode(np.frombuffer(zf.read(name), np.uint8), cv2.IMREAD_COLOR)
            if img is None or img.shape != (32, 32, 3):
                raise SystemExit(f"{archive}: member {name!r} is not a 32x32 colour JPEG")
            images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            labels.append(index[cls])
            names.append(name)
    return Photos(np.stack(images), np.asarray(labels, np.int64), names)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box ``a`` (4,) with boxes ``b`` (K, 4), x1 y1 x2 y2."""
    iw = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = iw * ih
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _background(photos: Photos, rng: np.random.Generator, picks: list[int]) -> np.ndarray:
    """One photograph or a 2-4 photograph mosaic, upscaled, blurred to texture, colour-jittered."""
    kind = rng.integers(0, 3)  # 0: one photo, 1: two halves, 2: four quadrants
    canvas = np.empty((SIZE, SIZE, 3), np.float32)
    if kind == 0:
        cells = [(0, 0, SIZE, SIZE)]
    else:
        cx = int(rng.integers(SIZE // 4, 3 * SIZE // 4 + 1))
        cy = int(rng.integers(SIZE // 4, 3 * SIZE // 4 + 1))
        if kind == 1:
            vertical = rng.random() < 0.5
            cells = [(0, 0, cx, SIZE), (cx, 0, SIZE, SIZE)] if vertical else [(0, 0, SIZE, cy), (0, cy, SIZE, SIZE)]
        else:
            cells = [(0, 0, cx, cy), (cx, 0, SIZE, cy), (0, cy, cx, SIZE), (cx, cy, SIZE, SIZE)]
    for x1, y1, x2, y2 in cells:
        k = int(rng.integers(len(photos.images)))
        picks.append(k)
        patch = photos.images[k]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        canvas[y1:y2, x1:x2] = cv2.resize(patch, (x2 - x1, y2 - y1), interpolation=cv2.INTER_LINEAR)
    sigma = float(rng.uniform(3.0, 6.0))
    canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
    gain = rng.uniform(0.7, 1.3, 3).astype(np.float32)
    offset = np.float32(rng.uniform(-30, 30))
    mean = canvas.mean(axis=(0, 1), keepdims=True)
    return (mean + (canvas - mean) * np.float32(rng.uniform(0.6, 1.2))) * gain + offset


def make_scene(photos: Photos, split: str, index: int, seed: int = 0) -> Scene:
    """Compose scene ``index`` of ``split``; the same arguments always give the same scene."""
    rng = np.random.default_rng([seed, SPLITS[split][1], index])
    bg_picks: list[int] = []
    canvas = _background(photos, rng, bg_picks)
    wanted = int(rng.integers(1, MAX_OBJECTS + 1))
    boxes: list[np.ndarray] = []
    visible: list[np.ndarray] = []  # per placed object, a mask of its still-visible pixels
    chosen: list[int] = []
    attempts = 0
    while len(boxes) < wanted and attempts < 40:
        attempts += 1
        side = float(np.exp(rng.uniform(np.log(MIN_SIDE), np.log(MAX_SIDE))))
        aspect = float(np.exp(rng.uniform(np.log(0.8), np.log(1.25))))
        w = round(min(SIZE, side * np.sqrt(aspect)))
        h = round(min(SIZE, side / np.sqrt(aspect)))
        x1 = int(rng.integers(0, SIZE - w + 1))
        y1 = int(rng.integers(0, SIZE - h + 1))
        box = np.array([x1, y1, x1 + w, y1 + h], np.int32)
        k = int(rng.integers(len(photos.images)))
        if k in chosen or k in bg_picks:
            continue
        if boxes and _iou(box.astype(np.float64), np.stack(boxes).astype(np.float64)).max() >= MAX_IOU:
            continue
        ok = True
        for b, m in zip(boxes, visible, strict=True):
            left = m.copy()
            left[max(y1 - b[1], 0) : max(y1 + h - b[1], 0), max(x1 - b[0], 0) : max(x1 + w - b[0], 0)] = False
            if left.mean() < MIN_VISIBLE:
                ok = False
                break
        if not ok:
            continue
        for b, m in zip(boxes, visible, strict=True):
            m[max(y1 - b[1], 0) : max(y1 + h - b[1], 0), max(x1 - b[0], 0) : max(x1 + w - b[0], 0)] = False
        patch = photos.images[k]
        if rng.random() < 0.5:
            patch = patch[:, ::-1]
        interp = cv2.INTER_AREA if w < 32 and h < 32 else cv2.INTER_LINEAR
        patch = cv2.resize(np.ascontiguousarray(patch), (w, h), interpolation=interp).astype(np.float32)
        patch = patch * np.float32(rng.uniform(0.9, 1.1)) + np.float32(rng.uniform(-10, 10))
        canvas[y1 : y1 + h, x1 : x1 + w] = patch
        boxes.append(box)
        visible.append(np.ones((h, w), bool))
        chosen.append(k)
    image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return Scene(
        image=image,
        boxes=np.stack(boxes).astype(np.int32),
        classes=photos.labels[chosen],
        sources=[photos.names[k] for k in chosen],
        background=[photos.names[k] for k in bg_picks],
    )


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """The RGB image as it reads back from a JPEG of ``quality`` (what the written scenes hold)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def write_split(photos: Photos, split: str, count: int, seed: int, out: Path, quality: int, start: int = 0) -> dict:
    """Write scenes ``start .. start+count-1`` of ``split`` to ``out`` as JPEGs plus COCO ``annotations.json``."""
    out.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for n, index in enumerate(range(start, start + count)):
        scene = make_scene(photos, split, index, seed)
        file_name = f"{index:06d}.jpg"
        cv2.imwrite(
            str(out / file_name), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
        )
        image_id = n + 1
        images.append(
            {
                "id": image_id,
                "file_name": file_name,
                "width": SIZE,
                "height": SIZE,
                "scene_index": index,
                "background_sources": scene.background,
            }
        )
        for box, cls, src in zip(scene.boxes.tolist(), scene.classes.tolist(), scene.sources, strict=True):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(cls),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                    "source": src,
                }
            )
    coco = {
        "info": {
            "description": f"edgekit detection scenes, split {split!r}, composed from CIFAR-10 "
            f"{SPLITS[split][0]} photographs (Krizhevsky 2009) by examples/detection/make_scenes.py",
            "split": split,
            "seed": seed,
            "first_scene": start,
            "scene_size": SIZE,
            "jpeg_quality": quality,
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i, "name": c, "supercategory": "cifar10"} for i, c in enumerate(CLASSES)],
    }
    (out / "annotations.json").write_text(json.dumps(coco, separators=(",", ":")) + "\n")
    return coco


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with CIFAR-10 train.zip and test.zip")
    p.add_argument("--split", choices=sorted(SPLITS), default="val")
    p.add_argument("--count", type=int, default=200)
    p.add_argument("--start", type=int, default=0, help="index of the first scene")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quality", type=int, default=90, help="JPEG quality")
    p.add_argument("--out", type=Path, help="output folder (required unless --sample)")
    p.add_argument(
        "--sample",
        action="store_true",
        help="rebuild the committed sample: examples/data/scenes/val (200 val scenes) and calib (100 train scenes)",
    )
    a = p.parse_args()
    if a.sample:
        root = EXAMPLES / "data" / "scenes"
        for split, folder, count in (("val", "val", 200), ("train", "calib", 100)):
            coco = write_split(load_photos(a.data, split), split, count, a.seed, root / folder, a.quality)
            print(f"{root / folder}: {len(coco['images'])} scenes, {len(coco['annotations'])} objects")
        return
    if a.out is None:
        p.error("--out is required unless --sample is given")
    coco = write_split(load_photos(a.data, a.split), a.split, a.count, a.seed, a.out.expanduser(), a.quality, a.start)
    print(f"{a.out}: {len(coco['images'])} scenes, {len(coco['annotations'])} objects")


if __name__ == "__main__":
    main()
