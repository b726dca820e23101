"""edgekit's CPU bundles against the peers' own tools, measured in one process, interleaved.

    python bench/bench_cpu.py [--model resnet] [--rounds 5]

Runs on the committed reference model and data (examples/models/<model>, examples/data/cifar10):

- PyTorch eager FP32 (the trained module, weights from weights.npz);
- ONNX Runtime FP32;
- ONNX Runtime ``quantize_static`` with its defaults;
- ONNX Runtime's best recipe here: unsigned activations, per-channel signed weights, Q/DQ;
- NNCF's default INT8 on OpenVINO (``nncf.quantize`` + ``compile_model(model, "CPU")``);
- edgekit's fp32 and int8 bundles for ``cpu`` and ``intel-cpu``, through edgekit's runtime.

Prints top-1 on the 2,000 test images, batch-1 latency (median, p90) and batch-32 throughput, each
also as a ratio to PyTorch eager, checks the issue's bars, and writes bench/results/cpu-<model>.json.
Rounds are interleaved (every variant once per round) so that drift in the machine hits all alike.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))

DATA = ROOT / "examples" / "data" / "cifar10"


def load_data(spec):
    from edgekit.imagesets import load_calibration, load_labelled

    test = load_labelled(DATA / "test", spec, spec.labels)
    calib = load_calibration(DATA / "calib", spec, size=300)
    return test, calib


def torch_variant(model_dir: Path, arch: str):
    import torch
    from models import ARCHITECTURES

    module = ARCHITECTURES[arch]()
    with np.load(model_dir / "weights.npz") as w:
        module.load_state_dict({k: torch.from_numpy(w[k]) for k in w.files})
    module.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(x)).numpy()

    return run


def ort_variant(path: Path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


class _Reader:
    def __init__(self, tensors, name):
        self.it = iter([{name: tensors[i : i + 1]} for i in range(len(tensors))])

    def get_next(self):
        return next(self.it, None)


def ort_quantized(src: Path, out: Path, calib: np.ndarray, *, best: bool) -> float:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    t = time.perf_counter()
    prepped = out.with_suffix(".prep.onnx")
    quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
    if best:
        quantize_static(str(prepped), str(out), _Reader(calib, "input"), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)  # fmt: skip
    else:
        quantize_static(str(prepped), str(out), _Reader(calib, "input"))
    return time.perf_counter() - t


def nncf_variant(src: Path, calib: np.ndarray):
    import nncf
    import openvino as ov

    t = time.perf_counter()
    model = ov.convert_model(str(src))
    q = nncf.quantize(model, nncf.Dataset([calib[i : i + 1] for i in range(len(calib))]), subset_size=len(calib))
    compiled = ov.Core().compile_model(q, "CPU")
    seconds = time.perf_counter() - t
    req = compiled.create_infer_request()

    def run(x):
        req.infer({0: x})
        return req.get_output_tensor(0).data.copy()

    return run, seconds, compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def edgekit_variant(src: Path, spec_file: Path, target: str, precision: str, out: Path):
    import edgekit

    t = time.perf_counter()
    compiled = edgekit.compile_model(
        src, target=target, precision=precision, output=out, spec=spec_file,
        calib=DATA / "calib" if precision == "int8" else None, calib_size=300,
    )  # fmt: skip
    seconds = time.perf_counter() - t
    bundle = edgekit.load_bundle(compiled.path)
    return bundle.infer, seconds, compiled.manifest["precision"]["inference"]


def top1(run, test) -> float:
    out = np.concatenate([run(test.tensors[i : i + 100]) for i in range(0, len(test.tensors), 100)])
    return 100.0 * float((out.argmax(1) == test.labels).mean())


def timed(run, x: np.ndarray, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t)
    return times


def measure(variants: dict, test, rounds: int, b1_runs: int, b32_runs: int) -> dict[str, dict]:
    x1 = test.tensors[:1].copy()
    x32 = test.tensors[:32].copy()
    lat: dict[str, list[float]] = {k: [] for k in variants}
    thr: dict[str, list[float]] = {k: [] for k in variants}
    for run in variants.values():  # warm up every variant before the first round
        timed(run, x1, 20)
        timed(run, x32, 3)
    for r in range(rounds):
        for name, run in variants.items():
            lat[name] += timed(run, x1, b1_runs)
            thr[name] += timed(run, x32, b32_runs)
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr)
    return {
        name: {
            "b1_p50_ms": 1000 * float(np.percentile(lat[name], 50)),
            "b1_p90_ms": 1000 * float(np.percentile(lat[name], 90)),
            "b32_images_per_s": 32 / float(np.median(thr[name])),
        }
        for name in variants
    }


def build(model: str, tmp: Path):
    from edgekit.frontends import load_model
    from edgekit.spec import build_spec, load_spec_file

    model_dir = ROOT / "examples" / "models" / model
    src, spec_file = model_dir / "model.onnx", model_dir / "model.toml"
    spec = build_spec(model_input=load_model(src).input, overrides=load_spec_file(spec_file))
    test, calib = load_data(spec)
    variants, info = {}, {}
    variants["pytorch-eager-fp32"] = torch_variant(model_dir, model)
    variants["ort-fp32"] = ort_variant(src)
    for name, best in (("ort-quantize_static-defaults", False), ("ort-best-u8s8-per-channel", True)):
        seconds = ort_quantized(src, tmp / f"{name}.onnx", calib.tensors, best=best)
        variants[name] = ort_variant(tmp / f"{name}.onnx")
        info[name] = {"quantize_seconds": round(seconds, 2)}
    run, seconds, prec = nncf_variant(src, calib.tensors)
    variants["nncf-int8-openvino"] = run
    info["nncf-int8-openvino"] = {"quantize_seconds": round(seconds, 2), "inference_precision": prec}
    for target in ("cpu", "intel-cpu"):
        for precision in ("fp32", "int8"):
            name = f"edgekit-{target}-{precision}"
            run, seconds, prec = edgekit_variant(src, spec_file, target, precision, tmp / name)
            variants[name] = run
            info[name] = {"compile_seconds": round(seconds, 2), "inference_precision": prec}
    return variants, info, test


def cli_compile_seconds(model: str, target: str, tmp: Path) -> float:
    """Wall time of the whole command a user runs: int8, 300 calibration images, 2,000 validation images."""
    import subprocess

    model_dir = ROOT / "examples" / "models" / model
    cmd = [sys.executable, "-m", "edgekit", "compile", str(model_dir / "model.onnx"), "--spec",
           str(model_dir / "model.toml"), "-t", target, "-p", "int8", "--calib", str(DATA / "calib"),
           "--val", str(DATA / "test"), "-o", str(tmp / f"cli-{target}"), "-q"]  # fmt: skip
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def checks(rows: dict[str, dict], compile_s: dict[str, float]) -> list[tuple[str, bool, str]]:
    r = rows
    ek, best, dflt = r["edgekit-cpu-int8"], r["ort-best-u8s8-per-channel"], r["ort-quantize_static-defaults"]
    ov, nncf, eager = r["edgekit-intel-cpu-int8"], r["nncf-int8-openvino"], r["pytorch-eager-fp32"]
    out = [
        ("cpu int8 b1 >= 0.95x ORT best recipe", best["b1_p50_ms"] / ek["b1_p50_ms"] >= 0.95,
         f"{best['b1_p50_ms'] / ek['b1_p50_ms']:.2f}x"),
        ("cpu int8 b1 >= 2x quantize_static defaults", dflt["b1_p50_ms"] / ek["b1_p50_ms"] >= 2.0,
         f"{dflt['b1_p50_ms'] / ek['b1_p50_ms']:.2f}x"),
        ("intel-cpu int8 b32 >= 0.95x NNCF INT8", ov["b32_images_per_s"] / nncf["b32_images_per_s"] >= 0.95,
         f"{ov['b32_images_per_s'] / nncf['b32_images_per_s']:.2f}x"),
        ("intel-cpu int8 b32 >= 8x PyTorch eager", ov["b32_images_per_s"] / eager["b32_images_per_s"] >= 8.0,
         f"{ov['b32_images_per_s'] / eager['b32_images_per_s']:.1f}x"),
    ]  # fmt: skip
    for target in ("cpu", "intel-cpu"):
        drop = r[f"edgekit-{target}-fp32"]["top1"] - r[f"edgekit-{target}-int8"]["top1"]
        out.append((f"{target} int8 top-1 within 0.3 points of fp32", drop <= 0.3, f"drop {drop:+.2f}"))
        out.append((f"{target} int8 compile (CLI, whole command) < 30 s", compile_s[target] < 30,
                    f"{compile_s[target]:.1f} s"))  # fmt: skip
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet", choices=("resnet", "mobilenetv2", "alexnet"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--b1-runs", type=int, default=200)
    p.add_argument("--b32-runs", type=int, default=10)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as tmp:
        tmp = Path(tmp)
        compile_s = {t: cli_compile_seconds(a.model, t, tmp) for t in ("cpu", "intel-cpu")}
        variants, info, test = build(a.model, tmp)
        rows = measure(variants, test, a.rounds, a.b1_runs, a.b32_runs)
        for name, run in variants.items():
            rows[name]["top1"] = top1(run, test)
            rows[name].update(info.get(name, {}))
    eager = rows["pytorch-eager-fp32"]
    print(f"\n{a.model}: {len(test.paths)} CIFAR-10 test images, {platform.processor() or platform.machine()}")
    print(
        f"{'variant':32} {'top-1 %':>8} {'b1 p50 ms':>10} {'b1 p90 ms':>10} {'vs eager':>9} {'b32 img/s':>10} {'vs eager':>9}"
    )
    for name, r in rows.items():
        print(f"{name:32} {r['top1']:8.2f} {r['b1_p50_ms']:10.3f} {r['b1_p90_ms']:10.3f} "
              f"{eager['b1_p50_ms'] / r['b1_p50_ms']:8.2f}x {r['b32_images_per_s']:10.0f} "
              f"{r['b32_images_per_s'] / eager['b32_images_per_s']:8.2f}x")  # fmt: skip
    results = checks(rows, compile_s)
    print()
    for label, ok, value in results:
        print(f"{'PASS' if ok else 'MISS'}  {label}: {value}")
    out = ROOT / "bench" / "results" / f"cpu-{a.model}.json"
    out.write_text(json.dumps({
        "model": a.model, "machine": {"processor": platform.processor(), "machine": platform.machine(),
                                      "python": platform.python_version()},
        "rounds": a.rounds, "rows": rows, "cli_int8_compile_seconds": compile_s,
        "checks": [{"check": c, "passed": ok, "value": v} for c, ok, v in results],
    }, indent=2) + "\n")  # fmt: skip
    print(f"\nwrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
