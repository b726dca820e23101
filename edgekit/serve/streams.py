"""The daemon's streams: each a source with its own id, capture thread, frame slot and status.

A stream comes from a ``--source [ID=]URI`` flag (or ``[source] uri``), a ``[[streams]]`` table of the config
file, or ``POST /v1/streams``; ``resolve`` turns the first two into ``StreamSettings``, ``from_table`` does
one table. Every stream names a bundle (the daemon's own by default): the streams of one bundle share one
``Board``, on which that bundle's batch worker waits for frames (see ``edgekit.serve.pipeline``).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from edgekit.errors import UsageError
from edgekit.serve.capture import Board, CaptureLoop, CaptureOptions, LatestFrame
from edgekit.serve.config import Cascade, ServeConfig, StreamTable, split_stream_id, stream_id
from edgekit.serve.metrics import Metrics
from edgekit.serve.sources import SourceError, SourceSpec, parse_source

ORIGINS = ("flags", "file", "api")  # where a stream was declared: --source, [[streams]], POST /v1/streams


@dataclass(frozen=True)
class StreamSettings:
    """Everything one stream runs with, resolved against the daemon's options."""

    id: str
    uri: str
    bundle: str  # the bundle's path, as given (the daemon's own by default)
    capture: CaptureOptions
    queue: int = 1  # 1: the latest frame only; N: a bounded queue
    cascade: Cascade | None = None
    origin: str = "flags"
    table: StreamTable | None = None  # as declared, to compare on a reload

    def spec(self) -> SourceSpec:
        return parse_source(self.uri, resolution=self.capture.resolution, fps=self.capture.fps)

    def describe(self) -> dict[str, Any]:
        shown = self.spec().shown
        out: dict[str, Any] = {"id": self.id, "source": shown, "bundle": self.bundle, "queue": self.queue,
                               "fps": self.capture.fps, "realtime": self.capture.realtime, "loop": self.capture.loop,
                               "origin": self.origin}  # fmt: skip
        if self.cascade is not None:
            out["cascade"] = dataclasses.asdict(self.cascade)
        return out


def _free_id(taken: Iterable[str]) -> str:
    taken = set(taken)
    n = 0
    while f"cam{n}" in taken:
        n += 1
    return f"cam{n}"


def _check_source(uri: str, where: str, capture: CaptureOptions) -> None:
    """The source's form (not whether it answers: a camera may be booting; that is the stream's status)."""
    try:
        parse_source(uri, resolution=capture.resolution, fps=capture.fps)
    except (SourceError, UsageError) as exc:
        raise UsageError(f"{where}: {exc}") from exc


def from_table(table: StreamTable, config: ServeConfig, *, origin: str, taken: Iterable[str],
               where: str = "stream") -> StreamSettings:  # fmt: skip
    """One stream from its table and the daemon's options (its own keys override them); ``taken`` are the
    ids in use, for the default id and the duplicate check."""
    taken = list(taken)
    sid = table.id if table.id is not None else _free_id(taken)
    if sid in taken:
        raise UsageError(f"{where}: stream id '{sid}' is already used; give each stream its own id")
    base = CaptureOptions.from_config(config)
    overrides = {k: getattr(table, k) for k in ("fps", "resolution", "rotate", "loop", "realtime")}
    capture = dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})
    _check_source(table.source, f"{where} '{sid}'", capture)
    return StreamSettings(id=sid, uri=table.source, bundle=table.bundle or config.bundle, capture=capture,
                          queue=table.queue or config.queue, cascade=table.cascade, origin=origin,
                          table=table)  # fmt: skip


def resolve(config: ServeConfig) -> list[StreamSettings]:
    """The streams a configuration declares: its --source entries (``ID=URI`` or ``URI``), then its
    [[streams]] tables; ids default to cam0, cam1, ... and must be unique."""
    out: list[StreamSettings] = []
    for text in config.source or ():
        sid, uri = split_stream_id(text)
        if sid is not None:
            sid = stream_id(sid, "--source")
        table = StreamTable(source=uri, id=sid)
        out.append(from_table(table, config, origin="flags", taken=[s.id for s in out], where="--source"))
    for i, table in enumerate(config.streams):
        where = f"[[streams]] #{i + 1}"
        out.append(from_table(table, config, origin="file", taken=[s.id for s in out], where=where))
    return out


class Stream:
    """A running stream: its capture thread feeding its slot, which its bundle's worker empties."""

    def __init__(self, settings: StreamSettings, board: Board, metrics: Metrics, *, need: Any = None) -> None:
        self.settings = settings
        self.id = settings.id
        self.metrics = metrics
        self.stop_event = threading.Event()  # this stream's own: removing it stops only it
        self.slot = LatestFrame(settings.queue, board=board)
        self.spec = settings.spec()
        self.capture = CaptureLoop(self.spec, settings.capture, self.slot, metrics, self.stop_event,
                                   stream_id=settings.id, need=need)  # fmt: skip
        self.started_at = time.time()
        self.last_result_mono: float | None = None
        self.results = 0

    def start(self) -> None:
        self.capture.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.slot.close()

    def join(self, timeout: float) -> bool:
        self.capture.thread.join(max(0.0, timeout))
        return not self.capture.thread.is_alive()

    def stall_limit(self, stall_timeout: float) -> float:
        fps = self.settings.capture.fps
        return max(stall_timeout, 2.0 / fps if fps else 0.0)

    def readiness(self, stall_timeout: float, now: float | None = None) -> tuple[list[tuple[str, str]], dict[str, Any]]:
        """(failed checks as (code, reason), status) of this stream; no failed check: ready."""
        now = time.monotonic() if now is None else now
        status = self.capture.status
        stalled, limit = self.capture.stalled_for(now), self.stall_limit(stall_timeout)
        age = None if status.last_frame_mono is None else round(now - status.last_frame_mono, 3)
        alive = self.capture.thread.is_alive()
        checks = [
            (not alive and not self.stop_event.is_set(), "capture_thread_dead",
             f"the capture thread is not running (last source error: {status.error})"),
            (not status.connected, "source_not_connected", f"source not connected: {status.error}"),
            (status.last_frame_mono is None, "no_frame_yet", "the source has not delivered a frame yet"),
            (status.connected and stalled > limit, "source_stalled",
             f"source stalled: no frame for {stalled:.1f} s (--stall-timeout {limit:g} s)"),
        ]  # fmt: skip
        failed = [(code, text) for bad, code, text in checks if bad]
        state = "ok" if not failed else ("reconnecting" if status.waiting_for == "backoff" else failed[0][0])
        detail = {
            "id": self.id, "uri": self.spec.shown, "kind": self.spec.kind, "bundle": self.settings.bundle,
            "status": state, "connected": status.connected, "error": status.error,
            "frames_since_connect": status.frames, "errors": status.errors, "last_frame_age_s": age,
            "waiting_for": status.waiting_for, "waiting_s": round(now - status.waiting_since, 3),
            "stall_timeout_s": limit, "reconnects": self.metrics.stream_reconnects.value(stream=self.id),
            "frames_captured": self.metrics.stream_frames_captured.value(stream=self.id),
            "frames_dropped": self.metrics.stream_frames_dropped.value(stream=self.id),
            "frames_inferred": self.metrics.stream_frames_inferred.value(stream=self.id),
            "inference_fps": self.metrics.stream_fps.value(stream=self.id),
            "origin": self.settings.origin,
        }  # fmt: skip
        return failed, detail
