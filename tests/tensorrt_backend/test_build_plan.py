"""The build plan and its trtexec line: what the device does on first start, and NVIDIA's tool doing the same."""

from __future__ import annotations

import pytest

from edgekit.backends.base import parse_options
from edgekit.backends.tensorrt.build_plan import BuildPlan, implicit_variant, make_plan
from edgekit.backends.tensorrt.compiler import tensorrt_range
from edgekit.backends.tensorrt.options import TensorRTOptions
from edgekit.errors import BundleError, UsageError
from edgekit.targets import get_target, parse_target

SHAPE = (-1, 3, 32, 32)


def plan_for(target_name: str, precision: str, shape=SHAPE, **option_overrides) -> BuildPlan:
    target = get_target(target_name)
    options = parse_options(TensorRTOptions, {**target.backend_options, **option_overrides}, backend="tensorrt",
                            source=target.name)  # fmt: skip
    return make_plan(
        precision=precision, input_name="input", input_shape=shape, options=options, onnx="model.onnx",
        tensorrt=tensorrt_range(target)[1], fp32_onnx="model_fp32.onnx", calibration_cache="calibration.cache",
    )  # fmt: skip


def test_orin_nano_int8_is_explicit_with_fp16_fallback_and_a_batch_profile():
    plan = plan_for("jetson", "int8")
    assert plan.trtexec() == (
        "trtexec --onnx=model.onnx --saveEngine=model.engine --skipInference --int8 --fp16 "
        "--memPoolSize=workspace:1024 --minShapes=input:1x3x32x32 --optShapes=input:1x3x32x32 "
        "--maxShapes=input:8x3x32x32 --timingCacheFile=timing.cache --builderOptimizationLevel=3"
    )
    assert plan.quantization == "explicit (Q/DQ in the ONNX)" and plan.calibration_cache is None
    implicit = implicit_variant(plan, fp32_onnx="model_fp32.onnx", calibration_cache="calibration.cache")
    assert "--onnx=model_fp32.onnx" in implicit.trtexec() and "--calib=calibration.cache" in implicit.trtexec()


def test_fp32_turns_tf32_off_and_fp16_sets_its_flag():
    fp32, fp16 = plan_for("jetson-agx-orin", "fp32"), plan_for("jetson-agx-orin", "fp16")
    assert "--noTF32" in fp32.trtexec() and "--fp16" not in fp32.trtexec() and "--int8" not in fp32.trtexec()
    assert fp16.flags == ("fp16",) and "--noTF32" not in fp16.trtexec()
    assert "--memPoolSize=workspace:4096" in fp16.trtexec() and "--maxShapes=input:32x3x32x32" in fp16.trtexec()


def test_trtexec_line_follows_the_targets_tensorrt():
    """Jetson Nano's JetPack 4.6 has TensorRT 8.2: --workspace and --buildOnly, no optimization level."""
    line = plan_for("jetson-nano", "fp16").trtexec()
    assert line.startswith("trtexec --onnx=model.onnx --saveEngine=model.engine --buildOnly --fp16 --workspace=512 ")
    assert "builderOptimizationLevel" not in line
    xavier = plan_for("jetson-xavier-nx", "int8").trtexec()  # TensorRT 8.5: memPoolSize yes, skipInference no
    assert "--buildOnly" in xavier and "--memPoolSize=workspace:1024" in xavier and "Level" not in xavier


def test_static_batch_needs_no_shapes():
    plan = plan_for("jetson", "fp16", shape=(1, 3, 32, 32))
    assert not plan.dynamic and "Shapes" not in plan.trtexec()
    assert plan.min_shape == plan.opt_shape == plan.max_shape == (1, 3, 32, 32)


def test_dla_int8_takes_the_implicit_path_with_static_shapes(tmp_path):
    plan = plan_for("jetson-orin-nx", "int8", dla_core=1, opt_batch=4)
    assert plan.onnx == "model_fp32.onnx" and plan.quantization == "implicit (calibration cache)"
    assert plan.min_shape == plan.max_shape == (4, 3, 32, 32)  # the DLA builds static shapes
    line = plan.trtexec()
    assert "--useDLACore=1 --allowGPUFallback --calib=calibration.cache" in line
    assert "--minShapes=input:4x3x32x32 --optShapes=input:4x3x32x32 --maxShapes=input:4x3x32x32" in line
    assert "DLA core 1 with GPU fallback" in plan.describe()[0]


def test_dla_refuses_fp32():
    with pytest.raises(UsageError, match="the DLA runs fp16 and int8 only"):
        plan_for("jetson-agx-orin", "fp32", dla_core=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"opt_batch": 9, "max_batch": 8}, "opt_batch <= max_batch"), ({"workspace_mib": 1}, "at least 16"),
     ({"dla_core": -2}, "dla_core"), ({"builder_optimization_level": 6}, "0..5"), ({"colour": 1}, "unknown key")],
)  # fmt: skip
def test_bad_backend_options_are_usage_errors(options, message):
    with pytest.raises(UsageError, match=message):
        parse_options(TensorRTOptions, options, backend="tensorrt", source="mine.toml")


def test_user_target_file_can_pick_a_dla_core(tmp_path):
    text = get_target("jetson-agx-orin").text.replace('name = "jetson-agx-orin"', 'name = "agx-dla"')
    text = text.replace("[backend_options]\n", "[backend_options]\ndla_core = 0\n")
    target = parse_target(text, source="agx-dla.toml")
    assert target.backend_options["dla_core"] == 0 and target.hardware.dla_cores == 2


def test_plan_round_trips_through_the_manifest():
    plan = plan_for("jetson", "int8")
    data = plan.to_dict()
    assert data["trtexec"] == plan.trtexec()
    assert BuildPlan.from_dict(data) == plan
    del data["workspace_mib"]
    with pytest.raises(BundleError, match="lacks 'workspace_mib'"):
        BuildPlan.from_dict(data)
