"""Hostile inputs to the daemon's capture pipeline, health and memory (``edgekit serve``), driven over real HTTP.

A resolution no frame can have, a capture that fails at run time, a source that stops delivering, a
JSON-lines FIFO nobody reads, a PNG bomb and a file name that is not UTF-8 in an image folder, a broker
that is down. Each case ran against the code before the fix and failed there.
"""

from __future__ import annotations

import fcntl
import json
import os
import struct
import termios
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from serve.serve_support import run_cli, serve_bundle, start_daemon, video_file, wait_until, write_video  # noqa: F401

from edgekit.serve.images import MAX_PIXELS
from edgekit.serve.metrics import Metrics

MB = 1024 * 1024


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _ready(daemon) -> tuple[int, dict]:
    status, _, body = daemon.request("GET", "/readyz")
    return status, json.loads(body)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int, *, full: bool) -> bytes:
    """A PNG whose header declares width x height RGB pixels.

    ``full``: its IDAT holds every row (all zeros) as real zlib data, a few hundred KB per 100 megapixels,
    built by repeating one fully-flushed deflate block; otherwise the IDAT holds ten rows (a tiny file).
    """
    row = width * 3 + 1
    if not full:
        idat = zlib.compress(bytes(row * 10), 9)
    else:
        rows_per_block = 100
        assert height % rows_per_block == 0
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        block = c.compress(bytes(row * rows_per_block)) + c.flush(zlib.Z_FULL_FLUSH)
        tail = c.flush()
        total = row * height
        adler = ((total % 65521) << 16) | 1  # Adler-32 of `total` zero bytes
        idat = b"\x78\xda" + block * (height // rows_per_block) + tail + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def good_images(folder: Path, count: int = 3) -> list[Path]:
    paths = []
    for i in range(count):
        image = np.full((48, 64, 3), 40 * i, np.uint8)
        cv2.circle(image, (32, 24), 10, (0, 255, 0), -1)
        path = folder / f"a{i}.{'png' if i % 2 else 'jpg'}"
        cv2.imwrite(str(path), image)
        paths.append(path)
    return paths


# -- point 5: health that tells the truth
@pytest.mark.slow
def test_huge_resolution_is_a_clear_error(serve_bundle, video_file):  # noqa: F811
    """The issue's --resolution 200000x200000 (a 120 GB frame): refused at start, not a dead capture thread."""
    for flag in ("200000x200000", "8193x100"):
        done = run_cli("serve", str(serve_bundle), "--source", str(video_file), "--port", "0", "--resolution", flag,
                       timeout=30)  # fmt: skip
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2, done.stderr
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "--resolution" in lines[0] and "8192" in lines[0], lines[0]
    help_text = run_cli("serve", "--help", timeout=30).stdout
    assert "8192" in help_text


@pytest.mark.slow
def test_readyz_reports_a_dead_capture_thread(tmp_path, start_daemon, serve_bundle):  # noqa: F811
    """A file in the folder that made the old capture thread raise (OpenCV refuses to decode a header that
    declares over 1 gigapixel) ended that thread, and /readyz went on answering ready with no frames. Now
    the file is skipped and counted, frames keep flowing, and when no good image is left /readyz says so."""
    folder = tmp_path / "frames"
    folder.mkdir()
    good = good_images(folder)
    (folder / "z-giant.png").write_bytes(png_declaring(40_000, 40_000, full=False))
    daemon = start_daemon([str(serve_bundle), "--source", str(folder), "--loop", "--reconnect-delay", "0.2",
                           "--reconnect-max-delay", "0.5"])  # fmt: skip
    wait_until(lambda: daemon.metric("edgekit_frames_inferred_total") >= 4 * len(good), timeout=20,
               what="frames past the giant file (the capture thread must not die on it)")  # fmt: skip
    status, ready = _ready(daemon)
    assert status == 200 and ready["threads"] == {"capture": True, "inference": True}, ready
    assert daemon.metric("edgekit_source_files_skipped_total") >= 1
    assert "skipped image" in daemon.log and "40000x40000" in daemon.log

    for path in good:  # only the hostile file is left: the source delivers nothing any more
        path.unlink()
    status, ready = wait_until(lambda: (r := _ready(daemon))[0] == 503 and r, timeout=10 + 5,
                               what="/readyz to report the source delivers nothing")  # fmt: skip
    assert ready["ready"] is False and ready["reasons"] and ready["codes"], ready
    assert set(ready["codes"]) & {"source_not_connected", "source_stalled"}, ready
    assert ready["threads"]["capture"] is True and ready["source"]["uri"] == str(folder)
    assert daemon.get_json("/healthz") == {"status": "ok"} and daemon.proc.poll() is None


@pytest.mark.slow
def test_readyz_reports_a_stalled_source(tmp_path, start_daemon, serve_bundle):  # noqa: F811
    """A realtime file that pauses (its header claims 0.01 fps: 100 s between frames) delivered one frame and
    then nothing; the old /readyz said ready all along. Now it says stalled after the stall timeout (the
    default, 10 s). The same file read at the model's pace (no --realtime) is not stalled."""
    slow = write_video(tmp_path / "slow.avi", frames=5, size=(64, 48), fps=0.01)
    paced = start_daemon([str(serve_bundle), "--source", str(slow), "--loop"])
    daemon = start_daemon([str(serve_bundle), "--source", str(slow), "--realtime"])
    wait_until(lambda: daemon.metric("edgekit_frames_inferred_total") >= 1, timeout=20, what="the first frame")
    status, ready = wait_until(lambda: (r := _ready(daemon))[0] == 503 and r, timeout=10 + 6,
                               what="/readyz to report the stall")  # fmt: skip
    assert "source_stalled" in ready["codes"] and any("stalled" in r for r in ready["reasons"]), ready
    assert ready["source"]["connected"] is True and ready["source"]["waiting_for"] == "source"
    assert ready["source"]["last_frame_age_s"] > 10 and ready["source"]["stall_timeout_s"] == 10
    assert daemon.metric("edgekit_frames_captured_total") == 1

    assert paced.metric("edgekit_frames_inferred_total") >= 100  # it ran as long, at the model's pace
    status, ready = _ready(paced)
    assert status == 200 and ready["codes"] == [], ready


def test_readyz_before_any_frame_and_with_threads_not_running(serve_bundle, video_file):  # noqa: F811
    """Readiness itself, on a daemon built but not started: no thread runs and no frame has arrived."""
    from edgekit.serve.config import build_config
    from edgekit.serve.daemon import Daemon

    config = build_config(flag_values={"bundle": str(serve_bundle), "source": str(video_file), "port": 0})
    daemon = Daemon(config)
    try:
        ready, detail = daemon.readiness()
        assert ready is False
        assert {"capture_thread_dead", "inference_thread_dead", "no_frame_yet"} <= set(detail["codes"]), detail
        assert detail["threads"] == {"capture": False, "inference": False}
    finally:
        daemon.sock.close()
        daemon.engine.close()


# -- point 6: memory that stays bounded
@pytest.mark.slow
def test_jsonl_fifo_nobody_reads_keeps_memory_bounded(tmp_path, start_daemon, serve_bundle):  # noqa: F811
    """--jsonl on a FIFO: first with nobody at the other end (the old sink blocked in open() while its queue
    filled with results holding their frames), then with a reader that never reads (the pipe fills up)."""
    video = write_video(tmp_path / "big.avi", frames=60, size=(640, 480))  # 900 KiB a frame
    fifo = tmp_path / "results.pipe"
    os.mkfifo(fifo)
    daemon = start_daemon([str(serve_bundle), "--source", str(video), "--loop", "--jsonl", str(fifo)])
    pid = daemon.proc.pid
    wait_until(lambda: daemon.metric("edgekit_frames_inferred_total") >= 50, timeout=30, what="frames")
    base = _status_kb(pid, "VmRSS")
    start_inferred = daemon.metric("edgekit_frames_inferred_total")
    time.sleep(5)  # nobody has the FIFO open: frames flow at full speed
    assert daemon.metric("edgekit_frames_inferred_total") > start_inferred + 100
    assert (_status_kb(pid, "VmRSS") - base) / 1024 < 100, "RSS grew with nobody reading the FIFO"

    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # one opener that never reads
    try:

        def pipe_bytes() -> int:
            return struct.unpack("i", fcntl.ioctl(reader, termios.FIONREAD, b"\0\0\0\0"))[0]

        wait_until(lambda: pipe_bytes() > 0, timeout=10, what="the daemon to write into the FIFO")
        time.sleep(5)
        inferred = daemon.metric("edgekit_frames_inferred_total")
        time.sleep(1)
        assert daemon.metric("edgekit_frames_inferred_total") > inferred + 20  # inference never stalls
        assert (_status_kb(pid, "VmRSS") - base) / 1024 < 100, "RSS grew with the FIFO full"
        assert (_status_kb(pid, "VmHWM") - base) / 1024 < 150
        assert daemon.metric('edgekit_publish_dropped_total{publisher="jsonl"}') > 100
        status, ready = _ready(daemon)
        assert status == 200, ready
        data = os.read(reader, 1 << 20)
        lines = data.decode().splitlines()
        assert lines and data.endswith(b"\n") and all(json.loads(line)["seq"] >= 1 for line in lines)  # whole lines
    finally:
        os.close(reader)
    print(
        f"FIFO: VmRSS grew {(_status_kb(pid, 'VmRSS') - base) / 1024:.1f} MB, VmHWM {_status_kb(pid, 'VmHWM') / 1024:.0f} MB"
    )
    code, _ = daemon.stop()
    assert code == 0 and "Traceback" not in daemon.log, daemon.log


@pytest.mark.slow
def test_jsonl_refuses_a_path_that_is_not_a_file_or_fifo(tmp_path, serve_bundle, video_file):  # noqa: F811
    folder = tmp_path / "out"
    folder.mkdir()
    done = run_cli("serve", str(serve_bundle), "--source", str(video_file), "--port", "0", "--jsonl", str(folder),
                   timeout=30)  # fmt: skip
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "--jsonl" in done.stderr and "not a regular file or a FIFO" in done.stderr


@pytest.mark.slow
def test_png_bomb_in_image_folder_is_skipped(tmp_path, start_daemon, serve_bundle):  # noqa: F811
    """A 1.2 MB PNG that declares 20000x20000 pixels (1.2 GB decoded, all zlib of zeros) among good images:
    skipped on its header, counted and logged; the good images keep being served; memory stays bounded."""
    folder = tmp_path / "frames"
    folder.mkdir()
    good = good_images(folder)
    bomb = png_declaring(20_000, 20_000, full=True)
    assert len(bomb) < 2 * MB and 20_000 * 20_000 > MAX_PIXELS
    (folder / "a1-bomb.png").write_bytes(bomb)  # sorted among the good ones
    daemon = start_daemon([str(serve_bundle), "--source", str(folder), "--loop"])
    wait_until(lambda: daemon.metric("edgekit_frames_inferred_total") >= 3 * len(good), timeout=60,
               what="three passes over the folder")  # fmt: skip
    hwm_mb = _status_kb(daemon.proc.pid, "VmHWM") / 1024
    print(f"PNG bomb: VmHWM {hwm_mb:.0f} MB")
    assert hwm_mb < 600, f"VmHWM {hwm_mb:.0f} MB"
    assert daemon.metric("edgekit_source_files_skipped_total") >= 2
    status, ready = _ready(daemon)
    assert status == 200, ready
    assert daemon.log.count("skipped image") == 1  # rate-limited: one line, not one per pass
    assert "20000x20000" in daemon.log


@pytest.mark.slow
def test_non_utf8_file_name_in_image_folder(tmp_path, start_daemon, serve_bundle):  # noqa: F811
    """A file name that is not UTF-8 (a Latin-1 camera upload): OpenCV's imread crashed the whole daemon
    (SIGSEGV) on it. Now the file is read by the daemon and decoded from memory."""
    folder = tmp_path / "frames"
    folder.mkdir()
    good_images(folder, count=2)
    image = np.full((48, 64, 3), 200, np.uint8)
    ok, data = cv2.imencode(".png", image)
    assert ok
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), "wb") as f:
        f.write(data.tobytes())
    daemon = start_daemon([str(serve_bundle), "--source", str(folder), "--loop"])
    wait_until(lambda: daemon.proc.poll() is not None or daemon.metric("edgekit_frames_inferred_total") >= 12,
               timeout=20, what="frames")  # fmt: skip
    assert daemon.proc.poll() is None, f"the daemon died ({daemon.proc.returncode}):\n{daemon.log}"
    assert daemon.metric("edgekit_source_files_skipped_total") == 0


def test_image_headers_are_read_before_decoding(tmp_path):
    """The header sizes of real JPEG, PNG, BMP and WebP files (lossy, lossless, extended), and the checks."""
    from edgekit.serve.sources import image_size, read_image_file

    image = np.zeros((37, 53, 3), np.uint8)
    rgba = np.zeros((37, 53, 4), np.uint8)
    cases = [(".jpg", image, []), (".png", image, []), (".bmp", image, []),
             (".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 80]), (".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101]),
             (".webp", rgba, [cv2.IMWRITE_WEBP_QUALITY, 80])]  # fmt: skip
    for suffix, pixels, params in cases:
        ok, data = cv2.imencode(suffix, pixels, params)
        assert ok
        assert image_size(data.tobytes()) == (53, 37), (suffix, params, data.tobytes()[:40])
    assert image_size(b"GIF89a" + bytes(40)) is None
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(20_000, 20_000, full=False))
    with pytest.raises(ValueError, match="declares 20000x20000"):
        read_image_file(str(bomb))
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8\xff" + bytes(1024))
    with pytest.raises(ValueError, match="over the 100-byte limit"):
        read_image_file(str(big), max_bytes=100)
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file"):  # and it does not hang
        read_image_file(str(fifo))


def test_mqtt_buffer_is_bounded_in_bytes_while_the_broker_is_down():
    """Nothing listens on the broker's port: results wait in the buffer, bounded by bytes as well as count."""
    from serve.serve_support import free_port

    from edgekit.serve.mqtt import MqttPublisher

    class Big:
        json = "x" * 10_000  # a 10 kB result (e.g. --top-k 1000)

    metrics = Metrics()
    publisher = MqttPublisher(f"mqtt://127.0.0.1:{free_port()}/t", device_id="cam", metrics=metrics, buffer=1000,
                              buffer_bytes=100_000)  # fmt: skip
    try:
        for _ in range(50):
            assert publisher.deliver(Big()) is False
        assert metrics.mqtt_buffered.value() == 10
        assert metrics.publish_dropped.value(publisher="mqtt") == 40
    finally:
        publisher.close()


def test_publisher_queues_are_bounded_in_bytes_and_hold_no_frame():
    """A publisher stuck in deliver: its queue stays under queue_bytes, drops the oldest (counted), and only a
    publisher that asks for the frame gets a result that carries one."""
    from edgekit.serve.pipeline import Result
    from edgekit.serve.publishers import Fanout, Publisher

    release = threading.Event()

    class Stuck(Publisher):
        name = "stuck"
        queue_size = 10_000
        queue_bytes = 50_000

        def __init__(self) -> None:
            self.seen: list = []

        def deliver(self, result):
            self.seen.append(result)
            release.wait(10)

    class Viewer(Stuck):
        name = "viewer"
        queue_bytes = 10 * MB

        def wants_image(self, result=None) -> bool:
            return True

    metrics = Metrics()
    stuck, viewer = Stuck(), Viewer()
    fanout = Fanout([stuck, viewer], metrics)
    fanout.start()
    frame = np.zeros((480, 640, 3), np.uint8)
    try:
        for seq in range(1, 2001):
            result = Result(device_id="d", seq=seq, captured_at=0.0, inference_ms=1.0, e2e_ms=1.0, fps=1.0,
                            model="m", bundle_hash="0" * 64, top_k=[{"label": "cat", "score": 1.0}])  # fmt: skip
            fanout.publish(result, image=frame)
        count, size = fanout.publishers[0].queued
        assert size <= 50_000 and count < 2000
        assert metrics.publish_dropped.value(publisher="stuck") >= 2000 - count - 1
        _, viewer_bytes = fanout.publishers[1].queued
        assert viewer_bytes <= 10 * MB  # frames are 900 KiB: a dozen at most
        wait_until(lambda: stuck.seen and viewer.seen, timeout=5, what="deliveries")
        assert stuck.seen[0].image is None and viewer.seen[0].image is not None
    finally:
        release.set()
        fanout.stop(time.monotonic() + 5)
