"""Folding device bench results into a report (--merge), and refusing results that do not belong to it."""

from __future__ import annotations

import json
import shutil

import pytest
from report_support import load, report_args, rows, shared_report
from support import run_cli, tiny_module


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, tiny_onnx, small_val):
    return shared_report(tmp_path_factory, tiny_onnx, small_val)


@pytest.fixture
def copy(tmp_path, report_dir):
    """A private copy of the shared report, so merging does not change what other tests read."""
    dest = tmp_path / "report"
    shutil.copytree(report_dir, dest)
    return dest


def bench_json(bundle, path, *extra: str):
    proc = run_cli("bench", str(bundle), "--json", "-q", "--runs", "30", "--batch-sizes", "1,4", *extra)
    assert proc.returncode == 0, proc.stderr
    path.write_text(proc.stdout)
    return path


@pytest.mark.slow
def test_a_device_run_replaces_the_estimate_and_the_simulated_accuracy(copy, tmp_path, tiny_onnx, small_val):
    # The raspberry-pi-5 bundle is ONNX Runtime CPU, so it runs here too: bench it as the device would.
    bench = bench_json(copy / "bundles" / "raspberry-pi-5-int8.edgekit", tmp_path / "pi.json", "--val", str(small_val))
    before = rows(load(copy))["raspberry-pi-5-int8"]
    proc = run_cli(*report_args(tiny_onnx, small_val, copy, "--merge", str(bench)))
    assert proc.returncode == 0, proc.stderr
    assert "merged a device run into raspberry-pi-5-int8" in proc.stderr
    after = rows(load(copy))["raspberry-pi-5-int8"]
    device = json.loads(bench.read_text())
    assert after["latency"]["source"]["kind"] == "merged"
    assert after["latency"]["source"]["machine"] == device["machine"]["summary"]
    assert "pi.json" in after["latency"]["source"]["how"]
    assert after["latency"]["p50_ms"] == device["latency"]["p50_ms"]
    assert after["estimate"] == before["estimate"]  # the estimate stays listed, no longer used
    assert after["accuracy"]["source"]["kind"] == "merged"
    assert after["accuracy"]["top1"] == device["accuracy"]["top1"]
    assert [t["batch"] for t in after["bench"]["throughput"]] == [1, 4]
    assert after["bundle"]["hash"] == before["bundle"]["hash"]  # merged into the same bundle, not a rebuilt one
    # The merge is kept by a later --resume without --merge.
    proc = run_cli(*report_args(tiny_onnx, small_val, copy, "--resume"))
    assert proc.returncode == 0, proc.stderr
    assert rows(load(copy))["raspberry-pi-5-int8"]["latency"]["source"]["kind"] == "merged"
    html = (copy / "report.html").read_text()
    assert "merged from pi.json" in html


@pytest.mark.slow
def test_a_result_from_another_bundle_of_the_same_model_is_refused(copy, tmp_path, tiny_onnx, small_val):
    other = tmp_path / "other.edgekit"
    proc = run_cli("compile", str(tiny_onnx), "--target", "cpu", "--precision", "fp32", "-o", str(other), "-q")
    assert proc.returncode == 0, proc.stderr
    bench = bench_json(other, tmp_path / "other.json")
    proc = run_cli(*report_args(tiny_onnx, small_val, copy, "--merge", str(bench)))
    assert proc.returncode == 2
    assert "not a bundle of this report" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_result_from_another_model_is_refused(copy, tmp_path, tiny_onnx, small_val):
    import torch

    onnx_path = tmp_path / "seed1.onnx"
    torch.onnx.export(tiny_module(seed=1), (torch.zeros(1, 3, 32, 32),), str(onnx_path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)  # fmt: skip
    bundle = tmp_path / "seed1.edgekit"
    assert (
        run_cli("compile", str(onnx_path), "--target", "cpu", "--precision", "fp32", "-o", str(bundle)).returncode == 0
    )
    bench = bench_json(bundle, tmp_path / "seed1.json")
    proc = run_cli(*report_args(tiny_onnx, small_val, copy, "--merge", str(bench)))
    assert proc.returncode == 2
    assert "measured a bundle of another model" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            '{"schema": "edgekit.bench", "schema_version": 99}',
            "bench schema version 99, which this edgekit does not know",
        ),
        ("{not json", "is not JSON"),
        ('{"schema": "edgekit.report", "schema_version": 1}', "is not an edgekit bench result"),
        ('{"schema": "edgekit.bench", "schema_version": 1, "bundle": {}}', "lacks 'bundle.hash'"),
    ],
)
def test_an_unknown_or_damaged_bench_file_is_a_clear_error(
    tmp_path, report_dir, tiny_onnx, small_val, content, message
):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    proc = run_cli(*report_args(tiny_onnx, small_val, tmp_path / "unused", "--merge", str(bad)))
    assert proc.returncode == 1
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "unused").exists()  # refused before any work
