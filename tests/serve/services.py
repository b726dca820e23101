"""Real services for the daemon's tests: a mosquitto broker and a GStreamer RTSP server, each started on a
free loopback port and killed by its PID (and restarted on the same port by the fault tests)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from serve_support import RTSP_SCRIPT, SYSTEM_PYTHON, free_port, require_gi, require_tool, wait_until

MQTT_USER, MQTT_PASSWORD = "edge", "s3cret pass"


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Broker:
    """mosquitto on 127.0.0.1:<port>, with a password file (user edge) and no persistence."""

    def __init__(self, folder: Path, *, tls: dict[str, Path] | None = None) -> None:
        self.exe = require_tool("mosquitto", "mosquitto")
        passwd = require_tool("mosquitto_passwd", "mosquitto")
        self.port = free_port()
        self.password_file = folder / "passwd"
        subprocess.run([passwd, "-b", "-c", str(self.password_file), MQTT_USER, MQTT_PASSWORD], check=True)
        os.chmod(self.password_file, 0o600)
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous false", f"password_file {self.password_file}",
                 "persistence false", "log_dest stderr", "log_type error"]  # fmt: skip
        if os.geteuid() == 0:
            lines.append("user root")  # as root, mosquitto would switch to its own user, who cannot read tmp_path
        if tls:
            lines += [f"cafile {tls['ca']}", f"certfile {tls['cert']}", f"keyfile {tls['key']}"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)  # fmt: skip
        wait_until(lambda: port_open(self.port) or self.proc.poll() is not None, timeout=10, what="mosquitto")
        if self.proc.poll() is not None:
            pytest.fail(f"mosquitto exited with {self.proc.returncode} (config {self.conf.read_text()!r})")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def url(self, prefix: str = "factory", *, password: bool = True, scheme: str = "mqtt") -> str:
        secret = ":" + MQTT_PASSWORD.replace(" ", "%20") if password else ""
        return f"{scheme}://{MQTT_USER}{secret}@127.0.0.1:{self.port}/{prefix}"


class Watcher:
    """A paho subscriber that records every message (topic, payload, qos, retain)."""

    def __init__(self, broker: Broker, topic: str, *, tls_ca: Path | None = None) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, int, bool]] = []
        self._lock = threading.Lock()
        self.topic = topic
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watcher-{os.getpid()}-{time.time()}")
        self.client.username_pw_set(MQTT_USER, MQTT_PASSWORD)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=2)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async("127.0.0.1", broker.port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload, msg.qos, bool(msg.retain)))

    def results(self) -> list[dict[str, Any]]:
        with self._lock:
            return [json.loads(p) for t, p, _, _ in self.messages if t.endswith("/result")]

    def statuses(self) -> list[tuple[str, bool]]:
        with self._lock:
            return [(p.decode(), r) for t, p, _, r in self.messages if t.endswith("/status")]

    def qos_of_results(self) -> set[int]:
        with self._lock:
            return {q for t, _, q, _ in self.messages if t.endswith("/result")}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path).start()
    yield b
    b.kill()


class RtspServer:
    """GStreamer's RTSP server (tests/serve/rtsp_server.py) run by the system Python, which has `gi`."""

    def __init__(self, *, fps: int = 15) -> None:
        require_gi()
        require_tool("gst-launch-1.0", "gstreamer1.0-tools")
        self.port = free_port()
        self.fps = fps
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}/test"

    def start(self) -> RtspServer:
        errors = tempfile.TemporaryFile("w+")
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(RTSP_SCRIPT), str(self.port), "320x240", str(self.fps)],
                                     stdout=subprocess.PIPE, stderr=errors, text=True)  # fmt: skip
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            errors.seek(0)
            pytest.fail(f"the RTSP server did not start: {line!r} {errors.read()[-2000:]}")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def rtsp_server():
    server = RtspServer().start()
    yield server
    server.kill()
