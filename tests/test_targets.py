from __future__ import annotations

import dataclasses

import pytest

from edgekit.errors import UsageError
from edgekit.targets import Target, get_target, list_targets, parse_target


def test_every_shipped_target_loads_with_hardware_figures():
    targets = list_targets()
    names = {t.name for t in targets}
    assert {"intel-cpu", "intel-igpu", "intel-npu", "cpu", "raspberry-pi-4", "raspberry-pi-5"} <= names
    for t in targets:
        assert isinstance(t, Target)
        assert t.default_precision in t.precisions
        assert t.hardware.memory_bandwidth_gbs and t.hardware.memory_gb
        assert "#" in t.text, f"{t.name}: the file must cite its sources in comments"


def test_targets_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        get_target("cpu").name = "x"  # type: ignore[misc]


@pytest.mark.parametrize(("alias", "name"), [("openvino", "intel-cpu"), ("intel", "intel-cpu"), ("onnxruntime", "cpu")])
def test_aliases_resolve(alias, name):
    assert get_target(alias).name == name


def test_table_of_issue():
    assert (get_target("intel-igpu").backend, get_target("intel-igpu").device) == ("openvino", "GPU")
    npu = get_target("intel-npu")
    assert (npu.backend, npu.device, npu.static_shapes) == ("openvino", "NPU", True)
    assert get_target("raspberry-pi-4").arch == "aarch64"
    assert get_target("raspberry-pi-5").backend == "onnxruntime"


def test_unknown_target_lists_known_targets_and_aliases():
    with pytest.raises(UsageError) as err:
        get_target("jetsn")
    msg = str(err.value)
    assert "jetsn" in msg and "intel-cpu (openvino, intel)" in msg and "cpu (onnxruntime" in msg
    assert ".toml" in msg


def test_user_target_file_by_path(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('name = "my-box"\nbackend = "onnxruntime"\ndevice = "CPU"\nprecisions = ["fp32"]\n')
    target = get_target(str(path))
    assert target.name == "my-box" and target.precisions == ("fp32",)
    with pytest.raises(UsageError, match="does not support int8; it supports: fp32"):
        target.check_precision("int8")


def test_unknown_key_names_file_and_key(tmp_path):
    text = 'name = "x"\nbackend = "onnxruntime"\ndevice = "CPU"\nprecisions = ["fp32"]\n[hardware]\nint8_top = 3\n'
    with pytest.raises(UsageError, match=r"mine\.toml: unknown key 'hardware\.int8_top'"):
        parse_target(text, source="mine.toml")
    with pytest.raises(UsageError, match=r"unknown key 'colour'"):
        parse_target(text.replace("[hardware]\nint8_top = 3\n", 'colour = "red"\n'), source="mine.toml")


def test_bad_backend_and_precision_rejected():
    base = 'name = "x"\ndevice = "CPU"\n'
    with pytest.raises(UsageError, match="backend 'tflite' is not one of"):
        parse_target(base + 'backend = "tflite"\nprecisions = ["fp32"]\n', source="t.toml")
    with pytest.raises(UsageError, match="precisions must be"):
        parse_target(base + 'backend = "openvino"\nprecisions = ["int4"]\n', source="t.toml")


def test_calibration_method_defaults_per_target(tmp_path):
    # measured: bench/bench_calibration.py (bench/results/calibration.json)
    assert get_target("cpu").calibration_method == "mse"
    assert get_target("jetson").calibration_method == "mse"
    assert get_target("intel-cpu").calibration_method == "mean-minmax"
    bad = 'name = "x"\nbackend = "onnxruntime"\ndevice = "CPU"\nprecisions = ["int8"]\ncalibration_method = "kl"\n'
    with pytest.raises(UsageError, match="calibration_method 'kl' is not one of"):
        parse_target(bad, source="t.toml")
