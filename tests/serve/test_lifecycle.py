"""Lifecycle: SIGTERM/SIGINT during streaming, SIGHUP and POST /v1/reload (a good bundle swapped in, a
corrupt one refused), the bearer token, and start-up errors."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import threading

import pytest
from serve_support import run_cli, serve_bundle, serve_bundle_ov, start_daemon, video_file, wait_until  # noqa: F401
from services import Watcher, broker  # noqa: F401


class StreamReader(threading.Thread):
    """Reads a streaming endpoint until the server closes it; counts the bytes and SSE events."""

    def __init__(self, port: int, path: str, token: str | None = None) -> None:
        super().__init__(daemon=True)
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.conn.request("GET", path, headers={"Authorization": f"Bearer {token}"} if token else {})
        self.response = self.conn.getresponse()
        self.events: list[dict] = []
        self.bytes = 0
        self.start()

    def run(self) -> None:
        try:
            while line := self.response.readline():
                self.bytes += len(line)
                if line.startswith(b"data: "):
                    self.events.append(json.loads(line[6:]))
        except (OSError, http.client.HTTPException):
            pass


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_during_streaming(sig, broker, start_daemon, serve_bundle, video_file, tmp_path):  # noqa: F811
    jsonl = tmp_path / "results.jsonl"
    watcher = Watcher(broker, "factory/#")
    try:
        daemon = start_daemon([str(serve_bundle), "--source", str(video_file), "--loop", "--device-id", "cam1",
                               "--mqtt", broker.url(), "--jsonl", str(jsonl)])  # fmt: skip
        events = StreamReader(daemon.port, "/v1/events")
        stream = StreamReader(daemon.port, "/v1/stream.mjpg")
        wait_until(lambda: len(events.events) >= 3 and stream.bytes > 10_000 and watcher.results(), timeout=20,
                   what="results on every channel")  # fmt: skip
        code, seconds = daemon.stop(sig)
        assert code == 0 and seconds < 2.0, daemon.log
        events.join(5)
        stream.join(5)
        assert not events.is_alive() and not stream.is_alive()  # the server closed the streams
        wait_until(lambda: ("offline", False) in watcher.statuses(), timeout=5, what="'offline'")
        lines = jsonl.read_text().splitlines()
        assert lines and all(json.loads(line)["device"] == "cam1" for line in lines)  # flushed, whole lines
        assert "stopped" in daemon.log and "Traceback" not in daemon.log
    finally:
        watcher.close()


@pytest.mark.slow
def test_reload_swaps_the_bundle_and_refuses_a_corrupt_one(
    tmp_path,
    start_daemon,  # noqa: F811
    serve_bundle,  # noqa: F811
    serve_bundle_ov,  # noqa: F811
    video_file,  # noqa: F811
):
    model = tmp_path / "model.edgekit"
    shutil.copytree(serve_bundle, model)
    daemon = start_daemon([str(model), "--source", str(video_file), "--loop", "--realtime"])
    old = daemon.get_json("/v1/info")
    events = StreamReader(daemon.port, "/v1/events")
    wait_until(lambda: events.events, timeout=10, what="events")
    shutil.rmtree(model)
    shutil.copytree(serve_bundle_ov, model)
    daemon.send_signal(signal.SIGHUP)
    new = wait_until(lambda: (i := daemon.get_json("/v1/info"))["bundle_hash"] != old["bundle_hash"] and i,
                     timeout=30, what="the new bundle after SIGHUP")  # fmt: skip
    assert new["backend"] == "openvino" and old["backend"] == "onnxruntime"
    wait_until(lambda: events.events[-1]["bundle"] == new["bundle_hash"][:16], timeout=10,
               what="events from the new bundle on the same connection")  # fmt: skip
    assert events.is_alive()  # the HTTP server never dropped the client
    model_file = model / json.loads((model / "manifest.json").read_text())["backend"]["model_file"]
    model_file.write_bytes(model_file.read_bytes() + b"\0")  # corrupt: the checksum no longer matches
    status, _, body = daemon.request("POST", "/v1/reload")
    assert status == 409 and "previous bundle keeps running" in json.loads(body)["error"]
    assert daemon.get_json("/v1/info")["bundle_hash"] == new["bundle_hash"]
    m = daemon.metrics()
    assert (
        m['edgekit_bundle_reloads_total{result="ok"}'] == 1 and m['edgekit_bundle_reloads_total{result="failed"}'] == 1
    )
    inferred = m["edgekit_frames_inferred_total"]
    wait_until(lambda: daemon.metric("edgekit_frames_inferred_total") > inferred + 5, timeout=10, what="inference")


@pytest.mark.slow
def test_token_guards_every_endpoint_but_healthz(start_daemon, serve_bundle, video_file):  # noqa: F811
    daemon = start_daemon([str(serve_bundle), "--source", str(video_file), "--loop", "--realtime", "--host", "0.0.0.0"],
                          env={"EDGEKIT_SERVE_TOKEN": "tok-123-0123456789"})  # fmt: skip
    for path in ("/", "/readyz", "/metrics", "/v1/info", "/v1/latest", "/v1/events", "/v1/stream.mjpg"):
        status, headers, body = daemon.request("GET", path)
        assert (
            status == 401
            and "bearer token" in json.loads(body)["error"]
            and "bearer" in headers["www-authenticate"].lower()
        )
    assert daemon.request("POST", "/v1/reload")[0] == 401
    assert daemon.request("GET", "/v1/info", headers={"Authorization": "Bearer nope"})[0] == 401
    assert daemon.request("GET", "/healthz")[0] == 200
    assert daemon.request("GET", "/v1/info", headers={"Authorization": "Bearer tok-123-0123456789"})[0] == 200
    assert daemon.request("GET", "/v1/info?access_token=tok-123-0123456789")[0] == 200
    status, _, body = daemon.request("POST", "/v1/reload", headers={"Authorization": "Bearer tok-123-0123456789"})
    assert status == 200 and json.loads(body)["reloaded"] is True


@pytest.mark.slow
def test_binding_beyond_loopback_needs_a_token(serve_bundle, video_file):  # noqa: F811
    result = run_cli("serve", str(serve_bundle), "--source", str(video_file), "--host", "0.0.0.0",
                     env={"EDGEKIT_SERVE_TOKEN": ""})  # fmt: skip
    assert result.returncode == 2 and "--token" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_start_up_errors_are_one_line(tmp_path, serve_bundle, video_file):  # noqa: F811
    missing = run_cli("serve", str(tmp_path / "nope.edgekit"), "--source", str(video_file))
    assert missing.returncode == 2 and "nope.edgekit" in missing.stderr and "Traceback" not in missing.stderr
    broken = tmp_path / "broken.edgekit"
    shutil.copytree(serve_bundle, broken)
    (broken / "selftest.npz").write_bytes(b"garbage")
    result = run_cli("serve", str(broken), "--source", str(video_file))
    assert result.returncode == 1 and result.stderr.startswith("edgekit: error:") and "Traceback" not in result.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = run_cli("serve", str(serve_bundle), "--source", str(video_file), "--port", str(port))
    assert taken.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in taken.stderr
