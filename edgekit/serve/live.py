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
        self.latest: dict[str, Any] | None = None
        self.events = Channel(depth=16)
        self.frames = Channel(depth=2)
        self.latest_jpeg: bytes | None = None

    def deliver(self, result: Any) -> None:
        self.latest = result.to_dict()
        if self.events.count:
            self.events.send((result.seq, result.json))

    def close(self) -> None:
        self.events.close()
        self.frames.close()


def annotate(image: np.ndarray, result: dict[str, Any], task: Task | str = "classification") -> np.ndarray:
    """A copy of the frame with the result drawn by its task (a classifier's: the top label and its score),
    and the FPS and the latencies below."""
    h, w = image.shape[:2]
    if w < 480:  # small frames (e.g. 32x32 test sets) are scaled up so the text stays readable
        factor = int(np.ceil(480 / w))
        image = cv2.resize(image, (w * factor, h * factor), interpolation=cv2.INTER_NEAREST)
    else:
        image = image.copy()
    task = get_task(task) if isinstance(task, str) else task
    y = task.draw(image, result)
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
        self._last = 0.0

    def wanted(self) -> bool:
        return self.hub.frames.count > 0

    def wants_image(self) -> bool:
        return self.hub.frames.count > 0

    def deliver(self, result: Any) -> bool:
        """Encode and send the frame to the viewers; False (not delivered) when nobody watches or too soon."""
        if not self.hub.frames.count or result.image is None:
            return False
        now = time.monotonic()
        if now - self._last < self.interval:
            return False
        self._last = now
        frame = annotate(result.image, result.to_dict(), result.task)
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise RuntimeError("JPEG encoding of a stream frame failed")
        self.hub.latest_jpeg = data.tobytes()
        self.hub.frames.send(self.hub.latest_jpeg)
        return True
