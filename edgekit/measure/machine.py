"""Describe the machine and the software a measurement was taken on. Standard library only.

Runs on devices (``edgekit bench``), so it imports nothing beyond the standard library.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_model() -> str:
    """The CPU's marketing name (Linux /proc/cpuinfo), else what ``platform`` knows."""
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware") and value.strip():
            return value.strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    for line in _read("/proc/cpuinfo").splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def usable_cores() -> int:
    """Cores this process may run on (CPU affinity), which a container may set below the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def memory_total_mb() -> float | None:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None


def device_model() -> str | None:
    """The board's name where the firmware gives one (Jetson, Raspberry Pi): /proc/device-tree/model."""
    text = _read("/proc/device-tree/model").strip("\x00 \n")
    return text or None


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def describe_machine() -> dict[str, Any]:
    """What a reader needs to judge a latency figure: board, CPU, cores, memory, OS."""
    cores = usable_cores()
    memory = memory_total_mb()
    board = device_model()
    cpu = cpu_model()
    parts = [board] if board else []
    parts += [f"{cpu} ({host_arch()})", f"{cores} usable core{'s' if cores != 1 else ''}"]
    if memory:
        parts.append(f"{memory / 1024:.0f} GiB RAM")
    parts.append(f"{platform.system()} {platform.release()}")
    return {
        "summary": ", ".join(parts),
        "device_model": board,
        "cpu": cpu,
        "arch": host_arch(),
        "usable_cores": cores,
        "logical_cpus": os.cpu_count(),
        "memory_total_mb": memory,
        "os": platform.platform(),
    }


def describe_software(runtime: dict[str, Any] | None = None) -> dict[str, Any]:
    """Versions of Python, edgekit, numpy, OpenCV and, if given, the backend runtime's own description."""
    import cv2
    import numpy as np

    from edgekit._version import __version__

    return {
        "python": sys.version.split()[0],
        "edgekit": __version__,
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "runtime": dict(runtime or {}),
    }
