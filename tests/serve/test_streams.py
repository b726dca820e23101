"""Many streams in one daemon (issue 14): stream ids, batching across streams, live changes, faults.

The first tests run the config parser and the batch worker's gathering in-process on real slots; the slow
ones run `edgekit serve` with several real sources (video files, a GStreamer RTSP server), a real mosquitto
broker and the HTTP API.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from serve_support import serve_bundle, start_daemon, wait_until, write_video  # noqa: F401
from services import Watcher, broker, rtsp_server  # noqa: F401

from edgekit.errors import UsageError
from edgekit.serve.capture import Board, Frame, LatestFrame
from edgekit.serve.config import ServeConfig, load_toml, split_stream_id
from edgekit.serve.pipeline import BatchWorker
from edgekit.serve.streams import resolve


# -- configuration
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", (None, "0")),
        ("door=rtsp://cam/s", ("door", "rtsp://cam/s")),
        ("rtsp://cam/s?a=b", (None, "rtsp://cam/s?a=b")),
        ("videotestsrc pattern=ball ! appsink", (None, "videotestsrc pattern=ball ! appsink")),
        ("yard=videotestsrc pattern=ball ! appsink", ("yard", "videotestsrc pattern=ball ! appsink")),
        ("./a=b.mp4", (None, "./a=b.mp4")),
    ],
)
def test_a_source_may_carry_its_stream_id(text, expected):
    assert split_stream_id(text) == expected


def test_streams_from_flags_and_tables_get_ids_and_overrides(tmp_path):
    a, b, c = (write_video(tmp_path / f"{n}.avi", frames=3) for n in "abc")
    config = ServeConfig(bundle="m", source=(f"door={a}", str(b)), fps=10.0,
                         streams=({"id": "yard", "source": str(c), "fps": 2, "queue": 4},))  # fmt: skip
    streams = resolve(config)
    assert [s.id for s in streams] == ["door", "cam0", "yard"]
    assert [s.capture.fps for s in streams] == [10.0, 10.0, 2.0]  # a table overrides the daemon's option
    assert [s.queue for s in streams] == [1, 1, 4] and [s.origin for s in streams] == ["flags", "flags", "file"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"source": ("x=a.avi", "x=b.avi")}, "stream id 'x' is already used"),
        ({"source": ("a.avi", "b.avi"), "max_streams": 1}, "raise --max-streams"),
        ({"source": ("a.avi",), "queue": 0}, "queue length must be 1 to 64"),
        ({"source": ("a.avi",), "max_batch": 0}, "--max-batch"),
        ({"source": ("a.avi",), "max_wait_ms": 5000}, "--max-wait-ms"),
        ({"source": None, "streams": ()}, "no source given"),
        ({"source": ("a.avi",), "streams": ({"source": "b.avi", "colour": 1},)}, "unknown key 'colour'"),
        ({"source": ("a.avi",), "streams": ({"id": "a b", "source": "b.avi"},)}, "stream id 'a b'"),
        ({"source": ("a.avi",), "streams": ({"source": "b.avi", "cascade": {"labels": ["x"]}},)}, "needs bundle"),
    ],
)
def test_bad_streams_are_one_line_errors(tmp_path, monkeypatch, fields, message):
    monkeypatch.chdir(tmp_path)
    for name in ("a.avi", "b.avi"):
        write_video(tmp_path / name, frames=2)
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve(ServeConfig(bundle="m", **fields))


def test_streams_tables_in_the_config_file(tmp_path):
    video = write_video(tmp_path / "a.avi", frames=2)
    path = tmp_path / "serve.toml"
    path.write_text(f"""
bundle = "m.edgekit"
max_batch = 4
[[streams]]
id = "door"
source = "{video}"
queue = "latest"
[[streams]]
source = "{video}"
realtime = true
[streams.cascade]
bundle = "cls.edgekit"
labels = ["car", "truck"]
max_boxes = 8
""")
    values = load_toml(path)
    assert values["max_batch"] == 4
    door, second = values["streams"]
    assert door.id == "door" and door.queue == 1 and second.realtime is True
    assert second.cascade.bundle == "cls.edgekit" and second.cascade.labels == ("car", "truck")
    assert [s.id for s in resolve(ServeConfig(**values))] == ["door", "cam0"]
    path.write_text('[[streams]]\nid = "x"\n')
    with pytest.raises(UsageError, match="a stream needs source"):
        load_toml(path)


# -- batching across streams, on real slots (the worker's own gathering code)
def _fake_streams(n: int, *, capacity: int = 1, connected: bool = True):
    board = Board()
    streams = [SimpleNamespace(id=f"s{i}", slot=LatestFrame(capacity, board=board), settings=SimpleNamespace(cascade=None),
                               capture=SimpleNamespace(status=SimpleNamespace(connected=connected)))
               for i in range(n)]  # fmt: skip
    return board, streams


def _frame(seq: int) -> Frame:
    return Frame(np.zeros((4, 4, 3), np.uint8), seq, time.time(), time.perf_counter())


def _worker(board, streams, **kw) -> BatchWorker:
    return BatchWorker(engine=None, board=board, streams=lambda: streams, fanout=None, metrics=None,
                       device_id="d", stop=threading.Event(), **kw)  # fmt: skip


def test_one_frame_a_stream_per_batch_and_no_stream_starves():
    board, streams = _fake_streams(3)
    worker = _worker(board, streams, max_batch=2, max_wait=0.0)
    taken = {s.id: 0 for s in streams}
    for round_ in range(30):
        for s in streams:
            if not s.slot.waiting:
                s.slot.put(_frame(round_))
        batch = worker.gather()
        assert len(batch) == 2 and len({item.stream for item in batch}) == 2  # never two of one stream
        for item in batch:
            taken[item.stream] += 1
    assert max(taken.values()) - min(taken.values()) <= 1, taken  # each stream in turn first


def test_a_queue_fills_the_batch_in_order_and_latest_drops_the_old():
    board, (queued,) = _fake_streams(1, capacity=4)
    for seq in range(1, 7):
        queued.slot.put(_frame(seq))  # 6 into a queue of 4: the 2 oldest are dropped
    batch = _worker(board, [queued], max_batch=8, max_wait=0.0).gather()
    assert [item.frame.seq for item in batch] == [3, 4, 5, 6]
    board, (latest,) = _fake_streams(1)
    assert [latest.slot.put(_frame(s)) for s in (1, 2, 3)] == [False, True, True]  # True: one was dropped
    assert [item.frame.seq for item in _worker(board, [latest]).gather()] == [3]


def test_the_batch_waits_for_connected_streams_only():
    board, streams = _fake_streams(2)
    (live, late), down = streams, SimpleNamespace(
        id="down", slot=LatestFrame(1, board=board), settings=SimpleNamespace(cascade=None),
        capture=SimpleNamespace(status=SimpleNamespace(connected=False)))  # fmt: skip
    live.slot.put(_frame(1))
    timer = threading.Timer(0.05, lambda: late.slot.put(_frame(7)))  # arrives during the wait
    timer.start()
    start = time.monotonic()
    batch = _worker(board, [live, late, down], max_batch=8, max_wait=20.0).gather()
    timer.join()
    assert [item.stream for item in batch] == ["s0", "s1"]
    # it did not wait the 20 s for "down" (not connected): it stopped once every connected stream gave a frame
    assert time.monotonic() - start < 15


# -- the daemon with several streams (subprocesses, real sources and broker)
def _streams(daemon) -> dict[str, dict]:
    return {s["id"]: s for s in daemon.get_json("/v1/streams")["streams"]}


@pytest.mark.slow
def test_several_streams_batched_with_ids_in_every_output(tmp_path, start_daemon, serve_bundle, broker):  # noqa: F811
    a, b = write_video(tmp_path / "a.avi", frames=40), write_video(tmp_path / "b.avi", frames=40, size=(640, 480))
    jsonl = tmp_path / "results.jsonl"
    watcher = Watcher(broker, "factory/#")
    try:
        daemon = start_daemon([str(serve_bundle), "--source", f"door={a}", "--source", f"yard={b}", "--loop",
                               "--device-id", "box", "--mqtt", broker.url(), "--jsonl", str(jsonl),
                               "--max-batch", "4"])  # fmt: skip
        wait_until(lambda: {r.get("stream") for r in watcher.results()} >= {"door", "yard"}, timeout=30,
                   what="results of both streams over MQTT")  # fmt: skip
        with watcher._lock:
            topics = {t for t, *_ in watcher.messages}
        assert {"factory/box/door/result", "factory/box/yard/result", "factory/box/status"} <= topics
        assert all(r["topic_stream"] == r["stream"] for r in
                   [{**json.loads(p), "topic_stream": t.split("/")[2]} for t, p, *_ in watcher.messages
                    if t.endswith("/result")])  # fmt: skip
        status = _streams(daemon)
        assert set(status) == {"door", "yard"} and all(s["status"] == "ok" for s in status.values())
        metrics = daemon.metrics()
        for sid in ("door", "yard"):
            assert metrics[f'edgekit_stream_frames_inferred_total{{stream="{sid}"}}'] > 0
            assert metrics[f'edgekit_stream_connected{{stream="{sid}"}}'] == 1
        assert metrics["edgekit_source_connected"] == 2
        # both file streams are read at the model's pace: batches of two are the rule
        assert metrics["edgekit_batch_size_sum"] > 1.5 * metrics["edgekit_batch_size_count"]
        assert daemon.request("GET", "/v1/latest?stream=door")[0] == 200
        assert json.loads(daemon.request("GET", "/v1/latest?stream=yard")[2])["stream"] == "yard"
        assert daemon.request("GET", "/v1/latest?stream=nope")[0] == 404
        assert daemon.request("GET", "/v1/latest?stream=bad%20id")[0] == 400
        lines = [json.loads(line) for line in jsonl.read_text().splitlines()[:50]]
        assert {line["stream"] for line in lines} == {"door", "yard"} and all("batch" in line for line in lines)
        code, _ = daemon.stop()
        assert code == 0
    finally:
        watcher.close()


def _post(daemon, path: str, body: dict, method: str = "POST") -> tuple[int, dict]:
    status, _, data = daemon.request(method, path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return status, json.loads(data)


@pytest.mark.slow
def test_streams_are_added_changed_and_removed_through_the_api(tmp_path, start_daemon, serve_bundle):  # noqa: F811
    a, b = write_video(tmp_path / "a.avi", frames=60), write_video(tmp_path / "b.avi", frames=60)
    outside = write_video(tmp_path.parent / f"{tmp_path.name}-outside.avi", frames=5)
    daemon = start_daemon([str(serve_bundle), "--source", f"main={a}", "--loop", "--api-file-root", str(tmp_path),
                           "--max-streams", "3"])  # fmt: skip
    wait_until(lambda: _streams(daemon)["main"]["frames_inferred"] > 0, timeout=30, what="the first stream")
    status, body = _post(daemon, "/v1/streams", {"id": "extra", "source": str(b), "loop": True, "fps": 20})
    assert status == 201 and body["id"] == "extra", body
    wait_until(lambda: _streams(daemon)["extra"]["frames_inferred"] > 0, timeout=30, what="the added stream")
    # refused, each with its reason, the daemon and its streams running on
    refused = [
        ({"id": "extra", "source": str(b)}, 409, "exists"),
        ({"source": "nosuch://x"}, 400, "is not a camera"),
        ({"source": str(outside)}, 400, "outside --api-file-root"),
        ({"source": str(b), "fps": -1}, 400, "fps"),
        ({"source": str(b), "colour": "red"}, 400, "unknown key"),
    ]
    for request, code, reason in refused:
        status, body = _post(daemon, "/v1/streams", request)
        assert status == code and reason in body["error"], (request, status, body)
    status, _, raw = daemon.request("POST", "/v1/streams", b"not json", {"Content-Type": "application/json"})
    assert status == 400 and b"not JSON" in raw
    status, _, _ = daemon.request("POST", "/v1/streams", b"{}", {"Content-Type": "text/plain"})
    assert status == 415
    # a network stream that cannot connect is added, and reconnects with backoff (a camera may be booting)
    status, body = _post(daemon, "/v1/streams", {"id": "cam", "source": "rtsp://127.0.0.1:9/none"})
    assert status == 201
    status, body = _post(daemon, "/v1/streams", {"id": "four", "source": str(b)})
    assert status == 409 and "--max-streams" in body["error"]
    wait_until(lambda: _streams(daemon)["cam"]["reconnects"] >= 1, timeout=30, what="the absent camera's retries")
    before = _streams(daemon)["main"]["frames_inferred"]
    # a change is checked first: a bad one leaves the stream as it was
    status, body = _post(daemon, "/v1/streams/extra", {"source": "nosuch://x"}, method="PUT")
    assert status == 400 and "runs on unchanged" in body["error"]
    status, body = _post(daemon, "/v1/streams/extra", {"source": str(a), "fps": 5, "loop": True}, method="PUT")
    assert status == 200 and body["settings"]["fps"] == 5
    assert daemon.request("DELETE", "/v1/streams/cam")[0] == 200
    assert daemon.request("DELETE", "/v1/streams/cam")[0] == 404
    wait_until(lambda: _streams(daemon)["main"]["frames_inferred"] > before + 20, timeout=30,
               what="the first stream to run on through the changes")  # fmt: skip
    streams = _streams(daemon)
    assert set(streams) == {"main", "extra"} and streams["main"]["frames_since_connect"] > before  # never restarted
    assert 'stream="cam"' not in daemon.request("GET", "/metrics")[2].decode()  # its series went with it
    assert daemon.stop()[0] == 0


@pytest.mark.slow
def test_sighup_applies_the_config_files_streams(tmp_path, start_daemon, serve_bundle):  # noqa: F811
    a, b, c = (write_video(tmp_path / f"{n}.avi", frames=60) for n in "abc")
    config = tmp_path / "serve.toml"

    def write(streams: str) -> None:
        config.write_text(f'bundle = "{serve_bundle}"\n[source]\nloop = true\n' + streams)

    write(f'[[streams]]\nid = "one"\nsource = "{a}"\n[[streams]]\nid = "two"\nsource = "{b}"\n')
    daemon = start_daemon(["--config", str(config), "--source", f"flag={c}"])
    wait_until(lambda: all(s["frames_inferred"] > 0 for s in _streams(daemon).values()), timeout=30,
               what="three streams")  # fmt: skip
    flag_before = _streams(daemon)["flag"]["frames_since_connect"]
    write(f'[[streams]]\nid = "one"\nsource = "{a}"\nfps = 4\n[[streams]]\nid = "three"\nsource = "{c}"\n')
    daemon.send_signal(signal.SIGHUP)
    wait_until(lambda: set(_streams(daemon)) == {"one", "three", "flag"}, timeout=30, what="the reloaded streams")
    streams = _streams(daemon)
    assert streams["one"]["settings"]["fps"] == 4  # changed
    assert streams["flag"]["frames_since_connect"] >= flag_before  # a flag's stream is left alone
    wait_until(lambda: "changed one" in daemon.log and "removed two" in daemon.log and "added three" in daemon.log,
               timeout=10, what="the reload's log line")  # fmt: skip
    config.write_text("[[streams]]\nsource = 3\nbogus = 1\n")  # a broken file changes nothing
    daemon.send_signal(signal.SIGHUP)
    wait_until(lambda: "config reload failed" in daemon.log, timeout=10, what="the failed reload")
    assert set(_streams(daemon)) == {"one", "three", "flag"}
    assert daemon.stop()[0] == 0


@pytest.mark.slow
def test_a_failing_stream_recovers_while_the_others_keep_running(
    tmp_path,
    start_daemon,  # noqa: F811
    serve_bundle,  # noqa: F811
    rtsp_server,  # noqa: F811
):
    good = write_video(tmp_path / "good.avi", frames=300)
    cut = write_video(tmp_path / "cut.avi", frames=60)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])  # a file cut short
    daemon = start_daemon([str(serve_bundle), "--source", f"good={good}", "--source", f"cut={cut}",
                           "--source", f"rtsp={rtsp_server.url}", "--loop", "--reconnect-delay", "0.2",
                           "--reconnect-max-delay", "1"])  # fmt: skip
    wait_until(lambda: all(s["frames_inferred"] > 0 for s in _streams(daemon).values()), timeout=40,
               what="results from all three streams")  # fmt: skip
    rtsp_server.kill()  # the camera's server goes away
    wait_until(lambda: not _streams(daemon)["rtsp"]["connected"], timeout=30, what="the RTSP stream to be lost")
    during = _streams(daemon)["good"]["frames_inferred"]
    wait_until(lambda: _streams(daemon)["good"]["frames_inferred"] > during + 50, timeout=30,
               what="the file stream to keep its rate while RTSP is down")  # fmt: skip
    assert daemon.get_json("/readyz", expect=503)["codes"]  # one stream down: not ready, and it says which
    rtsp_server.start()  # the server is back on the same port
    wait_until(lambda: _streams(daemon)["rtsp"]["connected"] and _streams(daemon)["rtsp"]["status"] == "ok",
               timeout=40, what="the RTSP stream to reconnect")  # fmt: skip
    streams = _streams(daemon)
    assert streams["rtsp"]["reconnects"] >= 1 and streams["cut"]["frames_inferred"] > 0
    assert daemon.proc.poll() is None
    assert daemon.stop()[0] == 0


# -- cascades: the reference detector, then the reference classifier on each box
ROOT = Path(__file__).resolve().parents[2]
SCENES = ROOT / "examples" / "data" / "scenes" / "val"


@pytest.fixture(scope="module")
def cascade_bundles(tmp_path_factory):
    import edgekit

    out = tmp_path_factory.mktemp("cascade")
    models = ROOT / "examples" / "models"
    detector = edgekit.compile_model(models / "detector" / "model.onnx", target="cpu", precision="fp32",
                                     output=out / "detector.edgekit", spec=models / "detector" / "model.toml")  # fmt: skip
    classifier = edgekit.compile_model(models / "resnet" / "model.onnx", target="cpu", precision="fp32",
                                       output=out / "resnet.edgekit", spec=models / "resnet" / "model.toml")  # fmt: skip
    return Path(detector.path), Path(classifier.path)


@pytest.mark.slow
def test_a_cascade_classifies_each_detected_box(tmp_path, start_daemon, cascade_bundles):  # noqa: F811
    detector, classifier = cascade_bundles
    frames = tmp_path / "frames"
    frames.mkdir()
    for path in sorted(SCENES.glob("*.jpg"))[:8]:
        (frames / path.name).write_bytes(path.read_bytes())
    config = tmp_path / "serve.toml"
    config.write_text(f'bundle = "{detector}"\n[[streams]]\nid = "scenes"\nsource = "{frames}"\nloop = true\n'
                      f'[streams.cascade]\nbundle = "{classifier}"\nmin_score = 0.3\nmax_boxes = 4\n')  # fmt: skip
    jsonl = tmp_path / "out.jsonl"
    daemon = start_daemon(["--config", str(config), "--jsonl", str(jsonl)])
    wait_until(lambda: jsonl.exists() and len(jsonl.read_text().splitlines()) >= 8, timeout=60, what="8 results")
    results = [json.loads(line) for line in jsonl.read_text().splitlines()[:8]]
    nested = [d for r in results for d in r["detections"] if "classification" in d]
    assert nested, results[:2]
    for r in results:
        classified = [d for d in r["detections"] if "classification" in d]
        assert len(classified) <= 4 and all(d["score"] >= 0.3 for d in classified)
        assert all({"label", "score", "top_k"} <= set(d["classification"]) for d in classified)
        assert "cascade_ms" in r or not classified
    # the classifier was trained on the photographs the scenes are made of: it mostly agrees with the detector
    agree = sum(d["classification"]["label"] == d["label"] for d in nested) / len(nested)
    assert agree >= 0.5, agree
    assert daemon.stop()[0] == 0
