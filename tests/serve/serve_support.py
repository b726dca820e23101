"""Real parts for the daemon's tests: bundles, video files, the daemon process.

Not a conftest.py on purpose: test modules import the fixtures they use from here. The shared helpers come
from tests/support.py, which pytest's pythonpath setting makes importable from every folder.

System packages (mosquitto, GStreamer's RTSP server, chromium, tesseract) are required: a missing one
fails the test, naming scripts/install-system-deps. Set EDGEKIT_TESTS_SKIP_MISSING_SYSTEM_DEPS=1 on a
bare developer machine to skip those tests instead.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

import edgekit

HERE = Path(__file__).resolve().parent


from support import CIFAR_SPEC, LABELS, SAMPLE, run_cli  # noqa: E402, F401 - re-exported to the tests

RTSP_SCRIPT = HERE / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"
SKIP_ENV = "EDGEKIT_TESTS_SKIP_MISSING_SYSTEM_DEPS"
MAGENTA = (255, 0, 255)  # BGR; the test video's background, looked for in screenshots


def require_tool(path_or_name: str, package: str) -> str:
    """The tool's path, or fail (skip only with the opt-in env var) naming the package to install."""
    found = shutil.which(path_or_name) or (path_or_name if os.path.isfile(path_or_name) else None)
    if found:
        return found
    message = f"'{path_or_name}' is missing: install Debian's {package} (run scripts/install-system-deps)"
    if os.environ.get(SKIP_ENV) == "1":
        pytest.skip(message)
    pytest.fail(message)


def require_gi() -> None:
    python = require_tool(SYSTEM_PYTHON, "python3")
    check = [python, "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"]
    if subprocess.run(check, capture_output=True).returncode != 0:
        require_tool("/nonexistent/gi-rtsp", "python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition`` until it returns something truthy; fail naming ``what`` after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


# -- bundles and media
def compile_tiny(onnx: Path, out: Path, target: str = "cpu") -> Path:
    edgekit.compile_model(onnx, target=target, precision="fp32", output=out, spec=dict(CIFAR_SPEC), labels=LABELS)
    return out


@pytest.fixture(scope="session")
def serve_bundle(tiny_onnx, tmp_path_factory) -> Path:
    """The tiny model compiled for ONNX Runtime, FP32."""
    return compile_tiny(tiny_onnx, tmp_path_factory.mktemp("serve") / "tiny-ort.edgekit")


@pytest.fixture(scope="session")
def serve_bundle_ov(tiny_onnx, tmp_path_factory) -> Path:
    """The same model compiled for OpenVINO, FP32: a different bundle to swap in."""
    return compile_tiny(tiny_onnx, tmp_path_factory.mktemp("serve") / "tiny-ov.edgekit", target="intel-cpu")


def write_video(path: Path, *, frames: int = 150, size=(320, 240), fps: float = 30, fourcc: str = "MJPG") -> Path:
    """A real video file: a magenta background with a green disc moving across it."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {fourcc} video to {path}")
    for i in range(frames):
        frame = np.empty((size[1], size[0], 3), np.uint8)
        frame[:] = MAGENTA
        cv2.circle(frame, ((i * 4) % size[0], size[1] // 2), size[1] // 8, (0, 255, 0), -1)
        writer.write(frame)
    writer.release()
    return path


@pytest.fixture(scope="session")
def video_file(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "clip.avi")


# -- the daemon as a process
class DaemonProcess:
    """``edgekit serve`` in a subprocess, on a free port; its stderr is collected line by line."""

    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, token: str | None = None) -> None:
        exe = Path(sys.executable).with_name("edgekit")
        self.token = token
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [str(exe), "serve", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_listening(self, timeout: float = 60) -> DaemonProcess:
        def listening():
            if self.proc.poll() is not None:
                self._reader.join(2)
                pytest.fail(f"edgekit serve exited with {self.proc.returncode}:\n{self.log}")
            found = re.search(r"listening on http://[^ ]+:(\d+)/", self.log)
            return int(found.group(1)) if found else 0

        self.port = wait_until(listening, timeout=timeout, what="the daemon to listen")
        return self

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 30) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        headers = dict(headers or {})
        if self.token and "Authorization" not in headers:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def get_json(self, path: str, expect: int = 200) -> Any:
        status, _, body = self.request("GET", path)
        assert status == expect, (path, status, body[:300])
        return json.loads(body)

    def metrics(self) -> dict[str, float]:
        status, _, body = self.request("GET", "/metrics")
        assert status == 200
        series = {}
        for line in body.decode().splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                series[name] = float(value.replace("+Inf", "inf"))
        return series

    def metric(self, name: str, default: float = 0.0) -> float:
        return self.metrics().get(name, default)

    def send_signal(self, sig: int) -> None:
        os.kill(self.proc.pid, sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float]:
        """Send ``sig`` and wait; return (exit code, seconds it took)."""
        start = time.monotonic()
        self.send_signal(sig)
        code = self.proc.wait(timeout)
        self._reader.join(2)
        return code, time.monotonic() - start

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def start_daemon():
    """Start daemons (``start_daemon(args, env=..., token=...)``); each is killed by PID at the end."""
    started: list[DaemonProcess] = []

    def start(args: list[str], *, env: dict[str, str] | None = None, token: str | None = None,
              wait: bool = True) -> DaemonProcess:  # fmt: skip
        daemon = DaemonProcess(["--port", "0", *args], env=env, token=token)
        started.append(daemon)
        return daemon.wait_listening() if wait else daemon

    yield start
    for daemon in started:
        daemon.kill()
