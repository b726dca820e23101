"""The estimator's terms beyond the roofline, their sources, their validation on published figures, and the
report keeping estimates (always shown with their band) off the Pareto front and out of the recommendations."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgekit
from edgekit import _toml as tomllib
from edgekit.report import summary
from edgekit.report.estimate import (
    TERMS,
    UNCALIBRATED_BAND,
    GraphCost,
    Layer,
    estimate,
    graph_cost,
    with_terms,
)
from edgekit.targets import Hardware, list_targets, targets_folder

ROOT = Path(__file__).resolve().parents[2]
HW = Hardware(fp32_tflops=1.0, memory_bandwidth_gbs=1000.0)
DENSE = Layer("dense", "Conv", 10_000_000, 0, 0, "conv")
DEPTHWISE = Layer("dw", "Conv", 10_000_000, 0, 0, "depthwise")


def test_depthwise_efficiency_lowers_the_estimates_throughput():
    hw = Hardware(fp32_tflops=1.0, memory_bandwidth_gbs=1000.0, conv_efficiency=0.5, depthwise_efficiency=0.05)
    dense, depthwise = estimate(GraphCost((DENSE,), 0), hw, "fp32"), estimate(GraphCost((DEPTHWISE,), 0), hw, "fp32")
    assert dense["ms"] == pytest.approx(2e7 / (1e12 * 0.5) * 1e3)  # 0.04 ms at half of peak
    assert depthwise["ms"] == pytest.approx(10 * dense["ms"])  # the same MACs, a tenth of the rate
    assert estimate(GraphCost((DEPTHWISE,), 0), HW, "fp32")["ms"] < depthwise["ms"]  # the roofline: at peak


def test_small_layers_run_further_from_peak_than_large_ones():
    hw = Hardware(fp32_tflops=1.0, memory_bandwidth_gbs=1000.0, conv_efficiency=1.0, half_efficiency_mmacs=10.0)
    big, small = Layer("big", "Conv", 10**9, 0, 0), Layer("small", "Conv", 10**7, 0, 0)
    per_mac = lambda layer: estimate(GraphCost((layer,), 0), hw, "fp32")["ms"] / layer.macs  # noqa: E731
    assert per_mac(small) == pytest.approx(2 * 2e-12 * 1e3)  # at n1/2 = 10 M MACs: half efficiency
    assert per_mac(big) < 1.02 * 2e-12 * 1e3  # 1 G MACs: within 1% of its efficiency


def test_the_floor_bounds_the_minimum_and_overhead_counts_unfused_layers():
    hw = Hardware(fp32_tflops=1.0, memory_bandwidth_gbs=1000.0, inference_floor_ms=0.5, layer_overhead_us=10.0)
    assert estimate(GraphCost((), 0), hw, "fp32")["ms"] == pytest.approx(0.5)
    layers = (DENSE, Layer("relu", "Relu (fused)", 0, 0, 0), Layer("pool", "MaxPool", 0, 0, 100))
    est = estimate(GraphCost(layers, 0), hw, "fp32")
    assert est["floor_ms"] == pytest.approx(0.5) and est["overhead_ms"] == pytest.approx(0.02)  # 2 unfused layers
    assert est["ms"] >= 0.5 + 0.02 + est["compute_ms"] - 1e-9
    for tiny in (GraphCost((Layer("x", "Conv", 1, 0, 1),), 0), GraphCost(layers, 0)):
        assert estimate(tiny, hw, "fp32")["ms"] >= hw.inference_floor_ms


def test_an_estimate_carries_its_band_and_the_roofline_is_kept_apart():
    hw = Hardware(fp32_tflops=1.0, conv_efficiency=0.5, estimate_band=1.5, estimate_class="x", estimate_error_pct=12)
    est = estimate(GraphCost((DENSE,), 0), hw, "fp32")
    assert est["model"] == "fitted" and est["band"] == 1.5 and "median 12%" in est["band_source"]
    assert est["low_ms"] == pytest.approx(est["ms"] / 1.5, rel=1e-3) and est["high_ms"] == pytest.approx(
        est["ms"] * 1.5
    )
    roof = estimate(GraphCost((DENSE,), 0), hw, "fp32", roofline=True)
    assert (
        roof["model"] == "roofline" and roof["ms"] == pytest.approx(est["ms"] / 2) and roof["band"] == UNCALIBRATED_BAND
    )
    assert "conv_efficiency = 0.5" in est["figures"] and "conv_efficiency" not in roof["figures"]


def test_graph_cost_tells_depthwise_from_dense_convolutions():
    w_dw = numpy_helper.from_array(np.ones((8, 1, 3, 3), np.float32), "w_dw")
    w_pw = numpy_helper.from_array(np.ones((8, 8, 1, 1), np.float32), "w_pw")
    nodes = [helper.make_node("Conv", ["x", "w_dw"], ["d"], name="dw", group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["d", "w_pw"], ["y"], name="pw")]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8, 8, 8])], [w_dw, w_pw])  # fmt: skip
    cost = graph_cost(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), (-1, 8, 8, 8))
    assert {la.name: la.op_class for la in cost.layers} == {"dw": "depthwise", "pw": "conv"}


def test_the_host_check_uses_the_hosts_overheads_and_relative_efficiencies():
    host = Hardware(fp32_tflops=0.1, inference_floor_ms=0.01, layer_overhead_us=0.5)
    target = Hardware(fp32_tflops=1.0, conv_efficiency=0.4, depthwise_efficiency=0.1, inference_floor_ms=0.5,
                      layer_overhead_us=5.0, half_efficiency_mmacs=0.0, estimate_band=1.3)  # fmt: skip
    on = with_terms(host, target)
    assert on.fp32_tflops == 0.1 and on.conv_efficiency == 1.0 and on.depthwise_efficiency == pytest.approx(0.25)
    assert (on.inference_floor_ms, on.layer_overhead_us, on.estimate_band) == (0.01, 0.5, 1.3)
    assert with_terms(host, Hardware(fp32_tflops=1.0)) == host  # a target without terms: the roofline


def _hardware_lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    start = lines.index("[hardware]")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("[")), len(lines))
    return lines[start + 1 : end]


def test_every_shipped_target_gives_the_estimator_terms_each_with_its_source():
    keys = (*TERMS, "estimate_class", "estimate_band", "estimate_error_pct")
    for target in list_targets():
        hw = target.hardware
        assert all(getattr(hw, k) is not None for k in keys), target.name
        assert 0 < hw.conv_efficiency <= 1 and 0 < hw.depthwise_efficiency <= 1 and hw.estimate_band >= 1
        lines = _hardware_lines(targets_folder() / f"{target.name}.toml")
        for key in keys:
            line = next(x for x in lines if re.match(rf"{key}\s*=", x))
            assert "# " in line and "bench/bench_estimate.py" in line, (target.name, line)
        text = "\n".join(lines)
        assert "bench/data/published_latency.toml" in text and f"device class {hw.estimate_class}" in text


def _published() -> dict:
    return tomllib.loads((ROOT / "bench" / "data" / "published_latency.toml").read_text(encoding="utf-8"))


def test_published_figures_name_their_source_table_row_and_a_buildable_model():
    sys.path.insert(0, str(ROOT / "bench"))
    from published_models import MODELS

    doc = _published()
    sources = {s["id"]: s for s in doc["source"]}
    assert all(s["url"].startswith("https://") and s["title"] for s in sources.values())
    names = {t.name for t in list_targets()}
    for f in doc["figure"]:
        assert f["source"] in sources and f["target"] in names and f["model"] in MODELS and f["batch"] == 1
        assert f["ms"] in [float(x) for x in re.findall(r"\d+\.\d+", f["row"])], f  # the figure is in its row
    assert {m["what"].split()[0] for m in doc["missing"]} >= {"MLPerf"}  # said so where nothing was found
    # the published architectures' sizes (torchvision's figures)
    assert MODELS["resnet50"]().macs == pytest.approx(4.09e9, rel=0.01)
    assert MODELS["mobilenetv2_100"]().macs == pytest.approx(300e6, rel=0.01)
    assert MODELS["vgg16"]().parameters == pytest.approx(138.36e6, rel=0.001)


def test_the_shipped_terms_estimate_the_published_figures_within_35_percent_per_device_class():
    sys.path.insert(0, str(ROOT / "bench"))
    from published_models import MODELS

    from edgekit.targets import get_target

    errors: dict[str, list[float]] = {}
    for f in _published()["figure"]:
        hw = get_target(f["target"]).hardware
        est = estimate(MODELS[f["model"]](), hw, f["precision"])
        assert est["low_ms"] <= f["ms"] <= est["high_ms"], f  # every figure within its band
        roof = estimate(MODELS[f["model"]](), hw, f["precision"], roofline=True)
        errors.setdefault(hw.estimate_class, []).append(abs(est["ms"] - f["ms"]) / f["ms"])
        errors.setdefault("roofline", []).append(abs(roof["ms"] - f["ms"]) / f["ms"])
    assert set(errors) >= {"jetson-gpu", "x86-cpu", "intel-igpu", "intel-npu"}
    for name, errs in errors.items():
        if name != "roofline":
            assert np.median(errs) <= 0.35, (name, np.median(errs))
    assert np.median(errors["roofline"]) > 0.5  # what the terms fix


def _row(ident: str, target: str, ms: float, top1: float, kind: str, band: tuple[float, float] | None = None):
    latency = {"p50_ms": ms, "source": {"kind": kind, "how": kind}}
    if band:
        latency.update(low_ms=band[0], high_ms=band[1])
    return {"id": ident, "target": target, "precision": "int8", "calibration_method": None, "status": "ok",
            "accuracy": {"top1": top1, "drop_points": 0.1, "source": {"kind": "measured"}},
            "latency": latency, "pareto": False}  # fmt: skip


def test_estimates_stay_off_the_front_unless_asked_and_never_displace_a_measured_point():
    rows = [_row("m", "cpu", 2.0, 90.0, "measured"), _row("e", "jetson", 0.1, 95.0, "estimated", (0.05, 0.2))]
    summary.mark_pareto(rows)
    assert [r["pareto"] for r in rows] == [True, False]
    summary.mark_pareto(rows, include_estimates=True)
    assert [r["pareto"] for r in rows] == [True, True]  # the estimate joins; the measured point stays
    slow = [_row("m", "cpu", 2.0, 90.0, "measured"), _row("e", "jetson", 9.0, 80.0, "estimated", (5.0, 15.0))]
    summary.mark_pareto(slow, include_estimates=True)
    assert [r["pareto"] for r in slow] == [True, False]  # an estimate dominated by a measured point


def test_recommendations_use_estimates_only_when_asked_and_measured_figures_first():
    rows = [_row("cpu-int8", "cpu", 2.0, 90.0, "measured"), _row("j-int8", "jetson", 0.1, 95.0, "estimated", (0.05, 0.2)),
            _row("k-meas", "k", 3.0, 90.0, "merged"), _row("k-est", "k", 0.5, 95.0, "estimated", (0.3, 0.8))]  # fmt: skip
    off = {r["target"]: r for r in summary.recommend(rows, ["cpu", "jetson", "k"], 1.0, None)}
    assert off["cpu"]["choice"] == "cpu-int8" and off["k"]["choice"] == "k-meas"
    assert off["jetson"]["choice"] is None and "--include-estimates" in off["jetson"]["text"]
    on = {r["target"]: r for r in summary.recommend(rows, ["cpu", "jetson", "k"], 1.0, None, include_estimates=True)}
    assert on["jetson"]["choice"] == "j-int8" and "estimated, band 0.05-0.2 ms" in on["jetson"]["text"]
    assert on["k"]["choice"] == "k-meas"  # a merged figure beats a faster estimate
    # a latency budget is checked against the band's high end
    assert summary.recommend(rows, ["jetson"], 1.0, 0.15, include_estimates=True)[0]["choice"] is None


@pytest.fixture(scope="module")
def reports(tmp_path_factory, tiny_onnx, small_val):
    out = tmp_path_factory.mktemp("estimates") / "report"
    common = dict(model=tiny_onnx, output=out, val=small_val, targets=("cpu", "jetson-orin-nano"),
                  precisions=("fp32",), bench=False, progress=False)  # fmt: skip
    default = edgekit.report(**common)
    default_md, default_html = (out / "report.md").read_text(), (out / "report.html").read_text()
    included = edgekit.report(**common, resume=True, include_estimates=True)
    return default, default_md, default_html, included, out


def test_the_report_keeps_estimates_off_the_front_and_the_recommendation_unless_included(reports):
    default, _, _, included, _ = reports
    rows = {r["id"]: r for r in default["results"]}
    jetson = rows["jetson-orin-nano-fp32"]
    assert jetson["latency"]["source"]["kind"] == "estimated" and jetson["pareto"] is False
    assert rows["cpu-fp32"]["pareto"] is True and default["include_estimates"] is False
    recs = {r["target"]: r for r in default["recommendations"]}
    assert recs["jetson-orin-nano"]["choice"] is None and recs["cpu"]["choice"] == "cpu-fp32"
    recs = {r["target"]: r for r in included["recommendations"]}
    assert recs["jetson-orin-nano"]["choice"] == "jetson-orin-nano-fp32" and "band" in recs["jetson-orin-nano"]["text"]
    assert included["include_estimates"] is True


def test_every_estimate_in_the_report_carries_its_band_in_json_markdown_and_html(reports):
    default, md, html, _, out = reports
    for row in default["results"]:
        est = row["estimate"]
        assert est["low_ms"] < est["ms"] < est["high_ms"] and est["band"] > 1 and est["band_source"], row["id"]
    jetson = next(r for r in default["results"] if r["id"] == "jetson-orin-nano-fp32")
    assert jetson["latency"]["low_ms"] == jetson["estimate"]["low_ms"] and "band" in jetson["latency"]["source"]["how"]
    cell = f"({jetson['estimate']['low_ms']:.3g}-{jetson['estimate']['high_ms']:.3g})"
    assert cell in md and cell in html
    assert "jetson-gpu" in md and 'id="estimator-classes"' in html and 'class="band"' in html
    assert "kept off the Pareto front" in md
    csv_text = (out / "report.csv").read_text()
    assert "estimate_low_ms" in csv_text.splitlines()[0]
    assert default["estimator"]["classes"] and all(c["band"] >= 1 for c in default["estimator"]["classes"])
