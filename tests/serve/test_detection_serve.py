"""A detector served by the daemon (issue 13, point 6): the committed reference detector on frames made from
the committed scenes, a real mosquitto broker, real HTTP (uvicorn), ONNX Runtime, and the dashboard in
headless Chromium read back by OCR.

Frames are PNG (lossless), so the daemon's pixels are the test's and its detections can be compared with
``Bundle.predict`` on the same frame. Each frame is a scene scaled up 2x (nearest) on a 320x256 grey canvas,
off centre: the letterbox then scales and pads both axes differently, and the stream scales the frame up
for its text (320 px wide, so 2x), which the drawn boxes must follow.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from serve_support import LABELS, DaemonProcess, require_tool, start_daemon, wait_until  # noqa: F401
from services import Watcher, broker  # noqa: F401
from support import MODELS, ROOT

import edgekit
from edgekit.serve.live import annotate
from edgekit.serve.metrics import OTHER_CLASS, Metrics

DETECTOR = MODELS / "detector"
SCENES = ROOT / "examples" / "data" / "scenes"
FRAME_W, FRAME_H, OFFSET_X = 320, 256, 40  # the scene, 256x256, at x 40..296
FRAMES = 12  # the first scenes of the validation split
RESULT_KEYS = {"device", "stream", "batch", "seq", "captured_at", "captured_unix", "inference_ms", "e2e_ms", "fps", "detections", "model",
               "bundle"}  # fmt: skip
DETECTION_KEYS = {"box", "score", "class_id", "label"}


# -- the bundle and the frames
@pytest.fixture(scope="session")
def detector_bundle(tmp_path_factory) -> Path:
    """The reference detector compiled for ONNX Runtime, FP32, calibrated on the committed scenes."""
    out = tmp_path_factory.mktemp("detector") / "detector-cpu-fp32.edgekit"
    edgekit.compile_model(DETECTOR / "model.onnx", spec=DETECTOR / "model.toml", target="cpu", precision="fp32",
                          output=out, calib=SCENES / "calib")  # fmt: skip
    return out


@pytest.fixture(scope="session")
def detector(detector_bundle):
    with edgekit.load_bundle(detector_bundle) as bundle:
        yield bundle


def scene_frame(index: int) -> np.ndarray:
    """Validation scene ``index`` scaled up 2x (nearest) on a 320x256 grey canvas (BGR)."""
    scene = cv2.imread(str(SCENES / "val" / f"{index:06d}.jpg"), cv2.IMREAD_COLOR)
    frame = np.full((FRAME_H, FRAME_W, 3), 96, np.uint8)
    frame[:, OFFSET_X : OFFSET_X + 256] = cv2.resize(scene, (256, 256), interpolation=cv2.INTER_NEAREST)
    return frame


def expected(bundle, frame: np.ndarray) -> list[dict]:
    return bundle.predict(frame, color_order="BGR").to_json()["detections"]


def assert_same_detections(got: list[dict], want: list[dict], *, box_px: float = 0.05, score: float = 1e-4) -> None:
    """Equal detections (same order, labels and classes; boxes and scores within the given tolerances)."""
    assert [(d["label"], d["class_id"]) for d in got] == [(d["label"], d["class_id"]) for d in want], (got, want)
    for g, w in zip(got, want, strict=True):
        assert set(g) == DETECTION_KEYS
        assert np.allclose(g["box"], w["box"], atol=box_px, rtol=0), (g, w)
        assert abs(g["score"] - w["score"]) <= score, (g, w)


def message_schema() -> dict:
    """The detection message's JSON Schema, as docs/serve.md gives it (the block after its marker)."""
    text = (ROOT / "docs" / "serve.md").read_text()
    found = re.search(r"<!-- detection-message-schema -->\s*```json\n(.*?)\n```", text, re.S)
    assert found, "docs/serve.md has no detection message schema"
    return json.loads(found.group(1))


@pytest.fixture(scope="session")
def validate():
    import jsonschema

    schema = message_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema).validate


def assert_within(detections: list[dict], width: int, height: int) -> None:
    for d in detections:
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height, (d, width, height)
        assert d["label"] == LABELS[d["class_id"]] and 0 < d["score"] <= 1


@pytest.fixture(scope="module")
def frame_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("frames")
    for i in range(FRAMES):
        cv2.imwrite(str(folder / f"{i:06d}.png"), scene_frame(i))
    return folder


def _label_counts(results: list[dict]) -> dict[str, int]:
    counts = dict.fromkeys(LABELS, 0)
    for r in results:
        for d in r["detections"]:
            counts[d["label"]] += 1
    return counts


# -- once through a folder: every result over MQTT and in the file, counted in /metrics
@pytest.mark.slow
def test_results_over_mqtt_and_jsonl_are_counted_in_metrics(broker, start_daemon, detector_bundle, detector,  # noqa: F811
                                                              frame_folder, validate, tmp_path):  # fmt: skip
    jsonl = tmp_path / "results.jsonl"
    watcher = Watcher(broker, "factory/#")
    try:
        # read at the model's pace, once: the end of the folder is a lost source, reopened only after an hour
        daemon = start_daemon([str(detector_bundle), "--source", str(frame_folder), "--device-id", "det1",
                               "--mqtt", broker.url(), "--jsonl", str(jsonl), "--reconnect-delay", "3600",
                               "--reconnect-max-delay", "3600"])  # fmt: skip
        mqtt = wait_until(lambda: len(watcher.results()) >= FRAMES and watcher.results(), timeout=60,
                          what=f"{FRAMES} results over MQTT")  # fmt: skip
        lines = wait_until(lambda: jsonl.exists() and len(jsonl.read_text().splitlines()) >= FRAMES
                           and jsonl.read_text().splitlines(), timeout=20, what="the JSON lines")  # fmt: skip
        assert len(mqtt) == FRAMES and len(lines) == FRAMES  # each frame once, nothing dropped
        from_file = [json.loads(line) for line in lines]
        assert from_file == mqtt  # the same messages, in the same order
        assert [r["seq"] for r in mqtt] == list(range(1, FRAMES + 1))
        for i, r in enumerate(mqtt):
            validate(r)
            assert set(r) == RESULT_KEYS and r["device"] == "det1" and "label" not in r and "top_k" not in r
            assert_within(r["detections"], FRAME_W, FRAME_H)
            assert_same_detections(r["detections"], expected(detector, scene_frame(i)))
        published = _label_counts(mqtt)
        assert sum(published.values()) >= FRAMES  # the detector finds objects in these scenes

        m = daemon.metrics()
        assert m["edgekit_frames_inferred_total"] == FRAMES
        for label in LABELS:  # one series a label of the bundle, counted or not
            assert m[f'edgekit_detections_total{{label="{label}"}}'] == published[label], label
            assert m[f'edgekit_frame_detections{{label="{label}"}}'] == _label_counts(mqtt[-1:])[label], label
        assert m[f'edgekit_detections_total{{label="{OTHER_CLASS}"}}'] == 0
        assert {k.split("{")[0] for k in m if "detections" in k} == {"edgekit_detections_total",
                                                                      "edgekit_frame_detections"}  # fmt: skip
        assert len([k for k in m if k.startswith("edgekit_detections_total")]) == len(LABELS) + 1
        code, _ = daemon.stop(signal.SIGTERM)
        assert code == 0 and "Traceback" not in daemon.log
    finally:
        watcher.close()


def test_the_documented_example_fits_the_documented_schema(validate):
    import jsonschema

    text = (ROOT / "docs" / "serve.md").read_text()
    section = text[text.index("### Detection results") :]
    example = json.loads(re.search(r"```json\n(.*?)\n```", section, re.S).group(1))
    validate(example)
    classifier = {k: v for k, v in example.items() if k != "detections"} | {"label": "cat", "score": 0.9, "top_k": []}
    with pytest.raises(jsonschema.ValidationError):
        validate(classifier)
    with pytest.raises(jsonschema.ValidationError):
        validate({**example, "detections": [{"box": [1, 2, 3], "score": 0.5, "class_id": 1, "label": "x"}]})


def test_detection_series_only_for_a_detector_and_bounded_by_its_labels():
    """The real Metrics: a classifier exports no detection series; a detector's labels are its label list's,
    whatever a result names (a class beyond the list counts as unknown_class)."""
    metrics = Metrics()
    metrics.note_bundle("classification", LABELS)
    metrics.count_detections([{"label": "cat"}])
    assert "detections" not in metrics.render()
    metrics.note_bundle("detection", ("cat", "dog"))
    metrics.count_detections([{"label": "cat"}, {"label": "cat"}, {"label": "class_7"}, {"label": 'x"\n{}'}])
    metrics.count_detections([{"label": "dog"}])
    text = metrics.render()
    assert 'edgekit_detections_total{label="cat"} 2' in text and 'edgekit_detections_total{label="dog"} 1' in text
    assert f'edgekit_detections_total{{label="{OTHER_CLASS}"}} 2' in text
    assert 'edgekit_frame_detections{label="cat"} 0' in text and 'edgekit_frame_detections{label="dog"} 1' in text
    assert len(re.findall(r"^edgekit_detections_total\{", text, re.M)) == 3  # cat, dog, unknown_class
    metrics.note_bundle("detection", ("bird",))  # a reload: the last-frame gauge names the new labels only
    text = metrics.render()
    assert 'edgekit_frame_detections{label="bird"} 0' in text and 'frame_detections{label="cat"}' not in text
    assert 'edgekit_detections_total{label="cat"} 2' in text  # a counter never goes back


# -- a looping one-frame source: the live views and the predict endpoint
def _pick_scene(bundle) -> tuple[int, np.ndarray, list[dict]]:
    """The first scene with 1 to 4 detections, each at least 30 px a side in the frame and below the text rows
    the stream draws at the top left (so most of the boxes' pixels are not under the text)."""
    for i in range(40):
        frame = scene_frame(i)
        dets = expected(bundle, frame)
        if 1 <= len(dets) <= 4 and all(d["box"][1] > 40 and min(d["box"][2] - d["box"][0], d["box"][3] - d["box"][1])
                                         >= 30 for d in dets):  # fmt: skip
            return i, frame, dets
    pytest.fail("no scene among the first 40 has 1 to 4 detections of at least 30 px below the text rows")


@pytest.fixture(scope="module")
def looping(detector_bundle, detector, tmp_path_factory):
    folder = tmp_path_factory.mktemp("one-frame")
    index, frame, dets = _pick_scene(detector)
    for i in range(10):  # copies: the first file of each pass through a folder is read without the --fps pause
        cv2.imwrite(str(folder / f"frame{i}.png"), frame)
    d = DaemonProcess([str(detector_bundle), "--source", str(folder), "--loop", "--realtime", "--fps", "10",
                       "--port", "0", "--device-id", "det-live", "--max-body", "4MiB"])  # fmt: skip
    d.scene, d.frame, d.expected = index, frame, dets
    try:
        d.wait_listening()
        wait_until(lambda: d.request("GET", "/readyz")[0] == 200, timeout=30, what="/readyz to report ready")
        # ready means a frame was read; the first result may still be on its way (404 until then)
        wait_until(lambda: d.request("GET", "/v1/latest")[0] == 200, timeout=30, what="the first result")
        yield d
    finally:
        d.kill()


def _read_sse(daemon, events: int) -> list[dict]:
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    conn.request("GET", "/v1/events")
    response = conn.getresponse()
    found = []
    while len(found) < events:
        line = response.readline().decode()
        if line.startswith("data: "):
            found.append(json.loads(line[6:]))
    conn.close()
    return found


@pytest.mark.slow
def test_latest_events_and_info_carry_the_detections(looping, validate):
    latest = looping.get_json("/v1/latest")
    validate(latest)
    assert set(latest) == RESULT_KEYS and latest["device"] == "det-live"
    assert_same_detections(latest["detections"], looping.expected)
    events = _read_sse(looping, 3)
    assert [e["seq"] for e in events] == sorted({e["seq"] for e in events})
    for event in events:
        validate(event)
        assert set(event) == RESULT_KEYS
        assert_same_detections(event["detections"], looping.expected)
    info = looping.get_json("/v1/info")
    assert info["model"]["task"] == "detection" and info["labels"] == list(LABELS)


@pytest.mark.slow
def test_predict_answers_what_bundle_predict_gives(looping, detector, tmp_path):
    scene = SCENES / "val" / f"{looping.scene:06d}.jpg"
    status, _, body = looping.request("POST", "/v1/predict", scene.read_bytes(), {"Content-Type": "image/jpeg"})
    assert status == 200, body
    answer = json.loads(body)
    assert set(answer) == {"detections", "inference_ms", "model", "bundle", "image"}
    assert answer["image"] == {"width": 128, "height": 128}
    want = detector.predict(scene).to_json()["detections"]  # the same JPEG, decoded by the runtime's reader
    assert want and len(answer["detections"]) == len(want)
    # simplejpeg (the daemon's strict decoder) and OpenCV may round a JPEG's pixels apart by one level
    assert_same_detections(answer["detections"], want, box_px=1.0, score=0.01)
    assert_within(answer["detections"], 128, 128)
    # a bigger, non-square image: boxes in its own pixels; ?top_k is accepted and does not cut a detector's boxes
    big = cv2.resize(looping.frame, (FRAME_W * 5, FRAME_H * 5), interpolation=cv2.INTER_NEAREST)
    png = cv2.imencode(".png", big)[1].tobytes()
    status, _, body = looping.request("POST", "/v1/predict?top_k=1", png, {"Content-Type": "image/png"})
    assert status == 200, body
    answer = json.loads(body)
    assert answer["image"] == {"width": FRAME_W * 5, "height": FRAME_H * 5}
    assert_within(answer["detections"], FRAME_W * 5, FRAME_H * 5)
    assert_same_detections(answer["detections"], expected(detector, big))
    assert looping.metric('edgekit_predict_requests_total{status="200"}') >= 2


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
        data = response.read(int(headers["content-length"]))
        response.readline()
        images.append(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR))
    conn.close()
    return images


def _outline_drawn(changed: np.ndarray, box: list[float], factor: int) -> float:
    """The fraction of a box's outline, in a frame scaled up by ``factor``, where the frame was drawn on
    (``changed``: its difference from the plain frame), at most 1 px off (JPEG smears a 1 px line)."""
    h, w = changed.shape
    near = np.maximum.reduce([np.roll(changed, (dy, dx), (0, 1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    x1, y1, x2, y2 = (round(factor * v) for v in box)
    xs, ys = np.clip(np.arange(x1, x2 + 1), 0, w - 1), np.clip(np.arange(y1, y2 + 1), 0, h - 1)
    (cx1, cx2), (cy1, cy2) = np.clip([x1, x2], 0, w - 1), np.clip([y1, y2], 0, h - 1)
    outline = np.concatenate([near[ys, cx1], near[ys, cx2], near[cy1, xs], near[cy2, xs]])
    return float((outline > 60).mean())


@pytest.mark.slow
def test_mjpeg_frames_have_the_boxes_drawn(looping):
    """The streamed frame against the same frame drawn here with and without the boxes: on the pixels the
    boxes (rectangles and label tags) change, the stream looks like the drawing with them."""
    latest = looping.get_json("/v1/latest")
    with_boxes = annotate(looping.frame, latest, "detection").astype(int)
    without = annotate(looping.frame, {**latest, "detections": []}, "detection").astype(int)
    plain = cv2.resize(looping.frame, (FRAME_W * 2, FRAME_H * 2), interpolation=cv2.INTER_NEAREST).astype(int)
    text_rows = np.flatnonzero(np.any(without != plain, axis=(1, 2)))  # the count and statistics lines
    below_text = np.arange(FRAME_H * 2)[:, None] > text_rows.max()
    box_pixels = np.any(with_boxes != without, axis=2) & below_text
    assert box_pixels.sum() > 200
    for image in _read_mjpeg_parts(looping, 2):
        assert image.shape == (FRAME_H * 2, FRAME_W * 2, 3)  # 320x256 frames, scaled up 2x for the text
        changed = np.abs(image - plain).sum(axis=2)
        for d in latest["detections"]:  # each box's outline is where the box is, in the scaled-up frame's pixels
            assert _outline_drawn(changed, d["box"], 2) > 0.8, d
        near_with = np.abs(image - with_boxes).sum(axis=2)[box_pixels]
        near_without = np.abs(image - without).sum(axis=2)[box_pixels]
        # JPEG's halved chroma leaves some pixels of a 1 px line nearer the frame without it (~9%), not the mean
        assert near_with.mean() < near_without.mean() / 3  # measured: 57 against 248
        elsewhere = below_text & ~np.any(with_boxes != plain, axis=2)
        assert np.abs(image - plain).sum(axis=2)[elsewhere].mean() < 20  # nothing else drawn on the frame


@pytest.mark.slow
def test_the_dashboard_lists_the_detections(looping, tmp_path):
    """Headless Chromium loads /; the OCR of its screenshot shows the count and each box's label and score."""
    from test_dashboard import _screenshot

    chromium = require_tool("chromium", "chromium")
    tesseract = require_tool("tesseract", "tesseract-ocr")
    status, _, page = looping.request("GET", "/")
    assert status == 200 and b"detections" in page
    n = len(looping.expected)
    count = f"{n} detection{'s' if n != 1 else ''}"
    rows = [f"{d['label']} {d['score'] * 100:.0f}%" for d in looping.expected]
    text = ""
    for attempt in range(3):  # the first events may still be on their way when the page is captured
        shot = _screenshot(chromium, f"http://127.0.0.1:{looping.port}/", tmp_path / f"shot{attempt}.png",
                           tmp_path / f"profile{attempt}")  # fmt: skip
        assert shot is not None, "chromium wrote no screenshot"
        text = subprocess.run([tesseract, str(tmp_path / f"shot{attempt}.png"), "stdout"], capture_output=True,
                              text=True, timeout=60).stdout  # fmt: skip
        if count in text:
            break
    assert count in text, f"no detection count on the page; OCR read:\n{text}"
    compact = re.sub(r"\s+", "", text)
    for row in rows:
        assert re.sub(r"\s+", "", row) in compact, (row, text)
    assert "top_k" not in text and "waiting" not in text


def _png_claiming(width: int, height: int) -> bytes:
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


_SCENE = (SCENES / "val" / "000000.jpg").read_bytes()
HOSTILE = {
    "garbage": (bytes(range(256)) * 40, "image/jpeg", 400, "not a JPEG"),
    "truncated JPEG": (_SCENE[: len(_SCENE) // 2], "image/jpeg", 400, "truncated"),
    "body over --max-body": (b"\xff\xd8\xff" + b"\0" * (8 * 1024 * 1024), "image/jpeg", 413, "exceeds"),
    "PNG declaring 100000x100000": (_png_claiming(100_000, 100_000), "image/png", 413, "pixels"),
    "PNG with garbage data": (_png_claiming(640, 480), "image/png", 400, "corrupt"),
}  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("case", list(HOSTILE))
def test_predict_on_a_detector_refuses_hostile_bodies_in_one_line(looping, case):
    body, ctype, status_wanted, words = HOSTILE[case]
    before = looping.metric("edgekit_frames_inferred_total")
    status, headers, answer = looping.request("POST", "/v1/predict", body, {"Content-Type": ctype})
    assert status == status_wanted, answer[:300]
    message = json.loads(answer)["error"]
    assert headers["content-type"] == "application/json" and words in message and "\n" not in message
    assert looping.get_json("/healthz") == {"status": "ok"}
    wait_until(lambda: looping.metric("edgekit_frames_inferred_total") > before, timeout=10, what="inference to go on")
    assert looping.proc.poll() is None and "Traceback" not in looping.log
