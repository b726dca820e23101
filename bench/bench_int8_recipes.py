"""INT8 recipes for the `cpu` target: ONNX Runtime's quantize_static against NNCF's ONNX backend.

    nice -n 5 .venv/bin/python bench/bench_int8_recipes.py [--models resnet mobilenetv2]
        [--val cifar10-test|sample|FOLDER] [--rounds 9] [--threads 1] [--variants NAME ...]

Each reference model (examples/models/<model>) is quantized to a Q/DQ INT8 ONNX model, calibrated on the
committed 300 images (examples/data/cifar10/calib, preprocessed by edgekit with the model's spec), by:

- ``edgekit-cpu`` (edgekit's current recipe for the target: ``edgekit.compile_model(target="cpu",
  precision="int8")``, the bundle's model file: quantize_static, u8s8 per-channel, mse ranges) and
  ``edgekit-cpu-minmax`` (the same recipe with minmax ranges);
- ``ort-defaults``: ONNX Runtime's ``quant_pre_process`` and ``quantize_static`` with its defaults (QDQ,
  int8 activations and weights, per-tensor, minmax);
- NNCF's ONNX backend (``nncf.quantize`` on the ``onnx.ModelProto``), as NNCF writes the graph
  (``nncf-defaults``: PERFORMANCE preset, FastBiasCorrection, mean-minmax ranges; ``nncf-full-bc``:
  ``fast_bias_correction=False``) and in the form ONNX Runtime's CPU kernels fuse (``nncf-ort-*``: per-tensor
  activations, unsigned activation zero points, see VARIANTS) with its defaults, full bias correction, the
  MIXED preset with each, and with full bias correction NNCF's MINMAX and HISTOGRAM (mse) range estimators
  (``AdvancedQuantizationParameters.activations_range_estimator_params``).

Every model runs in ONNX Runtime's CPU execution provider with edgekit's session options (all graph
optimisations) and --threads intra-op threads. Measured: top-1 agreement with FP32 (ONNX Runtime on the
source model) and top-1 on --val (by default the whole CIFAR-10 test split, 10,000 images; the committed
2,000-image sample when ../shared is absent); batch-1 latency p50 and batch-32 throughput in --rounds
interleaved rounds (every variant once a round, the order rotated each round), each figure the median of the
round medians, with the interquartile range of the round medians over the median as its noise (the JSON also
has max - min and every round). Prints a Markdown table and writes bench/results/<--out> (default
int8_recipes.json).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_budget import DATA, ROOT, validation_folder

CALIB_BATCH = 30  # 300 calibration images in 10 batches (the models have a dynamic batch)


def _nncf_variant(preset: str | None, fast_bc: bool, estimator: str | None = None, *, ort: bool = True) -> dict:
    return {"kind": "nncf", "preset": preset, "fast_bias_correction": fast_bc, "estimator": estimator, "ort": ort}


# "nncf-*" is NNCF's Q/DQ graph as it writes it; "nncf-ort-*" asks NNCF for per-tensor activations
# (QuantizationParameters(per_channel=False); its default quantizes a depthwise convolution's input per channel,
# which ONNX Runtime's QLinearConv cannot take) and then gives every activation Q/DQ pair unsigned zero points
# (int8 zero point z -> uint8 z + 128, the same grid), so that ONNX Runtime fuses them (``unsigned_activations``).
VARIANTS: dict[str, dict[str, Any]] = {
    "edgekit-cpu": {"kind": "edgekit", "method": None},
    "edgekit-cpu-minmax": {"kind": "edgekit", "method": "minmax"},
    "ort-defaults": {"kind": "ort-defaults"},
    "nncf-defaults": _nncf_variant(None, True, ort=False),
    "nncf-full-bc": _nncf_variant(None, False, ort=False),
    "nncf-ort": _nncf_variant(None, True),
    "nncf-ort-full-bc": _nncf_variant(None, False),
    "nncf-ort-mixed": _nncf_variant("mixed", True),
    "nncf-ort-mixed-full-bc": _nncf_variant("mixed", False),
    "nncf-ort-full-bc-minmax": _nncf_variant(None, False, "minmax"),
    "nncf-ort-full-bc-histogram": _nncf_variant(None, False, "histogram"),
}


def unsigned_activations(model: Any) -> int:
    """Give every activation QuantizeLinear/DequantizeLinear pair with an int8 zero point a uint8 one (z + 128).

    The grid is the same (a value x maps to clamp(round(x / s) + z) in [-128, 127], or that plus 128 in
    [0, 255]), so the model computes the same numbers; ONNX Runtime's CPU kernels fuse a Conv, Add or
    MatMul into its quantized form only when its input and output activations have the same type, and NNCF
    writes uint8 after ReLU/Clip and int8 elsewhere. Weights (DequantizeLinear of an initializer) stay int8.
    Returns the number of zero points changed.
    """
    import onnx
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    changed: set[str] = set()
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear") or len(n.input) < 3 or n.input[0] in inits:
            continue
        zp = inits.get(n.input[2])
        if zp is not None and zp.data_type == onnx.TensorProto.INT8 and zp.name not in changed:
            shifted = (numpy_helper.to_array(zp).astype(np.int16) + 128).astype(np.uint8)
            zp.CopyFrom(numpy_helper.from_array(shifted, zp.name))
            changed.add(zp.name)
    outputs = {n.output[0] for n in g.node if n.op_type == "QuantizeLinear" and n.input[2] in changed}
    for vi in [*g.value_info, *g.output]:
        if vi.name in outputs:
            vi.type.tensor_type.elem_type = onnx.TensorProto.UINT8
    return len(changed)


def session(path: Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with the options edgekit's runtime uses (all graph optimisations)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


class _Reader:
    """ONNX Runtime's calibration reader over fixed batches."""

    def __init__(self, calib: np.ndarray, name: str) -> None:
        self.it = iter({name: calib[i : i + CALIB_BATCH]} for i in range(0, len(calib), CALIB_BATCH))

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.it, None)


def ort_defaults(src: Path, out: Path, calib: np.ndarray, name: str) -> dict[str, Any]:
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepped = out.with_suffix(".prep.onnx")
    with contextlib.redirect_stdout(io.StringIO()):
        quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        quantize_static(str(prepped), str(out), _Reader(calib, name))
    return {"tool": "onnxruntime quantize_static defaults (QDQ, s8s8 per-tensor, minmax)"}


@contextlib.contextmanager
def nncf_engine_without_layout_optimisation():
    """Run NNCF's ONNX engine with ONNX Runtime's optimisations up to ORT_ENABLE_EXTENDED, not its default (all).

    NNCF's full BiasCorrection runs sub-graphs of the model, each with the corrected layer's output added as a
    graph output. With onnxruntime 1.32's layout optimisation (ORT_ENABLE_LAYOUT, the NCHWc transformer, part
    of the default ORT_ENABLE_ALL) the sub-graph of the reference ResNet's first projection block
    (layers.3/conv2 + shortcut conv + Add + Relu) loses that output and the session fails: "Failed to find
    node output or a constant initializer producing output: /layers/layers.3/conv2/Conv_output_0". At
    ORT_ENABLE_EXTENDED it runs. The engine only computes FP32 statistics, which the level does not change
    beyond rounding. Applied to every NNCF variant alike.
    """
    import nncf.onnx.engine as engine
    import onnxruntime as ort

    class _Options(ort.SessionOptions):
        def __init__(self) -> None:
            super().__init__()
            self.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED

    shim = type("ort", (), {"SessionOptions": _Options, "InferenceSession": ort.InferenceSession})
    saved = engine.rt
    engine.rt = shim
    try:
        yield
    finally:
        engine.rt = saved


def nncf_quantize(src: Path, out: Path, calib: np.ndarray, name: str, v: dict[str, Any]) -> dict[str, Any]:
    import nncf
    import onnx
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, QuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    logging.getLogger("nncf").setLevel(logging.ERROR)
    items = [calib[i : i + CALIB_BATCH] for i in range(0, len(calib), CALIB_BATCH)]
    kwargs: dict[str, Any] = {}
    if v["preset"]:
        kwargs["preset"] = getattr(nncf.QuantizationPreset, v["preset"].upper())
    advanced: dict[str, Any] = {}
    if v["estimator"]:
        est = {"minmax": RangeEstimatorParametersSet.MINMAX, "histogram": RangeEstimatorParametersSet.HISTOGRAM}
        advanced["activations_range_estimator_params"] = est[v["estimator"]]
    if v["ort"]:
        advanced["activations_quantization_params"] = QuantizationParameters(per_channel=False)
    if advanced:
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(**advanced)
    with contextlib.redirect_stdout(io.StringIO()), nncf_engine_without_layout_optimisation():
        q = nncf.quantize(
            onnx.load(str(src)),
            nncf.Dataset(items, lambda x: {name: x}),
            subset_size=len(items),
            fast_bias_correction=v["fast_bias_correction"],
            **kwargs,
        )
    shifted = unsigned_activations(q) if v["ort"] else 0
    onnx.save(q, str(out))
    return {
        "tool": f"nncf.quantize (nncf {nncf.__version__}, ONNX backend)",
        "preset": v["preset"] or "default (performance)",
        "fast_bias_correction": v["fast_bias_correction"],
        "activations_range_estimator": v["estimator"] or "default (mean-minmax)",
        "activations_per_tensor": v["ort"],
        "zero_points_made_unsigned": shifted,
    }


def edgekit_cpu(model: str, out: Path, method: str | None) -> tuple[Path, dict[str, Any]]:
    import edgekit

    d = ROOT / "examples" / "models" / model
    extra = {"calibration_method": method} if method else {}
    compiled = edgekit.compile_model(
        d / "model.onnx", spec=d / "model.toml", target="cpu", precision="int8", calib=DATA / "calib",
        calib_size=300, output=out, **extra,
    )  # fmt: skip
    return compiled.path / "model.onnx", compiled.manifest["quantization"]


def build(model: str, name: str, calib: np.ndarray, input_name: str, tmp: Path) -> tuple[Path, dict[str, Any]]:
    """Quantize ``model`` with variant ``name``; return the Q/DQ ONNX file and what made it."""
    src = ROOT / "examples" / "models" / model / "model.onnx"
    v = VARIANTS[name]
    out = tmp / f"{model}-{name}.onnx"
    t = time.perf_counter()
    if v["kind"] == "edgekit":
        out, info = edgekit_cpu(model, tmp / f"{model}-{name}", v["method"])
    elif v["kind"] == "ort-defaults":
        info = ort_defaults(src, out, calib, input_name)
    else:
        info = nncf_quantize(src, out, calib, input_name, v)
    return out, {**info, "quantize_seconds": round(time.perf_counter() - t, 1)}


def runner(sess: Any, name: str) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: sess.run(None, {name: x})[0]


def predictions(run: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> np.ndarray:
    return np.concatenate([run(x[i : i + 250]).argmax(1) for i in range(0, len(x), 250)])


def timed(run: Callable[[np.ndarray], Any], x: np.ndarray, n: int) -> float:
    """Median seconds of ``n`` calls."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def speed(runs: dict[str, Callable[[np.ndarray], Any]], x: np.ndarray, rounds: int, b1: int, b32: int) -> dict:
    """Batch-1 p50 and batch-32 throughput, interleaved: every variant once a round, the order rotated.

    Batch 1: each variant's ``b1`` runs in one go, its round figure their median. Batch 32: a run takes 10 to
    20 ms, long enough for the other jobs on a shared machine to land inside it, and per-variant blocks of runs
    differed by up to 2x between rounds; so within a round the variants take turns run by run (``b32`` sweeps),
    and each variant's round figure is the median of its runs.
    """
    x1, x32 = x[:1].copy(), x[:32].copy()
    names = list(runs)
    for run in runs.values():  # warm-up
        timed(run, x1, 30)
        timed(run, x32, 3)
    r1: dict[str, list[float]] = {k: [] for k in names}
    r32: dict[str, list[float]] = {k: [] for k in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for k in order:
            r1[k].append(timed(runs[k], x1, b1))
        sweeps: dict[str, list[float]] = {k: [] for k in names}
        for _ in range(b32):
            for k in order:
                t = time.perf_counter()
                runs[k](x32)
                sweeps[k].append(time.perf_counter() - t)
        for k in names:
            r32[k].append(float(np.median(sweeps[k])))
        print(f"  latency round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    out = {}
    for k in names:
        m1, m32 = float(np.median(r1[k])), float(np.median(r32[k]))
        out[k] = {
            "b1_p50_ms": round(1000 * m1, 4),
            "b1_iqr_pct": round(100 * float(np.subtract(*np.percentile(r1[k], [75, 25]))) / m1, 1),
            "b1_range_pct": round(100 * (max(r1[k]) - min(r1[k])) / m1, 1),
            "b1_round_ms": [round(1000 * t, 4) for t in r1[k]],
            "b32_images_per_s": round(32 / m32, 1),
            "b32_iqr_pct": round(100 * float(np.subtract(*np.percentile(r32[k], [75, 25]))) / m32, 1),
            "b32_range_pct": round(100 * (max(r32[k]) - min(r32[k])) / m32, 1),
            "b32_round_ms": [round(1000 * t, 3) for t in r32[k]],
        }
    return out


def op_counts(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for n in onnx.load(str(path)).graph.node:
        counts[n.op_type] = counts.get(n.op_type, 0) + 1
    return counts


def run_model(model: str, names: list[str], val: Path, a: argparse.Namespace, tmp: Path) -> list[dict]:
    from edgekit.frontends import load_model
    from edgekit.imagesets import load_calibration, load_labelled
    from edgekit.spec import build_spec, load_spec_file

    d = ROOT / "examples" / "models" / model
    spec = build_spec(model_input=load_model(d / "model.onnx").input, overrides=load_spec_file(d / "model.toml"))
    calib = load_calibration(DATA / "calib", spec, size=300).tensors
    test = load_labelled(val, spec, spec.labels)
    x, labels = test.tensors, test.labels
    print(f"{model}: {len(calib)} calibration images, {len(x)} test images", file=sys.stderr, flush=True)
    paths, info = {"fp32": d / "model.onnx"}, {"fp32": {"tool": "source model"}}
    for name in names:
        paths[name], info[name] = build(model, name, calib, spec.input.name, tmp)
        print(f"  built {name} in {info[name]['quantize_seconds']} s", file=sys.stderr, flush=True)
    runs = {k: runner(session(p, a.threads), spec.input.name) for k, p in paths.items()}
    fp32 = predictions(runs["fp32"], x)
    timing = speed(runs, x, a.rounds, a.b1_runs, a.b32_runs)
    rows = []
    preds = {k: fp32 if k == "fp32" else predictions(runs[k], x) for k in paths}
    base = preds.get("edgekit-cpu")
    for k, pred in preds.items():
        # Paired against edgekit's current recipe: images on which only one of the two agrees with FP32. The
        # difference in agreement is (this - that) / n; its standard error about sqrt(this + that) / n.
        paired = {}
        if base is not None and k not in ("fp32", "edgekit-cpu"):
            this, that = int(((pred == fp32) & (base != fp32)).sum()), int(((pred != fp32) & (base == fp32)).sum())
            paired = {
                "vs_edgekit_cpu": {
                    "only_this_agrees": this,
                    "only_edgekit_cpu_agrees": that,
                    "difference_points": round(100 * (this - that) / len(x), 2),
                    "standard_error_points": round(100 * (this + that) ** 0.5 / len(x), 2),
                }
            }
        rows.append({
            "model": model, "variant": k, "agreement": round(100 * float((pred == fp32).mean()), 2),
            "top1": round(100 * float((pred == labels).mean()), 2), **timing[k],
            "b1_vs_fp32": round(timing["fp32"]["b1_p50_ms"] / timing[k]["b1_p50_ms"], 3),
            "b32_vs_fp32": round(timing[k]["b32_images_per_s"] / timing["fp32"]["b32_images_per_s"], 3),
            "ops": op_counts(paths[k]), "made_by": info[k], **paired,
        })  # fmt: skip
        print(json.dumps({r: rows[-1][r] for r in ("model", "variant", "agreement", "top1", "b1_p50_ms",
                                                    "b32_images_per_s")}), flush=True)  # fmt: skip
    return rows


def cpu_name() -> str:
    """The processor's model name (Linux), else the architecture."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def table(rows: list[dict]) -> str:
    ref = {r["model"]: r for r in rows if r["variant"] == "edgekit-cpu"}
    lines = [
        "| model | variant | agreement with FP32 | top-1 | batch-1 p50 ms (IQR) | vs FP32 | vs edgekit-cpu | "
        "batch-32 img/s (IQR) | vs FP32 | agreement vs edgekit-cpu (s.e.) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = ref.get(r["model"])
        vs = f"{base['b1_p50_ms'] / r['b1_p50_ms']:.2f}x" if base else ""
        agreement = "-" if r["variant"] == "fp32" else f"{r['agreement']:.2f}%"
        p = r.get("vs_edgekit_cpu")
        diff = f"{p['difference_points']:+.2f} ({p['standard_error_points']:.2f})" if p else ""
        lines.append(
            f"| {r['model']} | `{r['variant']}` | {agreement} | {r['top1']:.2f}% | {r['b1_p50_ms']:.3f} "
            f"({r['b1_iqr_pct']:.0f}%) | {r['b1_vs_fp32']:.2f}x | {vs} | {r['b32_images_per_s']:.0f} "
            f"({r['b32_iqr_pct']:.0f}%) | {r['b32_vs_fp32']:.2f}x | {diff} |"
        )
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["resnet", "mobilenetv2"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--val", default="cifar10-test", help="cifar10-test (default), sample, or a folder")
    p.add_argument("--rounds", type=int, default=9, help="interleaved latency rounds (default 9)")
    p.add_argument("--b1-runs", type=int, default=300, help="batch-1 runs per variant per round")
    p.add_argument("--b32-runs", type=int, default=25, help="batch-32 runs per variant per round")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (0: its choice)")
    p.add_argument("--out", default="int8_recipes.json", help="file name under bench/results/")
    p.add_argument("--table", metavar="JSON", help="only print the Markdown table of an earlier results file")
    a = p.parse_args()
    if a.table:
        print(table(json.loads(Path(a.table).read_text())["rows"]))
        return 0
    import nncf
    import onnxruntime

    val = validation_folder(a.val)
    rows: list[dict] = []
    len_val = sum(1 for f in val.rglob("*") if f.is_file())
    t = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgekit-int8-recipes-") as tmp:
        for model in a.models:
            rows += run_model(model, a.variants, val, a, Path(tmp))
    doc = {
        "val": (str(val.relative_to(ROOT)) if ROOT in val.parents else a.val) + f" ({len_val} images)",
        "calibration": "examples/data/cifar10/calib (300 images)",
        "host": cpu_name(),
        "onnxruntime": onnxruntime.__version__, "nncf": nncf.__version__, "threads": a.threads,
        "rounds": a.rounds, "b1_runs": a.b1_runs, "b32_runs": a.b32_runs,
        "seconds": round(time.perf_counter() - t), "rows": rows,
    }  # fmt: skip
    (ROOT / "bench" / "results" / a.out).write_text(json.dumps(doc, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
