"""The loaded bundle, shared by the inference worker and POST /v1/predict, and swappable at run time.

Runs bundles only through ``edgekit.runtime``. One lock serialises inference: a backend's runtime may
hold a single infer request (OpenVINO does), and on a small device one model at a time is also the
fastest. A reload loads and self-tests the new bundle outside the lock, then swaps it in; if loading
fails, the old bundle keeps running.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runtime import Bundle, load_bundle
from edgekit.tasks.base import TaskResult

log = logging.getLogger("edgekit.serve")


class StaleInput(Exception):
    """The bundle was swapped for one with other preprocessing between an upload's decode and its inference."""


@dataclass(frozen=True)
class Prepared:
    """One image preprocessed into its model's input tensor (the decoded image already freed)."""

    tensor: np.ndarray
    bundle: Bundle
    width: int
    height: int
    seconds: float  # the preprocessing's time


@dataclass(frozen=True)
class Inference:
    prediction: TaskResult  # decoded by the bundle's task (a classifier's: its top-k labels)
    seconds: float  # preprocess + infer + postprocess
    bundle_hash: str
    model: str


@dataclass(frozen=True)
class BatchInference:
    predictions: list[TaskResult]  # one a frame, in order
    seconds: float  # preprocess + infer + postprocess of the whole call
    bundle_hash: str
    model: str


def summary(bundle: Bundle) -> dict[str, Any]:
    """The parts of a bundle's manifest a client of the daemon needs."""
    m = bundle.info
    st = bundle.selftest_result
    return {
        "bundle_hash": bundle.hash,
        "path": str(bundle.path),
        "model": {"name": m.model.name, "task": m.model.task},
        "labels": list(bundle.labels),
        "input": m.input.to_dict(),
        "preprocess": m.preprocess.to_dict(),
        "target": {"name": m.target.name, "device": m.target.device},
        "backend": m.backend.name,
        "runtime": bundle.describe(),
        "precision": m.precision.to_dict(),
        "accuracy": None if m.accuracy is None else m.accuracy.to_dict(),
        "selftest": None if st is None else {"passed": st.passed, "summary": st.describe()},
        "edgekit_version": m.edgekit_version,
    }


def needed_size(engine: Engine):
    """What a stream's decoder may decode a frame down to for this bundle (``decode.need_for``: a function of
    the frame's size), or None: decode at full size. Only for classifiers: a detector's boxes are published
    in the source frame's pixels, which a reduced frame would change."""
    from edgekit.serve.decode import need_for

    bundle = engine.bundle
    if bundle.info.model.task != "classification":
        return None
    shape = bundle.input.shape
    hw = (shape[2], shape[3]) if bundle.input.layout == "NCHW" else (shape[1], shape[2])
    return need_for(bundle.preprocess_spec, (int(hw[0]), int(hw[1])))


class Engine:
    def __init__(self, path: str, *, device: str | None = None, top_k: int = 3) -> None:
        self.path = path
        self.device = device
        self.top_k = top_k
        self._lock = threading.Lock()
        self._reload_lock = threading.Lock()
        self.bundle = load_bundle(path, device=device)
        self.info = summary(self.bundle)
        self.loaded_at = time.time()

    def run(self, image: np.ndarray, *, top_k: int | None = None) -> Inference:
        """One HWC uint8 BGR image -> its result (a classifier's: its top-k labels) and the time it took."""
        with self._lock:
            bundle = self.bundle
            start = time.perf_counter()
            batch = bundle.preprocess(image, color_order="BGR")[None]
            prediction = bundle.postprocess(bundle.infer(batch), top_k=top_k or self.top_k,
                                            sizes=[image.shape[:2]])[0]  # fmt: skip
            seconds = time.perf_counter() - start
        return Inference(prediction, seconds, bundle.hash, self.info["model"]["name"])

    def run_batch(self, images: list[np.ndarray], *, top_k: int | None = None) -> BatchInference:
        """HWC uint8 BGR images (of any sizes) -> their results in one inference call, and its time."""
        with self._lock:
            bundle = self.bundle
            start = time.perf_counter()
            predictions = bundle.predict_batch(images, top_k=top_k or self.top_k, color_order="BGR")
            seconds = time.perf_counter() - start
        return BatchInference(list(predictions), seconds, bundle.hash, self.info["model"]["name"])

    def prepare(self, image: np.ndarray) -> Prepared:
        """Preprocess outside the inference lock (the decode pool runs this), so the big image is freed at once."""
        bundle = self.bundle
        start = time.perf_counter()
        tensor = bundle.preprocess(image, color_order="BGR")
        return Prepared(tensor, bundle, int(image.shape[1]), int(image.shape[0]), time.perf_counter() - start)

    def infer(self, prepared: Prepared, *, top_k: int | None = None) -> Inference:
        """Run a prepared tensor; StaleInput if a reload changed the input or preprocessing meanwhile."""
        with self._lock:
            bundle = self.bundle
            if bundle is not prepared.bundle and (
                bundle.info.preprocess != prepared.bundle.info.preprocess
                or bundle.info.input != prepared.bundle.info.input
            ):
                raise StaleInput("the bundle was reloaded with other preprocessing while the image was decoded")
            start = time.perf_counter()
            prediction = bundle.postprocess(bundle.infer(prepared.tensor[None]), top_k=top_k or self.top_k,
                                            sizes=[(prepared.height, prepared.width)])[0]  # fmt: skip
            seconds = time.perf_counter() - start + prepared.seconds
        return Inference(prediction, seconds, bundle.hash, self.info["model"]["name"])

    def reload(self) -> tuple[bool, str]:
        """Load the bundle at the same path again; swap it in if it verifies. Returns (ok, message)."""
        with self._reload_lock:
            try:
                new = load_bundle(self.path, device=self.device)
            except EdgekitError as exc:
                log.error("reload failed, keeping bundle %s: %s", self.bundle.hash[:12], exc)
                return False, str(exc)
            except Exception as exc:  # a corrupt file can fail in ways the reader does not foresee
                log.exception("reload failed, keeping bundle %s", self.bundle.hash[:12])
                return False, f"{type(exc).__name__}: {exc}"
            info = summary(new)
            with self._lock:
                old, self.bundle, self.info = self.bundle, new, info
                self.loaded_at = time.time()
            old.close()
        message = f"reloaded {self.path}: bundle {old.hash[:12]} -> {new.hash[:12]}"
        log.info(message)
        return True, message

    def close(self) -> None:
        with self._lock:
            self.bundle.close()
