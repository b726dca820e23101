"""Bundle.predict against the bare graph call and the peer's way, on the reference ResNet's INT8 bundles.

For each bundle (cpu: ONNX Runtime, intel-cpu: OpenVINO on the CPU), side by side in interleaved rounds (each
round times every case once, so a load change on the machine hits all cases alike; the figure is the median
over the rounds of each round's mean per call):

- bare: the graph alone on an input already prepared (ONNX Runtime ``session.run`` / OpenVINO infer request
  with the output copied out, as ``Runtime.infer`` does), no pre- or postprocessing;
- peer: the usual way without edgekit: the vendor's runtime on the bundle's model file with its default
  options (ONNX Runtime ``InferenceSession`` / OpenVINO ``compile_model``), NumPy preprocessing of the 32x32
  BGR frame (BGR -> RGB, / 255, - mean, / std, HWC -> CHW) and a softmax and sort for the top 5;
- edgekit predict 32x32 BGR / RGB: ``Bundle.predict(frame, top_k=5)`` on a 32x32 uint8 frame (the model's
  size: no resize), preprocessing in the graph;
- edgekit predict 32x32 BGR, host: the same with ``graph_preprocess=False`` (NumPy preprocessing, one graph);
- edgekit predict 640x480 BGR: a camera-sized frame, resized on the host (cv2) to 32x32, then the graph.

Also the resident memory after loading each bundle with and without the graph front (a fresh process each).

    .venv/bin/python bench/bench_predict.py            # builds the bundles in bench/data/predict/ once
    .venv/bin/python bench/bench_predict.py --rounds 21 --calls 300

Writes bench/results/predict.json. On a shared machine the absolute figures move with the load; the ratios
within a round are what the interleaving protects.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESNET = ROOT / "examples" / "models" / "resnet"
CALIB = ROOT / "examples" / "data" / "cifar10" / "calib"
IMAGE = ROOT / "examples" / "data" / "cifar10" / "test" / "dog" / "0001.jpg"
TARGETS = ("cpu", "intel-cpu")


def build(out: Path) -> dict[str, Path]:
    import edgekit

    paths = {}
    for target in TARGETS:
        path = out / f"resnet-{target}-int8.edgekit"
        if not (path / "manifest.json").is_file():
            print(f"compiling {path.name} ...", flush=True)
            edgekit.compile_model(
                RESNET / "model.onnx",
                spec=RESNET / "model.toml",
                target=target,
                precision="int8",
                output=path,
                calib=CALIB,
                calib_size=64,
            )
        paths[target] = path
    return paths


def peer(bundle) -> callable:
    """The vendor runtime on the bundle's model file, default options, NumPy pre- and postprocessing."""
    spec = bundle.preprocess_spec
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    model_file = str(bundle.path / bundle.manifest["backend"]["model_file"])
    if bundle.manifest["backend"]["name"] == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(model_file, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name

        def run(x):
            return session.run(None, {name: x})[0]
    else:
        import openvino as ov

        compiled = ov.Core().compile_model(model_file, "CPU")
        request = compiled.create_infer_request()

        def run(x):
            request.infer({0: x})
            return request.get_output_tensor(0).data.copy()

    def predict(frame_bgr):
        rgb = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2RGB)
        x = ((rgb.astype(np.float32) / 255.0 - mean) / std).transpose(2, 0, 1)[None]
        logits = run(np.ascontiguousarray(x))[0]
        e = np.exp(logits - logits.max())
        p = e / e.sum()
        top = np.argsort(-p)[:5]
        return [(bundle.labels[i], float(p[i])) for i in top]

    return predict


def bare(bundle) -> callable:
    rt = bundle.runtime
    if bundle.manifest["backend"]["name"] == "onnxruntime":
        session, name = rt.session, rt.input_name
        return lambda x: session.run(None, {name: x})[0]
    request = rt.request

    def run(x):
        request.infer({0: x})
        return request.get_output_tensor(0).data.copy()

    return run


def rss_after_load(path: Path, graph: bool) -> float:
    """MiB resident after loading the bundle (self-test included) in a fresh process."""
    code = (
        "import edgekit, sys\n"
        f"b = edgekit.load_bundle({str(path)!r}, graph_preprocess={graph})\n"
        "pages = int(open('/proc/self/statm').read().split()[1])\n"
        "print(pages * __import__('os').sysconf('SC_PAGE_SIZE') / 2**20, b.preprocessing)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    return round(float(out.stdout.split()[0]), 1)


def measure(path: Path, frames: dict[str, np.ndarray], rounds: int, calls: int) -> dict:
    """One bundle's cases, timed in interleaved rounds."""
    import edgekit

    small_bgr, small_rgb, big_bgr = frames["small_bgr"], frames["small_rgb"], frames["big_bgr"]
    target = path.name
    b = edgekit.load_bundle(path)
    host = edgekit.load_bundle(path, graph_preprocess=False)
    assert b.preprocessing == "graph", b.preprocessing
    x = b.preprocess(small_bgr, color_order="BGR")[None]
    run_bare, run_peer = bare(b), peer(b)
    assert [lab for lab, _ in run_peer(small_bgr)] == [lab for lab, _ in b.predict(small_bgr, color_order="BGR").top]
    cases = {
        "bare graph call (prepared input)": lambda: run_bare(x),
        "peer: vendor runtime + NumPy preprocessing, 32x32": lambda: run_peer(small_bgr),
        "edgekit predict 32x32 BGR": lambda: b.predict(small_bgr, color_order="BGR"),
        "edgekit predict 32x32 RGB": lambda: b.predict(small_rgb, color_order="RGB"),
        "edgekit predict 32x32 BGR, host preprocessing": lambda: host.predict(small_bgr, color_order="BGR"),
        "edgekit predict 640x480 BGR": lambda: b.predict(big_bgr, color_order="BGR"),
    }
    for fn in cases.values():  # warm up
        for _ in range(30):
            fn()
    per_round: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            per_round[name].append((time.perf_counter() - start) / calls * 1e3)
    med = {k: statistics.median(v) for k, v in per_round.items()}
    base, peer_ms = (
        med["bare graph call (prepared input)"],
        med["peer: vendor runtime + NumPy preprocessing, 32x32"],
    )
    ratios = {
        "predict 32x32 BGR / bare": med["edgekit predict 32x32 BGR"] / base,
        "predict 32x32 RGB / bare": med["edgekit predict 32x32 RGB"] / base,
        "predict 32x32 BGR host preprocessing / bare": med["edgekit predict 32x32 BGR, host preprocessing"] / base,
        "predict 640x480 BGR / bare": med["edgekit predict 640x480 BGR"] / base,
        "predict 32x32 BGR / peer": med["edgekit predict 32x32 BGR"] / peer_ms,
        "peer / bare": peer_ms / base,
    }
    result = {
        "bundle": path.name,
        "backend": b.manifest["backend"]["name"],
        "runtime_settings": b.settings,
        "ms_per_call_median": {k: round(v, 4) for k, v in med.items()},
        "ms_per_call_min_round": {k: round(min(v), 4) for k, v in per_round.items()},
        "ratios": {k: round(v, 3) for k, v in ratios.items()},
        "rss_mib_after_load": {
            "graph front (two graphs)": rss_after_load(path, True),
            "graph_preprocess=False (one graph)": rss_after_load(path, False),
        },
    }
    b.close()
    host.close()
    print(f"\n{target} ({result['backend']}, settings {result['runtime_settings']})")
    for k, v in med.items():
        print(f"  {k:<52} {v * 1e3:8.1f} us")
    for k, v in ratios.items():
        print(f"  {k:<52} {v:8.3f}")
    print(f"  resident memory after load, MiB: {result['rss_mib_after_load']}")

    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--calls", type=int, default=200, help="calls a case a round")
    ap.add_argument("--bundles", type=Path, default=ROOT / "bench" / "data" / "predict")
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "predict.json")
    args = ap.parse_args()
    args.bundles.mkdir(parents=True, exist_ok=True)
    paths = build(args.bundles)

    image = cv2.imread(str(IMAGE))
    small_bgr = np.ascontiguousarray(cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA))
    frames = {
        "small_bgr": small_bgr,
        "small_rgb": np.ascontiguousarray(small_bgr[:, :, ::-1]),
        "big_bgr": np.ascontiguousarray(cv2.resize(image, (640, 480), interpolation=cv2.INTER_LINEAR)),
    }
    results = {target: measure(paths[target], frames, args.rounds, args.calls) for target in TARGETS}

    import onnxruntime
    import openvino

    record = {
        "what": "Bundle.predict vs the bare graph call and the peer's way; reference ResNet (CIFAR-10, 32x32) INT8",
        "method": f"{args.rounds} interleaved rounds of {args.calls} calls a case; median over rounds of the mean "
        "per call; 32x32 frame = examples/data/cifar10/test/dog/0001.jpg, 640x480 = the same resized",
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "onnxruntime": onnxruntime.__version__,
            "openvino": openvino.get_version(),
            "note": "shared machine (other jobs running): absolute figures are noisy",
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=args.output.parent, delete=False, suffix=".tmp") as fh:
        json.dump(record, fh, indent=2)
        fh.write("\n")
    os.replace(fh.name, args.output)
    print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
