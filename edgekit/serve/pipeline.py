"""The inference workers: batch the streams' frames, run the bundle, hand each result to every publisher."""

from __future__ import annotations

import collections
import datetime
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np

from edgekit.serve.capture import Board, Frame
from edgekit.serve.config import Cascade
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
    stream: str = "cam0"  # the stream's id
    batch: int = 1  # frames in the inference call this frame ran in

    def __post_init__(self, top_k: list[dict[str, Any]] | None) -> None:
        if top_k is not None and not self.output:
            best = top_k[0]
            object.__setattr__(self, "output", {"label": best["label"], "score": best["score"], "top_k": top_k})

    def to_dict(self) -> dict[str, Any]:
        """The message (a new dict each call); ``json`` is the same, serialised once for every publisher."""
        return {
            "device": self.device_id,
            "stream": self.stream,
            "seq": self.seq,
            "captured_at": iso_utc(self.captured_at),
            "captured_unix": round(self.captured_at, 6),
            "inference_ms": round(self.inference_ms, 3),
            "e2e_ms": round(self.e2e_ms, 3),
            "fps": round(self.fps, 2),
            "batch": self.batch,
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


@dataclass(frozen=True)
class Item:
    """One frame of a batch: the stream it came from, and that stream's cascade (None: none)."""

    stream: str
    frame: Frame
    cascade: Cascade | None = None


class BatchWorker:
    """The inference thread of one bundle: batches the frames of the streams on it into one call.

    Each pass takes the streams' waiting frames round-robin (starting one stream further each call, so no
    stream is always first), one a stream, then more from streams with a queue, up to ``max_batch``. When
    the batch is not full it waits up to ``max_wait`` seconds after its first frame for the other
    *connected* streams that gave none yet; a stream that is reconnecting or stalled is not waited for, so
    it never holds the others back. One stream alone never waits.
    """

    def __init__(self, *, engine: Engine, board: Board, streams: Callable[[], Sequence[Any]], fanout: Fanout,
                 metrics: Metrics, device_id: str, stop: threading.Event, max_batch: int = 8,
                 max_wait: float = 0.005, cascade_engine: Callable[[str], Engine | None] | None = None) -> None:  # fmt: skip
        self.engine = engine
        self.board = board
        self.streams = streams
        self.fanout = fanout
        self.metrics = metrics
        self.device_id = device_id
        self.stop = stop
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.cascade_engine = cascade_engine or (lambda _path: None)
        self._fps: dict[str, FpsMeter] = {}
        self._next = 0
        self.latest: Result | None = None
        self._last_error_log = 0.0
        self.thread = threading.Thread(target=self._run, name="edgekit-infer", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def forget(self, stream: str) -> None:
        self._fps.pop(stream, None)

    def _pass(self, streams: Sequence[Any], batch: list[Item], taken: set[str], room: int) -> None:
        """Take waiting frames round-robin into ``batch``: one a stream, then again while frames remain."""
        n = len(streams)
        more = True
        while more and len(batch) < room:
            more = False
            for k in range(n):
                s = streams[(self._next + k) % n]
                frame = s.slot.take()
                if frame is None:
                    continue
                batch.append(Item(s.id, frame, s.settings.cascade))
                taken.add(s.id)
                more = more or s.slot.capacity > 1
                if len(batch) >= room:
                    return

    def gather(self) -> list[Item]:
        """The next batch (empty if no frame came within 0.25 s)."""
        seen = self.board.version
        streams = list(self.streams())
        batch: list[Item] = []
        taken: set[str] = set()
        if streams:
            self._pass(streams, batch, taken, self.max_batch)
            self._next = (self._next + 1) % len(streams)
        if not batch:
            self.board.wait(seen, 0.25)
            return []
        deadline = time.perf_counter() + self.max_wait
        while len(batch) < self.max_batch and self.max_wait > 0:
            pending = [s for s in streams if s.id not in taken and s.capture.status.connected]
            left = deadline - time.perf_counter()
            if not pending or left <= 0:
                break
            seen = self.board.wait(seen, left)
            before = len(batch)
            self._pass(pending, batch, taken, self.max_batch)
            if len(batch) == before and time.perf_counter() >= deadline:
                break
        return batch

    def _run(self) -> None:
        while not self.stop.is_set():
            batch = self.gather()
            if not batch or self.stop.is_set():
                continue
            try:  # one bad frame (or a failing step after inference) must not stop the thread
                self._handle(batch)
            except Exception as exc:
                if len(batch) > 1:  # find the frame that fails: the others still get their results
                    for item in batch:
                        try:
                            self._handle([item])
                        except Exception as one:
                            self._failed(item, one)
                else:
                    self._failed(batch[0], exc)

    def _failed(self, item: Item, exc: Exception) -> None:
        self.metrics.inference_errors.inc()
        now = time.monotonic()
        if now - self._last_error_log > 10:
            self._last_error_log = now
            log.error("stream %s: inference failed on frame %d: %s: %s", item.stream, item.frame.seq,
                      type(exc).__name__, exc)  # fmt: skip

    def _handle(self, batch: list[Item]) -> None:
        inference = self.engine.run_batch([item.frame.image for item in batch])
        done = time.perf_counter()
        self.metrics.batch_size.observe(len(batch))
        per_frame = inference.seconds
        for item, prediction in zip(batch, inference.predictions, strict=True):
            output = prediction.to_json()
            if item.cascade is not None and prediction.task == "detection":
                output = self._cascade(item, output)
            e2e = done - item.frame.captured_mono
            meter = self._fps.setdefault(item.stream, FpsMeter())
            fps = meter.tick(done)
            # The result carries no frame: Fanout hands a copy with it only to a publisher that wants it.
            result = Result(
                device_id=self.device_id, seq=item.frame.seq, captured_at=item.frame.captured_at,
                inference_ms=per_frame * 1000, e2e_ms=e2e * 1000, fps=fps, model=inference.model,
                bundle_hash=inference.bundle_hash, output=output, task=prediction.task, stream=item.stream,
                batch=len(batch),
            )  # fmt: skip
            self.metrics.counted("frames_inferred", item.stream)
            self.metrics.stream_fps.set(fps, stream=item.stream)
            self.metrics.stream_frame_age.set(round(e2e, 6), stream=item.stream)
            self.metrics.inference_latency.observe(per_frame)
            self.metrics.e2e_latency.observe(e2e)
            if result.task == "detection":
                self.metrics.count_detections(result.output.get("detections", ()))
            self.latest = result
            self.fanout.publish(result, image=item.frame.image)

    def _cascade(self, item: Item, output: dict[str, Any]) -> dict[str, Any]:
        """The detections with the second bundle's result on each box's crop nested as ``classification``."""
        cascade = item.cascade
        engine = self.cascade_engine(cascade.bundle)
        detections = output.get("detections")
        if engine is None or not isinstance(detections, list):
            return output
        image = item.frame.image
        h, w = image.shape[:2]
        chosen, crops = [], []
        order = sorted(range(len(detections)), key=lambda i: -float(detections[i].get("score", 0.0)))
        for i in order:
            d = detections[i]
            if cascade.labels and d.get("label") not in cascade.labels:
                continue
            if float(d.get("score", 0.0)) < cascade.min_score:
                continue
            x1, y1, x2, y2 = (float(v) for v in d["box"])
            left, top = max(0, int(np.floor(x1))), max(0, int(np.floor(y1)))
            right, bottom = min(w, int(np.ceil(x2))), min(h, int(np.ceil(y2)))
            if right - left < 2 or bottom - top < 2:
                continue
            chosen.append(i)
            crops.append(np.ascontiguousarray(image[top:bottom, left:right]))
            if len(crops) >= cascade.max_boxes:
                break
        if not crops:
            return output
        second = engine.run_batch(crops, top_k=cascade.top_k)
        nested = [dict(d) for d in detections]
        for i, prediction in zip(chosen, second.predictions, strict=True):
            nested[i]["classification"] = prediction.to_json()
        return {**output, "detections": nested, "cascade_ms": round(second.seconds * 1000, 3)}
