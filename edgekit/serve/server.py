"""The HTTP server's defences: decode pool and pixel budget, connection timeouts and limit, log rate limit.

- ``Predictor``: uploads are decoded and preprocessed in a small bounded thread pool (never on the event
  loop, never in Starlette's shared threadpool), under a budget of decoded bytes in flight estimated from
  the image header; a request that does not fit waits up to ``--decode-wait`` seconds, then gets 503
  with Retry-After. Inference runs in one dedicated thread (the engine lock serialises it anyway). At
  shutdown it refuses new work and waits for the work in flight.
- ``protocol_class``: uvicorn's h11 protocol with a header timeout (a client that has not sent complete
  request headers within ``--header-timeout`` seconds is disconnected: h11 has no such timer, and
  uvicorn's keep-alive timer stops at the first byte) and a connection limit kept under the process's
  file-descriptor limit: a new connection at the limit evicts the longest-idle connection that has no
  request in flight; if every connection is busy, the one still receiving its request body at the lowest
  rate is answered 408 and closed (slow-body clients cannot hold every slot for --body-timeout seconds);
  if none is receiving a body, the new connection is refused with a 503.
- ``RateLimitFilter``: at most one log line per message kind per interval, with a count of the rest.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import logging
import os
import resource
import threading
import time
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("edgekit.serve")
FD_RESERVE = 32  # descriptors kept free beyond those open at start (bundle reloads, video, logs)


class Busy(Exception):
    """No room in the decode budget within the wait; answer 503 with Retry-After."""


class Stopping(Exception):
    """The daemon is shutting down and takes no new predicts."""


class DecodeBudget:
    """Bytes of decoded pixels in flight, counted on the event loop; released from any thread."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.in_flight = 0
        self._cond: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def acquire(self, cost: int, wait: float) -> int:
        """Reserve ``cost`` bytes (an image bigger than the whole budget takes all of it); the bytes taken."""
        if self._cond is None:
            self._cond, self._loop = asyncio.Condition(), asyncio.get_running_loop()
        take = min(cost, self.capacity)
        fits = lambda: self.in_flight + take <= self.capacity  # noqa: E731
        async with self._cond:
            if not fits():
                try:
                    await asyncio.wait_for(self._cond.wait_for(fits), wait)
                except asyncio.TimeoutError:  # not the builtin TimeoutError on Python 3.10
                    raise Busy from None
            self.in_flight += take
        return take

    def release_threadsafe(self, taken: int) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._release(taken)))
        except RuntimeError:  # the loop is closed: nobody waits any more
            self.in_flight -= taken

    async def _release(self, taken: int) -> None:
        assert self._cond is not None
        async with self._cond:
            self.in_flight -= taken
            self._cond.notify_all()


class Predictor:
    """Decode + preprocess in a bounded pool under a pixel budget, then infer in one thread; drains at stop."""

    def __init__(self, engine, *, budget: int, wait: float, threads: int | None = None) -> None:
        self.engine = engine
        self.budget = DecodeBudget(budget)
        self.wait = wait
        threads = threads or max(1, min(4, os.cpu_count() or 1))
        self.decoders = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="edgekit-decode",
                                                              initializer=_lower_priority)  # fmt: skip
        self.inference = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="edgekit-predict")
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._active = 0  # jobs submitted to either pool and not finished
        self.closing = False

    def _submit(self, pool: concurrent.futures.ThreadPoolExecutor, fn, *args, **kwargs) -> concurrent.futures.Future:
        with self._lock:
            if self.closing:
                raise Stopping("the daemon is stopping")
            self._active += 1
        try:
            future = pool.submit(fn, *args, **kwargs)
        except RuntimeError:
            self._done(None)
            raise Stopping("the daemon is stopping") from None
        future.add_done_callback(self._done)
        return future

    def _done(self, _future) -> None:
        with self._lock:
            self._active -= 1
            if self._active == 0:
                self._idle.notify_all()

    async def prepare(self, body: bytes, header) -> Any:
        """Decode and preprocess ``body`` (checked by images.inspect_upload) in the pool; an engine.Prepared."""
        from edgekit.serve.images import decode_image

        def work():
            return self.engine.prepare(decode_image(body, header))

        taken = await self.budget.acquire(header.cost, self.wait)
        try:
            future = self._submit(self.decoders, work)
        except BaseException:
            self.budget.release_threadsafe(taken)
            raise
        future.add_done_callback(lambda _f: self.budget.release_threadsafe(taken))
        return await asyncio.wrap_future(future)

    async def infer(self, prepared, *, top_k: int | None) -> Any:
        return await asyncio.wrap_future(self._submit(self.inference, self.engine.infer, prepared, top_k=top_k))

    def close(self, deadline: float) -> bool:
        """Refuse new work, wait until ``deadline`` (monotonic) for the work in flight; True if none is left."""
        with self._lock:
            self.closing = True
            while self._active and time.monotonic() < deadline:
                self._idle.wait(max(0.0, deadline - time.monotonic()))
            idle = self._active == 0
        for pool in (self.decoders, self.inference):
            pool.shutdown(wait=False, cancel_futures=True)
        return idle

    @property
    def active(self) -> int:
        return self._active


def _lower_priority() -> None:
    """Decoder threads run at nice +10: on a busy device the event loop (/healthz) is scheduled first."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (OSError, AttributeError):
        pass


ACCEPT_BACKLOG = 32  # asyncio accepts up to this many connections in one go, before any protocol runs


def connection_limit(wanted: int) -> int:
    """``wanted``, capped under the soft RLIMIT_NOFILE less the descriptors open now, a reserve, and one
    accept burst twice (asyncio accepts up to ACCEPT_BACKLOG sockets before the protocols can evict any, and an
    evicted socket's descriptor is closed only on the next turn of the loop)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_now = 64
    return max(4, min(wanted, soft - open_now - FD_RESERVE - 2 * ACCEPT_BACKLOG))


_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n"
            b"connection: close\r\ncontent-length: %d\r\n\r\n%s")  # fmt: skip
_CUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n%s")  # fmt: skip
_CUT_BODY = (b'{"error":"request body too slow: closed to make room for another connection at the '
             b'--max-connections limit; send the whole body at once"}')  # fmt: skip


def protocol_class(*, header_timeout: float, max_connections: int) -> type[H11Protocol]:
    """An H11Protocol subclass with a request-header timeout and a connection limit (see the module doc)."""

    class HardenedH11Protocol(H11Protocol):
        limit = max_connections

        def connection_made(self, transport) -> None:  # type: ignore[override]
            self.last_active = time.monotonic()
            self._header_timer: asyncio.TimerHandle | None = None
            self.received = 0  # bytes received on this connection
            self._cycle_seen: object = None  # the request (uvicorn's cycle) that the two below describe
            self._cycle_at, self._cycle_bytes = self.last_active, 0
            if len(self.server_state.connections) >= self.limit and not self._evict_one():
                body = b'{"error":"too many connections, all busy: retry shortly"}'
                transport.write(_REFUSED % (len(body), body))
                transport.close()
                log.warning("connection refused: %d connections open, none idle", len(self.server_state.connections))
                self.transport = transport
                return
            super().connection_made(transport)
            self._arm_header_timer()

        def _busy(self) -> bool:
            return self.cycle is not None and not self.cycle.response_complete

        def _receiving_body(self) -> bool:
            """The request's headers are in, the app waits for the rest of its body and has not answered."""
            return self._busy() and not self.cycle.response_started and self.conn.their_state is h11.SEND_BODY

        def _body_rate(self, now: float) -> float:
            """Bytes a second received since the request's headers, counted over at least one second."""
            return (self.received - self._cycle_bytes) / max(1.0, now - self._cycle_at)

        def _evict_one(self) -> bool:
            ours = [c for c in self.server_state.connections if isinstance(c, HardenedH11Protocol)]
            idle = [c for c in ours if not c._busy()]
            if idle:
                victim = min(idle, key=lambda c: c.last_active)
            else:  # every connection is busy: cut off the slowest body upload, if any
                now = time.monotonic()
                slow = [c for c in ours if c._receiving_body() and not c.transport.is_closing()]
                if not slow:
                    return False
                victim = min(slow, key=lambda c: (c._body_rate(now), c._cycle_at))
                victim.transport.write(_CUT % (len(_CUT_BODY), _CUT_BODY))  # the app then sees a disconnect
                log.warning("connection limit reached: closed the slowest request body (%.0f bytes/s)",
                            victim._body_rate(now))  # fmt: skip
            victim.transport.close()
            victim.connections.discard(victim)  # counted out now; connection_lost follows on the next loop turn
            return True

        def _arm_header_timer(self) -> None:
            self._cancel_header_timer()
            self._header_timer = self.loop.call_later(header_timeout, self._header_timeout)

        def _cancel_header_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if not self._busy() and self.conn.their_state in (h11.IDLE, h11.DONE) and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            self.last_active = time.monotonic()
            self.received += len(data)
            super().data_received(data)

        def handle_events(self) -> None:
            super().handle_events()
            if self.cycle is not self._cycle_seen:  # a new request: its body's progress counts from here
                self._cycle_seen, self._cycle_at, self._cycle_bytes = self.cycle, time.monotonic(), self.received
            if self._busy() or self.conn.their_state not in (h11.IDLE,):
                self._cancel_header_timer()

        def on_response_complete(self) -> None:
            self.last_active = time.monotonic()
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_header_timer()

        def send_400_response(self, msg: str) -> None:
            """uvicorn's answer to a request h11 cannot parse, as JSON like every other error."""
            body = json.dumps({"error": f"{msg.rstrip('.')}: send a well-formed HTTP/1.1 request"}).encode()
            headers = [(b"content-type", b"application/json"), (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                          h11.EndOfMessage()):  # fmt: skip
                try:
                    self.transport.write(self.conn.send(event))
                except h11.LocalProtocolError:
                    break
            self.transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            if getattr(self, "flow", None) is None:  # refused in connection_made: nothing was set up
                return
            self._cancel_header_timer()
            super().connection_lost(exc)

    return HardenedH11Protocol


class RateLimitFilter(logging.Filter):
    """At most one record per (logger, message template) per ``interval`` seconds; the next one that passes
    says how many were suppressed. Tracebacks of suppressed records are dropped with them."""

    def __init__(self, interval: float = 10.0, max_kinds: int = 1000) -> None:
        super().__init__()
        self.interval = interval
        self.max_kinds = max_kinds
        self._seen: collections.OrderedDict[tuple[str, str], list[float | int]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            entry = self._seen.get(key)
            if entry is not None and now - entry[0] < self.interval:
                entry[1] += 1
                return False
            suppressed = int(entry[1]) if entry is not None else 0
            self._seen[key] = [now, 0]
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_kinds:
                self._seen.popitem(last=False)
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} similar lines suppressed in the last {self.interval:g} s)"
        return True
