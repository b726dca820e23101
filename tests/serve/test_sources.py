"""Sources: parsing, real video files (MJPG, mp4v), image folders and patterns, the capture loop (latest
frame, loop, reconnect), the camera path's error handling (there is no camera here), a file cut short
while it is read, and an RTSP server killed and restarted mid-stream."""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np
import pytest
from serve_support import serve_bundle, start_daemon, wait_until, write_video  # noqa: F401
from services import rtsp_server  # noqa: F401

from edgekit.errors import UsageError
from edgekit.serve.capture import CaptureLoop, CaptureOptions, Frame, LatestFrame
from edgekit.serve.metrics import Metrics
from edgekit.serve.sources import SourceError, open_reader, opencv_has_gstreamer, parse_source


@pytest.fixture
def frames_dir(tmp_path):
    for i in range(3):
        image = np.full((40, 60, 3), 50 * i, np.uint8)
        cv2.imwrite(str(tmp_path / f"f{i}.{'png' if i % 2 else 'jpg'}"), image)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_parse_source_kinds(tmp_path, frames_dir):
    video = write_video(tmp_path / "v.avi", frames=5)
    assert parse_source("0").kind == "camera" and parse_source("0").target == 0
    assert parse_source("/dev/video3").kind == "camera"
    assert parse_source("rtsp://cam.local/s").kind == "network" and parse_source("https://x/m.mjpg").live
    assert parse_source("rtsp://admin:pw@cam.local:554/s").shown == "rtsp://admin:***@cam.local:554/s"
    assert parse_source(str(video)).kind == "video" and not parse_source(str(video)).live
    folder = parse_source(str(frames_dir))
    assert folder.kind == "images" and len(folder.files) == 3
    assert len(parse_source(str(frames_dir / "*.png")).files) == 1
    with pytest.raises(UsageError, match="not a camera"):
        parse_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(UsageError, match="holds no images"):
        parse_source(str(tmp_path / "*.gif"))


@pytest.mark.skipif(opencv_has_gstreamer(), reason="this OpenCV has GStreamer; the error path is for builds without")
@pytest.mark.parametrize("source", ["csi://0", "videotestsrc ! videoconvert ! appsink"])
def test_gstreamer_sources_need_opencv_with_gstreamer(source):
    with pytest.raises(UsageError, match="built without GStreamer"):
        parse_source(source)


@pytest.mark.parametrize("fourcc,suffix", [("MJPG", "avi"), ("mp4v", "mp4")])
def test_video_files_decode(tmp_path, fourcc, suffix):
    path = write_video(tmp_path / f"clip.{suffix}", frames=12, fourcc=fourcc)
    reader = open_reader(parse_source(str(path)))
    frames = []
    while (frame := reader.read()) is not None:
        frames.append(frame)
    reader.close()
    assert len(frames) == 12 and frames[0].shape == (240, 320, 3) and reader.nominal_fps == 30
    assert np.abs(frames[0][5, 5].astype(int) - (255, 0, 255)).max() < 40  # the magenta background


def test_missing_camera_is_a_source_error():
    for source in ("7", "/dev/video7"):
        with pytest.raises(SourceError, match="does not exist"):
            open_reader(parse_source(source))


def _run_capture(spec, options, stop_after):
    slot, metrics, stop = LatestFrame(), Metrics(), threading.Event()
    loop = CaptureLoop(spec, options, slot, metrics, stop)
    loop.start()
    frames: list[Frame] = []

    def collect() -> bool:
        if (frame := slot.get(0.2)) is not None:
            frames.append(frame)
        return stop_after(frames, metrics)

    wait_until(collect, timeout=20, what="the capture loop")
    stop.set()
    loop.thread.join(5)
    return frames, metrics


def test_capture_loops_a_folder_with_rotation_and_resize(frames_dir):
    options = CaptureOptions(loop=True, rotate=90, resolution=(30, 20), fps=200)
    frames, metrics = _run_capture(parse_source(str(frames_dir)), options, lambda f, m: len(f) >= 8)
    assert all(f.image.shape == (30, 20, 3) for f in frames)  # resized to 30x20, then turned upright
    assert [f.seq for f in frames] == sorted(f.seq for f in frames)
    assert metrics.source_reconnects.value() == 0  # looping is not reconnecting


def test_capture_reconnects_at_the_end_without_loop(frames_dir):
    options = CaptureOptions(loop=False, fps=200, reconnect_delay=0.05, reconnect_max_delay=0.1)
    _, metrics = _run_capture(parse_source(str(frames_dir)), options,
                                   lambda f, m: m.source_reconnects.value() >= 2 and len(f) >= 4)  # fmt: skip
    assert metrics.frames_captured.value() >= 6


def test_latest_frame_drops_stale_frames():
    slot = LatestFrame()
    image = np.zeros((2, 2, 3), np.uint8)
    assert slot.put(Frame(image, 1, 0.0, 0.0)) is False
    assert slot.put(Frame(image, 2, 0.0, 0.0)) is True  # frame 1 was never taken: dropped
    assert slot.get(0.1).seq == 2 and slot.get(0.01) is None


def test_files_are_read_at_the_models_pace(frames_dir):
    """Without --realtime a folder or file waits for the model: no frame is dropped."""
    options = CaptureOptions(loop=True)
    frames, metrics = _run_capture(parse_source(str(frames_dir)), options, lambda f, m: len(f) >= 9)
    assert [f.seq for f in frames[:9]] == list(range(1, 10))
    assert metrics.frames_dropped.value() == 0


@pytest.mark.slow
def test_daemon_without_a_camera_reports_not_ready(start_daemon, serve_bundle):  # noqa: F811
    """There is no /dev/video* here: the V4L2 path is exercised only up to its error handling."""
    daemon = start_daemon([str(serve_bundle), "--source", "/dev/video7", "--reconnect-delay", "0.1",
                           "--reconnect-max-delay", "0.2"])  # fmt: skip
    wait_until(lambda: daemon.metric("edgekit_source_reconnects_total") >= 2, timeout=15, what="reconnect attempts")
    ready = daemon.get_json("/readyz", expect=503)
    assert ready["ready"] is False and "does not exist" in ready["reasons"][0]
    assert daemon.get_json("/healthz") == {"status": "ok"}
    assert daemon.get_json("/v1/latest", expect=404)["error"].startswith("no result yet")


@pytest.mark.slow
def test_file_cut_short_while_read(tmp_path, start_daemon, serve_bundle):  # noqa: F811
    video = write_video(tmp_path / "long.avi", frames=240)  # 8 s at --realtime
    daemon = start_daemon([str(serve_bundle), "--source", str(video), "--realtime", "--reconnect-delay", "0.2"])
    wait_until(lambda: daemon.metric("edgekit_frames_inferred_total") >= 15, timeout=20, what="frames")
    os.truncate(video, video.stat().st_size // 3)  # cut short under the reader, beyond what it has read
    wait_until(lambda: daemon.metric("edgekit_source_reconnects_total") >= 1, timeout=20, what="the reconnect")
    inferred = daemon.metric("edgekit_frames_inferred_total")
    wait_until(lambda: daemon.metric("edgekit_frames_inferred_total") >= inferred + 10, timeout=20,
               what="frames to resume from the shortened file")  # fmt: skip
    assert daemon.metric("edgekit_source_connected") == 1 and "ended after" in daemon.log
    assert daemon.proc.poll() is None


@pytest.mark.slow
def test_rtsp_server_killed_and_restarted(rtsp_server, start_daemon, serve_bundle):  # noqa: F811
    daemon = start_daemon([str(serve_bundle), "--source", rtsp_server.url, "--fps", "5", "--source-timeout", "2",
                           "--reconnect-delay", "0.2", "--reconnect-max-delay", "1"])  # fmt: skip
    wait_until(lambda: daemon.metric("edgekit_frames_inferred_total") >= 5, timeout=30, what="RTSP frames")
    assert daemon.metric("edgekit_frames_skipped_total") > 0  # 15 fps stream, --fps 5 cap
    rtsp_server.kill()
    wait_until(lambda: daemon.request("GET", "/readyz")[0] == 503, timeout=20, what="/readyz to say not ready")
    rtsp_server.start()
    inferred = daemon.metric("edgekit_frames_inferred_total")
    wait_until(lambda: daemon.metric("edgekit_frames_inferred_total") >= inferred + 5, timeout=40,
               what="frames to resume after the RTSP server came back")  # fmt: skip
    assert daemon.metric("edgekit_source_reconnects_total") >= 1
    assert daemon.get_json("/readyz")["ready"] is True and daemon.proc.poll() is None
