"""edgekit report end to end on the tiny model: combinations, provenance, outputs, recommendations."""

from __future__ import annotations

import csv
import math

import pytest
from report_support import load, report_args, rows, shared_report
from support import run_cli

from edgekit.report import summary


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, tiny_onnx, small_val):
    return shared_report(tmp_path_factory, tiny_onnx, small_val)


@pytest.fixture(scope="module")
def doc(report_dir):
    return load(report_dir)


@pytest.mark.slow
def test_every_target_and_precision_is_covered_and_a_failure_does_not_stop_the_rest(doc, report_dir):
    assert doc["schema"] == "edgekit.report" and doc["schema_version"] == 1
    assert doc["complete"] and doc["progress"] == {"finished": 10, "total": 10}
    by_id = rows(doc)
    targets = ("cpu", "intel-cpu", "raspberry-pi-5", "jetson-orin-nano", "broken-target")
    expected = {f"{t}-{p}" for t in targets for p in ("fp32", "int8")}
    assert set(by_id) == expected
    for ident in ("broken-target-fp32", "broken-target-int8"):
        assert by_id[ident]["status"] == "failed"
        assert "no_such_option" in by_id[ident]["error"]
    for ident in expected - {"broken-target-fp32", "broken-target-int8"}:
        row = by_id[ident]
        assert row["status"] == "ok", row["error"]
        assert row["compile_seconds"] > 0
        assert row["bundle"]["size_bytes"] > 1000 and len(row["bundle"]["hash"]) == 64
        assert (report_dir / row["bundle"]["path"] / "manifest.json").is_file()
        acc = row["accuracy"]
        assert 0 <= acc["top1"] <= acc["top5"] <= 100
        assert acc["drop_points"] == pytest.approx(doc["fp32_reference"]["top1"] - acc["top1"], abs=0.01)
        assert 0 <= acc["agreement_with_fp32"] <= 100
        assert set(acc["per_class"]) == set(doc["fp32_reference"]["per_class"])


@pytest.mark.slow
def test_measured_rows_carry_the_bench_figures_and_the_machine(doc):
    for ident in ("cpu-fp32", "cpu-int8", "intel-cpu-fp32", "intel-cpu-int8"):
        row = rows(doc)[ident]
        assert row["accuracy"]["source"]["kind"] == "measured"
        lat = row["latency"]
        assert lat["source"]["kind"] == "measured" and lat["source"]["machine"] == doc["machine"]["summary"]
        assert 0 < lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"]
        bench = row["bench"]
        assert [t["batch"] for t in bench["throughput"]] == [1, 2, 4, 8, 16, 32]
        assert all(t["images_per_s"] > 0 for t in bench["throughput"])
        assert bench["preprocess_ms"] > 0 and bench["decode_ms"] > 0 and bench["end_to_end_ms"] > 0
        assert bench["peak_rss_mb"] > 20 and bench["cpu_percent_of_one_core"] > 0


@pytest.mark.slow
def test_an_absent_target_is_simulated_and_estimated_and_labelled_so(doc):
    for ident in ("raspberry-pi-5-fp32", "raspberry-pi-5-int8"):
        row = rows(doc)[ident]
        acc, lat = row["accuracy"]["source"], row["latency"]["source"]
        assert acc["kind"] == "simulated" and "standing in for aarch64" in acc["how"]
        assert lat["kind"] == "estimated" and "raspberry-pi-5 target file" in lat["how"]
        assert row["latency"]["p50_ms"] == row["estimate"]["ms"] > 0
        assert row["bench"] is None
    fp32, int8 = rows(doc)["raspberry-pi-5-fp32"]["estimate"], rows(doc)["raspberry-pi-5-int8"]["estimate"]
    assert "fp32_tflops = 0.154" in fp32["figures"] and "int8_tops = 0.614" in int8["figures"]
    assert int8["ms"] < fp32["ms"]


@pytest.mark.slow
def test_a_tensorrt_target_without_a_gpu_has_simulated_accuracy_labelled_so(doc):
    for precision in ("fp32", "int8"):
        row = rows(doc)[f"jetson-orin-nano-{precision}"]
        acc = row["accuracy"]["source"]
        assert acc["kind"] == "simulated" and acc["how"].startswith("simulated: ONNX Runtime CPU")
        assert ("INT8 Q/DQ" in acc["how"]) is (precision == "int8")
        assert row["latency"]["source"]["kind"] == "estimated" and row["bench"] is None
        figure = "int8_tops = 20" if precision == "int8" else "fp32_tflops = 1.28"
        assert (
            figure in row["estimate"]["figures"] and "jetson-orin-nano target file" in row["latency"]["source"]["how"]
        )


@pytest.mark.slow
def test_pareto_front_is_exactly_the_non_dominated_rows(doc):
    # estimated latencies stay off the front unless --include-estimates (tests/report/test_estimate_terms.py)
    ok = [r for r in doc["results"] if r["status"] == "ok"]
    assert not any(r["pareto"] for r in ok if r["latency"]["source"]["kind"] == "estimated")
    points = [(r["id"], r["latency"]["p50_ms"], r["accuracy"]["top1"]) for r in ok
              if r["latency"]["source"]["kind"] != "estimated"]  # fmt: skip
    for ident, lat, acc in points:
        dominated = any(
            lo <= lat and ao >= acc and (lo, ao) != (lat, acc) for other, lo, ao in points if other != ident
        )
        assert rows(doc)[ident]["pareto"] is (not dominated)
    assert any(r["pareto"] for r in doc["results"])


@pytest.mark.slow
def test_recommendations_follow_the_budgets(doc):
    ok = [r for r in doc["results"] if r["status"] == "ok"]
    default = {r["target"]: r for r in doc["recommendations"]}
    assert doc["budget"] == {"max_accuracy_drop": 1.0, "max_latency_ms": None, "accuracy_budget_defaulted": True}
    for target in ("cpu", "intel-cpu"):
        within = [r for r in ok if r["target"] == target and r["accuracy"]["drop_points"] <= 1.0]
        fastest = min(within, key=lambda r: r["latency"]["p50_ms"])
        assert default[target]["choice"] == fastest["id"]
        assert default[target]["text"].startswith(f"{target}: {fastest['precision']}")
    for target in ("raspberry-pi-5", "jetson-orin-nano"):  # estimated only: recommended with --include-estimates
        assert default[target]["choice"] is None and "--include-estimates" in default[target]["text"]
        within = [r for r in ok if r["target"] == target and r["accuracy"]["drop_points"] <= 1.0]
        fastest = min(within, key=lambda r: r["latency"]["p50_ms"])
        assert summary.recommend(ok, [target], 1.0, None, include_estimates=True)[0]["choice"] == fastest["id"]
    assert default["broken-target"]["choice"] is None
    # a latency budget nothing meets, and one only the fastest cpu row meets
    none = summary.recommend(ok, ["cpu"], 100.0, 1e-9)
    assert none[0]["choice"] is None and "no combination meets the budget" in none[0]["text"]
    cpu = sorted((r for r in ok if r["target"] == "cpu"), key=lambda r: r["latency"]["p50_ms"])
    assert summary.recommend(ok, ["cpu"], 100.0, cpu[0]["latency"]["p50_ms"])[0]["choice"] == cpu[0]["id"]


@pytest.mark.slow
def test_csv_and_markdown_hold_every_row(doc, report_dir):
    with open(report_dir / "report.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert [r["id"] for r in table] == [r["id"] for r in doc["results"]]
    by_id = {r["id"]: r for r in table}
    assert by_id["raspberry-pi-5-int8"]["latency_source"] == "estimated"
    assert by_id["cpu-int8"]["latency_source"] == "measured"
    assert float(by_id["cpu-fp32"]["top1"]) == rows(doc)["cpu-fp32"]["accuracy"]["top1"]
    md = (report_dir / "report.md").read_text()
    assert md.index("## Recommended") < md.index("## Results")
    assert "| cpu-int8 | ok |" in md and "broken-target-fp32 | failed:" in md
    assert "Tags: M measured here" in md


@pytest.mark.slow
def test_the_estimator_is_checked_against_the_host_measurements(doc):
    est = doc["estimator"]
    assert "max(2*MACs/peak_ops, bytes/bandwidth)" in est["formula"]
    assert est["host_ceilings"]["fp32_tflops"] > 0 and est["host_ceilings"]["memory_bandwidth_gbs"] > 0
    check = est["validation"]
    measured = {r["id"] for r in doc["results"] if r["status"] == "ok" and r["latency"]["source"]["kind"] == "measured"}
    assert {r["id"] for r in check["rows"]} == measured
    for r in check["rows"]:
        assert r["error_pct"] == pytest.approx(100 * (r["estimated_ms"] - r["measured_ms"]) / r["measured_ms"], abs=0.1)
    s = check["summary"]
    assert s["combinations"] == len(measured) and math.isfinite(s["median_abs_error_pct"])
    assert s["max_abs_error_pct"] >= s["median_abs_error_pct"]


@pytest.mark.slow
def test_the_cli_prints_the_table_and_a_progress_line_per_step(report_dir):
    out = (report_dir.parent / "stdout.txt").read_text()
    err = (report_dir.parent / "stderr.txt").read_text()
    assert "recommended: cpu: " in out and "cpu-int8" in out and "raspberry-pi-5-int8" in out
    assert "edgekit: [10/10] broken-target-int8: failed:" in err
    assert "edgekit: [1/10] cpu-fp32: ok" in err


@pytest.mark.slow
def test_a_latency_budget_changes_the_recommendation_on_a_resumed_run(tmp_path, report_dir, tiny_onnx, small_val):
    import shutil

    copy = tmp_path / "report"
    shutil.copytree(report_dir, copy)
    proc = run_cli(*report_args(tiny_onnx, small_val, copy, "--resume", "--max-latency-ms", "0.000001",
                                "--max-accuracy-drop", "0"))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("reused from the earlier run") == 8
    doc = load(copy)
    assert doc["budget"]["max_latency_ms"] == 0.000001 and not doc["budget"]["accuracy_budget_defaulted"]
    assert all(r["choice"] is None for r in doc["recommendations"])


def test_progress_redraws_one_line_on_a_terminal_and_prints_lines_otherwise():
    import io

    from edgekit.report.progress import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    for stream, tty in ((Terminal(), True), (io.StringIO(), False)):
        bar = Progress(4, stream=stream)
        bar.start("cpu-int8")
        bar.note("compiling")
        bar.advance("ok")
        text = stream.getvalue()
        assert "cpu-int8: ok" in text
        if tty:
            assert "\r\x1b[2K[........................] 0/4 0:00 cpu-int8: compiling" in text
        else:
            assert "\r" not in text and "edgekit: [1/4] cpu-int8: compiling\n" in text
