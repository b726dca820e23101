"""The JSON-lines file sink: one result a line, rotated by size (FILE -> FILE.1 -> ... -> FILE.N)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from edgekit.serve.publishers import Publisher


class JsonlSink(Publisher):
    """Appends each result as one line and flushes it, so a crash loses no delivered line.

    A line is written whole with one ``write`` call; rotation renames files with ``os.replace`` (atomic), so a
    reader sees either the old or the new file, never a half-renamed set.
    """

    name = "jsonl"
    queue_size = 1024

    def __init__(self, path: str | Path, *, max_bytes: int, keep: int) -> None:
        self.path = Path(path).expanduser()
        self.max_bytes = max_bytes
        self.keep = keep
        self._file = None

    def _open(self):
        if self._file is None:
            self._file = open(self.path, "a", encoding="utf-8")  # held open across results
        return self._file

    def deliver(self, result: Any) -> None:
        line = result.json if hasattr(result, "json") else json.dumps(result, separators=(",", ":"))
        f = self._open()
        if f.tell() and f.tell() + len(line) + 1 > self.max_bytes:
            self.rotate()
            f = self._open()
        f.write(line + "\n")
        f.flush()

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
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None
