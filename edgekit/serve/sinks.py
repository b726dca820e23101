"""The JSON-lines file sink: one result a line, rotated by size (FILE -> FILE.1 -> ... -> FILE.N).

``--jsonl`` may also name a FIFO (a named pipe, e.g. to a log shipper). A pipe is opened and written
non-blocking: while nobody has it open for reading, or while its reader does not keep up and the pipe is
full, lines are dropped (counted in edgekit_publish_dropped_total), never queued, so a pipe nobody reads
neither blocks the sink nor grows the daemon's memory. A pipe is not rotated. Any other kind of path (a
folder, a device, a socket) is refused at start.
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError
from edgekit.serve.metrics import Metrics
from edgekit.serve.publishers import MiB, Publisher

PIPE_PENDING_LIMIT = 1 * MiB  # the part of a line a full pipe did not take, kept to finish the line
REOPEN_INTERVAL = 1.0  # seconds between attempts to open a pipe that has no reader


def jsonl_kind(path: Path) -> str:
    """'file' (a regular file, or none yet) or 'fifo'; a UsageError for any other kind of path."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file"
    except OSError as exc:
        raise UsageError(f"--jsonl: cannot use '{path}' ({exc.strerror}); pass a file path") from exc
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISFIFO(mode):
        return "fifo"
    raise UsageError(f"--jsonl: '{path}' is not a regular file or a FIFO (named pipe); pass a file path")


class JsonlSink(Publisher):
    """Appends each result as one line and flushes it, so a crash loses no delivered line.

    A line is written whole with one ``write`` call; rotation renames files with ``os.replace`` (each rename is
    atomic, so no file is ever seen half-written), oldest first; as with logrotate, a numbered name is absent for
    the instant between two renames, so a reader of FILE.N retries on FileNotFoundError.
    """

    name = "jsonl"
    queue_size = 1024
    queue_bytes = 4 * MiB

    def __init__(self, path: str | Path, *, max_bytes: int, keep: int, metrics: Metrics | None = None) -> None:
        self.path = Path(path).expanduser()
        self.max_bytes = max_bytes
        self.keep = keep
        self.metrics = metrics
        self.kind = jsonl_kind(self.path)
        self._file = None
        self._fd: int | None = None  # the FIFO's descriptor, non-blocking
        self._pending = b""  # the rest of a line a full pipe took only part of
        self._next_open = 0.0

    def _open(self):
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # held open across results
        return self._file

    def deliver(self, result: Any) -> bool | None:
        line = result.json if hasattr(result, "json") else json.dumps(result, separators=(",", ":"))
        if self._file is None and self.kind == "file":
            self.kind = jsonl_kind(self.path)  # (re)opening: the path may have become a pipe meanwhile
        if self.kind == "fifo":
            return self._deliver_to_pipe((line + "\n").encode())
        f = self._open()
        if f.tell() and f.tell() + len(line) + 1 > self.max_bytes:
            self.rotate()
            self.kind = jsonl_kind(self.path)
            if self.kind == "fifo":
                return self._deliver_to_pipe((line + "\n").encode())
            f = self._open()
        f.write(line + "\n")
        f.flush()
        return None

    # -- a FIFO: non-blocking, never queues more than the rest of one line
    def _dropped(self) -> bool:
        if self.metrics is not None:
            self.metrics.publish_dropped.inc(publisher=self.name)
        return False

    def _pipe(self) -> int | None:
        if self._fd is None:
            now = time.monotonic()
            if now < self._next_open:
                return None
            self._next_open = now + REOPEN_INTERVAL
            try:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # nobody has the pipe open for reading (yet)
                    return None
                raise
        return self._fd

    def _write(self, fd: int, data: bytes) -> int:
        try:
            return os.write(fd, data)
        except BlockingIOError:
            return 0
        except BrokenPipeError:  # the reader went away: reopen later, when one is back
            self._close_pipe()
            return -1

    def _deliver_to_pipe(self, line: bytes) -> bool:
        fd = self._pipe()
        if fd is None:
            return self._dropped()
        if self._pending:  # finish the line a full pipe cut, so the reader never sees half lines joined
            written = self._write(fd, self._pending)
            if written < 0:
                self._pending = b""
                return self._dropped()
            self._pending = self._pending[written:]
            if self._pending:
                return self._dropped()
        written = self._write(fd, line)
        if written <= 0:
            return self._dropped()
        if written < len(line):
            self._pending = line[written:] if len(line) - written <= PIPE_PENDING_LIMIT else b""
        return True

    def _close_pipe(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None

    def rotate(self) -> None:
        """FILE.(keep-1) -> FILE.keep, ..., FILE -> FILE.1; the next line starts a new FILE."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.path.exists():
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def close(self) -> None:
        self._close_pipe()
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
