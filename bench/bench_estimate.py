"""Fit and validate the latency estimator against published figures and this host's measurements.

    python bench/bench_estimate.py            # published figures only (seconds)
    python bench/bench_estimate.py --host     # also compile and measure the examples models here (minutes)

Published figures: bench/data/published_latency.toml (each with its source and table row); the models are
rebuilt from their published architectures (bench/published_models.py). For each device class the
estimator's terms (edgekit/report/estimate.py: per-inference floor, per-layer overhead, efficiency of dense
and depthwise convolutions, half-efficiency layer size) are fitted on a grid to the class's figures; the
error is reported in-sample ("fit") and leave-one-out ("held out": each figure predicted by terms fitted
without it), beside the plain roofline ("before"). The band of a class is the largest held-out
measured/estimate ratio (either way), rounded up; the terms and band are what targets/*.toml carry.

``--host`` compiles the committed examples models (examples/models/*) for cpu (fp32, int8) and intel-cpu
(fp32, fp16, int8), times them batch 1 with the host ceilings' own timing code (edgekit.report.estimate
call_times), and estimates each run with this host's measured ceilings (host_hardware) and the target file's
terms: a check on runs the fit never saw. Ceilings and runs are measured alike, so that the machine's load
hits both the same way: on the same pinned thread count (``--threads``, default 1), at the same statistic
(the fast time: a round's 10th percentile), in interleaved rounds (``--rounds``), the best round kept for
both. Each run is checked against the class's band (from the published figures) and against this host's
band (the largest measured/estimate ratio here), held out by model. Writes bench/results/estimate.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from published_models import MODELS  # noqa: E402

from edgekit import _toml as tomllib  # noqa: E402
from edgekit.report.estimate import BYTES, GraphCost, estimate, peak_ops, with_terms  # noqa: E402
from edgekit.targets import Hardware, Target, get_target  # noqa: E402

DATA = ROOT / "bench" / "data" / "published_latency.toml"
RESULTS = ROOT / "bench" / "results" / "estimate.json"
CLASSES = {
    "jetson-gpu": ("jetson-nano", "jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "jetson-xavier-nx"),
    "x86-cpu": ("cpu", "intel-cpu"),
    "intel-igpu": ("intel-igpu",),
    "intel-npu": ("intel-npu",),
    "arm-cortex-a72": ("raspberry-pi-4",),
    "arm-cortex-a76": ("raspberry-pi-5",),
}
CLASS_OF = {target: name for name, targets in CLASSES.items() for target in targets}
GRID = {
    "conv_efficiency": np.geomspace(0.02, 1.0, 18),
    "depthwise_efficiency": np.geomspace(0.005, 1.0, 16),
    "half_efficiency_mmacs": np.array([0.0, 1.0, 3.0, 10.0, 30.0, 100.0]),
    "layer_overhead_us": np.array([0.0, 2.0, 5.0, 10.0, 20.0, 40.0, 80.0, 150.0, 300.0]),
    "inference_floor_ms": np.array([0.0, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0]),
}
# CPU classes move no data to a device: their floor is the runtime call alone (ONNX Runtime's, measured by
# host_hardware on an x86 host: about 0.01 ms), so their floor is searched up to 0.1 ms only.
CPU_CLASSES = {"x86-cpu", "arm-cortex-a72", "arm-cortex-a76"}
CPU_FLOORS = np.array([0.0, 0.02, 0.05, 0.1])
CEILINGS = ("fp32_tflops", "fp16_tflops", "int8_tops", "memory_bandwidth_gbs", "inference_floor_ms", "layer_overhead_us",
            "half_efficiency_mmacs")  # fmt: skip
HOST_RUNS = (("cpu", "fp32"), ("cpu", "int8"), ("intel-cpu", "fp32"), ("intel-cpu", "fp16"), ("intel-cpu", "int8"))


def published() -> dict:
    return tomllib.loads(DATA.read_text(encoding="utf-8"))


def _layer_arrays(cost: GraphCost, hw: Hardware, precision: str) -> dict[str, np.ndarray]:
    ops = peak_ops(hw, precision)[0]
    bw = (hw.memory_bandwidth_gbs or 0) * 1e9
    macs = np.array([la.macs for la in cost.layers], float)
    return {
        "peak_s": 2.0 * macs / ops,  # compute at peak
        "macs": macs,
        "depthwise": np.array([la.op_class == "depthwise" for la in cost.layers]),
        "memory_s": np.array(
            [(la.weight_elements + la.activation_elements) * BYTES[precision] / bw for la in cost.layers]
        ),
        "unfused": float(sum(la.op_class != "fused" for la in cost.layers)),
    }


def grid_predictions(points: list[dict[str, np.ndarray]], floors: np.ndarray) -> tuple[np.ndarray, list[tuple]]:
    """Predicted seconds of every point (columns) for every grid combination (rows), and the combinations."""
    effs = list(itertools.product(GRID["conv_efficiency"], GRID["depthwise_efficiency"], GRID["half_efficiency_mmacs"]))
    base = np.empty((len(effs), len(points)))
    for j, p in enumerate(points):
        for i, (ce, de, half) in enumerate(effs):
            eff = np.where(p["depthwise"], de, ce) * p["macs"] / (p["macs"] + half * 1e6 + 1e-30)
            compute = np.where(p["macs"] > 0, p["peak_s"] / np.maximum(eff, 1e-12), 0.0)
            base[i, j] = np.maximum(compute, p["memory_s"]).sum()
    unfused = np.array([p["unfused"] for p in points])
    extra = list(itertools.product(GRID["layer_overhead_us"], floors))
    pred = np.concatenate([base + o * 1e-6 * unfused + f * 1e-3 for o, f in extra])
    combos = [(*e, *x) for x, e in itertools.product(extra, effs)]
    return pred, combos


def _choose(pred: np.ndarray, measured: np.ndarray, columns: np.ndarray) -> int:
    """The combination with the least mean absolute log error on ``columns`` (ties: the median's)."""
    err = np.abs(np.log(pred[:, columns] / measured[columns]))
    return int(np.lexsort((np.median(err, axis=1), err.mean(axis=1)))[0])


def _pct(est: np.ndarray, measured: np.ndarray) -> np.ndarray:
    return 100.0 * (est - measured) / measured


def fit_class(name: str, figures: list[dict]) -> dict:
    points, roof = [], []
    for f in figures:
        hw = get_target(f["target"]).hardware
        cost = MODELS[f["model"]]()
        points.append(_layer_arrays(cost, hw, f["precision"]))
        roof.append(estimate(cost, hw, f["precision"], roofline=True)["ms"] / 1e3)
    measured = np.array([f["ms"] for f in figures]) / 1e3
    pred, combos = grid_predictions(points, CPU_FLOORS if name in CPU_CLASSES else GRID["inference_floor_ms"])
    every = np.arange(len(figures))
    best = _choose(pred, measured, every)
    held = np.array([pred[_choose(pred, measured, every[every != i]), i] for i in every])
    ratios = np.maximum(held / measured, measured / held)
    band = float(np.ceil(ratios.max() * 10) / 10)
    terms = dict(zip(("conv_efficiency", "depthwise_efficiency", "half_efficiency_mmacs", "layer_overhead_us",
                      "inference_floor_ms"), (float(v) for v in combos[best]), strict=True))  # fmt: skip
    rows = [
        {**{k: f[k] for k in ("target", "model", "precision", "ms", "source")}, "roofline_ms": round(r * 1e3, 4),
         "fitted_ms": round(float(pred[best, i]) * 1e3, 4), "held_out_ms": round(float(held[i]) * 1e3, 4)}
        for i, (f, r) in enumerate(zip(figures, roof, strict=True))
    ]  # fmt: skip
    return {
        "class": name,
        "figures": len(figures),
        "devices": sorted({f["target"] for f in figures}),
        "terms": {k: round(v, 4) for k, v in terms.items()},
        "band": band,
        "roofline_median_abs_error_pct": round(float(np.median(np.abs(_pct(np.array(roof), measured)))), 1),
        "fit_median_abs_error_pct": round(float(np.median(np.abs(_pct(pred[best], measured)))), 1),
        "held_out_median_abs_error_pct": round(float(np.median(np.abs(_pct(held, measured)))), 1),
        "roofline_measured_over_estimate": [round(float(x), 2) for x in (min(measured / roof), max(measured / roof))],
        "rows": rows,
    }


def check_targets(fits: list[dict]) -> list[dict]:
    """Each shipped target's estimate with its own file's terms on the published figures (what the report uses)."""
    out = []
    for fit in fits:
        for row in fit["rows"]:
            hw = get_target(row["target"]).hardware
            est = estimate(MODELS[row["model"]](), hw, row["precision"])
            out.append({"class": fit["class"], "target": row["target"], "model": row["model"], "ms": row["ms"],
                        "estimated_ms": est["ms"], "error_pct": round(float(_pct(est["ms"], row["ms"])), 1),
                        "within_band": est["low_ms"] <= row["ms"] <= est["high_ms"]})  # fmt: skip
    return out


# The option that pins a bundle's threads, per backend (the target file's [backend_options]).
THREAD_OPTION = {"onnxruntime": "intra_op_threads", "openvino": "num_threads"}


def _pinned(target: str, threads: int) -> Target:
    """``target`` with its bundles' inference threads pinned to ``threads`` (0: the runtime's default)."""
    t = get_target(target)
    if not threads:
        return t
    return dataclasses.replace(t, backend_options={**t.backend_options, THREAD_OPTION[t.backend]: threads})


def host_check(seconds: float, rounds: int, threads: int) -> dict:
    """Compile and measure the examples models here; estimate each with this host's ceilings and the target's terms.

    Ceilings and models are measured alike, so that the machine's load hits both the same way: on ``threads``
    threads each (ONNX Runtime's intra-op threads for the ceilings, the bundles' own thread option), at their
    fast time (``fast_time``: the 10th percentile of a round's calls), in ``rounds`` interleaved rounds of one
    ceiling measurement and a ``seconds / rounds`` timing of every bundle. The best of the rounds is kept for
    both: the ceilings' ``best_of`` and each model's least fast time.
    """
    import onnx

    import edgekit
    from edgekit.report.estimate import FAST_PERCENTILE, best_of, call_times, graph_cost, host_hardware

    data = ROOT / "examples" / "data" / "cifar10"
    x = np.random.default_rng(0).random((1, 3, 32, 32), np.float32)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_dir in sorted((ROOT / "examples" / "models").iterdir()):
            src = model_dir / "model.onnx"
            cost = graph_cost(onnx.load(str(src)), (1, 3, 32, 32))
            for target, precision in HOST_RUNS:
                out = Path(tmp) / f"{model_dir.name}-{target}-{precision}.edgekit"
                compiled = edgekit.compile_model(
                    src, target=_pinned(target, threads), precision=precision, output=out,
                    spec=model_dir / "model.toml", calib=data / "calib" if precision == "int8" else None,
                    calib_size=300,
                )  # fmt: skip
                runs.append((model_dir.name, target, precision, cost, edgekit.load_bundle(compiled.path)))
        hosts, fast, p50 = [], [[] for _ in runs], [[] for _ in runs]
        for r in range(rounds):
            hosts.append(host_hardware(seconds=0.2, threads=threads))
            for i, (*_, bundle) in enumerate(runs):
                times = call_times(lambda b=bundle: b.infer(x), seconds / rounds) * 1e3
                fast[i].append(float(np.percentile(times, FAST_PERCENTILE)))
                p50[i].append(float(np.percentile(times, 50)))
            print(f"  round {r + 1}/{rounds}: fp32 {hosts[-1].fp32_tflops:g} TFLOPS, int8 {hosts[-1].int8_tops:g} TOPS, "
                  f"{hosts[-1].layer_overhead_us:g} us a layer", flush=True)  # fmt: skip
    host = functools.reduce(best_of, hosts)
    rows = []
    for (model, target, precision, cost, _), fast_ms, p50_ms in zip(runs, fast, p50, strict=True):
        ms = round(min(fast_ms), 4)
        on = with_terms(host, get_target(target).hardware)
        fitted, roof = estimate(cost, on, precision), estimate(cost, on, precision, roofline=True)
        rows.append({"model": model, "target": target, "precision": precision, "measured_ms": ms,
                     "measured_rounds_ms": [round(v, 4) for v in fast_ms],
                     "measured_p50_ms": round(float(np.median(p50_ms)), 4),
                     "roofline_ms": roof["ms"], "estimated_ms": fitted["ms"],
                     "roofline_error_pct": round(float(_pct(roof["ms"], ms)), 1),
                     "error_pct": round(float(_pct(fitted["ms"], ms)), 1),
                     "measured_over_estimate": round(ms / fitted["ms"], 3), "band": fitted["band"],
                     "within_band": fitted["low_ms"] <= ms <= fitted["high_ms"]})  # fmt: skip
        print(f"  host {model:12s} {target:10s} {precision}: measured {ms:.3f} ms (p50 {rows[-1]['measured_p50_ms']:.3f}), "
              f"roofline {roof['ms']:.3f}, estimate {fitted['ms']:.3f} ({rows[-1]['error_pct']:+.1f}%)")  # fmt: skip
    spread = {f: [min(getattr(h, f) for h in hosts), max(getattr(h, f) for h in hosts)] for f in CEILINGS}
    band, held_out = host_bands(rows)
    for row in rows:
        b = held_out[row["model"]]
        row["host_band_held_out"] = b
        row["within_host_band"] = row["estimated_ms"] / b <= row["measured_ms"] <= row["estimated_ms"] * b
    med = lambda key: round(float(np.median(np.abs([r[key] for r in rows]))), 1)  # noqa: E731
    return {"threads": threads, "rounds": rounds, "statistic": f"p{FAST_PERCENTILE} of each round, best round",
            "host_ceilings": {k: v for k, v in dataclasses.asdict(host).items() if v}, "ceilings_over_rounds": spread,
            "rows": rows, "roofline_median_abs_error_pct": med("roofline_error_pct"),
            "median_abs_error_pct": med("error_pct"), "band": rows[0]["band"],
            "within_band": sum(r["within_band"] for r in rows), "host_band": band,
            "within_host_band_held_out": sum(r["within_host_band"] for r in rows)}  # fmt: skip


def _band(ratios: list[float]) -> float:
    """The band that holds every measured/estimate ratio (either way), rounded up to 0.1, as the classes' are."""
    return float(np.ceil(max(max(ratios), max(1.0 / r for r in ratios)) * 10 - 1e-9) / 10)


def host_bands(rows: list[dict]) -> tuple[float, dict[str, float]]:
    """This host's band (from all its runs) and, per model, the band set by the other models' runs alone.

    Nothing is fitted on the host runs, but a band taken from them holds them by construction; the held-out
    band of a model, from the other models' runs, is the honest check that the band holds a model it has not
    seen.
    """
    ratios = {r["model"]: [] for r in rows}
    for r in rows:
        ratios[r["model"]].append(r["measured_ms"] / r["estimated_ms"])
    every = [x for v in ratios.values() for x in v]
    return _band(every), {m: _band([x for n, v in ratios.items() if n != m for x in v]) for m in ratios}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", action="store_true", help="also compile and measure the examples models here")
    parser.add_argument("--seconds", type=float, default=2.0, help="latency measuring time per host run, all rounds")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of ceilings and host runs")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="inference threads of the ceilings and host runs (0: each runtime's default)",
    )
    args = parser.parse_args()
    doc = published()
    figures = doc["figure"]
    fits = [fit_class(name, [f for f in figures if CLASS_OF[f["target"]] == name]) for name in CLASSES
            if any(CLASS_OF[f["target"]] == name for f in figures)]  # fmt: skip
    print("Published figures: median absolute error per device class (bench/data/published_latency.toml)\n")
    print(f"{'class':14s} {'devices':38s} {'n':>3s} {'roofline':>9s} {'fitted':>7s} {'held out':>9s} {'band':>5s}")
    for f in fits:
        print(f"{f['class']:14s} {', '.join(f['devices']):38s} {f['figures']:3d} "
              f"{f['roofline_median_abs_error_pct']:8.1f}% {f['fit_median_abs_error_pct']:6.1f}% "
              f"{f['held_out_median_abs_error_pct']:8.1f}% {f['band']:5.1f}")  # fmt: skip
    every = [r for f in fits for r in f["rows"]]
    overall = {
        "roofline": round(float(np.median([abs(_pct(r["roofline_ms"], r["ms"])) for r in every])), 1),
        "fitted": round(float(np.median([abs(_pct(r["fitted_ms"], r["ms"])) for r in every])), 1),
        "held_out": round(float(np.median([abs(_pct(r["held_out_ms"], r["ms"])) for r in every])), 1),
    }
    print(f"{'all':14s} {'':38s} {len(every):3d} {overall['roofline']:8.1f}% {overall['fitted']:6.1f}% "
          f"{overall['held_out']:8.1f}%")  # fmt: skip
    print("\nFitted terms per class (targets/*.toml [hardware]):")
    for f in fits:
        print(f"  {f['class']}: " + ", ".join(f"{k} = {v:g}" for k, v in f["terms"].items()) + f", band {f['band']:g}")
    shipped = check_targets(fits)
    shipped_med = round(float(np.median([abs(r["error_pct"]) for r in shipped])), 1)
    print(f"\nWith the terms as shipped in targets/*.toml: median absolute error {shipped_med}% on {len(shipped)} "
          f"figures, {sum(r['within_band'] for r in shipped)} within their band")  # fmt: skip
    for m in doc.get("missing", []):
        print(f"  not found: {m['what']}")
    result = {"classes": fits, "overall_median_abs_error_pct": overall, "shipped_terms": shipped,
              "shipped_median_abs_error_pct": shipped_med, "missing": doc.get("missing", [])}  # fmt: skip
    if args.host:
        print("\nThis host (examples models, edgekit's latency code, host ceilings + target terms):")
        result["host"] = host = host_check(args.seconds, args.rounds, args.threads)
        n = len(host["rows"])
        print(f"host: median absolute error roofline {host['roofline_median_abs_error_pct']}%, "
              f"fitted {host['median_abs_error_pct']}%; {host['within_band']}/{n} within the class's band "
              f"(x/÷ {host['band']:g}); this host's band x/÷ {host['host_band']:g}, "
              f"{host['within_host_band_held_out']}/{n} within it held out (band from the other models' runs)")  # fmt: skip
    elif RESULTS.is_file():
        old = json.loads(RESULTS.read_text(encoding="utf-8")).get("host")
        if old:
            result["host"] = old
    RESULTS.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
