"""The report on the committed reference ResNet (slow): real accuracy, real quantization, and the estimator's
error against this host's measurements."""

from __future__ import annotations

import pytest
from report_support import load, rows
from support import MODELS, SAMPLE, run_cli

RESNET = MODELS / "resnet"


@pytest.mark.slow
@pytest.mark.skipif(not (RESNET / "model.onnx").is_file(), reason="examples/models/resnet is not committed yet")
def test_reference_resnet_report(tmp_path, small_val):
    out = tmp_path / "report"
    proc = run_cli(
        "report", str(RESNET / "model.onnx"), "--spec", str(RESNET / "model.toml"), "--calib", str(SAMPLE / "calib"),
        "--calib-size", "100", "--val", str(small_val), "--targets", "cpu,intel-cpu,jetson-orin-nano",
        "--precisions", "fp32,int8", "--bench-seconds", "0.5", "-o", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = load(out)
    assert doc["complete"] and all(r["status"] == "ok" for r in doc["results"])
    assert doc["fp32_reference"]["top1"] > 60  # a trained CIFAR-10 ResNet-20 on 200 test images
    assert doc["model"]["macs"] > 30e6  # ResNet-20 is about 41 M MACs
    by_id = rows(doc)
    for ident in ("cpu-int8", "intel-cpu-int8", "jetson-orin-nano-int8"):
        assert by_id[ident]["accuracy"]["drop_points"] < 5, ident
    assert by_id["jetson-orin-nano-int8"]["accuracy"]["source"]["kind"] == "simulated"
    assert by_id["jetson-orin-nano-int8"]["latency"]["source"]["kind"] == "estimated"
    check = doc["estimator"]["validation"]
    assert check["summary"]["combinations"] == 4
    assert "median error" in (out / "report.md").read_text()
