"""An interrupted report keeps what it finished; --resume continues; bad input fails before any work."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from report_support import load
from support import SAMPLE, run_cli, write_images


def _args(model: Path, val: Path, out: Path, *extra: str) -> list[str]:
    return ["report", str(model), "--calib", str(SAMPLE / "calib"), "--calib-size", "40", "--val", str(val),
            "--targets", "cpu", "--precisions", "fp32,int8,fp16", "--no-bench", "-o", str(out), *extra]  # fmt: skip


@pytest.mark.slow
def test_an_interrupted_run_keeps_its_finished_combinations_and_resume_continues(tmp_path, tiny_onnx, small_val):
    out = tmp_path / "report"
    exe = Path(sys.executable).with_name("edgekit")
    proc = subprocess.Popen([str(exe), *_args(tiny_onnx, small_val, out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((out / "runs").glob("*.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    finished = {json.loads(p.read_text())["id"] for p in (out / "runs").glob("*.json")}
    assert 1 <= len(finished) < 3, "the interrupt came too late to test resuming"
    doc = load(out)
    assert not doc["complete"] and {r["id"] for r in doc["results"]} == finished
    assert "Partial report" in (out / "report.html").read_text()
    assert not [p for p in (out / "bundles").iterdir() if p.name.startswith(".")]  # no half-written bundle
    hashes = {r["id"]: r["bundle"]["hash"] for r in doc["results"]}

    done = run_cli(*_args(tiny_onnx, small_val, out, "--resume"))
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("reused from the earlier run") == len(finished)
    doc = load(out)
    assert doc["complete"] and {r["id"] for r in doc["results"]} == {"cpu-fp32", "cpu-int8", "cpu-fp16"}
    for ident, digest in hashes.items():
        assert next(r for r in doc["results"] if r["id"] == ident)["bundle"]["hash"] == digest


@pytest.mark.slow
def test_resume_rebuilds_a_combination_whose_inputs_changed(tmp_path, tiny_onnx, small_val):
    out = tmp_path / "report"
    assert run_cli(*_args(tiny_onnx, small_val, out, "--precisions", "fp32")).returncode == 0
    first = load(out)["results"][0]["bundle"]["hash"]
    proc = run_cli(*_args(tiny_onnx, small_val, out, "--precisions", "fp32", "--resume", "--name", "renamed"))
    assert proc.returncode == 0 and "reused" not in proc.stderr
    doc = load(out)
    assert doc["results"][0]["bundle"]["hash"] != first and doc["model"]["name"] == "renamed"


def _fails(args: list[str], code: int, message: str) -> None:
    proc = run_cli(*args)
    assert proc.returncode == code, proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.slow
def test_an_empty_validation_set_is_a_clear_error(tmp_path, tiny_onnx):
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "cat").mkdir()  # a class folder without images
    _fails(_args(tiny_onnx, tmp_path / "val", tmp_path / "out"), 1, "has no class sub-folders with images")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_class_folders_that_are_not_the_labels_are_a_clear_error(tmp_path, tiny_onnx):
    val = write_images(tmp_path / "val", 2, classes=("cat", "dog", "zebra"))
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["cat", "dog", *[f"c{i}" for i in range(8)]]))
    _fails([*_args(tiny_onnx, val, tmp_path / "out"), "--labels", str(labels)], 1,
           "class folders that are not among the model's labels: zebra")  # fmt: skip
    # labels taken from the folders: 3 classes for a 10-class model
    _fails(_args(tiny_onnx, val, tmp_path / "out"), 2, "3 labels (cat, dog, zebra) but the model outputs 10 classes")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precisions", "int4"], "unknown precision 'int4'"),
        (["--targets", "jetsn"], "target 'jetsn' not found"),
        (["--calib-methods", "magic"], "unknown calibration method 'magic'"),
        (["--max-accuracy-drop", "-1"], "--max-accuracy-drop -1 is out of range"),  # compile's own check and words
    ],
)
def test_bad_flags_are_usage_errors(tmp_path, tiny_onnx, small_val, extra, message):
    _fails([*_args(tiny_onnx, small_val, tmp_path / "out"), *extra], 2, message)


@pytest.mark.slow
def test_int8_without_calibration_images_and_a_foreign_output_folder_are_refused(tmp_path, tiny_onnx, small_val):
    args = ["report", str(tiny_onnx), "--val", str(small_val), "--targets", "cpu", "-o", str(tmp_path / "out")]
    _fails(args, 2, "int8 needs calibration images")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    _fails(
        _args(tiny_onnx, small_val, foreign, "--precisions", "fp32"),
        2,
        "is a non-empty folder that is not an edgekit report",
    )
    assert os.listdir(foreign) == ["notes.txt"]


@pytest.mark.slow
def test_the_report_itself_needs_no_torch(tmp_path, tiny_onnx, small_val):
    """The main job compiles ONNX models: nothing on the report's own path imports torch.

    (NNCF, which the OpenVINO INT8 recipe uses, imports torch when it happens to be installed, so
    intel-cpu int8 is left out here; it runs without torch too.)
    """
    code = (
        "import sys\n"
        "from edgekit.cli import main\n"
        f"rc = main({_args(tiny_onnx, small_val, tmp_path / 'out', '--targets', 'cpu,jetson-orin-nano', '-q')!r})\n"
        "print(rc, 'torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "0 False"


@pytest.mark.slow
def test_each_calibration_method_is_its_own_combination(tmp_path, tiny_onnx, small_val):
    out = tmp_path / "out"
    proc = run_cli(
        *_args(tiny_onnx, small_val, out, "--precisions", "int8", "--calib-methods", "default,minmax,entropy,mse")
    )
    assert proc.returncode == 0, proc.stderr
    doc = load(out)
    assert [(r["id"], r["calibration_method"]) for r in doc["results"]] == [
        ("cpu-int8", "mse"),  # cpu's own default; naming it again adds nothing
        ("cpu-int8-minmax", "minmax"),
        ("cpu-int8-entropy", "entropy"),
    ]
    for r in doc["results"]:
        manifest = json.loads((out / r["bundle"]["path"] / "manifest.json").read_text())
        assert manifest["quantization"]["calibration_method"] == r["calibration_method"]
