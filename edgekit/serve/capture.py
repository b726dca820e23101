"""The capture thread: read the source, keep only the latest frame, reconnect with backoff.

Inference never waits on a queue of old frames: for a live source the capture thread overwrites the one
frame slot, and a frame replaced before the worker took it is counted as dropped. So latency stays
bounded by one inference, whatever the source's rate. A file or folder (without --realtime) is instead
read at the model's pace: the capture thread waits for the slot to be taken, and nothing is dropped.

Nothing the source does can end the capture thread: any exception while opening, reading or shaping a
frame is caught, counted (edgekit_source_errors_total), reported in the source status (so /readyz says
not ready) and retried with the reconnect backoff. The loop also records what it is waiting for, so
readiness can tell a source that stopped delivering (stalled) from one waiting on the model.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from edgekit.serve.config import ServeConfig, option_field, settle_fields
from edgekit.serve.metrics import Metrics
from edgekit.serve.sources import SourceError, SourceSpec, open_reader, shape_frame

log = logging.getLogger("edgekit.serve")
MIN_NOMINAL_FPS = 0.01  # a file claiming a lower frame rate is played at this rate with --realtime


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # HWC uint8 BGR
    seq: int  # 1, 2, ... over the daemon's life, across reconnects
    captured_at: float  # wall clock (time.time()), for messages
    captured_mono: float  # time.perf_counter(), for latencies


class Board:
    """Where the streams of one bundle say a frame is waiting: the batch worker waits on it, once, for all of
    them. ``version`` counts notifications, so a frame put between a scan and the wait is not missed."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.version = 0

    def notify(self) -> None:
        with self.cond:
            self.version += 1
            self.cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        """Wait until notified after ``seen`` (a ``version`` read before scanning), or ``timeout``; the version."""
        with self.cond:
            if self.version == seen:
                self.cond.wait(timeout)
            return self.version


class LatestFrame:
    """A stream's frames waiting for inference: the newest only (``capacity`` 1: ``put`` replaces), or a bounded
    queue whose oldest frame is dropped when full. ``get`` waits for a frame, ``take`` does not; a ``board``
    is told of every frame put, so one worker can wait for the frames of many streams."""

    def __init__(self, capacity: int = 1, board: Board | None = None) -> None:
        self._cond = threading.Condition()
        self._frames: collections.deque[Frame] = collections.deque()
        self.capacity = max(1, int(capacity))
        self.board = board
        self._closed = False

    def put(self, frame: Frame) -> bool:
        """Store ``frame``; True if a frame that was never taken was dropped for it."""
        with self._cond:
            dropped = len(self._frames) >= self.capacity
            if dropped:
                self._frames.popleft()
            self._frames.append(frame)
            self._cond.notify_all()
        if self.board is not None:
            self.board.notify()
        return dropped

    def put_when_taken(self, frame: Frame, stop: threading.Event) -> None:
        """Store ``frame`` once there is room (back-pressure: nothing is dropped)."""
        with self._cond:
            while len(self._frames) >= self.capacity and not self._closed and not stop.is_set():
                self._cond.wait(0.1)
            self._frames.append(frame)
            self._cond.notify_all()
        if self.board is not None:
            self.board.notify()

    def get(self, timeout: float) -> Frame | None:
        with self._cond:
            if not self._frames and not self._closed:
                self._cond.wait(timeout)
            frame = self._frames.popleft() if self._frames else None
            self._cond.notify_all()
            return frame

    def take(self) -> Frame | None:
        """The oldest waiting frame, or None at once."""
        with self._cond:
            if not self._frames:
                return None
            frame = self._frames.popleft()
            self._cond.notify_all()  # a paced file's capture thread waits for the room
            return frame

    @property
    def waiting(self) -> int:
        with self._cond:
            return len(self._frames)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._frames.clear()
            self._cond.notify_all()


@dataclass
class SourceStatus:
    connected: bool = False
    error: str | None = "not opened yet"
    frames: int = 0  # frames since the last (re)connect
    errors: int = 0  # exceptions caught in the capture thread over the daemon's life
    last_frame_mono: float | None = None  # time.monotonic() of the last frame handed to the slot
    # What the capture thread waits for, and since when (time.monotonic()): "source" (opening or reading:
    # a long wait here is a stall), "model" (a paced file waiting for its frame to be taken: not a stall),
    # "backoff" (waiting to reopen a lost source) or "stopped".
    waiting_for: str = "source"
    waiting_since: float = field(default_factory=time.monotonic)

    def wait_for(self, what: str) -> None:
        self.waiting_for, self.waiting_since = what, time.monotonic()


@dataclass(frozen=True, kw_only=True)
class CaptureOptions:
    """What the capture thread reads with: each field is a serve option's, with its default and its check."""

    resolution: tuple[int, int] | None = option_field("resolution")
    fps: float | None = option_field("fps")
    rotate: int = option_field("rotate")
    loop: bool = option_field("loop")
    realtime: bool = option_field("realtime")
    reconnect_delay: float = option_field("reconnect_delay")
    reconnect_max_delay: float = option_field("reconnect_max_delay")
    timeout: float = option_field("source_timeout")
    rtsp_transport: str = option_field("rtsp_transport")

    def __post_init__(self) -> None:
        settle_fields(self, "CaptureOptions")

    @classmethod
    def from_config(cls, config: ServeConfig) -> CaptureOptions:
        """The capture options of a daemon's configuration."""
        return cls(**{item.name: getattr(config, item.metadata["option"].field) for item in fields(cls)})


class CaptureLoop:
    """Runs in its own thread until ``stop`` is set."""

    def __init__(self, spec: SourceSpec, options: CaptureOptions, slot: LatestFrame, metrics: Metrics,
                 stop: threading.Event, *, stream_id: str = "cam0", need: Any = None) -> None:  # fmt: skip
        self.spec = spec
        self.stream_id = stream_id
        self.need = need  # what the stream's model needs of a frame (decode.need_for): decoders may decode at it
        self.options = options
        self.slot = slot
        self.metrics = metrics
        self.stop = stop
        self.status = SourceStatus()
        # A file or folder read without --realtime waits for the model: every frame is inferred, none
        # dropped, and no decoding is wasted. A live source (or --realtime) cannot wait: the latest wins.
        self.paced_by_model = not spec.live and not options.realtime
        self._seq = 0
        self._size_logged: tuple[int, int] | None = None
        self._last_skip_log = -math.inf
        self._skips_unlogged = 0
        self.thread = threading.Thread(target=self._run, name=f"edgekit-capture-{stream_id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        delay = self.options.reconnect_delay
        first = True
        while not self.stop.is_set():
            if not first:
                self.metrics.source_reconnects.inc()
                self.metrics.stream_reconnects.inc(stream=self.stream_id)
            first = False
            self.status.wait_for("source")
            try:
                reader = open_reader(self.spec, resolution=self.options.resolution, fps=self.options.fps,
                                     timeout=self.options.timeout, rtsp_transport=self.options.rtsp_transport,
                                     on_skip=self._skipped, need=self.need)  # fmt: skip
            except SourceError as exc:
                self._lost(str(exc), delay)
                delay = min(delay * 2, self.options.reconnect_max_delay)
                continue
            except Exception as exc:  # whatever opening raises, the thread goes on
                self._failed("opening", exc, delay)
                delay = min(delay * 2, self.options.reconnect_max_delay)
                continue
            failed: Exception | None = None
            try:
                delivered = self._pump(reader)
            except Exception as exc:  # a read or a frame that raises must not end the thread
                failed, delivered = exc, 0
            finally:
                try:
                    reader.close()
                except Exception as exc:
                    log.debug("closing source '%s' raised %s: %s", self.spec.shown, type(exc).__name__, exc)
            if self.stop.is_set():
                break
            if failed is not None:
                self._failed("reading", failed, delay)
                delay = min(delay * 2, self.options.reconnect_max_delay)
                continue
            if delivered:
                delay = self.options.reconnect_delay
            if delivered and self.options.loop and not self.spec.live:
                first = True  # a loop is not a reconnect
                continue
            ended = "ended" if not self.spec.live else "stopped delivering frames"
            self._lost(f"source '{self.spec.shown}' {ended} after {delivered} frames", delay)
            if not delivered:
                delay = min(delay * 2, self.options.reconnect_max_delay)
        self.status.wait_for("stopped")
        self.status.connected = False
        self.metrics.stream_connected.set(0, stream=self.stream_id)

    def _lost(self, reason: str, delay: float) -> None:
        self.status.connected, self.status.error = False, reason
        self.metrics.stream_connected.set(0, stream=self.stream_id)
        log.warning("stream %s: %s; reconnecting in %.1f s", self.stream_id, reason, delay)
        self.status.wait_for("backoff")
        self.stop.wait(delay)

    def _skipped(self, path: str, why: str) -> None:
        """An image-folder file skipped: counted always, logged at most once every 10 s."""
        self.metrics.source_files_skipped.inc()
        self._skips_unlogged += 1
        now = time.monotonic()
        if now - self._last_skip_log >= 10:
            shown = os.fsencode(path).decode("utf-8", "backslashreplace")
            more = f" (and {self._skips_unlogged - 1} more since the last report)" if self._skips_unlogged > 1 else ""
            log.warning("skipped image '%s': it %s%s", shown, why, more)
            self._last_skip_log, self._skips_unlogged = now, 0

    def _failed(self, doing: str, exc: Exception, delay: float) -> None:
        """An unexpected exception in the capture thread: count it, report it, and retry after ``delay``."""
        self.status.errors += 1
        self.metrics.source_errors.inc()
        text = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        self._lost(f"capture failed {doing} source '{self.spec.shown}': {type(exc).__name__}: {text}"[:500], delay)

    def _interval(self, reader) -> float:
        interval = 1.0 / self.options.fps if self.options.fps else 0.0
        nominal = reader.nominal_fps
        if self.options.realtime and not self.spec.live and nominal and math.isfinite(nominal) and nominal > 0:
            interval = max(interval, 1.0 / max(nominal, MIN_NOMINAL_FPS))
        return interval

    def _pump(self, reader) -> int:
        """Read frames into the slot until the source ends, fails or the daemon stops; return the count."""
        interval, delivered, last = self._interval(reader), 0, 0.0
        status = self.status
        while not self.stop.is_set():
            image = reader.read()
            if image is None:
                return delivered
            now = time.perf_counter()
            if interval and now - last < interval:
                if self.spec.live:
                    self.metrics.frames_skipped.inc()
                    status.wait_for("source")  # a live source's skipped frame still shows it delivers
                    continue
                self.stop.wait(interval - (now - last))  # a realtime file's pause counts as waiting on it
                now = time.perf_counter()
            last = now
            size = (image.shape[1], image.shape[0])
            image = shape_frame(image, rotate=self.options.rotate, resolution=self.options.resolution)
            if not status.connected:  # the first frame since start or a loss (a loop is neither)
                status.connected, status.error, status.frames = True, None, 0
                self.metrics.stream_connected.set(1, stream=self.stream_id)
                log.info("stream %s: source '%s' connected (%dx%d)", self.stream_id, self.spec.shown, *size)
            if self.options.resolution and size != self._size_logged and size != tuple(self.options.resolution):
                self._size_logged = size  # logged once per size the source delivers, not per frame
                log.info("source '%s' delivers %dx%d frames, not the %dx%d asked; they are resized",
                         self.spec.shown, *size, *self.options.resolution)  # fmt: skip
            self._seq += 1
            delivered += 1
            status.frames += 1
            self.metrics.counted("frames_captured", self.stream_id)
            frame = Frame(image, self._seq, time.time(), now)
            if self.paced_by_model:
                status.wait_for("model")
                self.slot.put_when_taken(frame, self.stop)
            elif self.slot.put(frame):
                self.metrics.counted("frames_dropped", self.stream_id)
            status.last_frame_mono = time.monotonic()
            status.wait_for("source")
        return delivered

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds the capture thread has waited on the source for a frame (0 while waiting on the model)."""
        status = self.status
        if status.waiting_for != "source":
            return 0.0
        return max(0.0, (time.monotonic() if now is None else now) - status.waiting_since)
