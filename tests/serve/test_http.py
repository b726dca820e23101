"""The HTTP API of a running daemon (real uvicorn, real video decoding, real ONNX Runtime), including the
predict endpoint's fault cases, 8 concurrent clients, the live views and the JSON-lines sink."""

from __future__ import annotations

import http.client
import json
import re
import socket
import threading
import time

import cv2
import numpy as np
import pytest
from serve_support import LABELS, SAMPLE, DaemonProcess, serve_bundle, video_file, wait_until  # noqa: F401

from edgekit.serve.sources import open_reader, parse_source

CAT = SAMPLE / "test" / "cat" / "0000.jpg"


@pytest.fixture(scope="module")
def daemon(serve_bundle, video_file, tmp_path_factory):  # noqa: F811
    jsonl = tmp_path_factory.mktemp("jsonl") / "results.jsonl"
    d = DaemonProcess([str(serve_bundle), "--source", str(video_file), "--loop", "--realtime", "--port", "0",
                       "--device-id", "cam-test", "--jsonl", str(jsonl), "--jsonl-max-bytes", "4KiB",
                       "--jsonl-keep", "2", "--max-body", "1MiB"])  # fmt: skip
    d.jsonl = jsonl
    try:
        d.wait_listening()
        wait_until(lambda: d.request("GET", "/readyz")[0] == 200, timeout=30, what="/readyz to report ready")
        yield d
    finally:
        d.kill()


@pytest.mark.slow
def test_health_ready_info_latest(daemon):
    assert daemon.get_json("/healthz") == {"status": "ok"}
    ready = daemon.get_json("/readyz")
    assert ready["ready"] is True and ready["source"]["connected"] is True and ready["source"]["kind"] == "video"
    info = daemon.get_json("/v1/info")
    assert info["model"]["name"] == "tiny" and info["labels"] == list(LABELS)
    assert info["device_id"] == "cam-test" and info["backend"] == "onnxruntime"
    assert len(info["bundle_hash"]) == 64 and info["selftest"]["passed"] is True
    wait_until(lambda: daemon.request("GET", "/v1/latest")[0] == 200, timeout=10, what="a result")  # 404 before
    latest = daemon.get_json("/v1/latest")
    assert latest["device"] == "cam-test" and latest["label"] in LABELS and len(latest["top_k"]) == 3
    assert latest["e2e_ms"] >= latest["inference_ms"] > 0 and latest["seq"] >= 1
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", latest["captured_at"])
    assert [t["score"] for t in latest["top_k"]] == sorted((t["score"] for t in latest["top_k"]), reverse=True)


@pytest.mark.slow
def test_metrics_are_prometheus_text(daemon):
    status, headers, body = daemon.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    sample = re.compile(r'[a-z_][a-z0-9_]*(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? (-?[0-9.e+-]+|\+Inf)')
    for line in text.splitlines():
        assert line.startswith(("# HELP ", "# TYPE ")) or sample.fullmatch(line), line
    for name in ("frames_captured_total", "frames_dropped_total", "frames_inferred_total", "source_reconnects_total",
                 "publish_failures_total"):  # fmt: skip
        assert f"# TYPE edgekit_{name} counter" in text
    for name in ("inference_latency_seconds", "e2e_latency_seconds"):
        assert f"# TYPE edgekit_{name} histogram" in text and f'edgekit_{name}_bucket{{le="+Inf"}}' in text
    m = daemon.metrics()
    assert 0 < m["edgekit_frames_inferred_total"] <= m["edgekit_frames_captured_total"]
    assert m["edgekit_inference_latency_seconds_count"] <= m["edgekit_frames_inferred_total"]
    assert m['edgekit_published_total{publisher="jsonl"}'] > 0 and m["edgekit_source_connected"] == 1


def _read_sse(daemon, events: int) -> list[dict]:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    conn.request("GET", "/v1/events")
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("content-type").startswith("text/event-stream")
    found = []
    while len(found) < events:
        line = response.readline().decode()
        if line.startswith("data: "):
            found.append(json.loads(line[6:]))
    conn.close()
    return found


@pytest.mark.slow
def test_events_stream_results_in_order(daemon):
    events = _read_sse(daemon, 4)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4
    assert all(e["label"] in LABELS and e["device"] == "cam-test" for e in events)


def _read_mjpeg_parts(daemon, parts: int) -> list[np.ndarray]:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    conn.request("GET", "/v1/stream.mjpg")
    response = conn.getresponse()
    boundary = re.search(r"boundary=(\S+)", response.getheader("content-type")).group(1)
    images = []
    while len(images) < parts:
        assert response.readline().strip() == f"--{boundary}".encode()
        headers = {}
        while (line := response.readline().strip()) != b"":
            key, value = line.decode().split(":", 1)
            headers[key.lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        data = response.read(int(headers["content-length"]))
        response.readline()
        images.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    conn.close()
    return images


@pytest.mark.slow
def test_mjpeg_stream_shows_annotated_frames(daemon):
    images = _read_mjpeg_parts(daemon, 3)
    for image in images:
        # 320x240 MJPEG frames decoded at 1/4 for the 32x32 model (--scaled-decode), scaled up 6x for the text
        assert image is not None and image.shape == (360, 480, 3)
        magenta = np.all(np.abs(image.astype(int) - (255, 0, 255)) < 60, axis=2).mean()
        assert magenta > 0.5
        assert (image[:20, :100].max(axis=2) < 30).any()  # the black label box, top left


@pytest.mark.slow
def test_the_stream_is_itself_an_http_mjpeg_source(daemon):
    """Reading http://.../v1/stream.mjpg through the daemon's own source code (OpenCV's FFmpeg)."""
    reader = open_reader(parse_source(f"http://127.0.0.1:{daemon.port}/v1/stream.mjpg"), timeout=10)
    try:
        frames = [reader.read() for _ in range(3)]
    finally:
        reader.close()
    assert all(f is not None and f.shape == (360, 480, 3) for f in frames)


@pytest.mark.slow
def test_predict_jpeg_and_png(daemon):
    status, _, body = daemon.request("POST", "/v1/predict?top_k=5", CAT.read_bytes(), {"Content-Type": "image/jpeg"})
    assert status == 200, body
    result = json.loads(body)
    assert result["label"] in LABELS and len(result["top_k"]) == 5 and result["image"] == {"width": 32, "height": 32}
    png = cv2.imencode(".png", cv2.imread(str(CAT)))[1].tobytes()
    status, _, body = daemon.request("POST", "/v1/predict", png, {"Content-Type": "image/png"})
    assert status == 200 and json.loads(body)["label"] == result["label"]


def _png_claiming(width: int, height: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


FAULTS = {
    "not an image": (b"hello, this is not an image" * 10, "image/jpeg", 400, "not a JPEG"),
    "zero bytes": (b"", "image/jpeg", 400, "empty body"),
    "50 MB": (b"\xff\xd8\xff" + b"\0" * (50 * 1024 * 1024), "image/jpeg", 413, "exceeds"),
    "truncated JPEG": (CAT.read_bytes()[: len(CAT.read_bytes()) // 2], "image/jpeg", 400, "truncated"),
    "wrong content type": (CAT.read_bytes(), "text/plain", 415, "not supported"),
    "no content type": (CAT.read_bytes(), "", 415, "missing"),
    "PNG sent as JPEG": (cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes(), "image/jpeg", 400, "not a JPEG"),
    "truncated PNG": (cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()[:-20], "image/png", 400, "truncated"),
    "decompression bomb": (_png_claiming(100_000, 100_000), "image/png", 413, "pixels"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", list(FAULTS))
def test_predict_rejects_bad_bodies_and_keeps_serving(daemon, case):
    body, ctype, expected, words = FAULTS[case]
    before = daemon.metric("edgekit_frames_inferred_total")
    status, headers, answer = daemon.request("POST", "/v1/predict", body, {"Content-Type": ctype} if ctype else {})
    assert status == expected, answer[:300]
    assert headers["content-type"] == "application/json" and words in json.loads(answer)["error"]
    assert daemon.get_json("/healthz") == {"status": "ok"}
    wait_until(lambda: daemon.metric("edgekit_frames_inferred_total") > before, timeout=10, what="inference to go on")
    assert daemon.metric(f'edgekit_predict_requests_total{{status="{expected}"}}') >= 1


@pytest.mark.slow
def test_predict_rejects_a_chunked_body_over_the_limit(daemon):
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
    chunks = (b"\xff\xd8\xff" + b"\0" * (1 << 20) for _ in range(50))  # 50 MB, no Content-Length
    conn.request("POST", "/v1/predict", body=chunks, headers={"Content-Type": "image/jpeg"}, encode_chunked=True)
    response = conn.getresponse()
    assert response.status == 413 and "exceeds" in json.loads(response.read())["error"]


@pytest.mark.slow
def test_predict_answers_413_before_the_body_with_expect_continue(daemon):
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as s:
        s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
                  b"Content-Length: 52428800\r\nExpect: 100-continue\r\n\r\n")  # fmt: skip
        head = s.recv(65536).decode()
    assert head.startswith("HTTP/1.1 413"), head


@pytest.mark.slow
def test_eight_concurrent_clients_200_requests_each(daemon, capsys):
    image, latencies, failures = CAT.read_bytes(), [], []
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
        for _ in range(200):
            start = time.perf_counter()
            try:
                conn.request("POST", "/v1/predict", image, {"Content-Type": "image/jpeg"})
                response = conn.getresponse()
                ok = response.status == 200 and json.loads(response.read())["label"] in LABELS
            except (OSError, http.client.HTTPException) as exc:
                ok, conn = False, http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
                failures.append(repr(exc))
            with lock:
                latencies.append(time.perf_counter() - start)
                if not ok:
                    failures.append("bad response")
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures and len(latencies) == 1600
    p50, p99 = np.percentile(np.array(latencies) * 1000, [50, 99])
    with capsys.disabled():
        print(f"\n[serve] POST /v1/predict, 8 clients x 200 requests: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    assert daemon.get_json("/healthz") == {"status": "ok"}


@pytest.mark.slow
def test_jsonl_sink_rotates_by_size(daemon):
    path = daemon.jsonl
    rotated = [path.with_name(path.name + ".2"), path.with_name(path.name + ".1")]
    wait_until(lambda: rotated[0].exists(), timeout=30, what="two rotations")
    assert not path.with_name(path.name + ".3").exists()  # --jsonl-keep 2

    def read_rotated() -> list[tuple[int, list[str]]] | None:
        # The daemon keeps rotating while the test reads: between two renames a numbered name is briefly absent
        # (as with logrotate), so read both files in one pass and retry the pass if one was mid-rename.
        try:
            return [(file.stat().st_size, file.read_text().splitlines()) for file in rotated]
        except FileNotFoundError:
            return None

    for size, lines in wait_until(read_rotated, timeout=10, what="a read of both rotated files"):
        assert 0 < size <= 4096
        seqs = [json.loads(line)["seq"] for line in lines]
        assert seqs == sorted(seqs) and all(json.loads(line)["device"] == "cam-test" for line in lines)


def test_accepted_connections_get_tcp_nodelay():
    """asyncio sets TCP_NODELAY only on sockets made with proto IPPROTO_TCP; without it a keep-alive client
    waited ~40 ms a request (Nagle against delayed ACKs)."""
    import asyncio

    from edgekit.serve.daemon import bind

    async def main() -> int:
        accepted: asyncio.Future = asyncio.get_running_loop().create_future()

        def on_connect(reader, writer) -> None:
            sock = writer.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connect, sock=bind("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        nodelay = await asyncio.wait_for(accepted, 5)
        writer.close()
        server.close()
        return nodelay

    assert asyncio.run(main()) != 0
