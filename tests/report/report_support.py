"""Shared by the report tests: one real report run on the tiny model, made once a session and reused.

The run covers targets that run here (cpu, intel-cpu: measured), two that do not (raspberry-pi-5 and
the TensorRT target jetson-orin-nano: accuracy simulated on ONNX Runtime here, latency estimated) and a
broken user target file (its combinations fail and must not stop the rest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support import SAMPLE, run_cli

BROKEN_TARGET = """\
name = "broken-target"
description = "a user target whose backend options ONNX Runtime rejects"
backend = "onnxruntime"
device = "CPU"
precisions = ["fp32", "int8"]
[backend_options]
no_such_option = 1
"""
TARGETS = ("cpu", "intel-cpu", "raspberry-pi-5", "jetson-orin-nano")
PRECISIONS = ("fp32", "int8")


def report_args(model: Path, val: Path, out: Path, *extra: str, targets: tuple[str, ...] = TARGETS) -> list[str]:
    return [
        "report", str(model), "--calib", str(SAMPLE / "calib"), "--calib-size", "40", "--val", str(val),
        "--targets", ",".join(targets), "--precisions", ",".join(PRECISIONS), "--bench-seconds", "0.2",
        "-o", str(out), *extra,
    ]  # fmt: skip


def shared_report(tmp_path_factory, model: Path, val: Path) -> Path:
    """The tiny model's report folder, built on first use in this session."""
    root = tmp_path_factory.getbasetemp() / "edgekit-report-shared"
    out = root / "report"
    if (root / "done").is_file():
        return out
    root.mkdir(exist_ok=True)
    broken = root / "broken-target.toml"
    broken.write_text(BROKEN_TARGET)
    proc = run_cli(*report_args(model, val, out, targets=(*TARGETS, str(broken))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (root / "stdout.txt").write_text(proc.stdout)
    (root / "stderr.txt").write_text(proc.stderr)
    (root / "done").write_text("ok")
    return out


def load(out: Path) -> dict[str, Any]:
    return json.loads((out / "report.json").read_text())


def rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in doc["results"]}
