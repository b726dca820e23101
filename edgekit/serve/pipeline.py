"""The inference worker: take the latest frame, run the bundle, hand the result to every publisher."""

from __future__ import annotations

import collections
import datetime
import functools
import json
import logging
import threading
import time
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np

from edgekit.serve.capture import Frame, LatestFrame
from edgekit.serve.engine import Engine
from edgekit.serve.metrics import Metrics
from edgekit.serve.publishers import Fanout

log = logging.getLogger("edgekit.serve")


def iso_utc(ts: float) -> str:
    return (
        datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclass(frozen=True)
class Result:
    """One frame's result: what MQTT, the JSON-lines file, /v1/latest and /v1/events publish.

    ``output`` is the bundle's task's result in its JSON form (a classifier's: ``label``, ``score``,
    ``top_k``), published between the daemon's own fields; ``task`` names the task, to draw it with.
    ``top_k=[...]`` instead of ``output`` builds a classifier's result from its top-k list.
    """

    device_id: str
    seq: int
    captured_at: float  # unix seconds, when the frame was read from the source
    inference_ms: float
    e2e_ms: float  # capture -> handed to the publishers
    fps: float  # results per second over the last ~2 s
    model: str
    bundle_hash: str
    output: dict[str, Any] = field(default_factory=dict)
    top_k: InitVar[list[dict[str, Any]] | None] = None
    task: str = "classification"
    image: np.ndarray | None = field(default=None, repr=False, compare=False)  # the frame, for the stream only

    def __post_init__(self, top_k: list[dict[str, Any]] | None) -> None:
        if top_k is not None and not self.output:
            best = top_k[0]
            object.__setattr__(self, "output", {"label": best["label"], "score": best["score"], "top_k": top_k})

    def to_dict(self) -> dict[str, Any]:
        """The message (a new dict each call); ``json`` is the same, serialised once for every publisher."""
        return {
            "device": self.device_id,
            "seq": self.seq,
            "captured_at": iso_utc(self.captured_at),
            "captured_unix": round(self.captured_at, 6),
            "inference_ms": round(self.inference_ms, 3),
            "e2e_ms": round(self.e2e_ms, 3),
            "fps": round(self.fps, 2),
            **self.output,
            "model": self.model,
            "bundle": self.bundle_hash[:16],
        }

    @functools.cached_property
    def json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


class FpsMeter:
    """Events per second over a sliding window."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float) -> float:
        self._times.append(now)
        while self._times and now - self._times[0] > self.window:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        return (len(self._times) - 1) / max(self._times[-1] - self._times[0], 1e-9)


class InferenceWorker:
    def __init__(self, *, engine: Engine, slot: LatestFrame, fanout: Fanout, metrics: Metrics, device_id: str,
                 stop: threading.Event) -> None:  # fmt: skip
        self.engine = engine
        self.slot = slot
        self.fanout = fanout
        self.metrics = metrics
        self.device_id = device_id
        self.stop = stop
        self.fps = FpsMeter()
        self.latest: Result | None = None
        self._last_error_log = 0.0
        self.thread = threading.Thread(target=self._run, name="edgekit-infer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            frame = self.slot.get(timeout=0.25)
            if frame is None or self.stop.is_set():
                continue
            try:  # one bad frame (or a failing step after inference) must not stop the thread
                self._handle(frame)
            except Exception as exc:
                self.metrics.inference_errors.inc()
                now = time.monotonic()
                if now - self._last_error_log > 10:
                    self._last_error_log = now
                    log.error("inference failed on frame %d: %s: %s", frame.seq, type(exc).__name__, exc)

    def _handle(self, frame: Frame) -> None:
        inference = self.engine.run(frame.image)
        done = time.perf_counter()
        e2e = done - frame.captured_mono
        # The result carries no frame: Fanout hands a copy with it only to a publisher that wants it.
        result = Result(
            device_id=self.device_id, seq=frame.seq, captured_at=frame.captured_at,
            inference_ms=inference.seconds * 1000, e2e_ms=e2e * 1000, fps=self.fps.tick(done),
            model=inference.model, bundle_hash=inference.bundle_hash,
            output=inference.prediction.to_json(), task=inference.prediction.task,
        )  # fmt: skip
        self.metrics.frames_inferred.inc()
        self.metrics.inference_latency.observe(inference.seconds)
        self.metrics.e2e_latency.observe(e2e)
        self.latest = result
        self.fanout.publish(result, image=frame.image)
