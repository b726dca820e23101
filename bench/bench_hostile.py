"""The daemon under hostile clients: huge images, many concurrent decodes, idle sockets at the fd limit.

    python bench/bench_hostile.py [--json]          # writes bench/results/hostile.json with --json
    PYTHONPATH=/tmp/old-tree python bench/bench_hostile.py   # the same against another tree's daemon

Runs a real ``edgekit serve`` subprocess (``python -m edgekit serve``, so PYTHONPATH picks the tree) on a
tiny ONNX Runtime bundle and a looping video file, and measures:

1. /healthz latency (max, p50), polled every ~20 ms on its own connection, while POST /v1/predict decodes a
   7000x7000 16-bit PNG (a flat image: ~0.3 MB on the wire, 294 MB as 16-bit pixels), 3 times in a row;
2. the same while 7000x7000 JPEGs (~0.8 MB each) are decoded, 3 in a row;
3. peak RSS (VmHWM) of a fresh daemon after 8 concurrent 7000x7000 JPEG predicts, and their statuses;
4. a fresh daemon under ``ulimit -n 256`` with 300 idle sockets held open: how many of 5 /healthz
   requests (2 s timeout each) answer 200, and how many log bytes the daemon writes in 12 s.

The bundle is compiled in this process with the current tree (torch exports the tiny test model); the
daemon process never imports torch.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
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
RESULTS = ROOT / "bench" / "results" / "hostile.json"
SIDE = 7000


def build_bundle(work: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from support import CIFAR_SPEC, LABELS, tiny_module

    import edgekit

    onnx = work / "tiny.onnx"
    torch.onnx.export(tiny_module(), (torch.zeros(1, 3, 32, 32),), str(onnx), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)  # fmt: skip
    out = work / "tiny.edgekit"
    edgekit.compile_model(onnx, target="cpu", precision="fp32", output=out, spec=dict(CIFAR_SPEC), labels=LABELS)
    return out


def write_video(path: Path) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (160, 120))
    for i in range(60):
        frame = np.full((120, 160, 3), (255, 0, 255), np.uint8)
        cv2.circle(frame, ((i * 4) % 160, 60), 15, (0, 255, 0), -1)
        writer.write(frame)
    writer.release()
    return path


def big_images() -> tuple[bytes, bytes]:
    """(a flat 7000x7000 16-bit PNG, a 7000x7000 JPEG of a noisy gradient)."""
    png = cv2.imencode(".png", np.full((SIDE, SIDE, 3), 1000, np.uint16))[1].tobytes()
    y, x = np.mgrid[0:SIDE, 0:SIDE]
    image = np.stack([x * 255 // SIDE, y * 255 // SIDE, (x + y) * 255 // (2 * SIDE)], -1).astype(np.uint8)
    image = cv2.add(image, np.random.default_rng(0).integers(0, 6, image.shape, dtype=np.uint8))
    jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 50])[1].tobytes()
    return png, jpeg


class Daemon:
    def __init__(self, bundle: Path, video: Path, *, nofile: int | None = None, extra: list[str] | None = None):
        def limits() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        cmd = [sys.executable, "-m", "edgekit", "serve", str(bundle), "--source", str(video), "--loop",
               "--realtime", "--port", "0", "--max-body", "8MiB", *(extra or [])]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=limits)
        self.log = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        end = time.monotonic() + 60
        while not (found := re.search(rb"listening on http://[^ ]+:(\d+)/", self.log)):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the daemon did not start:\n{self.log.decode(errors='replace')}")
            time.sleep(0.05)
        self.port = int(found.group(1))

    def _read(self) -> None:
        while chunk := self.proc.stderr.read1(65536):
            self.log += chunk

    def request(self, method: str, path: str, body: bytes | None = None, ctype: str = "image/jpeg",
                timeout: float = 60) -> tuple[int, bytes]:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers={"Content-Type": ctype} if body is not None else {})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def hwm_mb(self) -> float:
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024

    def close(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def healthz_during(daemon: Daemon, body: bytes, ctype: str, rounds: int = 3) -> dict:
    """Poll /healthz every ~20 ms (keep-alive connection) while ``rounds`` predicts of ``body`` run one by one."""
    latencies: list[float] = []
    statuses: list[int] = []
    done = threading.Event()

    def poll() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
        while not done.is_set():
            start = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                conn.getresponse().read()
                latencies.append(time.perf_counter() - start)
            except (OSError, http.client.HTTPException):
                latencies.append(time.perf_counter() - start)
                conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=30)
            time.sleep(0.02)
        conn.close()

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.2)
    for _ in range(rounds):
        statuses.append(daemon.request("POST", "/v1/predict", body, ctype)[0])
    done.set()
    poller.join(30)
    ms = [x * 1000 for x in latencies]
    return {"polls": len(ms), "healthz_max_ms": round(max(ms), 1), "healthz_p50_ms": round(statistics.median(ms), 1),
            "predict_statuses": statuses}  # fmt: skip


def concurrent_rss(bundle: Path, video: Path, jpeg: bytes, clients: int = 8) -> dict:
    daemon = Daemon(bundle, video)
    try:
        daemon.request("GET", "/healthz")
        base = daemon.hwm_mb()
        statuses: list[int] = []

        def one() -> None:
            try:
                statuses.append(daemon.request("POST", "/v1/predict", jpeg, timeout=120)[0])
            except (OSError, http.client.HTTPException) as exc:
                statuses.append(repr(exc))  # type: ignore[arg-type]

        threads = [threading.Thread(target=one) for _ in range(clients)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(180)
        seconds = time.perf_counter() - start
        return {"clients": clients, "vmhwm_before_mb": round(base, 1), "vmhwm_peak_mb": round(daemon.hwm_mb(), 1),
                "statuses": sorted(map(str, statuses)), "seconds": round(seconds, 2)}  # fmt: skip
    finally:
        daemon.close()


def idle_sockets(bundle: Path, video: Path, sockets: int = 300, nofile: int = 256, watch: float = 12.0) -> dict:
    daemon = Daemon(bundle, video, nofile=nofile)
    held: list[socket.socket] = []
    try:
        daemon.request("GET", "/healthz")
        log_before = len(daemon.log)
        for _ in range(sockets):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", daemon.port))
            except OSError:
                s.close()
                continue
            held.append(s)
        ok = 0
        for _ in range(5):
            try:
                if daemon.request("GET", "/healthz", timeout=2)[0] == 200:
                    ok += 1
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.2)
        time.sleep(max(0.0, watch - 5 * 0.2))
        log_bytes = len(daemon.log) - log_before
        tail = daemon.log.decode(errors="replace").splitlines()[-3:]
        return {"sockets": len(held), "nofile": nofile, "healthz_ok_of_5": ok, "log_bytes_in_12s": log_bytes,
                "log_tail": tail}  # fmt: skip
    finally:
        for s in held:
            s.close()
        daemon.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS.relative_to(ROOT)}")
    parser.add_argument("--label", default=None, help="a name for this run in the JSON (e.g. before, after)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        work = Path(tmp)
        bundle, video = build_bundle(work), write_video(work / "clip.avi")
        png, jpeg = big_images()
        print(f"images: 16-bit PNG {SIDE}x{SIDE} {len(png) / 1e3:.0f} kB, JPEG {SIDE}x{SIDE} {len(jpeg) / 1e3:.0f} kB")
        results: dict = {"tree": os.environ.get("PYTHONPATH") or str(ROOT), "label": args.label,
                         "png_bytes": len(png), "jpeg_bytes": len(jpeg)}  # fmt: skip
        daemon = Daemon(bundle, video)
        try:
            results["healthz_during_png16"] = healthz_during(daemon, png, "image/png")
            print("healthz while a 16-bit PNG decodes:", results["healthz_during_png16"])
            results["healthz_during_jpeg"] = healthz_during(daemon, jpeg, "image/jpeg")
            print("healthz while a JPEG decodes:      ", results["healthz_during_jpeg"])
        finally:
            daemon.close()
        results["rss_8_concurrent_jpegs"] = concurrent_rss(bundle, video, jpeg)
        print("8 concurrent JPEG predicts:        ", results["rss_8_concurrent_jpegs"])
        results["idle_sockets"] = idle_sockets(bundle, video)
        print("300 idle sockets, ulimit -n 256:   ", results["idle_sockets"])
    if args.json:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        old = old if isinstance(old, dict) and "runs" in old else {"runs": {}}
        old["runs"][args.label or "latest"] = results
        tmp_path = RESULTS.with_suffix(".json.tmp")
        tmp_path.write_text(json.dumps(old, indent=2) + "\n")
        tmp_path.replace(RESULTS)
        print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
