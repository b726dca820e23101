"""The HTTP server's live state: the latest result, server-sent events, and the annotated MJPEG stream.

Publisher threads hand items to ``Channel``; each HTTP client (an asyncio task in the server's thread)
holds a small queue of its own that keeps only the newest items, so a slow client loses frames, never
memory, and never slows anyone else.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import cv2
import numpy as np

from edgekit.serve.publishers import Publisher
from edgekit.tasks import get_task
from edgekit.tasks.base import Task, draw_text_rows


def _put_newest(queue: asyncio.Queue, item: Any) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)


class Channel:
    """Broadcast from any thread to asyncio subscribers. ``None`` tells subscribers to end."""

    def __init__(self, depth: int = 4) -> None:
        self.depth = depth
        self._subs: dict[asyncio.Queue, asyncio.AbstractEventLoop] = {}
        self._lock = threading.Lock()
        self.closed = False

    def subscribe(self) -> asyncio.Queue:
        """Call from the event loop; returns the subscriber's queue."""
        queue: asyncio.Queue = asyncio.Queue(self.depth)
        with self._lock:
            self._subs[queue] = asyncio.get_running_loop()
        if self.closed:
            queue.put_nowait(None)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._subs.pop(queue, None)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._subs)

    def send(self, item: Any) -> None:
        with self._lock:
            subs = list(self._subs.items())
        for queue, loop in subs:
            try:
                loop.call_soon_threadsafe(_put_newest, queue, item)
            except RuntimeError:  # the server's loop has closed
                self.unsubscribe(queue)

    def close(self) -> None:
        self.closed = True
        self.send(None)


class LiveHub(Publisher):
    """Publisher "http": keeps the latest result for /v1/latest and feeds /v1/events."""

    name = "http"
    queue_size = 64

    def __init__(self) -> None:
        self.latest: dict[str, Any] | None = None  # of any stream
        self.latest_by_stream: dict[str, dict[str, Any]] = {}
        self.events = Channel(depth=16)
        self.frames = Channel(depth=2)  # every stream's annotated frames
        self.stream_frames: dict[str, Channel] = {}  # one stream's, for /v1/stream.mjpg?stream=ID
        self.latest_jpeg: bytes | None = None
        self.latest_jpeg_by_stream: dict[str, bytes] = {}

    def frames_of(self, stream: str | None) -> Channel:
        """The channel of one stream's frames (None: all streams')."""
        if stream is None:
            return self.frames
        channel = self.stream_frames.get(stream)
        if channel is None:
            channel = self.stream_frames.setdefault(stream, Channel(depth=2))
        return channel

    def viewers(self, stream: str) -> int:
        channel = self.stream_frames.get(stream)
        return self.frames.count + (channel.count if channel is not None else 0)

    def forget(self, stream: str) -> None:
        """A removed stream: its latest result and frame go, and its viewers' streams end."""
        self.latest_by_stream.pop(stream, None)
        self.latest_jpeg_by_stream.pop(stream, None)
        channel = self.stream_frames.pop(stream, None)
        if channel is not None:
            channel.close()

    def deliver(self, result: Any) -> None:
        message = result.to_dict()
        self.latest = message
        self.latest_by_stream[getattr(result, "stream", "cam0")] = message
        if self.events.count:
            self.events.send((result.seq, result.json, getattr(result, "stream", "cam0")))

    def close(self) -> None:
        self.events.close()
        self.frames.close()
        for channel in list(self.stream_frames.values()):
            channel.close()


def scaled(result: dict[str, Any], factor: int) -> dict[str, Any]:
    """The result with its pixel coordinates (a detector's ``detections[].box``) multiplied by ``factor``, for a
    frame scaled up by it; the result itself unchanged (it is the one published)."""
    items = result.get("detections")
    if factor == 1 or not isinstance(items, list):
        return result
    return {**result, "detections": [{**d, "box": [float(v) * factor for v in d["box"]]} for d in items]}


def annotate(image: np.ndarray, result: dict[str, Any], task: Task | str = "classification") -> np.ndarray:
    """A copy of the frame with the result drawn by its task (a classifier's: the top label and its score; a
    detector's: its boxes with their labels), and the FPS and the latencies below."""
    h, w = image.shape[:2]
    factor = 1
    if w < 480:  # small frames (e.g. 32x32 test sets) are scaled up so the text stays readable
        factor = int(np.ceil(480 / w))
        image = cv2.resize(image, (w * factor, h * factor), interpolation=cv2.INTER_NEAREST)
    else:
        image = image.copy()
    task = get_task(task) if isinstance(task, str) else task
    y = task.draw(image, scaled(result, factor))  # boxes are in the source frame's pixels
    stats = f"{result['fps']:.1f} FPS  infer {result['inference_ms']:.1f} ms  e2e {result['e2e_ms']:.1f} ms"
    draw_text_rows(image, [(stats, (0, 255, 255))], y)
    return image


class StreamPublisher(Publisher):
    """Publisher "stream": annotates and JPEG-encodes frames, only while /v1/stream.mjpg has viewers."""

    name = "stream"
    queue_size = 2  # the stream shows the newest frames; older ones are dropped
    queue_bytes = 64 * 1024 * 1024  # two 4K frames; one frame is always kept whatever its size

    def __init__(self, hub: LiveHub, *, fps: float, quality: int) -> None:
        self.hub = hub
        self.interval = 1.0 / fps
        self.quality = quality
        self._last: dict[str, float] = {}  # per stream: each stream is capped at --stream-fps

    def _watched(self) -> bool:
        return self.hub.frames.count > 0 or any(c.count for c in list(self.hub.stream_frames.values()))

    def wanted(self) -> bool:
        return self._watched()

    def wants_image(self, result: Any = None) -> bool:
        if result is None:
            return self._watched()
        return self.hub.viewers(getattr(result, "stream", "cam0")) > 0

    def deliver(self, result: Any) -> bool:
        """Encode and send the frame to the viewers; False (not delivered) when nobody watches or too soon."""
        stream = getattr(result, "stream", "cam0")
        if not self.hub.viewers(stream) or result.image is None:
            return False
        now = time.monotonic()
        if now - self._last.get(stream, 0.0) < self.interval:
            return False
        self._last[stream] = now
        frame = annotate(result.image, result.to_dict(), result.task)
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("JPEG encoding of a stream frame failed")
        jpeg = data.tobytes()
        self.hub.latest_jpeg = jpeg
        self.hub.latest_jpeg_by_stream[stream] = jpeg
        self.hub.frames.send(jpeg)
        channel = self.hub.stream_frames.get(stream)
        if channel is not None:
            channel.send(jpeg)
        return True
