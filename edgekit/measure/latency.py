"""Latency measurement: warm up, then time repeated calls and report percentiles."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np


def measure(
    fn: Callable[[], object], *, warmup: int = 10, min_runs: int = 50, max_runs: int = 2000, seconds: float = 1.0
) -> dict[str, float]:
    """Call ``fn`` ``warmup`` times, then at least ``min_runs`` times and until ``seconds`` have passed."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < seconds and len(times) < max_runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000.0)
    arr = np.asarray(times)
    return {
        "p50_ms": round(float(np.percentile(arr, 50)), 4),
        "p90_ms": round(float(np.percentile(arr, 90)), 4),
        "p99_ms": round(float(np.percentile(arr, 99)), 4),
        "mean_ms": round(float(arr.mean()), 4),
        "runs": len(times),
    }
