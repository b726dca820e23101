"""The dashboard in a real browser: headless Chromium loads /, and its screenshot must show the stream
(the test video's magenta frames) and the latest result's text (read back with tesseract OCR)."""

from __future__ import annotations

import re
import subprocess

import cv2
import numpy as np
import pytest
from serve_support import LABELS, require_tool, serve_bundle, start_daemon, video_file, wait_until  # noqa: F401

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--window-size=1100,700"]  # fmt: skip


def _screenshot(chromium: str, url: str, out, profile, size: str = "1100,700") -> np.ndarray | None:
    flags = [f for f in CHROMIUM_FLAGS if not f.startswith("--window-size")] + [f"--window-size={size}"]
    subprocess.run([chromium, *flags, f"--user-data-dir={profile}", f"--screenshot={out}", url],
                   capture_output=True, timeout=60)  # fmt: skip
    return cv2.imread(str(out)) if out.exists() else None


def _magenta_fraction(image: np.ndarray) -> float:
    return float(np.all(np.abs(image.astype(int) - (255, 0, 255)) < 50, axis=2).mean())


@pytest.mark.slow
def test_dashboard_shows_the_stream_and_the_result(tmp_path, start_daemon, serve_bundle, video_file):  # noqa: F811
    chromium = require_tool("chromium", "chromium")
    tesseract = require_tool("tesseract", "tesseract-ocr")
    daemon = start_daemon([str(serve_bundle), "--source", str(video_file), "--loop", "--realtime", "--token", "t0k-0123456789abcdef"],
                          token="t0k-0123456789abcdef")  # fmt: skip
    wait_until(lambda: daemon.request("GET", "/v1/latest")[0] == 200, timeout=20, what="a result")  # 404 until then
    url = f"http://127.0.0.1:{daemon.port}/?access_token=t0k-0123456789abcdef"
    shot, shown = None, None
    for attempt in range(3):  # the first frames may still be on their way when the page is captured
        shot = _screenshot(chromium, url, tmp_path / f"shot{attempt}.png", tmp_path / f"profile{attempt}")
        assert shot is not None, "chromium wrote no screenshot"
        text = subprocess.run([tesseract, str(tmp_path / f"shot{attempt}.png"), "stdout"], capture_output=True,
                              text=True, timeout=60).stdout  # fmt: skip
        shown = re.search(r"Latest result\s+(\w+)\s+score (\d+\.\d)%", text)
        if _magenta_fraction(shot) > 0.15 and shown:
            break
    assert _magenta_fraction(shot) > 0.15, "the stream image is not on the page"
    assert shown, f"no result text on the page; OCR read:\n{text}"
    assert shown.group(1) in LABELS  # the label the model gave, not the "waiting" placeholder
    compact = re.sub(r"\s+", "", text)  # OCR may drop the spaces of "End to end"
    assert all(word in compact for word in ("FPS", "Inference", "Endtoend", "Frame")), text


@pytest.mark.slow
def test_dashboard_shows_a_card_for_every_stream(tmp_path, start_daemon, serve_bundle, video_file):  # noqa: F811
    """Two streams: two cards, each with its stream's name, its result and its status; a stream removed
    through the API goes from the page."""
    chromium = require_tool("chromium", "chromium")
    tesseract = require_tool("tesseract", "tesseract-ocr")
    daemon = start_daemon([str(serve_bundle), "--source", f"north={video_file}", "--source", f"south={video_file}",
                           "--loop", "--realtime"])  # fmt: skip
    wait_until(lambda: all(daemon.request("GET", f"/v1/latest?stream={s}")[0] == 200 for s in ("north", "south")),
               timeout=20, what="a result of each stream")  # fmt: skip
    url = f"http://127.0.0.1:{daemon.port}/"
    text = ""
    for attempt in range(3):
        _screenshot(chromium, url, tmp_path / f"two{attempt}.png", tmp_path / f"p{attempt}", "1100,1500")
        text = subprocess.run([tesseract, str(tmp_path / f"two{attempt}.png"), "stdout"], capture_output=True,
                              text=True, timeout=60).stdout  # fmt: skip
        compact = re.sub(r"\s+", "", text)
        if "streamnorth" in compact and "streamsouth" in compact and compact.count("Latestresult") == 2:
            break
    assert "streamnorth" in compact and "streamsouth" in compact, text
    assert compact.count("Latestresult") == 2 and compact.count("ok|frameage") == 2, text
    assert daemon.request("DELETE", "/v1/streams/south")[0] == 200
    for attempt in range(3):
        _screenshot(chromium, url, tmp_path / f"one{attempt}.png", tmp_path / f"q{attempt}", "1100,1500")
        text = subprocess.run([tesseract, str(tmp_path / f"one{attempt}.png"), "stdout"], capture_output=True,
                              text=True, timeout=60).stdout  # fmt: skip
        if "streamsouth" not in re.sub(r"\s+", "", text):
            break
    compact = re.sub(r"\s+", "", text)
    assert "streamnorth" in compact and "streamsouth" not in compact, text
