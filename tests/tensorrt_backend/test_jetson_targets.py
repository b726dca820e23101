"""The Jetson target files: NVIDIA's published figures with sources, and precisions each device really has."""

from __future__ import annotations

import re

import pytest

from edgekit.errors import UsageError
from edgekit.targets import get_target

JETSONS = ("jetson-orin-nano", "jetson-orin-nx", "jetson-agx-orin", "jetson-xavier-nx", "jetson-nano")


@pytest.mark.parametrize("name", JETSONS)
def test_each_jetson_carries_its_figures_with_sources(name):
    t = get_target(name)
    hw = t.hardware
    assert (t.backend, t.device, t.vendor, t.arch) == ("tensorrt", "GPU", "nvidia", "aarch64")
    assert hw.fp16_tflops and hw.fp32_tflops and hw.memory_bandwidth_gbs and hw.memory_gb
    assert re.fullmatch(r"\d\.\d", hw.compute_capability) and hw.jetpack and hw.tensorrt
    for key in ("int8_tops", "fp16_tflops", "fp32_tflops", "memory_bandwidth_gbs", "compute_capability"):
        line = next((ln for ln in t.text.splitlines() if ln.startswith(key + " ")), None)
        if line is not None:
            assert "#" in line, f"{name}: '{key}' has no source comment"
    assert "NVIDIA" in t.text and ("data sheet" in t.text or "module pages" in t.text)


def test_jetson_alias_is_orin_nano():
    assert get_target("jetson").name == "jetson-orin-nano"


def test_published_figures():
    nano, nx, agx = (
        get_target("jetson-orin-nano").hardware,
        get_target("jetson-orin-nx").hardware,
        get_target("jetson-agx-orin").hardware,
    )
    assert (nano.int8_tops, nano.int8_tops_sparse, nano.memory_bandwidth_gbs, nano.dla_cores) == (20, 40, 68, 0)
    assert (nx.int8_tops_sparse, nx.memory_bandwidth_gbs, nx.dla_cores) == (100, 102.4, 2)
    assert (agx.int8_tops_sparse, agx.memory_bandwidth_gbs, agx.memory_gb, agx.fp32_tflops) == (275, 204.8, 64, 5.3)
    xavier = get_target("jetson-xavier-nx").hardware
    assert (xavier.int8_tops, xavier.int8_tops_sparse, xavier.compute_capability) == (21, None, "7.2")
    assert {get_target(n).hardware.compute_capability for n in JETSONS[:3]} == {"8.7"}


def test_jetson_nano_has_no_int8_and_says_fp16():
    nano = get_target("jetson-nano")
    assert nano.precisions == ("fp32", "fp16") and nano.default_precision == "fp16"
    assert nano.hardware.int8_tops is None and nano.hardware.compute_capability == "5.3"
    with pytest.raises(UsageError, match=r"target 'jetson-nano' does not support int8; it supports: fp32, fp16"):
        nano.check_precision("int8")


@pytest.mark.slow
def test_jetson_nano_int8_on_the_command_line_exits_2_naming_fp16(tmp_path, cli):
    done = cli("compile", str(tmp_path / "m.onnx"), "--target", "jetson-nano", "--precision", "int8",
               "--calib", str(tmp_path), "-o", str(tmp_path / "b"))  # fmt: skip
    assert done.returncode == 2
    assert done.stderr == "edgekit: error: target 'jetson-nano' does not support int8; it supports: fp32, fp16\n"


def test_int8_on_jetson_nano_is_refused_before_any_work(tmp_path):
    from edgekit.pipeline import compile_model

    with pytest.raises(UsageError, match="fp16"):
        compile_model(tmp_path / "missing.onnx", target="jetson-nano", precision="int8", output=tmp_path / "b")
