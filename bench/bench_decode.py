"""Host-side detection post-processing cost: decode + NMS + mapping to the source image, in NumPy.

    python bench/bench_decode.py [--runs 300] [--classes 80] [--candidates 8400] [--json out.json]

A YOLOv8-layout output [1, 4 + C, N] for a 640 x 640 input, random but shaped like a real one: a dozen objects,
each with a few dozen candidates of high score for its class around it, and the other scores low (log10 score
normal around -3.5, so at threshold 0.001 nearly every candidate's best class passes, as on a real detector).
Times ``Decoder(...)(outputs, source_hw)`` at score thresholds 0.25 (deployment) and 0.001 (COCO evaluation,
up to 100 detections, and 300), per-class hard NMS at IoU 0.45, and prints the median (p50), p90 and minimum in ms
(on a shared machine the minimum is the least disturbed figure).
The issue's aim: at most 10% of the reference detector's batch-1 inference on `cpu`. ``--detector`` (default
examples/models/detector) times that model's batch-1 inference in ONNX Runtime FP32 (one thread, as the decode)
in the same run, and prints each decode's share of it. The reference detector is 128 x 128 (336 candidates);
8,400 candidates are what a 640 x 640 YOLOv8 head gives.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

from edgekit.tasks.detection import Decoder, DetectionConfig

SIZE = 640
DETECTOR = Path(__file__).resolve().parents[1] / "examples" / "models" / "detector" / "model.onnx"


def detector_ms(path: str, runs: int) -> float:
    """Batch-1 p50 of the detector in ONNX Runtime FP32, one intra-op thread."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    x = np.zeros((1, *[d if isinstance(d, int) else 1 for d in inp.shape[1:]]), np.float32)
    for _ in range(10):
        sess.run(None, {inp.name: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {inp.name: x})
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def yolov8_output(rng: np.random.Generator, classes: int, candidates: int, objects: int = 12) -> np.ndarray:
    out = np.empty((1, 4 + classes, candidates), np.float32)
    out[0, 0:2] = rng.uniform(0, SIZE, (2, candidates))
    out[0, 2:4] = rng.uniform(8, 200, (2, candidates))
    out[0, 4:] = 10 ** rng.normal(-3.5, 0.7, (classes, candidates)).clip(-8, -0.7)
    for _ in range(objects):
        cx, cy = rng.uniform(50, SIZE - 50, 2)
        w, h = rng.uniform(20, 300, 2)
        cls = int(rng.integers(classes))
        idx = rng.choice(candidates, int(rng.integers(10, 60)), replace=False)
        out[0, 0, idx] = cx + rng.normal(0, 0.05 * w, idx.size)
        out[0, 1, idx] = cy + rng.normal(0, 0.05 * h, idx.size)
        out[0, 2, idx] = w * rng.uniform(0.85, 1.15, idx.size)
        out[0, 3, idx] = h * rng.uniform(0.85, 1.15, idx.size)
        out[0, 4 + cls, idx] = rng.uniform(0.3, 0.95, idx.size)
    return out


def time_it(fn, inputs: list[np.ndarray], runs: int) -> tuple[float, float, float]:
    """(p50, p90, min) in ms of ``fn(input)``, cycling through the inputs."""
    for x in inputs:
        fn(x)
    times = []
    for i in range(runs):
        x = inputs[i % len(inputs)]
        t0 = time.perf_counter()
        fn(x)
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.percentile(times, 50)), float(np.percentile(times, 90)), float(np.min(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--classes", type=int, default=80)
    parser.add_argument("--candidates", type=int, default=8400)
    parser.add_argument("--json", help="write the figures to this file too")
    parser.add_argument("--detector", default=str(DETECTOR), help="a detector's model.onnx to compare with")
    args = parser.parse_args()
    model_ms = detector_ms(args.detector, args.runs)
    print(f"reference detector batch-1 inference (ONNX Runtime FP32, 1 thread): p50 {model_ms:.3f} ms")
    rng = np.random.default_rng(0)
    outputs = [yolov8_output(rng, args.classes, args.candidates) for _ in range(8)]
    rows = []
    print(f"yolov8 layout [1, {4 + args.classes}, {args.candidates}], per-class hard NMS at IoU 0.45, 1 thread")
    for threshold, max_det, multi in ((0.25, 100, False), (0.001, 100, False), (0.001, 300, False),
                                      (0.001, 300, True)):  # fmt: skip
        config = DetectionConfig(format="yolov8", score_threshold=threshold, max_detections=max_det, multi_label=multi)
        decoder = Decoder(config, (SIZE, SIZE))
        n_cand = np.mean([len(decoder.candidates(o)[0]) for o in outputs])
        n_det = np.mean([len(decoder(o, (480, 640))[0]) for o in outputs])
        candidates_ms = time_it(decoder.candidates, outputs, args.runs)
        total_ms = time_it(partial(decoder, source_hw=(480, 640)), outputs, args.runs)
        row = {
            "score_threshold": threshold, "max_detections": max_det, "multi_label": multi,
            "candidates": float(n_cand), "detections": float(n_det),
            "decode_p50_ms": round(candidates_ms[0], 3), "total_p50_ms": round(total_ms[0], 3),
            "total_p90_ms": round(total_ms[1], 3), "total_min_ms": round(total_ms[2], 3),
            "share_of_detector_inference": round(total_ms[0] / model_ms, 3),
        }  # fmt: skip
        rows.append(row)
        print(
            f"threshold {threshold:<5} max_det {max_det:<3} multi_label {multi!s:<5}: {n_cand:7.0f} candidates, "
            f"{n_det:5.1f} detections; decode {candidates_ms[0]:.3f} ms, decode+NMS+mapping p50 "
            f"{total_ms[0]:.3f} ms (p90 {total_ms[1]:.3f}, min {total_ms[2]:.3f}); "
            f"{100 * total_ms[0] / model_ms:.0f}% of the detector's inference"
        )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
