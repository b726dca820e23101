"""The daemon: wires streams -> frame slots -> batched inference -> publishers, serves HTTP, handles signals.

Threads: one capture thread a stream, one inference thread a bundle (it batches the frames of every stream
on that bundle), one per publisher (http, stream, mqtt, jsonl) and the HTTP server (uvicorn, its own event
loop). Streams are added, changed and removed at run time (the HTTP API, SIGHUP) without touching the
others. The main thread waits for signals: SIGTERM/SIGINT stop the daemon within 2 s (publishing
``offline`` and flushing the sinks), SIGHUP reloads the bundles and the config file's [[streams]].
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from typing import Any

from edgekit._version import __version__
from edgekit.errors import EdgekitError, UsageError
from edgekit.serve import streams
from edgekit.serve.capture import Board
from edgekit.serve.config import ServeConfig, StreamTable, validated
from edgekit.serve.engine import Engine, needed_size
from edgekit.serve.live import LiveHub, StreamPublisher
from edgekit.serve.metrics import Metrics
from edgekit.serve.pipeline import BatchWorker
from edgekit.serve.publishers import Fanout, Publisher
from edgekit.serve.sources import parse_source

log = logging.getLogger("edgekit.serve")
STOP_BUDGET = 1.6  # seconds from SIGTERM to exit, leaving margin under the 2 s promise
DEFAULT_BATCH = 8  # --max-batch when neither the flag nor the bundle's tuned settings say


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
        declared = streams.resolve(config)  # every stream's form is checked before anything loads
        self.engine = Engine(config.bundle, device=config.device, top_k=config.top_k)
        self.engines: dict[str, Engine] = {config.bundle: self.engine}
        self._note_bundle()
        self.streams: dict[str, streams.Stream] = {}
        self.boards: dict[str, Board] = {}
        self.workers: dict[str, BatchWorker] = {}
        self._worker_stops: dict[str, threading.Event] = {}
        self._on_bundle: dict[str, tuple[streams.Stream, ...]] = {}
        self._changing = threading.RLock()  # adds, removes, changes and reloads, one at a time
        self._started = False
        try:
            for settings in declared:
                self._add(settings)
            self.sock = bind(config.host, config.port)
        except BaseException:
            for engine in self.engines.values():
                engine.close()
            raise
        self.port = self.sock.getsockname()[1]
        self.hub = LiveHub()
        self.fanout = Fanout(self._publishers(), self.metrics)
        for worker in self.workers.values():
            worker.fanout = self.fanout
        self.metrics.collectors.append(self._collect)
        self.server = None
        self.predictor = None
        self._server_thread: threading.Thread | None = None
        self._reloading = threading.Lock()

    # -- streams
    @property
    def first(self) -> streams.Stream | None:
        return next(iter(self.streams.values()), None)

    def _engine(self, path: str) -> Engine:
        """The loaded bundle at ``path`` (loaded now if no stream uses it yet); BundleError if it does not load."""
        engine = self.engines.get(path)
        if engine is None:
            engine = Engine(path, device=self.config.device, top_k=self.config.top_k)
            self.engines[path] = engine
        return engine

    def _refresh(self, bundle: str) -> None:
        self._on_bundle[bundle] = tuple(s for s in self.streams.values() if s.settings.bundle == bundle)

    def _add(self, settings: streams.StreamSettings) -> streams.Stream:
        with self._changing:
            if settings.id in self.streams:
                raise UsageError(f"stream id '{settings.id}' is already used; give each stream its own id")
            if len(self.streams) >= self.config.max_streams:
                raise UsageError(f"{len(self.streams)} streams run already, the --max-streams limit; remove one or "
                                 "raise --max-streams")  # fmt: skip
            engine = self._engine(settings.bundle)
            if settings.cascade is not None:
                if engine.info["model"]["task"] != "detection":
                    raise UsageError(f"stream '{settings.id}': a cascade needs a detector first, but "
                                     f"{settings.bundle} is a {engine.info['model']['task']} bundle")  # fmt: skip
                self._engine(settings.cascade.bundle)
            board = self.boards.setdefault(settings.bundle, Board())
            scaled = self.config.scaled_decode and not settings.capture.resolution  # --resolution sizes frames itself
            stream = streams.Stream(settings, board, self.metrics, need=needed_size(engine) if scaled else None)
            self.streams[settings.id] = stream
            self._refresh(settings.bundle)
            if settings.bundle not in self.workers:
                stop = threading.Event()
                self._worker_stops[settings.bundle] = stop
                self.workers[settings.bundle] = BatchWorker(
                    engine=engine, board=board, streams=lambda b=settings.bundle: self._on_bundle.get(b, ()),
                    fanout=getattr(self, "fanout", None), metrics=self.metrics, device_id=self.config.device_id,
                    stop=stop, max_batch=self.config.max_batch or engine.bundle.batch_size or DEFAULT_BATCH,
                    max_wait=self.config.max_wait_ms / 1000,
                    cascade_engine=self.engines.get,
                )  # fmt: skip
                if self._started:
                    self.workers[settings.bundle].start()
            if self._started:
                stream.start()
                log.info("stream %s: %s on %s", settings.id, stream.spec.shown, settings.bundle)
            return stream

    def _remove(self, stream_id: str, *, timeout: float = 1.0) -> None:
        with self._changing:
            stream = self.streams.pop(stream_id)
            stream.stop()
            bundle = stream.settings.bundle
            self._refresh(bundle)
            stream.join(timeout)
            self.metrics.stream_removed(stream_id)
            if getattr(self, "hub", None) is not None:
                self.hub.forget(stream_id)
            worker = self.workers.get(bundle)
            if worker is not None:
                worker.forget(stream_id)
            if not self._on_bundle.get(bundle) and bundle != self.config.bundle and worker is not None:
                self._worker_stops.pop(bundle).set()
                self.boards[bundle].notify()
                worker.thread.join(timeout) if worker.thread.is_alive() else None
                self.workers.pop(bundle)
                self.boards.pop(bundle, None)
            self._close_unused()
            log.info("stream %s removed", stream_id)

    def _close_unused(self) -> None:
        used = {self.config.bundle} | {s.settings.bundle for s in self.streams.values()}
        used |= {s.settings.cascade.bundle for s in self.streams.values() if s.settings.cascade is not None}
        for path in [p for p in self.engines if p not in used and p not in self.workers]:
            self.engines.pop(path).close()

    def add_stream(self, table: StreamTable, *, origin: str = "api") -> dict[str, Any]:
        """Add a stream at run time (``POST /v1/streams``, a reload); its status. UsageError if refused."""
        with self._changing:
            if origin == "api":
                self._check_api_source(table)
            where = "stream" if origin == "api" else "[[streams]]"
            settings = streams.from_table(table, self.config, origin=origin, taken=list(self.streams), where=where)
            return self._describe(self._add(settings))

    def remove_stream(self, stream_id: str) -> None:
        """Stop and remove a stream (``DELETE /v1/streams/ID``); KeyError if there is none by that id."""
        if stream_id not in self.streams:
            raise KeyError(stream_id)
        self._remove(stream_id)

    def change_stream(self, stream_id: str, table: StreamTable, *, origin: str = "api") -> dict[str, Any]:
        """Replace a stream's settings (``PUT /v1/streams/ID``): checked first, so a bad change leaves it running."""
        with self._changing:
            old = self.streams.get(stream_id)
            if old is None:
                raise KeyError(stream_id)
            table = dataclasses.replace(table, id=stream_id)
            if origin == "api":
                self._check_api_source(table)
            others = [k for k in self.streams if k != stream_id]
            settings = streams.from_table(table, self.config, origin=old.settings.origin if origin == "file" else origin,
                                          taken=others, where="stream")  # fmt: skip
            self._engine(settings.bundle)  # loads (or fails) before the old stream stops
            if settings.cascade is not None:
                self._engine(settings.cascade.bundle)
            self._remove(stream_id)
            return self._describe(self._add(settings))

    def _check_api_source(self, table: StreamTable) -> None:
        """What a request may open: cameras and network streams; files and folders only under --api-file-root;
        never a GStreamer pipeline (it can read and write any file)."""
        try:
            spec = parse_source(table.source)
        except UsageError as exc:
            raise UsageError(f"stream: {exc}") from exc
        if spec.kind == "gstreamer":
            raise UsageError("stream: a GStreamer pipeline cannot be added through the HTTP API (it can read and "
                             "write any file); declare it in the config file or with --source")  # fmt: skip
        if spec.kind in ("video", "images"):
            root = self.config.api_file_root
            if root is None:
                raise UsageError(f"stream: file and folder sources ('{spec.shown}') can be added through the HTTP "
                                 "API only under --api-file-root DIR; start the daemon with it, or use --source")  # fmt: skip
            base = os.path.realpath(root)
            paths = [spec.uri, *spec.files] if spec.kind == "images" else [spec.uri]
            for path in paths:
                real = os.path.realpath(path)
                if os.path.commonpath([base, real]) != base:
                    raise UsageError(f"stream: '{spec.shown}' is outside --api-file-root {root}; "
                                     "give a file or folder under it")  # fmt: skip

    def _describe(self, stream: streams.Stream) -> dict[str, Any]:
        failed, detail = stream.readiness(self.config.stall_timeout)
        return {**detail, "ready": not failed, "reasons": [text for _, text in failed],
                "settings": stream.settings.describe()}  # fmt: skip

    def stream_status(self) -> list[dict[str, Any]]:
        return [self._describe(s) for s in list(self.streams.values())]

    def _collect(self) -> None:
        """Before /metrics renders: each stream's age of its last frame."""
        now = time.monotonic()
        for stream in list(self.streams.values()):
            last = stream.capture.status.last_frame_mono
            if last is not None:
                self.metrics.stream_last_frame_age.set(round(now - last, 3), stream=stream.id)

    def reload_streams(self) -> tuple[bool, str]:
        """SIGHUP: the --config file's [[streams]] again: new ones added, missing ones removed, changed ones
        restarted; streams from flags and the API are left alone. A file that does not load changes nothing."""
        path = self.config.config_file
        if not path:
            return True, "no --config file: streams unchanged"
        from edgekit.serve.config import load_toml

        try:
            tables = load_toml(path).get("streams", ())
        except UsageError as exc:
            log.error("config reload failed, streams unchanged: %s", exc)
            return False, str(exc)
        with self._changing:
            current = {k: s for k, s in self.streams.items() if s.settings.origin == "file"}
            wanted, errors, done = {}, [], []
            for table in tables:
                wanted[table.id or self._file_id(table, current)] = table
            for sid in [k for k in current if k not in wanted]:
                self._remove(sid)
                done.append(f"removed {sid}")
            for sid, table in wanted.items():
                try:
                    if sid in current:
                        if current[sid].settings.table != dataclasses.replace(table, id=current[sid].settings.table.id):
                            self.change_stream(sid, table, origin="file")
                            done.append(f"changed {sid}")
                    else:
                        self.add_stream(dataclasses.replace(table, id=table.id or sid), origin="file")
                        done.append(f"added {sid}")
                except (UsageError, EdgekitError) as exc:
                    errors.append(f"{sid}: {exc}")
        for line in errors:
            log.error("config reload: stream %s", line)
        message = "; ".join(done) or "streams unchanged"
        log.info("config reload: %s", message)
        return not errors, message + ("; failed: " + "; ".join(errors) if errors else "")

    def _file_id(self, table: StreamTable, current: dict[str, streams.Stream]) -> str:
        """A file stream without an id keeps the id it got (matched by its source), else takes a free one."""
        for sid, stream in current.items():
            if stream.settings.table is not None and stream.settings.table.source == table.source:
                return sid
        return streams._free_id(self.streams)

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
        self.metrics.note_bundle(info["model"]["task"], info["labels"])

    # -- state the HTTP layer reads
    def stall_limit(self) -> float:
        """Seconds without a frame before a stream counts as stalled: --stall-timeout, or two --fps intervals."""
        return max(self.config.stall_timeout, 2.0 / self.config.fps if self.config.fps else 0.0)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready only while the inference threads run and every stream is connected and delivered a frame
        recently (one stream down is not ready: what a probe should see; ``streams`` says which).

        ``reasons`` says why not in words (each naming its stream), ``codes`` in stable names: stopping,
        no_streams, capture_thread_dead, inference_thread_dead, source_not_connected, no_frame_yet, source_stalled.
        """
        now = time.monotonic()
        failed: list[tuple[str, str]] = []
        if self.stop_event.is_set():
            failed.append(("stopping", "stopping"))
        running = list(self.streams.values())
        if not running:
            failed.append(("no_streams", "no stream runs: add one (POST /v1/streams) or pass --source"))
        for bundle, worker in list(self.workers.items()):
            if not worker.thread.is_alive() and not self.stop_event.is_set():
                failed.append(("inference_thread_dead", f"the inference thread of {bundle} is not running"))
        details = []
        for stream in running:
            bad, detail = stream.readiness(self.config.stall_timeout, now)
            prefix = f"stream {stream.id}: " if len(running) > 1 else ""
            failed += [(code, prefix + text) for code, text in bad]
            details.append(detail)
        codes = list(dict.fromkeys(code for code, _ in failed))
        reasons = [text for _, text in failed]
        first = details[0] if details else None
        threads = {"capture": all(s.capture.thread.is_alive() for s in running) if running else False,
                   "inference": all(w.thread.is_alive() for w in self.workers.values())}  # fmt: skip
        out = {"reasons": reasons, "codes": codes, "streams": details, "threads": threads,
               "bundle": self.engine.bundle.hash[:16]}  # fmt: skip
        if first is not None:  # the first stream as "source", as before there were several
            out["source"] = {k: first[k] for k in ("uri", "kind", "connected", "error", "frames_since_connect",
                                                   "errors", "last_frame_age_s", "waiting_for", "waiting_s",
                                                   "stall_timeout_s")}  # fmt: skip
        return not reasons, out

    def info(self) -> dict[str, Any]:
        first = self.first
        return {
            **self.engine.info,
            "device_id": self.config.device_id,
            "source": None if first is None else {"uri": first.spec.shown, "kind": first.spec.kind},
            "streams": [s.settings.describe() for s in list(self.streams.values())],
            "bundles": {
                path: {"bundle_hash": e.info["bundle_hash"], "model": e.info["model"]}
                for path, e in list(self.engines.items())
            },
            "batching": {
                "max_batch": {b: w.max_batch for b, w in list(self.workers.items())},
                "max_wait_ms": self.config.max_wait_ms,
            },
            "edgekit_serve_version": __version__,
            "started_at": self.started_at,
            "bundle_loaded_at": self.engine.loaded_at,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def reload(self) -> tuple[bool, str]:
        """Every bundle loaded again from its path (each swapped in only if it verifies)."""
        results = [(path, *engine.reload()) for path, engine in list(self.engines.items())]
        ok = all(r[1] for r in results)
        self.metrics.reloads.inc(result="ok" if ok else "failed")
        self._note_bundle()
        if len(results) == 1:
            return results[0][1], results[0][2]
        return ok, "; ".join(message for _, _, message in results)

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
        with self._changing:
            self._started = True
            for worker in self.workers.values():
                worker.start()
            for stream in self.streams.values():
                stream.start()
        self._server_thread.start()
        host = self.sock.getsockname()[0]
        shown = f"[{host}]" if ":" in host else host
        names = ", ".join(f"{s.id}={s.spec.shown}" for s in self.streams.values())
        log.info("listening on http://%s:%d/ (bundle %s, streams %s)", shown, self.port,
                 self.engine.bundle.hash[:12], names)  # fmt: skip

    def stop(self) -> bool:
        """Stop everything within STOP_BUDGET seconds; True if every part finished in time."""
        deadline = time.monotonic() + STOP_BUDGET
        self.stop_event.set()
        for stream in list(self.streams.values()):
            stream.stop()
        for stop in self._worker_stops.values():
            stop.set()
        for board in self.boards.values():
            board.notify()
        self.hub.events.close()
        self.hub.frames.close()
        if self.predictor is not None:
            self.predictor.closing = True  # new predicts get 503 from now on
        if self.server is not None:
            self.server.should_exit = True
        for worker in self.workers.values():
            if worker.thread.is_alive():
                worker.thread.join(max(0.0, min(0.5, deadline - time.monotonic())))
        late = self.fanout.stop(deadline - 0.2)
        if self.predictor is not None and not self.predictor.close(deadline - 0.1):
            late.append(f"predict ({self.predictor.active} in flight)")
        if self._server_thread is not None:
            self._server_thread.join(max(0.0, deadline - time.monotonic()))
            if self._server_thread.is_alive():
                late.append("http")
        if any(w.thread.is_alive() for w in self.workers.values()):
            late.append("inference")
        if not late:
            for engine in self.engines.values():
                engine.close()  # only when nothing runs in it
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
                self.reload_streams()
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
                log.info("SIGHUP: reloading the bundles%s", " and the [[streams]] of " + self.config.config_file
                         if self.config.config_file else "")  # fmt: skip
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
