"""Decoding MJPEG at the model's size: OpenCV's full decode against edgekit's reduced (DCT-domain) decode.

    python bench/bench_jpeg_decode.py [--frames 320] [--rounds 5] [--json bench/results/jpeg-decode.json]

Two MJPEG AVI files are made (cv2.VideoWriter, MJPG) from real photographs: the CIFAR-10 images of
examples/data/cifar10 (or ../shared/datasets/cifar10/test.zip, unzipped to a temporary folder), upscaled
(bicubic) and tiled 4x3 into 640x480 frames and 8x4 into 1280x720 frames, ``--frames`` frames each.
Each round reads every file once with each method, in a rotating order (interleaved rounds, so a noisy
neighbour on a shared machine hits every method alike):

- ``opencv``: cv2.VideoCapture (FFmpeg backend) read() -> full-size BGR frames: the peer's default.
- ``packets``: the same capture with CAP_PROP_FORMAT = -1, packets read and not decoded: the demuxing floor.
- ``edgekit 1/1`` ... ``1/8``: edgekit.serve.decode.MjpegReader at each reduction (libjpeg-turbo via
  simplejpeg, strict, one thread).
- ``edgekit auto``: the reader with ``need`` from the reference ResNet's preprocessing (32x32 input):
  what ``open_reader(spec, need=need_for(...))`` chooses (1/8 for both sizes).

Frames/s is frames over wall time of the whole read (open to last frame), the median over rounds, with the
ratio to ``opencv``'s median; ``CPU ms/frame`` is the process's CPU time (every thread) over the frames,
the median over rounds (less sensitive to a busy machine than wall time). ``input MAD`` is the mean absolute difference, in grey levels (0-255), between
the ResNet's preprocessed 32x32 input (bilinear resize, as its spec says) of the method's frames and of
OpenCV's, over every frame of the file; ``vs area`` is the same against OpenCV's full frames resized with
INTER_AREA (an anti-aliased downscale: what the frame's content looks like at 32x32). A bilinear resize
from 640x480 to 32x32 reads 2x2 of every 20x15 pixels, so the full decode's own input aliases: the reduced
decodes differ from it partly because they are closer to the area-averaged image.
The FFmpeg MJPEG decoder OpenCV uses runs with FFmpeg's default threading; edgekit's decode is one thread.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np

from edgekit.runtime.preprocess import preprocess
from edgekit.serve.decode import MjpegReader, need_for, reduced_size
from edgekit.serve.sources import CaptureReader, parse_source
from edgekit.spec import InputSpec, PreprocessSpec

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "data" / "cifar10"
SHARED = ROOT.parent / "shared" / "datasets" / "cifar10" / "test.zip"
SIZES = {(640, 480): (4, 3), (1280, 720): (8, 4)}  # frame (width, height): tiles (columns, rows)
RESNET_PRE = PreprocessSpec(resize=(32, 32), mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.2435, 0.2616))
RESNET_IN = InputSpec(shape=(-1, 3, 32, 32))


def photographs(tmp: Path) -> list[Path]:
    found = sorted(SAMPLE.rglob("*.jpg"))
    if len(found) < 100 and SHARED.exists():
        with zipfile.ZipFile(SHARED) as z:
            z.extractall(tmp / "cifar10")
        found = sorted((tmp / "cifar10").rglob("*.jpg")) + sorted((tmp / "cifar10").rglob("*.png"))
    if not found:
        raise SystemExit(f"no CIFAR-10 images in {SAMPLE} or {SHARED}")
    return found


def make_video(path: Path, images: list[np.ndarray], size: tuple[int, int], frames: int) -> Path:
    (width, height), (cols, rows) = size, SIZES[size]
    cw, ch = width // cols, height // rows
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    if not writer.isOpened():
        raise SystemExit("cv2.VideoWriter cannot write MJPG here")
    k = 0
    for _ in range(frames):
        frame = np.empty((height, width, 3), np.uint8)
        for r in range(rows):
            for c in range(cols):
                tile = cv2.resize(images[k % len(images)], (cw, ch), interpolation=cv2.INTER_CUBIC)
                frame[r * ch : (r + 1) * ch, c * cw : (c + 1) * cw] = tile
                k += 1
        writer.write(frame)
    writer.release()
    return path


def read_opencv(path: Path, keep: bool) -> tuple[int, list[np.ndarray]]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    n, kept = 0, []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n += 1
        if keep:
            kept.append(frame)
    cap.release()
    return n, kept


def read_packets(path: Path, keep: bool) -> tuple[int, list[np.ndarray]]:
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    cap.set(cv2.CAP_PROP_FORMAT, -1)
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n, []


def read_edgekit(path: Path, need, keep: bool) -> tuple[int, list[np.ndarray]]:
    spec = parse_source(str(path))
    capture = CaptureReader(spec, resolution=None, fps=None, timeout=10.0, rtsp_transport="tcp")
    reader = MjpegReader.wrap(capture, need)
    assert reader is not None, "not read as MJPEG packets"
    n, kept = 0, []
    while (frame := reader.read()) is not None:
        n += 1
        if keep:
            kept.append(frame)
    reader.close()
    return n, kept


def model_input(frames: list[np.ndarray], pre: PreprocessSpec = RESNET_PRE) -> np.ndarray:
    x = np.stack([preprocess(f, pre, RESNET_IN, color_order="BGR") for f in frames])
    return x * np.asarray(pre.std, np.float32)[:, None, None] * 255  # back to grey levels (offsets cancel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", default=str(ROOT / "bench" / "results" / "jpeg-decode.json"))
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = [cv2.imread(str(p)) for p in photographs(tmp)]
        auto = need_for(RESNET_PRE, RESNET_IN.hw)
        for size in SIZES:
            width, height = size
            video = make_video(tmp / f"clip-{width}x{height}.avi", images, size, args.frames)
            methods = {"opencv": lambda keep, v=video: read_opencv(v, keep),
                       "packets": lambda keep, v=video: read_packets(v, keep)}  # fmt: skip
            for r in (1, 2, 4, 8):
                need = reduced_size((height, width), r)  # exactly 1/r: reduction() gives r for it
                methods[f"edgekit 1/{r}"] = lambda keep, v=video, n=need: read_edgekit(v, n, keep)
            methods["edgekit auto"] = lambda keep, v=video: read_edgekit(v, auto, keep)
            names = list(methods)
            times: dict[str, list[float]] = {name: [] for name in names}
            cpu: dict[str, list[float]] = {name: [] for name in names}
            reference = None
            mad: dict[str, float | None] = {}
            for name in names:  # one untimed pass each: warm caches, keep frames for the accuracy column
                n, kept = methods[name](True)
                assert n == args.frames, (name, n)
                if name == "opencv":
                    reference = model_input(kept)
                    area = model_input(kept, dataclasses.replace(RESNET_PRE, resize_mode="area"))
                x = model_input(kept) if kept else None
                mad[name] = None if x is None else round(float(np.abs(x - reference).mean()), 3)
                mad[name + " area"] = None if x is None else round(float(np.abs(x - area).mean()), 3)
                shape = kept[0].shape[:2] if kept else None
                mad[name + " shape"] = shape
            for rnd in range(args.rounds):
                order = names[rnd % len(names) :] + names[: rnd % len(names)]
                for name in order:
                    t, c = time.perf_counter(), time.process_time()
                    n, _ = methods[name](False)
                    times[name].append(n / (time.perf_counter() - t))
                    cpu[name].append(1000 * (time.process_time() - c) / n)
            base = statistics.median(times["opencv"])
            for name in names:
                fps = statistics.median(times[name])
                results.append({
                    "frame": f"{width}x{height}", "method": name, "frames": args.frames,
                    "decoded_hw": mad[name + " shape"], "fps_median": round(fps, 1),
                    "fps_min": round(min(times[name]), 1), "fps_max": round(max(times[name]), 1),
                    "ratio_to_opencv": round(fps / base, 2),
                    "cpu_ms_per_frame_median": round(statistics.median(cpu[name]), 3), "input_mad_grey_levels": mad[name],
                    "input_mad_vs_area_grey_levels": mad[name + " area"],
                })  # fmt: skip
    doc = {
        "what": "MJPEG AVI read at full size by OpenCV vs edgekit's DCT-scaled decode (bench/bench_jpeg_decode.py)",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "loadavg_before": [round(v, 2) for v in load_before],
            "loadavg_after": [round(v, 2) for v in os.getloadavg()],
            "note": "shared machine (2 cores, other jobs running): figures are noisy",
        },
        "opencv": cv2.__version__,
        "rounds": args.rounds,
        "results": results,
    }
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_suffix(".json.part")
    part.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    os.replace(part, out)
    print("| frame | method | decoded | frames/s (median) | min-max | x OpenCV | CPU ms/frame | input MAD vs OpenCV "
          "| vs area |")  # fmt: skip
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for row in results:
        hw = "x".join(str(v) for v in row["decoded_hw"][::-1]) if row["decoded_hw"] else "-"
        mads = (row["input_mad_grey_levels"], row["input_mad_vs_area_grey_levels"])
        mad_text = " | ".join("-" if m is None else f"{m:.2f}" for m in mads)
        print(f"| {row['frame']} | {row['method']} | {hw} | {row['fps_median']:.0f} | "
              f"{row['fps_min']:.0f}-{row['fps_max']:.0f} | {row['ratio_to_opencv']:.2f} | "
              f"{row['cpu_ms_per_frame_median']:.2f} | {mad_text} |")  # fmt: skip
    print(
        f"\nwritten to {out}; load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after (shared machine)"
    )


if __name__ == "__main__":
    main()
