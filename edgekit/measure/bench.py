"""``edgekit bench``: measure a bundle on the machine it runs on.

Runs on devices: numpy, OpenCV and the bundle's own runtime only (never torch, onnx or NNCF).
The result is a JSON document (``SCHEMA``, ``SCHEMA_VERSION``) documented in docs/report.md, which
``edgekit report --merge`` folds into a report.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UsageError
from edgekit.measure.latency import measure
from edgekit.measure.machine import describe_machine, describe_software

SCHEMA = "edgekit.bench"
SCHEMA_VERSION = 1
DEFAULT_BATCH_SIZES = (1, 2, 4, 8, 16, 32)
FRAME_HW = (480, 640)  # the default encoded image: a VGA camera frame
MAX_IMAGES = 64  # a folder given as the image: at most this many of its images, spread over it, taken in turn
# what the end-to-end phase's postprocessing is, by the bundle's task (another task: its decoding)
POSTPROCESS = {"classification": "softmax and top-k", "detection": "box decoding and NMS (boxes in the image's pixels)"}
Log = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class BenchOptions:
    """How long to measure and with what.

    Batch-1 latency runs for ``seconds`` (or exactly ``runs`` calls); every other phase (each batch size,
    decoding, preprocessing, end to end) runs for a quarter of that (or a quarter of the runs, at least 3).
    ``image`` is the encoded image decoding, preprocessing and the end-to-end phase run on, or a folder of
    them (up to ``MAX_IMAGES``, each call on the next: a detector's decoding and NMS cost what a scene holds).
    """

    seconds: float = 3.0
    runs: int | None = None
    warmup: int = 20
    batch_sizes: tuple[int, ...] | None = None
    image: Path | None = None
    val: Path | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise UsageError(f"--seconds must be positive, not {self.seconds}")
        if self.runs is not None and self.runs < 1:
            raise UsageError(f"--runs must be at least 1, not {self.runs}")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more, not {self.warmup}")
        if self.batch_sizes is not None and (not self.batch_sizes or min(self.batch_sizes) < 1):
            raise UsageError("--batch-sizes needs positive integers, e.g. 1,8,32")

    def timing(self, phase: str) -> dict[str, Any]:
        """``measure`` keyword arguments for the batch-1 phase ('latency') or any other phase."""
        if self.runs is not None:
            n = self.runs if phase == "latency" else max(3, self.runs // 4)
            return {"min_runs": n, "max_runs": n, "seconds": 0.0}
        seconds = self.seconds if phase == "latency" else self.seconds / 4
        return {"min_runs": 10 if phase == "latency" else 3, "max_runs": 10**7, "seconds": seconds}


def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def _rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return round(kb / 1024, 1) if kb is not None else None


def _peak_rss_mb() -> float | None:
    kb = _status_kb("VmHWM")
    if kb is None:
        try:
            import resource
            import sys

            kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 if sys.platform == "darwin" else 1)
        except (ImportError, OSError):
            return None
    return round(kb / 1024, 1)


def synthetic_frame(hw: tuple[int, int] = FRAME_HW) -> np.ndarray:
    """A seeded BGR test frame: smooth gradients plus noise, so JPEG decoding does real work."""
    h, w = hw
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=-1)
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


def encoded_image(path: Path | None) -> tuple[bytes, str]:
    """The encoded image for the end-to-end phase, and a description of it."""
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"image '{path}' does not exist; pass a JPEG, PNG, BMP or WebP file to --image")
        return path.read_bytes(), f"{path.name} ({path.stat().st_size} bytes)"
    import cv2

    ok, buf = cv2.imencode(".jpg", synthetic_frame(), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid array
        raise RuntimeError("OpenCV could not encode the synthetic frame")
    return buf.tobytes(), f"synthetic {FRAME_HW[1]}x{FRAME_HW[0]} JPEG, quality 90 ({len(buf)} bytes)"


def encoded_images(path: Path | None) -> tuple[list[bytes], str]:
    """The encoded images the pipeline phases run on, and a description: ``encoded_image``'s one, or for a
    folder up to ``MAX_IMAGES`` of its images (evenly spread over them in name order)."""
    if path is None or not Path(path).is_dir():
        data, text = encoded_image(path)
        return [data], text
    from edgekit.imagesets import find_images

    found = find_images(path, what="image folder")
    if not found:
        raise UsageError(f"image folder '{path}' holds no JPEG, PNG, BMP or WebP file; pass an image or such a folder")
    picked = [found[i * len(found) // MAX_IMAGES] for i in range(MAX_IMAGES)] if len(found) > MAX_IMAGES else found
    picked = list(dict.fromkeys(picked))
    sizes = sum(p.stat().st_size for p in picked)
    return [p.read_bytes() for p in picked], (
        f"{len(picked)} of the {len(found)} images in {Path(path).name}/, each call on the next "
        f"({sizes // len(picked)} bytes on average)"
    )


def identity(bundle: Any) -> dict[str, Any]:
    """What a report matches a bench result against: the bundle hash, its model and its target."""
    m = bundle.info
    return {
        "path": str(bundle.path),
        "hash": bundle.hash,
        "created": m.created,
        "model": m.model.name,
        "model_sha256": m.model.source.sha256,
        "target": m.target.name,
        "backend": m.backend.name,
        "device": bundle.runtime.device,
        "precision": m.precision.requested,
        "calibration_method": None if m.quantization is None else m.quantization.calibration_method,
    }


def _batch_sizes(bundle: Any, requested: tuple[int, ...] | None) -> tuple[int, ...]:
    static = bundle.static_batch
    if static is None:
        return tuple(sorted(set(requested or DEFAULT_BATCH_SIZES)))
    bad = [b for b in requested or () if b != static]
    if bad:
        raise UsageError(f"this bundle takes batches of exactly {static} (static shape); drop --batch-sizes {bad[0]}")
    return (static,)


def _latency(bundle: Any, x: np.ndarray, options: BenchOptions) -> tuple[dict[str, Any], dict[str, Any]]:
    """Batch-1 latency, and the process's CPU use while it ran."""
    for _ in range(options.warmup):
        bundle.infer(x)
    cpu0, wall0 = os.times(), time.perf_counter()
    stats = measure(lambda: bundle.infer(x), warmup=0, **options.timing("latency"))
    wall = time.perf_counter() - wall0
    cpu1 = os.times()
    busy = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    cores = describe_machine()["usable_cores"]
    cpu = {
        "what": "process CPU time / wall time while batch-1 latency was measured",
        "percent_of_one_core": round(100 * busy / wall, 1),
        "percent_of_all_cores": round(100 * busy / wall / cores, 1),
        "usable_cores": cores,
    }
    return {"batch": 1, "what": "model inference on a preprocessed input", **stats}, cpu


def _throughput(bundle: Any, x: np.ndarray, sizes: tuple[int, ...], options: BenchOptions) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        xb = np.repeat(x, n, axis=0)
        stats = measure(lambda xb=xb: bundle.infer(xb), warmup=2, **options.timing("batch"))
        rows.append(
            {
                "batch": n,
                "images_per_s": round(n * 1000.0 / stats["mean_ms"], 2),
                "batch_p50_ms": stats["p50_ms"],
                "batch_mean_ms": stats["mean_ms"],
                "runs": stats["runs"],
            }
        )
    return rows


def _pipeline(bundle: Any, images: list[bytes], options: BenchOptions) -> dict[str, dict[str, Any]]:
    """Decoding, preprocessing, and one image end to end (decode, preprocess, infer, postprocess: the bundle's
    task's decoding, a detector's boxes in the image's pixels), each call on the next of ``images``."""
    from edgekit.runtime.preprocess import decode_image

    frames = [decode_image(data, name="bench image") for data in images]
    timing = options.timing("pipeline")
    turn = {"decode": 0, "preprocess": 0, "end_to_end": 0}

    def nth(phase: str, items: list[Any]) -> Any:
        i = turn[phase]
        turn[phase] = i + 1
        return items[i % len(items)]

    stages: list[tuple[float, float, float]] = []  # each call's (decode + preprocess, inference, postprocess) s

    def end_to_end() -> None:
        t0 = time.perf_counter()
        frame = decode_image(nth("end_to_end", images))
        x = bundle.preprocess(frame, color_order="BGR")[None]
        t1 = time.perf_counter()
        out = bundle.infer(x)
        t2 = time.perf_counter()
        bundle.postprocess(out, sizes=[frame.shape[:2]])
        stages.append((t1 - t0, t2 - t1, time.perf_counter() - t2))

    letterbox = getattr(bundle.preprocess_spec, "fit", None) == "letterbox"
    resize = "letterbox (resize keeping the aspect ratio, pad)" if letterbox else "resize, crop"
    post = POSTPROCESS.get(bundle.task.name, f"the {bundle.task.name} task's decoding")
    return {
        "decode": {
            "what": "decode the encoded image to BGR pixels",
            **measure(lambda: decode_image(nth("decode", images)), warmup=3, **timing),
        },
        "preprocess": {
            "what": f"{resize}, colour order, normalise and layout of the decoded image",
            **measure(lambda: bundle.preprocess(nth("preprocess", frames), color_order="BGR"), warmup=3, **timing),
        },
        "end_to_end": {
            "what": f"decode + {'letterbox' if letterbox else 'preprocess'} + batch-1 inference + {post}",
            **measure(end_to_end, warmup=3, **timing),
            "stages_p50_ms": _stages(stages[3:]),
        },
    }


def _stages(stages: list[tuple[float, float, float]]) -> dict[str, float]:
    """The p50 of each part of the end-to-end calls, timed within the same calls (so, unlike the batch-1
    phase's p50, the inference part never exceeds the whole under changing load)."""
    arr = np.asarray(stages, dtype=np.float64).reshape(-1, 3) * 1000.0
    p50 = np.percentile(arr, 50, axis=0) if len(arr) else [float("nan")] * 3
    return {k: round(float(v), 4) for k, v in zip(("decode_preprocess", "inference", "postprocess"), p50, strict=True)}


def _check_val(bundle: Any, val: Path) -> None:
    """Fail before measuring if the class folders are not the bundle's labels."""
    from edgekit.errors import DataError
    from edgekit.imagesets import class_folders

    if not val.is_dir():
        raise UsageError(f"validation folder '{val}' does not exist; pass a folder with one sub-folder a class")
    unknown = [f for f in class_folders(val) if f not in bundle.labels]
    if unknown or not class_folders(val):
        raise DataError(
            f"validation folder '{val}' has class folders that are not among the bundle's labels "
            f"({', '.join(unknown[:5]) or 'none with images'}); labels are: {', '.join(bundle.labels[:10])}"
        )


def _accuracy(bundle: Any, val: Path, log: Log) -> dict[str, Any]:
    """Top-1/top-5/per-class accuracy of the bundle on a class-folder tree, on this device."""
    from edgekit.imagesets import load_labelled
    from edgekit.measure import evaluate as ev
    from edgekit.spec import ModelSpec

    spec = ModelSpec(input=bundle.input, preprocess=bundle.preprocess_spec, labels=tuple(bundle.labels))
    images = load_labelled(val, spec, spec.labels)
    log(f"measuring accuracy on {len(images.paths)} images from {val}")
    outputs = ev.run_batches(bundle.infer, images, bundle.static_batch or 32)
    result = ev.evaluate(outputs, images.labels, bundle.labels, bundle.task)
    return {
        **result.summary(),
        "per_class": result.per_class,
        "dataset": {"images": len(images.paths), "skipped": len(images.skipped), "sha256": images.sha256},
    }


def bench_bundle(path: str | Path, *, options: BenchOptions | None = None, log: Log | None = None) -> dict[str, Any]:
    """Load (verify, self-test) a bundle and measure it here; return the ``edgekit.bench`` document."""
    from edgekit.runtime import load_bundle
    from edgekit.runtime.preprocess import decode_image

    options = options or BenchOptions()
    log = log or (lambda _msg: None)
    rss_start = _rss_mb()
    images, image = encoded_images(options.image)
    with load_bundle(path, device=options.device) as bundle:
        rss_loaded = _rss_mb()
        sizes = _batch_sizes(bundle, options.batch_sizes)
        if options.val is not None:
            _check_val(bundle, Path(options.val))
        x = bundle.preprocess(decode_image(images[0], name=image), color_order="BGR")[None]
        how = f"{options.runs} runs" if options.runs else f"{options.seconds:g} s"
        log(f"batch-1 latency over {how} after {options.warmup} warm-up runs")
        latency, cpu = _latency(bundle, x, options)
        log(f"throughput at batch sizes {', '.join(map(str, sizes))}")
        throughput = _throughput(bundle, x, sizes, options)
        log("decoding, preprocessing and end-to-end cost")
        pipeline = _pipeline(bundle, images, options)
        memory = {"rss_before_load_mb": rss_start, "rss_after_load_mb": rss_loaded, "peak_rss_mb": _peak_rss_mb()}
        accuracy = _accuracy(bundle, Path(options.val), log) if options.val is not None else None
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "bundle": identity(bundle),
            "machine": describe_machine(),
            "software": describe_software(bundle.describe()),
            "settings": {
                "warmup": options.warmup,
                "seconds": None if options.runs else options.seconds,
                "runs": options.runs,
                "image": image,
            },
            "selftest": bundle.selftest_result.describe() if bundle.selftest_result else None,
            "latency": latency,
            "throughput": throughput,
            **pipeline,
            "memory": memory,
            "cpu": cpu,
            "accuracy": accuracy,
        }


def bench(
    bundle: str | Path, options: BenchOptions | None = None, *, log: Log | None = None, **fields: Any
) -> dict[str, Any]:
    """Measure the bundle at ``bundle`` on this machine; return the ``edgekit.bench`` document (docs/report.md).

    Give a ``BenchOptions``, or its fields as keywords (``seconds``, ``runs``, ``warmup``, ``batch_sizes``,
    ``image``, ``val``, ``device``): ``edgekit.bench("m.edgekit", runs=100)``. ``log`` receives one line per
    phase. The same as ``edgekit bench`` with the same flags.
    """
    if fields:
        if options is not None:
            raise TypeError("bench() takes a BenchOptions or its fields as keywords, not both")
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(BenchOptions)})
        if unknown:
            raise TypeError(f"bench() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
        options = BenchOptions(**fields)
    return bench_bundle(bundle, options=options, log=log)


__all__ = ["SCHEMA", "SCHEMA_VERSION", "BenchOptions", "bench", "bench_bundle"]
