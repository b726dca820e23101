"""A small progress bar on stderr: one redrawn line on a terminal, one line a step otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``Progress(total)``; ``start(label)`` a step, ``note(text)`` within it, ``advance()`` when it is done."""

    def __init__(self, total: int, *, stream: TextIO | None = None, width: int = 24, enabled: bool = True) -> None:
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = enabled
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.label = ""
        self.started = time.monotonic()

    def _bar(self) -> str:
        filled = round(self.width * self.done / self.total)
        elapsed = int(time.monotonic() - self.started)
        return (
            f"[{'#' * filled}{'.' * (self.width - filled)}] {self.done}/{self.total} {elapsed // 60}:{elapsed % 60:02d}"
        )

    def _emit(self, text: str) -> None:
        if not self.enabled:
            return
        if self.tty:
            line = f"{self._bar()} {text}"[:160]
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(f"edgekit: [{self.done + 1}/{self.total}] {text}\n")
        self.stream.flush()

    def start(self, label: str) -> None:
        self.label = label
        self._emit(label)

    def note(self, text: str) -> None:
        self._emit(f"{self.label}: {text}")

    def advance(self, outcome: str = "done") -> None:
        if self.enabled and self.tty:
            self.stream.write("\r\x1b[2K")
        if self.enabled:
            self.stream.write(f"edgekit: [{self.done + 1}/{self.total}] {self.label}: {outcome}\n")
            self.stream.flush()
        self.done += 1

    def message(self, text: str) -> None:
        """A line outside the steps (printed above the bar on a terminal)."""
        if not self.enabled:
            return
        self.stream.write(("\r\x1b[2K" if self.tty else "") + f"edgekit: {text}\n")
        self.stream.flush()
