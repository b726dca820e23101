"""The reference detector, edgekit's bundles against the peers' usual path, side by side in one run.

    python bench/bench_detection.py [--val FOLDER] [--rounds 5] [--out detection.json]

The peers' way (what Ultralytics' ONNX examples and OpenVINO's Model API do): an ONNX Runtime session on the
exported model, FP32 and ONNX Runtime's own `quantize_static` INT8 (its defaults: QDQ, signed int8 activations
and weights, MinMax, on the same 100 calibration scenes), each with a straightforward NumPy letterbox, decode
and greedy per-class NMS written here. edgekit's way: bundles compiled for `cpu` and `intel-cpu` in fp32 and
int8 (`edgekit.compile_model`, the same calibration scenes), run through `Bundle.predict`.

For each variant: COCO mAP@[.5:.95] and mAP@.5 (pycocotools, score 0.001, 100 detections) on --val (default
the committed 200 scenes, examples/data/scenes/val), batch-1 latency end to end (JPEG bytes decoded, fitted,
run, decoded and suppressed: what a camera frame costs) and model-only, and end-to-end throughput at batch 8,
all timed in interleaved rounds (the median of the rounds' medians). Ratios against the peers' FP32.
Writes bench/results/<--out>.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DETECTOR = ROOT / "examples" / "models" / "detector"
SCENES = ROOT / "examples" / "data" / "scenes"


# --- the peers' path -------------------------------------------------------------------------------------
def letterbox(image: np.ndarray, size: int, pad: int = 114) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Ultralytics-style letterbox: resize keeping the aspect ratio, pad to size x size."""
    h, w = image.shape[:2]
    r = min(size / h, size / w)
    nh, nw = round(h * r), round(w * r)
    resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    top, left = (size - nh) // 2, (size - nw) // 2
    out = cv2.copyMakeBorder(resized, top, size - nh - top, left, size - nw - left, cv2.BORDER_CONSTANT,
                             value=(pad, pad, pad))  # fmt: skip
    return out, r, (left, top)


def peer_preprocess(image_bgr: np.ndarray, size: int, mean, std) -> tuple[np.ndarray, float, tuple[int, int]]:
    img, r, pad = letterbox(image_bgr, size)
    x = (img[:, :, ::-1].astype(np.float32) / 255.0 - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return x.transpose(2, 0, 1)[None], r, pad


def peer_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy NMS, one box at a time, as sample code writes it."""
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        xx1 = np.maximum(boxes[i, 0], boxes[order[1:], 0])
        yy1 = np.maximum(boxes[i, 1], boxes[order[1:], 1])
        xx2 = np.minimum(boxes[i, 2], boxes[order[1:], 2])
        yy2 = np.minimum(boxes[i, 3], boxes[order[1:], 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        area = lambda b: (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])  # noqa: E731
        ious = inter / (area(boxes[i]) + area(boxes[order[1:]]) - inter + 1e-9)
        order = order[1:][ious <= iou]
    return keep


def peer_decode(out: np.ndarray, r: float, pad: tuple[int, int], t: float, iou: float, max_det: int = 100):
    """One image's yolov8 output [4 + C, N] -> boxes in the source image, scores, classes."""
    scores_all = out[4:].T
    cls = scores_all.argmax(1)
    scores = scores_all[np.arange(len(cls)), cls]
    m = scores >= t
    cx, cy, w, h = out[:4, m]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    boxes[:, [0, 2]] -= pad[0]
    boxes[:, [1, 3]] -= pad[1]
    boxes /= r
    scores, cls = scores[m], cls[m]
    keep = []
    for c in np.unique(cls):
        idx = np.flatnonzero(cls == c)
        keep += [int(idx[k]) for k in peer_nms(boxes[idx], scores[idx], iou)]
    keep = sorted(keep, key=lambda k: -scores[k])[:max_det]
    return boxes[keep], scores[keep], cls[keep]


class Peer:
    def __init__(self, path: Path, size: int, mean, std, iou: float) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        self.sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.name = self.sess.get_inputs()[0].name
        self.size, self.mean, self.std, self.iou = size, mean, std, iou

    def infer(self, x: np.ndarray) -> np.ndarray:
        return self.sess.run(None, {self.name: x})[0]

    def detect(self, data: bytes, t: float):
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        x, r, pad = peer_preprocess(image, self.size, self.mean, self.std)
        return peer_decode(self.infer(x)[0], r, pad, t, self.iou)


def quantize_peer(src: Path, out: Path, calib: list[np.ndarray], name: str) -> None:
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):
            x = next(self.it, None)
            return None if x is None else {name: x}

    pre = out.with_name("pre.onnx")
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(out), Reader())


# --- measuring ---------------------------------------------------------------------------------------------
def ground_truth(val: Path):
    from edgekit.tasks.detection.metrics import GroundTruth

    coco = json.loads((val / "annotations.json").read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    order = sorted(names.values())
    anns: dict[int, list] = {}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        anns.setdefault(a["image_id"], []).append((order.index(names[a["category_id"]]), [x, y, x + w, y + h]))
    files, truth = [], []
    for im in coco["images"]:
        files.append(val / im["file_name"])
        rows = anns.get(im["id"], [])
        truth.append(GroundTruth(np.array([b for _, b in rows], np.float32).reshape(-1, 4),
                                 np.array([c for c, _ in rows], np.int64)))  # fmt: skip
    return files, truth


def timed(fn, rounds_out: list[float], n: int) -> None:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    rounds_out.append(1000 * statistics.median(times))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--val", type=Path, default=SCENES / "val")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=40, help="calls a variant a round")
    p.add_argument("--out", default="detection.json")
    p.add_argument("--model", type=Path, default=None, help="a folder with model.onnx and model.toml")
    a = p.parse_args()
    global DETECTOR
    DETECTOR = a.model or DETECTOR
    import edgekit
    from edgekit import _toml as tomllib
    from edgekit.tasks.detection.metrics import coco_map

    spec = tomllib.loads((DETECTOR / "model.toml").read_text())
    size, mean, std = spec["input"]["shape"][2], spec["preprocess"]["mean"], spec["preprocess"]["std"]
    det = spec["detection"]
    t_ship, iou = det.get("score_threshold", 0.25), det.get("iou_threshold", 0.45)
    files, truth = ground_truth(a.val)
    datas = [f.read_bytes() for f in files]
    calib = []
    for f in sorted((SCENES / "calib").glob("*.jpg")):
        calib.append(peer_preprocess(cv2.imread(str(f)), size, mean, std)[0])
    run: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        quantize_peer(DETECTOR / "model.onnx", tmp / "peer-int8.onnx", calib, "images")
        peers = {"peer ORT fp32": Peer(DETECTOR / "model.onnx", size, mean, std, iou),
                 "peer ORT quantize_static int8": Peer(tmp / "peer-int8.onnx", size, mean, std, iou)}  # fmt: skip
        bundles = {}
        for target in ("cpu", "intel-cpu"):
            for precision in ("fp32", "int8"):
                c = edgekit.compile_model(
                    DETECTOR / "model.onnx", spec=DETECTOR / "model.toml", target=target, precision=precision,
                    output=tmp / f"{target}-{precision}", calib=SCENES / "calib",
                )  # fmt: skip
                bundles[f"edgekit {target} {precision}"] = edgekit.load_bundle(c.path)
        # accuracy: every variant's detections at COCO's 0.001 on every image
        for name, peer in peers.items():
            dets = [peer.detect(d, 0.001) for d in datas]
            m = coco_map(truth, dets)
            run[name] = {"map50_95": round(100 * m.map50_95, 2), "map50": round(100 * m.map50, 2)}
        for name, b in bundles.items():
            rec = dict(b.manifest["postprocess"])
            low = b.task.bind({**rec, "score_threshold": 0.001})
            dets = []
            for f in files:
                image = cv2.imread(str(f))
                x = b.preprocess(image, color_order="BGR")[None]
                dets.append(low.decode(b.infer(x), {**rec, "score_threshold": 0.001}, b.labels,
                                       sizes=[image.shape[:2]])[0])  # fmt: skip
            m = coco_map(truth, [(d.boxes, d.scores, d.class_ids) for d in dets])
            run[name] = {"map50_95": round(100 * m.map50_95, 2), "map50": round(100 * m.map50, 2),
                         "shipped_threshold": rec["score_threshold"]}  # fmt: skip
        # speed: interleaved rounds over all variants
        frame = datas[1]
        x1 = peer_preprocess(cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR), size, mean, std)[0]
        batch = [cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR) for d in datas[:8]]
        e2e: dict[str, list[float]] = {k: [] for k in run}
        model: dict[str, list[float]] = {k: [] for k in run}
        thr: dict[str, list[float]] = {k: [] for k in run}
        for _ in range(a.rounds):
            for name, peer in peers.items():
                timed(lambda peer=peer: peer.detect(frame, t_ship), e2e[name], a.runs)
                timed(lambda peer=peer: peer.infer(x1), model[name], a.runs)
                xs = np.concatenate([peer_preprocess(im, size, mean, std)[0] for im in batch])
                t = time.perf_counter()
                out = peer.infer(xs)
                for o in out:
                    peer_decode(o, 1.0, (0, 0), t_ship, iou)
                thr[name].append(len(batch) / (time.perf_counter() - t))
            for name, b in bundles.items():
                image = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
                timed(lambda b=b: b.predict(cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR),
                                            color_order="BGR"), e2e[name], a.runs)  # fmt: skip
                xb = b.preprocess(image, color_order="BGR")[None]
                timed(lambda b=b, xb=xb: b.infer(xb), model[name], a.runs)
                t = time.perf_counter()
                b.predict_batch(batch, color_order="BGR")
                thr[name].append(len(batch) / (time.perf_counter() - t))
        for b in bundles.values():
            b.close()
    base = statistics.median(e2e["peer ORT fp32"])
    for name in run:
        run[name]["b1_e2e_ms"] = round(statistics.median(e2e[name]), 3)
        run[name]["b1_model_ms"] = round(statistics.median(model[name]), 3)
        run[name]["b8_e2e_images_per_s"] = round(statistics.median(thr[name]), 1)
        run[name]["e2e_speedup_vs_peer_fp32"] = round(base / run[name]["b1_e2e_ms"], 2)
    checks = {}
    for target in ("cpu", "intel-cpu"):
        f32, i8 = run[f"edgekit {target} fp32"], run[f"edgekit {target} int8"]
        checks[f"{target}: int8 mAP within 1 point of fp32"] = abs(f32["map50_95"] - i8["map50_95"]) <= 1.0
        checks[f"{target}: int8 end to end >= 1.5x fp32"] = f32["b1_e2e_ms"] / i8["b1_e2e_ms"] >= 1.5
    doc = {"val": str(a.val.relative_to(ROOT)) if ROOT in a.val.parents else str(a.val), "images": len(files),
           "rounds": a.rounds, "runs": a.runs, "variants": run, "checks": checks}  # fmt: skip
    (ROOT / "bench" / "results" / a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print("| variant | mAP@[.5:.95] | mAP@.5 | b1 end to end ms | b1 model ms | b8 images/s | e2e vs peer fp32 |")
    print("|---|---|---|---|---|---|---|")
    for name, r in run.items():
        print(
            f"| {name} | {r['map50_95']:.2f} | {r['map50']:.2f} | {r['b1_e2e_ms']:.3f} | {r['b1_model_ms']:.3f} | "
            f"{r['b8_e2e_images_per_s']:.0f} | {r['e2e_speedup_vs_peer_fp32']:.2f}x |"
        )
    for k, v in checks.items():
        print(f"{'PASS' if v else 'MISS'}: {k}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
