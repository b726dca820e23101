"""Typed options of the OpenVINO backend, from a target file's [backend_options]."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import UsageError

PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")


@dataclass(frozen=True, kw_only=True)
class OpenVINOOptions:
    # OpenVINO's PERFORMANCE_HINT: LATENCY (one stream, all cores on one request) or THROUGHPUT.
    performance_hint: str = "LATENCY"
    # Threads for the CPU plugin; 0 lets OpenVINO pick.
    num_threads: int = 0

    def __post_init__(self) -> None:
        if self.performance_hint not in PERFORMANCE_HINTS:
            raise UsageError(f"performance_hint '{self.performance_hint}' is not one of {', '.join(PERFORMANCE_HINTS)}")
