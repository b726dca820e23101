"""The daemon: wires source -> latest frame -> inference -> publishers, serves HTTP, handles signals.

Threads: capture, inference, one per publisher (http, stream, mqtt, jsonl) and the HTTP server (uvicorn,
its own event loop). The main thread waits for signals: SIGTERM/SIGINT stop the daemon within 2 s
(publishing ``offline`` and flushing the sinks), SIGHUP reloads the bundle from the same path.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from typing import Any

from edgekit._version import __version__
from edgekit.errors import UsageError
from edgekit.serve.capture import CaptureLoop, CaptureOptions, LatestFrame
from edgekit.serve.config import ServeConfig, validated
from edgekit.serve.engine import Engine
from edgekit.serve.live import LiveHub, StreamPublisher
from edgekit.serve.metrics import Metrics
from edgekit.serve.pipeline import InferenceWorker
from edgekit.serve.publishers import Fanout, Publisher
from edgekit.serve.sources import parse_source

log = logging.getLogger("edgekit.serve")
STOP_BUDGET = 1.6  # seconds from SIGTERM to exit, leaving margin under the 2 s promise


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a UsageError naming the fix."""
    host = "127.0.0.1" if host == "localhost" else host
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and without it a
    # keep-alive client waits ~40 ms a request (Nagle's algorithm against delayed ACKs).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}); pass another --port or --host") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class Daemon:
    def __init__(self, config: ServeConfig) -> None:
        config = validated(config)  # every value and cross-option check again, before anything opens
        self.config = config
        self.metrics = Metrics()
        self.stop_event = threading.Event()
        self.started_at = time.time()
        self.spec = parse_source(config.source, resolution=config.resolution, fps=config.fps)
        self.engine = Engine(config.bundle, device=config.device, top_k=config.top_k)
        self._note_bundle()
        try:
            self.sock = bind(config.host, config.port)
        except BaseException:
            self.engine.close()
            raise
        self.port = self.sock.getsockname()[1]
        self.hub = LiveHub()
        self.fanout = Fanout(self._publishers(), self.metrics)
        self.slot = LatestFrame()
        options = CaptureOptions.from_config(config)
        self.capture = CaptureLoop(self.spec, options, self.slot, self.metrics, self.stop_event)
        self.worker = InferenceWorker(engine=self.engine, slot=self.slot, fanout=self.fanout, metrics=self.metrics,
                                      device_id=config.device_id, stop=self.stop_event)  # fmt: skip
        self.server = None
        self.predictor = None
        self._server_thread: threading.Thread | None = None
        self._reloading = threading.Lock()

    def _publishers(self) -> list[Publisher]:
        c = self.config
        publishers: list[Publisher] = [self.hub, StreamPublisher(self.hub, fps=c.stream_fps, quality=c.stream_quality)]
        if c.mqtt:
            from edgekit.serve.mqtt import MqttPublisher

            publishers.append(MqttPublisher(
                c.mqtt, device_id=c.device_id, metrics=self.metrics, qos=c.mqtt_qos, buffer=c.mqtt_buffer,
                buffer_bytes=c.mqtt_buffer_bytes, keepalive=c.mqtt_keepalive, client_id=c.mqtt_client_id,
                ca=c.mqtt_ca, cert=c.mqtt_cert, key=c.mqtt_key, insecure=c.mqtt_insecure,
            ))  # fmt: skip
        if c.jsonl:
            from edgekit.serve.sinks import JsonlSink

            publishers.append(JsonlSink(c.jsonl, max_bytes=c.jsonl_max_bytes, keep=c.jsonl_keep,
                                        metrics=self.metrics))  # fmt: skip
        return publishers

    def _note_bundle(self) -> None:
        info = self.engine.info
        self.metrics.bundle_info.replace(1, hash=info["bundle_hash"][:16], model=info["model"]["name"],
                                         backend=str(info["backend"]))  # fmt: skip

    # -- state the HTTP layer reads
    def stall_limit(self) -> float:
        """Seconds without a frame before the source counts as stalled: --stall-timeout, or two --fps intervals."""
        return max(self.config.stall_timeout, 2.0 / self.config.fps if self.config.fps else 0.0)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready only while both threads run, the source is connected and delivered a frame recently.

        ``reasons`` says why not in words, ``codes`` in stable names: stopping, capture_thread_dead,
        inference_thread_dead, source_not_connected, no_frame_yet, source_stalled.
        """
        status = self.capture.status
        now = time.monotonic()
        stalled, limit = self.capture.stalled_for(now), self.stall_limit()
        age = None if status.last_frame_mono is None else round(now - status.last_frame_mono, 3)
        checks: list[tuple[bool, str, str]] = [
            (self.stop_event.is_set(), "stopping", "stopping"),
            (not self.capture.thread.is_alive() and not self.stop_event.is_set(), "capture_thread_dead",
             f"the capture thread is not running (last source error: {status.error})"),
            (not self.worker.thread.is_alive() and not self.stop_event.is_set(), "inference_thread_dead",
             "the inference thread is not running"),
            (not status.connected, "source_not_connected", f"source not connected: {status.error}"),
            (status.last_frame_mono is None, "no_frame_yet",
             "the source has not delivered a frame yet"),
            (status.connected and stalled > limit, "source_stalled",
             f"source stalled: no frame for {stalled:.1f} s (--stall-timeout {limit:g} s)"),
        ]  # fmt: skip
        codes = [code for failed, code, _ in checks if failed]
        reasons = [text for failed, _, text in checks if failed]
        source = {"uri": self.spec.shown, "kind": self.spec.kind, "connected": status.connected,
                  "error": status.error, "frames_since_connect": status.frames, "errors": status.errors,
                  "last_frame_age_s": age, "waiting_for": status.waiting_for,
                  "waiting_s": round(now - status.waiting_since, 3), "stall_timeout_s": limit}  # fmt: skip
        threads = {"capture": self.capture.thread.is_alive(), "inference": self.worker.thread.is_alive()}
        return not reasons, {"reasons": reasons, "codes": codes, "source": source, "threads": threads,
                             "bundle": self.engine.bundle.hash[:16]}  # fmt: skip

    def info(self) -> dict[str, Any]:
        return {
            **self.engine.info,
            "device_id": self.config.device_id,
            "source": {"uri": self.spec.shown, "kind": self.spec.kind},
            "edgekit_serve_version": __version__,
            "started_at": self.started_at,
            "bundle_loaded_at": self.engine.loaded_at,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def reload(self) -> tuple[bool, str]:
        ok, message = self.engine.reload()
        self.metrics.reloads.inc(result="ok" if ok else "failed")
        if ok:
            self._note_bundle()
        return ok, message

    # -- lifecycle
    def start(self) -> None:
        import uvicorn

        from edgekit.serve.http import build_app
        from edgekit.serve.server import ACCEPT_BACKLOG, Predictor, connection_limit, protocol_class

        c = self.config
        self.predictor = Predictor(self.engine, budget=c.decode_budget, wait=c.decode_wait)
        limit = connection_limit(c.max_connections)
        if limit < c.max_connections:
            log.info("at most %d connections (--max-connections %d, under the open-file limit)", limit,
                     c.max_connections)  # fmt: skip
        protocol = protocol_class(header_timeout=c.header_timeout, max_connections=limit)
        config = uvicorn.Config(build_app(self), log_config=None, access_log=False, lifespan="off", http=protocol,
                                timeout_graceful_shutdown=1, timeout_keep_alive=c.idle_timeout, ws="none",
                                backlog=ACCEPT_BACKLOG)  # fmt: skip
        self.server = uvicorn.Server(config)
        self._server_thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                               name="edgekit-http", daemon=True)  # fmt: skip
        self.fanout.start()
        self.worker.start()
        self.capture.start()
        self._server_thread.start()
        host = self.sock.getsockname()[0]
        shown = f"[{host}]" if ":" in host else host
        log.info("listening on http://%s:%d/ (bundle %s, source %s)", shown, self.port,
                 self.engine.bundle.hash[:12], self.spec.shown)  # fmt: skip

    def stop(self) -> bool:
        """Stop everything within STOP_BUDGET seconds; True if every part finished in time."""
        deadline = time.monotonic() + STOP_BUDGET
        self.stop_event.set()
        self.slot.close()
        self.hub.events.close()
        self.hub.frames.close()
        if self.predictor is not None:
            self.predictor.closing = True  # new predicts get 503 from now on
        if self.server is not None:
            self.server.should_exit = True
        self.worker.thread.join(max(0.0, min(0.5, deadline - time.monotonic())))
        late = self.fanout.stop(deadline - 0.2)
        if self.predictor is not None and not self.predictor.close(deadline - 0.1):
            late.append(f"predict ({self.predictor.active} in flight)")
        if self._server_thread is not None:
            self._server_thread.join(max(0.0, deadline - time.monotonic()))
            if self._server_thread.is_alive():
                late.append("http")
        if self.worker.thread.is_alive():
            late.append("inference")
        if not late:
            self.engine.close()  # only when nothing runs in it
        if late:
            log.warning("stopped with parts still busy: %s", ", ".join(late))
        return not late

    def _reload_in_background(self) -> None:
        if not self._reloading.acquire(blocking=False):
            log.info("a reload is already running")
            return

        def work() -> None:
            try:
                self.reload()
            finally:
                self._reloading.release()

        threading.Thread(target=work, name="edgekit-reload", daemon=True).start()

    def run_until_signal(self) -> int:
        """Block in the main thread until SIGTERM/SIGINT; SIGHUP reloads the bundle. Returns 0."""
        requests: list[str] = []
        wake = threading.Event()

        def on_signal(signum, frame) -> None:
            requests.append("reload" if signum == signal.SIGHUP else "stop")
            wake.set()

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, on_signal)
        self.start()
        while True:
            wake.wait(0.5)
            wake.clear()
            while requests:
                if requests.pop(0) == "stop":
                    log.info("stopping")
                    finished = self.stop()
                    log.info("stopped")
                    if not finished:
                        # A native call (decoder, runtime) still runs in a thread: finalizing the interpreter
                        # under it can abort (std::terminate). The work is abandoned anyway: exit now.
                        _exit_now(0)
                    return 0
                log.info("SIGHUP: reloading %s", self.config.bundle)
                self._reload_in_background()
            if self._server_thread is not None and not self._server_thread.is_alive():
                log.error("the HTTP server stopped unexpectedly; stopping")
                self.stop()
                return 1


def _exit_now(code: int) -> None:
    """Flush the logs and end the process at once, without interpreter finalization."""
    import os
    import sys

    for name in ("edgekit.serve", "uvicorn.error", "asyncio"):
        for handler in logging.getLogger(name).handlers:
            handler.flush()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def serve(config: ServeConfig | None = None, /, **fields: Any) -> int:
    """Run the daemon in this process until SIGTERM or SIGINT; return the exit code.

    Give a ``ServeConfig`` (``edgekit.serve.build_config`` makes one from a file and flags), or its fields as
    keywords, which are checked the same way: ``edgekit.serve(bundle="m.edgekit", source="0", mqtt="mqtt://b/x")``
    (``EDGEKIT_SERVE_TOKEN`` gives the token when none is given). The same as ``edgekit serve`` with the flags.
    """
    from edgekit.serve.config import build_config
    from edgekit.serve.server import RateLimitFilter

    if config is None:
        config = build_config(flag_values=fields)
    elif fields:
        raise TypeError("serve() takes a ServeConfig or its fields as keywords, not both")

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s edgekit-serve %(levelname)s %(message)s"))
    handler.addFilter(RateLimitFilter())  # one line per message kind per 10 s: a flood cannot fill the disk
    for name in ("edgekit.serve", "uvicorn.error", "asyncio"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(config.log_level.upper())
        logger.propagate = False
    return Daemon(config).run_until_signal()
