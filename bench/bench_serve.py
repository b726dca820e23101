"""The daemon against the runtime alone, its latencies, and its footprint with each backend.

    python bench/bench_serve.py [--model resnet] [--frames 1000] [--rounds 3]
    python bench/bench_serve.py --onnx model.onnx --spec model.toml      # any other model

1. Writes a video of ``--frames`` CIFAR-10 test images (MJPG, 160x120) and compiles the model for ``cpu``
   (ONNX Runtime) and ``intel-cpu`` (OpenVINO) at their default precision (INT8, calibrated on
   examples/data/cifar10/calib), with the ``edgekit compile`` command.
2. Throughput: the runtime alone (``Bundle.predict`` on the decoded frames, in a fresh process) against
   ``edgekit serve`` on the same video, looped, until the daemon has inferred as many frames as the
   runtime did; the bar is 0.9x the runtime alone. Two modes, both with a source faster than the model:
   - file mode: the file as it is; the daemon reads it at the model's pace and infers every frame;
   - live mode: --realtime on a copy labelled 3,000 fps (Matroska: AVI cannot say 3,000 fps), so the
     daemon treats it as a camera faster than the model, decodes every frame and keeps the latest.
3. Latency: capture to publish (the ``e2e_ms`` of each result, from the JSON-lines sink), and capture to
   an MQTT subscriber on a local mosquitto (when mosquitto is installed), p50 and p99.
4. POST /v1/predict from 8 concurrent clients, 200 requests each, while the daemon streams: p50 and p99.
5. Footprint per backend: the daemon's import time (fresh interpreter, median of 5), start-to-ready time,
   resident memory (VmRSS, VmHWM) while streaming, whether torch is mapped, and the installed size of
   ``edgekit[serve,<backend>]``'s dependency closure.

Each round runs the runtime alone, the daemon in both modes, and the runtime alone again; a ratio is the
daemon against the mean of the two runtime runs, and the median round is reported. Prints the figures and writes
bench/results/serve.json. No process here imports torch.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data" / "cifar10"
EDGEKIT = str(Path(sys.executable).with_name("edgekit"))
BACKENDS = {"onnxruntime": "cpu", "openvino": "intel-cpu"}  # backend -> target
BAR = 0.9


def write_video(path: Path, frames: int, size=(160, 120), fps: float = 30) -> Path:
    images = sorted((DATA / "test").rglob("*.jpg"))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    for i in range(frames):
        writer.write(cv2.resize(cv2.imread(str(images[i % len(images)])), size, interpolation=cv2.INTER_LINEAR))
    writer.release()
    return path


def decode_all(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame of the video, and the decode-only rate (frames/s): how fast the source can go."""
    cap, frames = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG), []
    start = time.perf_counter()
    while (got := cap.read())[0]:
        frames.append(got[1])
    seconds = time.perf_counter() - start
    cap.release()
    return frames, len(frames) / seconds


def compile_bundle(onnx: Path, spec: Path, target: str, out: Path) -> Path:
    cmd = [EDGEKIT, "compile", str(onnx), "--spec", str(spec), "--target", target, "--calib", str(DATA / "calib"),
           "--output", str(out), "-q"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


RUNTIME_ALONE = """
import sys, time, cv2
from edgekit.runtime import load_bundle
cap, frames = cv2.VideoCapture(sys.argv[2], cv2.CAP_FFMPEG), []
while (got := cap.read())[0]:
    frames.append(got[1])
with load_bundle(sys.argv[1]) as bundle:
    for frame in frames[:50]:
        bundle.predict(frame, color_order="BGR", top_k=3)
    start = time.perf_counter()
    for frame in frames:
        bundle.predict(frame, color_order="BGR", top_k=3)
    print(len(frames) / (time.perf_counter() - start))
"""


def runtime_alone(bundle_path: Path, video: Path) -> float:
    """Frames per second of preprocess + infer + postprocess on the decoded frames, one at a time, in a
    fresh process like the daemon's (so neither inherits the other's threads or warm caches)."""
    cmd = [sys.executable, "-c", RUNTIME_ALONE, str(bundle_path), str(video)]
    return float(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


class Daemon:
    """``edgekit serve`` in a subprocess on a free port."""

    def __init__(self, args: list[str]) -> None:
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([EDGEKIT, "serve", "--port", "0", *args], stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        threading.Thread(
            target=lambda: self.lines.extend(line.rstrip() for line in self.proc.stderr), daemon=True
        ).start()
        self.port = int(self.wait_log(r"listening on http://[^ ]+:(\d+)/", 120).group(1))

    def wait_log(self, pattern: str, timeout: float) -> re.Match:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if found := re.search(pattern, "\n".join(self.lines)):
                return found
            if self.proc.poll() is not None:
                raise RuntimeError("edgekit serve exited:\n" + "\n".join(self.lines))
            time.sleep(0.02)
        raise TimeoutError(f"no log line matching {pattern!r} in {timeout} s")

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()

    def wait_ready(self, timeout: float = 120) -> float:
        end = time.monotonic() + timeout
        while self.get("/readyz")[0] != 200:
            if time.monotonic() > end:
                raise TimeoutError("the daemon never became ready")
            time.sleep(0.02)
        return time.perf_counter() - self.started

    def memory(self) -> dict[str, float]:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        mib = {k: int(re.search(rf"{k}:\s+(\d+) kB", status).group(1)) / 1024 for k in ("VmRSS", "VmHWM")}
        mib["torch_mapped"] = "torch" in Path(f"/proc/{self.proc.pid}/maps").read_text()
        return mib

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


def start_broker(folder: Path) -> tuple[subprocess.Popen, int] | None:
    exe = shutil.which("mosquitto")
    if exe is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                    + ("user root\n" if os.geteuid() == 0 else ""))  # fmt: skip
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    return proc, port


def subscribe(port: int, received: list[tuple[float, dict]]):
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-subscriber")
    client.on_connect = lambda c, u, f, rc, p=None: c.subscribe("bench/+/result", qos=1)
    client.on_message = lambda c, u, msg: received.append((time.time(), json.loads(msg.payload)))
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _metric(text: str, name: str) -> float:
    found = re.search(rf"^{name} (\S+)", text, re.M)
    return float(found.group(1)) if found else 0.0


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


def daemon_run(bundle: Path, video: Path, folder: Path, frames: int, mqtt_port: int | None, live: bool) -> dict:
    """The daemon on the looping video until it has inferred ``frames`` results (the runtime alone's work):
    its inference rate, drops, and capture-to-publish latencies. ``live``: --realtime on a video whose
    header says 3,000 fps, so the daemon treats it as a camera faster than the model (latest frame wins);
    otherwise the file is read at the model's pace (every frame inferred)."""
    jsonl = folder / "results.jsonl"
    jsonl.unlink(missing_ok=True)
    received: list[tuple[float, dict]] = []
    client = subscribe(mqtt_port, received) if mqtt_port else None
    extra = ["--mqtt", f"mqtt://127.0.0.1:{mqtt_port}/bench", "--mqtt-qos", "1"] if mqtt_port else []
    args = [str(bundle), "--source", str(video), "--loop", "--jsonl", str(jsonl), "--jsonl-max-bytes", "1GiB"]
    daemon = Daemon([*args, *extra, *(["--realtime"] if live else [])])
    daemon.wait_ready()
    while mqtt_port and _metric(daemon.get("/metrics")[1].decode(), "edgekit_mqtt_connected") != 1:
        time.sleep(0.02)
    time.sleep(0.5)  # past start-up
    before, mark = daemon.get("/metrics")[1].decode(), time.time()
    skip = _count_lines(jsonl)
    while _count_lines(jsonl) < skip + frames + 20:
        time.sleep(0.05)
    after = daemon.get("/metrics")[1].decode()
    daemon.stop()
    if client:
        client.loop_stop()
    results = [json.loads(line) for line in jsonl.read_text().splitlines()[skip:]]
    results = [r for r in results if r["captured_unix"] > mark][:frames]
    published = sorted(r["captured_unix"] + r["e2e_ms"] / 1000 for r in results)
    e2e = np.array([r["e2e_ms"] for r in results])
    delta = {n: _metric(after, f"edgekit_frames_{n}_total") - _metric(before, f"edgekit_frames_{n}_total")
             for n in ("captured", "dropped")}  # fmt: skip
    out = {
        "frames_inferred": len(results),
        "frames_captured": int(delta["captured"]),
        "frames_dropped": int(delta["dropped"]),
        "fps": (len(published) - 1) / (published[-1] - published[0]),
        "e2e_ms_p50": float(np.percentile(e2e, 50)),
        "e2e_ms_p99": float(np.percentile(e2e, 99)),
    }
    seqs = {r["seq"] for r in results}
    to_sub = np.array([(t - r["captured_unix"]) * 1000 for t, r in received if r["seq"] in seqs])
    if len(to_sub):
        out |= {"mqtt_ms_p50": float(np.percentile(to_sub, 50)), "mqtt_ms_p99": float(np.percentile(to_sub, 99)),
                "mqtt_received": len(to_sub)}  # fmt: skip
    return out


def predict_load(bundle: Path, video: Path, clients: int = 8, requests: int = 200) -> dict:
    daemon = Daemon([str(bundle), "--source", str(video), "--loop", "--realtime"])
    daemon.wait_ready()
    image = (DATA / "test" / "cat" / "0000.jpg").read_bytes()
    latencies: list[float] = []
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
        for _ in range(requests):
            start = time.perf_counter()
            conn.request("POST", "/v1/predict", image, {"Content-Type": "image/jpeg"})
            response = conn.getresponse()
            response.read()
            latencies.append((time.perf_counter() - start) * 1000)
            if response.status != 200:
                errors.append(str(response.status))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    daemon.stop()
    return {"clients": clients, "requests": clients * requests, "errors": len(errors),
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
            "requests_per_s": clients * requests / seconds}  # fmt: skip


IMPORT_PROBE = """
import time
start = time.perf_counter()
import edgekit.serve.daemon, edgekit.serve.http, edgekit.serve.mqtt, edgekit.serve.sinks, uvicorn, starlette, paho.mqtt.client
import edgekit.backends.{backend}.runtime, {backend}
print(time.perf_counter() - start)
"""


def install_size(extras: list[str]) -> float:
    """MiB on disk of edgekit's run-time dependencies with these extras, and everything they require."""
    from importlib import metadata

    from packaging.requirements import Requirement

    wanted = [Requirement(r) for r in metadata.requires("edgekit") or []]
    names = {r.name for r in wanted if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in extras)}
    todo, seen, total = list(names), set(), 0
    while todo:
        name = todo.pop().lower().replace("_", "-")
        if name in seen:
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        total += sum(f.locate().stat().st_size for f in dist.files or [] if f.locate().is_file())
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return total / 1024**2


def footprint(backend: str, bundle: Path, video: Path) -> dict:
    probe = IMPORT_PROBE.format(backend=backend)
    imports = [float(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
               for _ in range(5)]  # fmt: skip
    daemon = Daemon([str(bundle), "--source", str(video), "--loop", "--realtime"])
    ready = daemon.wait_ready()
    time.sleep(3)
    memory = daemon.memory()
    daemon.stop()
    return {"import_s": statistics.median(imports), "start_to_ready_s": ready, "rss_mib": memory["VmRSS"],
            "peak_rss_mib": memory["VmHWM"], "torch_mapped": memory["torch_mapped"],
            "install_mib": install_size(["serve", backend])}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet", help="a model under examples/models (default resnet)")
    parser.add_argument("--onnx", type=Path, help="another ONNX model (with --spec)")
    parser.add_argument("--spec", type=Path, help="its model spec TOML")
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3, help="runtime/daemon pairs; the median ratio counts")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "serve.json")
    args = parser.parse_args()
    onnx = args.onnx or ROOT / "examples" / "models" / args.model / "model.onnx"
    spec = args.spec or onnx.with_name("model.toml")
    if not onnx.exists() or not spec.exists():
        parser.error(f"{onnx} or {spec} is missing; pass --onnx and --spec")
    work = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    video = write_video(work / "video.avi", args.frames)
    videos = {"file_mode": video, "live_mode": write_video(work / "video-3000fps.mkv", args.frames, fps=3000)}
    frames, source_fps = decode_all(video)
    bundles = {b: compile_bundle(onnx, spec, t, work / f"{b}.edgekit") for b, t in BACKENDS.items()}
    broker = start_broker(work)
    report = {"machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                          "load_average_at_start": os.getloadavg()[0]},
              "model": str(onnx.relative_to(ROOT) if onnx.is_relative_to(ROOT) else onnx), "frames": len(frames),
              "video": "MJPG 160x120", "source_decode_fps": source_fps, "backends": {}}  # fmt: skip
    try:
        for backend, bundle in bundles.items():
            entry = measure(bundle, videos, work, len(frames), broker[1] if broker else None, args.rounds)
            entry["source_faster_than_model"] = source_fps > entry["file_mode"]["runtime_fps"]
            entry |= {"predict_load": predict_load(bundle, video), "footprint": footprint(backend, bundle, video)}
            report["backends"][backend] = entry
            print_entry(backend, entry, source_fps)
    finally:
        if broker:
            broker[0].kill()
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    met = all(e[m]["meets_bar"] for e in report["backends"].values() for m in ("file_mode", "live_mode"))
    return 0 if met else 1


def measure(bundle: Path, videos: dict[str, Path], work: Path, frames: int, mqtt_port: int | None, rounds: int) -> dict:
    """Rounds of: runtime alone, daemon (file mode), daemon (live mode), runtime alone. Each mode's ratio is
    against the mean of the two runtime-alone runs around it; the median round per mode is reported."""
    runs: dict[str, list[dict]] = {mode: [] for mode in videos}
    for _ in range(rounds):
        before = runtime_alone(bundle, videos["file_mode"])
        served = {
            mode: daemon_run(bundle, v, work, frames, mqtt_port, live=mode == "live_mode") for mode, v in videos.items()
        }
        alone = (before + runtime_alone(bundle, videos["file_mode"])) / 2
        for mode, result in served.items():
            runs[mode].append({"runtime_fps": alone, **result, "ratio": result["fps"] / alone})
    out: dict = {"bar": BAR, "rounds": runs}
    for mode, results in runs.items():
        median = sorted(results, key=lambda r: r["ratio"])[len(results) // 2]
        out[mode] = {**median, "meets_bar": median["ratio"] >= BAR}
    return out


def print_entry(backend: str, e: dict, source_fps: float) -> None:
    f, load = e["footprint"], e["predict_load"]
    print(f"\n== {backend} (source decodes at {source_fps:.0f} fps)")
    for mode, what in (("file_mode", "file at the model's pace"), ("live_mode", "live, latest frame wins")):
        m = e[mode]
        verdict = "meets" if m["meets_bar"] else "MISSES"
        print(f"{what}: runtime alone {m['runtime_fps']:.0f} fps, daemon {m['fps']:.0f} fps -> {m['ratio']:.2f}x "
              f"({verdict} the {BAR}x bar); {m['frames_inferred']} inferred of {m['frames_captured']} captured, "
              f"{m['frames_dropped']} dropped as stale")  # fmt: skip
        line = f"  capture to publish: p50 {m['e2e_ms_p50']:.2f} ms, p99 {m['e2e_ms_p99']:.2f} ms"
        if "mqtt_ms_p50" in m:
            line += f"; capture to MQTT subscriber: p50 {m['mqtt_ms_p50']:.2f} ms, p99 {m['mqtt_ms_p99']:.2f} ms"
        print(line)
    print(f"POST /v1/predict, {load['clients']} clients x {load['requests'] // load['clients']}: p50 {load['p50_ms']:.1f} ms, "
          f"p99 {load['p99_ms']:.1f} ms, {load['requests_per_s']:.0f} req/s, {load['errors']} errors")  # fmt: skip
    print(f"footprint: import {f['import_s'] * 1000:.0f} ms, start to ready {f['start_to_ready_s']:.2f} s, RSS "
          f"{f['rss_mib']:.0f} MiB (peak {f['peak_rss_mib']:.0f}), torch mapped: {f['torch_mapped']}, "
          f"installed {f['install_mib']:.0f} MiB")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
