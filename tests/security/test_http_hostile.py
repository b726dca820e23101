"""Hostile HTTP clients against a real daemon (real uvicorn, real decoders, real ONNX Runtime, real sockets):
huge images, many concurrent decodes, idle sockets at the fd limit, log floods, foreign Host and Origin
headers, short tokens, bad query parameters, truncated images, SIGTERM with predicts in flight."""

from __future__ import annotations

import http.client
import json
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from serve.serve_support import SAMPLE, DaemonProcess, serve_bundle, video_file, wait_until  # noqa: F401

SIDE = 7000
CAT = SAMPLE / "test" / "cat" / "0000.jpg"
TOKEN = "0123456789abcdef0123"


@pytest.fixture(scope="module")
def png16() -> bytes:
    """A flat 7000x7000 16-bit PNG: ~0.3 MB on the wire, 49 megapixels."""
    return cv2.imencode(".png", np.full((SIDE, SIDE, 3), 1000, np.uint16))[1].tobytes()


@pytest.fixture(scope="module")
def big_jpeg() -> bytes:
    """A 7000x7000 JPEG of a noisy gradient, ~0.8 MB."""
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    image = np.stack([x * 255 // SIDE, y * 255 // SIDE, (x + y) * 255 // (2 * SIDE)], -1).astype(np.uint8)
    image = cv2.add(image, np.random.default_rng(0).integers(0, 6, image.shape, dtype=np.uint8))
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 50])[1].tobytes()


def _photo(size=(640, 480)) -> np.ndarray:
    image = cv2.resize(cv2.imread(str(CAT)), size)
    return cv2.add(image, np.random.default_rng(1).integers(0, 30, image.shape, dtype=np.uint8))


class LimitedDaemon(DaemonProcess):
    """DaemonProcess with a file-descriptor limit (``ulimit -n``) set on the daemon before it starts."""

    def __init__(self, args: list[str], *, nofile: int) -> None:
        self.token = None
        self.lines = []
        self.log_bytes = 0

        def limit() -> None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        exe = Path(sys.executable).with_name("edgekit")
        self.proc = subprocess.Popen([str(exe), "serve", "--port", "0", *args], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True, preexec_fn=limit)  # fmt: skip
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = 0

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.log_bytes += len(line)
            if len(self.lines) < 20_000:
                self.lines.append(line.rstrip("\n"))


@pytest.fixture
def spawn():
    started: list[DaemonProcess] = []

    def start(args: list[str], *, nofile: int | None = None, env: dict | None = None) -> DaemonProcess:
        d = LimitedDaemon(args, nofile=nofile) if nofile else DaemonProcess(["--port", "0", *args], env=env)
        started.append(d)
        return d.wait_listening()

    yield start
    for d in started:
        d.kill()


@pytest.fixture(scope="module")
def daemon(serve_bundle, video_file):  # noqa: F811
    d = DaemonProcess([str(serve_bundle), "--source", str(video_file), "--loop", "--realtime", "--port", "0"])
    try:
        d.wait_listening()
        yield d
    finally:
        d.kill()


def _raw(port: int, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send raw bytes; (status, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def _poll_healthz(port: int, done: threading.Event, latencies: list[float], limit: int = 200) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not done.is_set() and len(latencies) < limit:
        start = time.perf_counter()
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b'{"status":"ok"}'
        latencies.append(time.perf_counter() - start)
        time.sleep(0.02)
    conn.close()


@pytest.mark.slow
def test_healthz_answers_while_a_huge_png_decodes(daemon, png16):
    """Old: decoding ran on the event loop; /healthz waited ~3 s behind one 7000x7000 16-bit PNG."""
    latencies: list[float] = []
    done = threading.Event()
    poller = threading.Thread(target=_poll_healthz, args=(daemon.port, done, latencies))
    statuses = []
    poller.start()
    try:
        for _ in range(2):
            statuses.append(daemon.request("POST", "/v1/predict", png16, {"Content-Type": "image/png"})[0])
    finally:
        done.set()
        poller.join(30)
    assert statuses == [200, 200]
    assert len(latencies) >= 20, latencies  # ~30 polls at 20 ms while two decodes ran
    # The aim is 100 ms; the bound is looser for a CI machine shared with other jobs (the old code: ~3 s).
    assert np.median(latencies) < 0.05 and max(latencies) < 0.3, f"/healthz took up to {max(latencies) * 1000:.0f} ms"


@pytest.mark.slow
def test_eight_concurrent_large_jpegs_stay_under_400mb(spawn, serve_bundle, video_file, big_jpeg):  # noqa: F811
    """Old: eight concurrent 7000x7000 JPEGs were decoded at once, VmHWM ~1.1 GB."""
    d = spawn([str(serve_bundle), "--source", str(video_file), "--loop", "--realtime"])
    answers: list[tuple[int, dict, bytes]] = []

    def one() -> None:
        answers.append(d.request("POST", "/v1/predict", big_jpeg, {"Content-Type": "image/jpeg"}, timeout=60))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    hwm = int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{d.proc.pid}/status").read_text()).group(1)) / 1024
    statuses = sorted(a[0] for a in answers)
    assert len(answers) == 8 and set(statuses) <= {200, 503} and 200 in statuses, statuses
    for status, headers, body in answers:
        if status == 503:
            assert int(headers["retry-after"]) >= 1 and "busy" in json.loads(body)["error"]
    assert hwm < 400, f"peak RSS {hwm:.0f} MB"
    assert d.get_json("/healthz") == {"status": "ok"}


@pytest.mark.slow
def test_idle_sockets_do_not_starve_healthz(spawn, serve_bundle, video_file):  # noqa: F811
    """Old: 300 idle sockets under ulimit -n 256 -> /healthz 0 of 5, 35 MB of accept() tracebacks in 12 s."""
    d = spawn([str(serve_bundle), "--source", str(video_file), "--loop", "--realtime"], nofile=256)
    held = []
    try:
        for _ in range(300):
            held.append(socket.create_connection(("127.0.0.1", d.port), timeout=5))
        before = d.log_bytes
        ok = 0
        for _ in range(5):
            try:
                ok += d.request("GET", "/healthz", timeout=3)[0] == 200
            except (OSError, http.client.HTTPException):
                pass
        time.sleep(3)
        assert ok == 5
        assert d.log_bytes - before < 20_000, d.lines[-5:]
        assert "Too many open files" not in d.log, d.lines[-5:]
    finally:
        for s in held:
            s.close()


@pytest.mark.slow
def test_slow_headers_are_cut_off(spawn, serve_bundle, video_file):  # noqa: F811
    """A client that never finishes its request headers is disconnected after --header-timeout."""
    d = spawn([str(serve_bundle), "--source", str(video_file), "--loop", "--realtime", "--header-timeout", "1"])
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        start = time.monotonic()
        closed = False
        while time.monotonic() - start < 6:
            s.sendall(b"X-Slow: 1\r\n")  # slowloris: a header line every 0.2 s
            time.sleep(0.2)
            s.settimeout(0.01)
            try:
                closed = s.recv(100) == b""
            except TimeoutError:
                pass
            except OSError:
                closed = True
            if closed:
                break
    assert closed and time.monotonic() - start < 4


SLOW_BODY = (b"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
             b"Content-Length: 100000\r\n\r\n\x89PNG\r\n\x1a\n")  # fmt: skip


def _answer_or_close(s: socket.socket, wait: float) -> bytes | None:
    """What the daemon sent within ``wait`` s: the bytes up to its close (b"" if it closed at once), or None."""
    s.settimeout(wait)
    data = b""
    try:
        while chunk := s.recv(65536):
            data += chunk
    except TimeoutError:
        return data or None
    except OSError:
        pass
    return data


@pytest.mark.slow
def test_slow_body_is_cut_off(spawn, serve_bundle, video_file):  # noqa: F811
    """Old: a client that sent its headers and then a few body bytes a second held its request, and the
    connection, forever (only headers and idle keep-alive connections had a timeout)."""
    d = spawn([str(serve_bundle), "--source", str(video_file), "--loop", "--realtime", "--body-timeout", "2"])
    with socket.create_connection(("127.0.0.1", d.port), timeout=10) as s:
        s.sendall(SLOW_BODY)
        start = time.monotonic()
        answer, healthz = None, []
        while answer is None and time.monotonic() - start < 8:
            healthz.append(d.request("GET", "/healthz", timeout=3)[0])
            try:
                s.sendall(b"\0" * 4)  # four bytes a quarter of a second: the body never completes
            except OSError:
                pass
            answer = _answer_or_close(s, 0.25)
        elapsed = time.monotonic() - start
    assert answer is not None, "the slow body was not cut off within 8 s"
    assert 1.5 < elapsed < 5, elapsed
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), answer[:300]
    assert b"connection: close" in head.lower() and "--body-timeout" in json.loads(body)["error"]
    assert healthz and set(healthz) == {200}, healthz
    assert d.get_json("/healthz") == {"status": "ok"} and "Traceback" not in d.log


@pytest.mark.slow
def test_slow_bodies_at_the_connection_cap_do_not_starve_healthz(spawn, serve_bundle, video_file):  # noqa: F811
    """Old: connections whose request bodies trickled in counted as busy, so at --max-connections every new
    connection (/healthz too) got 503 until the slow bodies ended; now the slowest body is cut off (408)."""
    d = spawn([str(serve_bundle), "--source", str(video_file), "--loop", "--realtime", "--max-connections", "4",
               "--body-timeout", "60"])  # fmt: skip
    held = [socket.create_connection(("127.0.0.1", d.port), timeout=10) for _ in range(4)]
    try:
        for s in held:
            s.sendall(SLOW_BODY)
            time.sleep(0.05)
        time.sleep(0.3)
        statuses = [d.request("GET", "/healthz", timeout=5)[0] for _ in range(3)]
        assert statuses == [200, 200, 200], statuses
        cut = [_answer_or_close(s, 0.5) for s in held]
        assert cut[0] is not None and cut[0].startswith(b"HTTP/1.1 408 "), cut  # the oldest of equally slow ones
        assert b"--max-connections" in cut[0] and cut[1:] == [None, None, None], cut  # one made room for all three
        assert "Traceback" not in d.log, d.log[-2000:]
    finally:
        for s in held:
            s.close()


@pytest.mark.slow
def test_repeated_errors_are_rate_limited_in_the_log(daemon):
    """Old: every invalid request logged a warning line (a flood fills the disk)."""
    before = len(daemon.lines)
    for _ in range(200):
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=5) as s:
            s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            while s.recv(4096):
                pass
    time.sleep(0.5)
    new = [line for line in daemon.lines[before:] if "Invalid HTTP request" in line]
    assert 1 <= len(new) <= 3, new[:5]
    assert daemon.get_json("/healthz") == {"status": "ok"}


@pytest.mark.slow
@pytest.mark.parametrize("host", ["evil.example", f"evil.example:{8080}", "127.0.0.1.nip.io", "localhost.evil"])
def test_foreign_host_header_is_refused(daemon, host):
    """Old: any Host was accepted on loopback without a token (DNS rebinding)."""
    for method, path in (("GET", "/v1/info"), ("POST", "/v1/reload")):
        status, _, body = daemon.request(method, path, headers={"Host": host})
        assert status == 421 and "Host" in json.loads(body)["error"] and "--allow-host" in json.loads(body)["error"]
    for good in ("127.0.0.1", f"127.0.0.1:{daemon.port}", f"localhost:{daemon.port}", "LOCALHOST", "[::1]:80"):
        assert daemon.request("GET", "/v1/info", headers={"Host": good})[0] == 200, good


@pytest.mark.slow
def test_allow_host_adds_names(spawn, serve_bundle, video_file):  # noqa: F811
    d = spawn([str(serve_bundle), "--source", str(video_file), "--loop", "--realtime",
               "--allow-host", "camera.local,edge.example"])  # fmt: skip
    for good in ("camera.local", f"edge.example:{d.port}", "127.0.0.1"):
        assert d.request("GET", "/v1/info", headers={"Host": good})[0] == 200, good
    assert d.request("GET", "/v1/info", headers={"Host": "other.example"})[0] == 421


@pytest.mark.slow
def test_cross_origin_post_is_refused(daemon):
    """Old: a web page's cross-site POST /v1/reload was carried out."""
    reloads = 'edgekit_bundle_reloads_total{result="ok"}'
    before = daemon.metric(reloads)
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": f"http://localhost:{daemon.port + 1}"}):  # fmt: skip
        status, _, body = daemon.request("POST", "/v1/reload", headers=headers)
        assert status == 403 and "cross-origin" in json.loads(body)["error"], headers
        image = CAT.read_bytes()
        assert daemon.request("POST", "/v1/predict", image, {"Content-Type": "image/jpeg", **headers})[0] == 403
    assert daemon.metric(reloads) == before
    same = {"Origin": f"http://127.0.0.1:{daemon.port}", "Sec-Fetch-Site": "same-origin"}
    assert daemon.request("POST", "/v1/reload", headers=same)[0] == 200


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag", "env"])
def test_short_token_is_refused(serve_bundle, video_file, how):  # noqa: F811
    """Old: any token was taken, even one character."""
    args = [str(Path(sys.executable).with_name("edgekit")), "serve", str(serve_bundle), "--source", str(video_file),
            "--port", "0"]  # fmt: skip
    env = dict(os.environ)
    if how == "flag":
        args += ["--token", "short"]
    else:
        env["EDGEKIT_SERVE_TOKEN"] = "short"
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"the daemon started with a 5-character token:\n{err[-500:]}")
    assert proc.returncode == 2 and "16" in err and "openssl rand -hex 16" in err and "Traceback" not in err, err
    assert ("--token" if how == "flag" else "EDGEKIT_SERVE_TOKEN") in err


@pytest.mark.slow
@pytest.mark.parametrize(
    "query",
    ["top_k=%C2%B2", "top_k=\xb2", "top_k=-1", "top_k=1e3", "top_k=99999", "top_k=0", "top_k=", "top_k=abc",
     "top_k=3&top_k=4", "top_k=%203", "topk=3", "unknown=1", "top_k"],
)  # fmt: skip
def test_bad_query_parameters_are_400(daemon, query):
    """Old: ?top_k=² answered 500 with a traceback; -1, 1e3, 99999 and unknown names were silently ignored."""
    body = CAT.read_bytes()
    request = (f"POST /v1/predict?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/jpeg\r\n"
               f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("latin-1") + body  # fmt: skip
    status, answer = _raw(daemon.port, request)
    assert status == 400, answer[:300]
    message = json.loads(answer)["error"]
    if query == "top_k=\xb2":  # a raw non-ASCII byte in the request line: h11 refuses the request itself
        assert "Invalid HTTP request" in message, message
    else:
        assert "top_k" in message, message
    assert "Traceback" not in daemon.log


@pytest.mark.slow
def test_query_parameters_of_other_endpoints_are_checked(daemon):
    assert daemon.request("GET", "/v1/info?verbose=1")[0] == 400
    assert daemon.request("GET", "/v1/info?access_token=x")[0] == 200  # no token set: ignored
    assert daemon.request("GET", "/healthz?x=1")[0] == 400
    status, _, body = daemon.request("POST", "/v1/predict?top_k=7", CAT.read_bytes(), {"Content-Type": "image/jpeg"})
    assert status == 200 and len(json.loads(body)["top_k"]) == 7


@pytest.mark.slow
def test_truncated_jpeg_with_end_marker_is_400(daemon):
    """Old: libjpeg's 'premature end of data segment' was only a warning; the grey rows were classified (200)."""
    jpeg = cv2.imencode(".jpg", _photo())[1].tobytes()
    status, _, body = daemon.request("POST", "/v1/predict", jpeg[: len(jpeg) // 2] + b"\xff\xd9",
                                     {"Content-Type": "image/jpeg"})  # fmt: skip
    assert status == 400 and "corrupt" in json.loads(body)["error"], body
    png = cv2.imencode(".png", _photo())[1].tobytes()
    status, _, body = daemon.request("POST", "/v1/predict", png[: len(png) // 2] + png[-12:],
                                     {"Content-Type": "image/png"})  # fmt: skip
    assert status == 400 and "corrupt" in json.loads(body)["error"], body
    for variant in (cv2.imencode(".jpg", _photo(), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes(),
                    cv2.imencode(".jpg", cv2.cvtColor(_photo(), cv2.COLOR_BGR2GRAY))[1].tobytes(),
                    jpeg):  # fmt: skip
        status, _, body = daemon.request("POST", "/v1/predict", variant, {"Content-Type": "image/jpeg"})
        assert status == 200 and json.loads(body)["image"] == {"width": 640, "height": 480}, body


SIGTERM_RUNS = 4
IN_FLIGHT = 60


def _predict_raw(port: int, request: bytes, sent: threading.Semaphore, answers: list) -> None:
    """One predict on its own connection: (status, JSON body), "closed" (no answer), or "hang" (read timeout)."""
    data, released = b"", False
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
            s.sendall(request)
            sent.release()
            released = True
            while chunk := s.recv(65536):
                data += chunk
    except TimeoutError:
        answers.append("hang")
        return
    except OSError:  # refused or reset: the daemon closed the connection
        pass
    finally:
        if not released:
            sent.release()
    if not data:
        answers.append("closed")
        return
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        answers.append((int(head.split()[1]), json.loads(body)))
    except (ValueError, IndexError):
        answers.append(("garbled", data[:200]))


@pytest.mark.slow
def test_sigterm_with_predicts_in_flight_exits_0(spawn, serve_bundle, video_file):  # noqa: F811
    """Old: SIGTERM with predicts in flight ended the daemon with SIGABRT ('terminate called without an active
    exception'): decodes ran in OpenCV on the event-loop thread (a daemon thread), stop() gave up after its
    budget, and a decode that returned while the interpreter finalized was killed inside a C++ frame.

    Sixty flat 2000x2000 PNGs (17 kB each, ~50 ms of decoding each) keep the old event loop decoding for
    about three seconds, past the 1.6 s stop budget, so a decode returns during finalization: the old code
    aborted in 23 of 23 runs measured (the earlier design, four 7000x7000 PNGs: about 1 run in 8). Any run
    that fails fails the test; four runs make that near-certain even on a machine where one run got lucky."""
    png = cv2.imencode(".png", np.full((2000, 2000, 3), 100, np.uint8))[1].tobytes()
    request = (f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
               f"Content-Length: {len(png)}\r\nConnection: close\r\n\r\n").encode() + png  # fmt: skip
    for run in range(SIGTERM_RUNS):
        d = spawn([str(serve_bundle), "--source", str(video_file), "--loop", "--realtime"])
        answers: list = []
        sent = threading.Semaphore(0)
        threads = [threading.Thread(target=_predict_raw, args=(d.port, request, sent, answers))
                   for _ in range(IN_FLIGHT)]  # fmt: skip
        for t in threads:
            t.start()
        for _ in range(IN_FLIGHT):
            sent.acquire(timeout=10)
        time.sleep(0.5)  # every request sent and read; the first decodes are under way
        code, seconds = d.stop(signal.SIGTERM, timeout=15)
        for t in threads:
            t.join(20)
        assert code == 0 and seconds < 3.0, (run, code, seconds, d.log[-2000:])
        for bad in ("terminate called", "Fatal Python error", "Traceback"):
            assert bad not in d.log, (run, d.log[-2000:])
        assert not any(t.is_alive() for t in threads) and len(answers) == IN_FLIGHT, (run, len(answers))
        for answer in answers:
            assert answer == "closed" or answer[0] in (200, 503), (run, answer)
            if answer != "closed":
                status, body = answer
                assert ("top_k" in body) if status == 200 else ("stopping" in body["error"] or "busy" in body["error"])
