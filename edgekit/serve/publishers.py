"""Publishers, each isolated behind its own bounded queue and thread.

The inference worker hands a result to every publisher with ``offer``, which never blocks: a queue holding
more than ``queue_size`` results or ``queue_bytes`` bytes (a result's JSON plus any frame it carries) drops
its oldest results (counted in edgekit_publish_dropped_total). Only a publisher that asks for the frame
(``wants_image``: the MJPEG stream, while someone watches) gets a result that carries it; the others get
the same result without it, so a stuck publisher holds kilobytes, not frames. A publisher that raises is counted and logged, and its thread goes on.
So a slow or dead publisher (a stuck broker, a full disk) never stalls inference or the other publishers.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any

from edgekit.serve.metrics import Metrics

log = logging.getLogger("edgekit.serve")
MiB = 1024 * 1024


def result_bytes(result: Any) -> int:
    """What a queued result costs in memory, roughly: its JSON text plus the frame it carries, if any."""
    text = getattr(result, "json", None)
    size = len(text) if isinstance(text, (str, bytes)) else len(repr(result))
    image = getattr(result, "image", None)
    return size + (int(image.nbytes) if image is not None else 0)


class Publisher:
    """Delivers results somewhere. ``deliver`` may block or raise; the wrapper isolates it."""

    name = "publisher"
    queue_size = 256  # results waiting before the oldest is dropped
    queue_bytes = 4 * MiB  # and bytes waiting (at least one result is always kept)

    def deliver(self, result: Any) -> bool | None:
        """Deliver one result; return False if it was not delivered (buffered for later, or not needed)."""
        raise NotImplementedError

    def wanted(self) -> bool:
        """False while results would only be discarded (e.g. a stream nobody watches): not even queued."""
        return True

    def wants_image(self, result: Any = None) -> bool:
        """True while this publisher needs the frame of ``result`` itself (not only the result): only then is it
        handed one."""
        return False

    def idle(self) -> None:
        """Called about twice a second when no result is waiting (e.g. to flush a buffer)."""

    def close(self) -> None:
        """Flush and release; called once, from the publisher's thread, at stop."""


class IsolatedPublisher:
    def __init__(self, publisher: Publisher, metrics: Metrics) -> None:
        self.publisher = publisher
        self.name = publisher.name
        self.metrics = metrics
        self._queue: collections.deque[tuple[Any, int]] = collections.deque()
        self._bytes = 0
        self._cond = threading.Condition()
        self._stopping = False
        self._last_error_log = 0.0
        self.thread = threading.Thread(target=self._run, name=f"edgekit-publish-{self.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def offer(self, result: Any) -> None:
        """Queue a result without blocking; drop the oldest one if the queue is full."""
        if not self.publisher.wanted():
            return
        size = result_bytes(result)
        limit_count, limit_bytes = max(1, self.publisher.queue_size), self.publisher.queue_bytes
        with self._cond:
            self._queue.append((result, size))
            self._bytes += size
            while len(self._queue) > 1 and (len(self._queue) > limit_count or self._bytes > limit_bytes):
                _, dropped = self._queue.popleft()
                self._bytes -= dropped
                self.metrics.publish_dropped.inc(publisher=self.name)
            self._cond.notify()

    @property
    def queued(self) -> tuple[int, int]:
        """(results, bytes) waiting in this publisher's queue."""
        with self._cond:
            return len(self._queue), self._bytes

    def _next(self) -> tuple[bool, Any]:
        with self._cond:
            if not self._queue and not self._stopping:
                self._cond.wait(0.5)
            if self._queue:
                result, size = self._queue.popleft()
                self._bytes -= size
                return True, result
            return False, None

    def _run(self) -> None:
        while True:
            got, result = self._next()
            if got:
                self._call(self.publisher.deliver, result)
            elif self._stopping:
                break
            else:
                self._call(self.publisher.idle)
        self._call(self.publisher.close)

    def _call(self, fn, *args: Any) -> None:
        try:
            if fn(*args) is not False and args:
                self.metrics.published.inc(publisher=self.name)
        except Exception as exc:  # isolation: whatever a publisher raises, count it and go on
            if args:
                self.metrics.publish_failures.inc(publisher=self.name)
            now = time.monotonic()
            if now - self._last_error_log > 10:  # at most one line every 10 s per publisher
                self._last_error_log = now
                log.warning("publisher %s failed: %s: %s", self.name, type(exc).__name__, exc)

    def request_stop(self) -> None:
        """Deliver what is queued, then close; ``join`` waits for it."""
        with self._cond:
            self._stopping = True
            self._cond.notify()

    def join(self, timeout: float) -> bool:
        """True if the publisher finished within ``timeout`` seconds."""
        self.thread.join(timeout)
        return not self.thread.is_alive()


class Fanout:
    """Every isolated publisher, fed by the inference worker."""

    def __init__(self, publishers: list[Publisher], metrics: Metrics) -> None:
        self.publishers = [IsolatedPublisher(p, metrics) for p in publishers]

    def start(self) -> None:
        for p in self.publishers:
            p.start()

    def publish(self, result: Any, image: Any = None) -> None:
        """Offer ``result`` (which should carry no frame) to every publisher; a publisher that wants the
        frame now gets a copy carrying ``image``."""
        with_image = None
        for p in self.publishers:
            if image is not None and p.publisher.wants_image(result):
                if with_image is None:
                    with_image = dataclasses.replace(result, image=image)
                p.offer(with_image)
            else:
                p.offer(result)

    def stop(self, deadline: float) -> list[str]:
        """Stop every publisher by ``deadline`` (time.monotonic()); return the names that did not finish."""
        for p in self.publishers:
            p.request_stop()
        return [p.name for p in self.publishers if not p.join(max(0.0, deadline - time.monotonic()))]
