"""Score an exported detector (ONNX, YOLOv8 layout) on a scenes folder and time it with ONNX Runtime.

    python examples/detection/evaluate.py --scenes examples/data/scenes/val
    python examples/detection/evaluate.py --scenes ~/.cache/edgekit/scenes/val2000 --latency

Reads the preprocessing and decoding settings from the model spec (``model.toml`` beside the model):
letterbox-fit each image to the input size (grey ``pad_value``), scale, mean and std, RGB, NCHW; then
NMS per class and COCO mAP (pycocotools) with the evaluation settings of COCO: score threshold 0.001
and 100 detections an image (not the spec's deployment ``score_threshold``). Boxes are mapped back
through the letterbox before scoring. ``--latency`` adds the ONNX Runtime CPU batch-1 latency of the
model alone (one process, one intra-op thread unless ``--threads``), and of the NumPy decode + NMS.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import tomllib

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from evaluation import coco_map, letterbox, load_scenes, postprocess  # noqa: E402

DEFAULT_MODEL = HERE.parent / "models" / "detector" / "model.onnx"


def preprocess(image: np.ndarray, spec: dict) -> tuple[np.ndarray, float, tuple[int, int]]:
    """One RGB uint8 image -> the model's (1, 3, H, W) float32 input, plus the letterbox scale and offset."""
    size = spec["input"]["shape"][2]
    fitted, scale, offset = letterbox(image, size, spec["detection"]["pad_value"])
    pre = spec["preprocess"]
    x = fitted.astype(np.float32) * np.float32(pre["scale"])
    x = (x - np.asarray(pre["mean"], np.float32)) / np.asarray(pre["std"], np.float32)
    return x.transpose(2, 0, 1)[None], scale, offset


def run(model: Path, scenes: Path, threads: int, latency: bool, repeats: int) -> dict:
    """COCO figures of ``model`` on ``scenes`` and, with ``latency``, its batch-1 timings."""
    spec = tomllib.loads(model.with_name("model.toml").read_text())
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    images, coco = load_scenes(scenes)
    detections, raw = [], []
    for image in images:
        x, scale, (dx, dy) = preprocess(image, spec)
        out = session.run(None, {name: x})[0][0]
        raw.append(out)
        boxes, scores, classes = postprocess(out, 0.001, spec["detection"]["iou_threshold"], 100)
        boxes = (boxes - np.array([dx, dy, dx, dy], np.float32)) / scale
        detections.append((boxes, scores, classes))
    result: dict = {"model": str(model), "scenes": str(scenes), "images": len(images)}
    result["objects"] = len(coco["annotations"])
    result["coco"] = coco_map(coco, detections)
    if latency:
        x, _, _ = preprocess(images[0], spec)
        for _ in range(20):
            session.run(None, {name: x})
        inputs = [preprocess(image, spec)[0] for image in images[: min(len(images), 100)]]
        times = []
        for i in range(repeats):
            feed = {name: inputs[i % len(inputs)]}
            t = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - t)
        post = []
        thr = spec["detection"]["score_threshold"]
        for i in range(repeats):
            t = time.perf_counter()
            postprocess(raw[i % len(raw)], thr, spec["detection"]["iou_threshold"], spec["detection"]["max_detections"])
            post.append(time.perf_counter() - t)
        ms = lambda v, q: round(float(np.percentile(v, q)) * 1e3, 3)  # noqa: E731
        result["latency_ms"] = {
            "threads": threads,
            "runs": repeats,
            "onnxruntime": ort.__version__,
            "model_p50": ms(times, 50),
            "model_p90": ms(times, 90),
            "decode_nms_p50": ms(post, 50),
            "decode_nms_score_threshold": thr,
        }
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--scenes", type=Path, required=True, help="a folder written by make_scenes.py")
    p.add_argument("--latency", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=500)
    a = p.parse_args()
    print(json.dumps(run(a.model, a.scenes.expanduser(), a.threads, a.latency, a.repeats), indent=2))


if __name__ == "__main__":
    main()
