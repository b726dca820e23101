"""Compiling for a Jetson where TensorRT is absent (here): real bundles, simulated accuracy, clear refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekit.backends.tensorrt import qdq_rules
from edgekit.backends.tensorrt.simulator import SimulatedRuntime
from edgekit.errors import DependencyError, ModelError
from edgekit.pipeline import _drop_warning, compile_model
from edgekit.runtime import selftest

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "data" / "cifar10"
CIFAR = {
    "name": "tiny",
    "preprocess": {"resize": (32, 32), "mean": (0.4914, 0.4822, 0.4465), "std": (0.247, 0.2435, 0.2616)},
}

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def int8_bundle(tiny_onnx, small_val, tmp_path_factory):
    out = tmp_path_factory.mktemp("jetson") / "tiny-int8.edgekit"
    return compile_model(
        tiny_onnx, target="jetson", precision="int8", output=out, calib=SAMPLE / "calib", calib_size=32,
        val=small_val, spec=dict(CIFAR), int8_drop_warning=-101.0,
    )  # fmt: skip


def test_int8_bundle_holds_qdq_onnx_fp32_graph_cache_and_plan(int8_bundle):
    m, root = int8_bundle.manifest, int8_bundle.path
    assert set(m["files"]) == {"model.onnx", "model_fp32.onnx", "calibration.cache", "build_plan.json", "selftest.npz"}
    assert m["backend"]["name"] == "tensorrt" and m["backend"]["model_file"] == "model.onnx"
    plan = m["backend"]["build_plan"]
    assert json.loads((root / "build_plan.json").read_text()) == plan
    assert plan["flags"] == ["int8", "fp16"] and plan["trtexec"].startswith("trtexec --onnx=model.onnx")
    assert "--calib=calibration.cache" in plan["trtexec_implicit"]
    q = m["quantization"]
    assert q["recipe"] == "ort-qdq-s8s8-symmetric" and q["tensorrt_qdq_check"]["passed"]
    assert q["calibration_cache"]["header"] == "TRT-100300-EntropyCalibration2"
    cache = (root / "calibration.cache").read_text().splitlines()
    assert cache[0] == "TRT-100300-EntropyCalibration2" and any(ln.startswith("input: ") for ln in cache)
    assert qdq_rules.check(onnx.load(str(root / "model.onnx"))).passed


def test_accuracy_is_simulated_on_onnx_runtime_and_labelled_so(int8_bundle):
    acc = int8_bundle.manifest["accuracy"]
    assert acc["measured_with"] == "simulated: ONNX Runtime CPU" and acc["simulated"] is True
    assert acc["dataset"]["images"] == 200 and 0 <= acc["value"]["top1"] <= 100
    assert int8_bundle.manifest["latency"]["measured"] is False


def test_simulated_drop_beyond_the_threshold_is_a_warning_naming_it(int8_bundle):
    acc = int8_bundle.manifest["accuracy"]
    warning = next(w for w in int8_bundle.warnings if w.startswith("simulated INT8 top-1"))
    assert f"{acc['drop_points']:.2f} points below FP32" in warning and "more than -101" in warning
    assert warning in int8_bundle.manifest["notes"]
    assert _drop_warning(acc, "int8", 100.0) == [] and _drop_warning(acc, "fp16", -101.0) == []
    assert _drop_warning({**acc, "drop_points": 1.5}, "int8", 1.0)[0].startswith("simulated INT8 top-1 is 1.50 points")


def test_selftest_reproduces_on_the_simulator(int8_bundle):
    from edgekit.bundle import open_bundle

    opened = open_bundle(int8_bundle.path)
    runtime = SimulatedRuntime(opened.root, opened.manifest)
    result = selftest.run(runtime.infer, opened.root, opened.manifest["selftest"])
    assert result.passed and result.max_error < 1e-5
    opened.close()


def test_loading_without_tensorrt_says_tensorrt_and_an_nvidia_gpu_are_required(int8_bundle):
    from edgekit.runtime import load_bundle

    with pytest.raises(DependencyError) as err:
        load_bundle(int8_bundle.path)
    msg = str(err.value)
    assert "\n" not in msg and "NVIDIA GPU" in msg and "TensorRT" in msg and "jetson-orin-nano" in msg


@pytest.mark.slow
def test_cli_predict_and_build_engine_fail_in_one_line(int8_bundle, cli):
    image = next((SAMPLE / "test" / "cat").iterdir())
    for args in (("predict", str(int8_bundle.path), str(image)), ("build-engine", str(int8_bundle.path))):
        done = cli(*args)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.count("\n") == 1 and "NVIDIA GPU with TensorRT" in done.stderr


@pytest.mark.slow
def test_inspect_shows_the_build_plan_and_trtexec_line(int8_bundle, cli):
    done = cli("inspect", str(int8_bundle.path))
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    plan = next(ln for ln in lines if ln.startswith("build plan:"))
    assert "int8 + fp16" in plan and "batch profile 1/1/8" in plan and "timing cache on" in plan
    trtexec = next(ln for ln in lines if ln.startswith("trtexec:"))
    assert trtexec.split(None, 1)[1] == int8_bundle.manifest["backend"]["build_plan"]["trtexec"]
    assert any("implicit INT8 (e.g. DLA): trtexec --onnx=model_fp32.onnx" in ln for ln in lines)


def test_fp16_bundle_is_the_onnx_plus_a_plan(tiny_onnx, tmp_path):
    result = compile_model(tiny_onnx, target="jetson-orin-nx", precision="fp16", output=tmp_path / "b",
                           val=SAMPLE / "test", spec=dict(CIFAR))  # fmt: skip
    m = result.manifest
    assert set(m["files"]) == {"model.onnx", "build_plan.json", "selftest.npz"} and m["quantization"] is None
    assert m["backend"]["build_plan"]["flags"] == ["fp16"] and m["accuracy"]["simulated"] is True
    assert m["accuracy"]["agreement_with_fp32"] >= 99.0  # the float16 simulation of a float32 model
    assert not any(w.startswith("simulated INT8") for w in result.warnings)


def tiny_classifier(tail: list, opset_imports=None) -> onnx.ModelProto:
    """Conv -> GlobalAveragePool -> Flatten -> Gemm -> <tail>, with a dynamic batch."""
    rng = np.random.default_rng(0)
    inits = [
        helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], rng.standard_normal(108).astype(np.float32)),
        helper.make_tensor("fc", TensorProto.FLOAT, [10, 4], rng.standard_normal(40).astype(np.float32)),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["p"], name="pool"),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fc"], ["g"], name="fc", transB=1),
        *tail,
    ]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits,
    )  # fmt: skip
    opsets = opset_imports or [helper.make_opsetid("", 17)]
    return helper.make_model(graph, opset_imports=opsets)


@pytest.mark.parametrize(
    ("tail", "opsets", "says"),
    [
        ([helper.make_node("Hardmax", ["g"], ["logits"], name="pick")], None,
         "Hardmax (node 'pick') needs TensorRT 10"),
        ([helper.make_node("Gelu", ["g"], ["logits"], name="act", domain="com.microsoft")],
         [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
         "com.microsoft.Gelu (node 'act') is a custom-domain op, which needs a TensorRT plugin"),
    ],
)  # fmt: skip
def test_ops_tensorrt_cannot_parse_are_named_at_compile_time(tmp_path, tail, opsets, says):
    path = tmp_path / "m.onnx"
    onnx.save(tiny_classifier(tail, opsets), str(path))
    with pytest.raises(ModelError) as err:
        compile_model(path, target="jetson", precision="fp32", output=tmp_path / "b")
    assert says in str(err.value) and "jetson-orin-nano" in str(err.value)
    assert not (tmp_path / "b").exists()


def test_ops_only_tensorrt_10_has_are_fine_on_a_tensorrt_10_only_target(tmp_path):
    from edgekit.backends.tensorrt import onnx_support

    model = tiny_classifier([helper.make_node("Hardmax", ["g"], ["logits"], name="pick")])
    assert onnx_support.unsupported_ops(model, min_tensorrt_major=10) == []
    assert onnx_support.unsupported_ops(model, min_tensorrt_major=8) == [
        "Hardmax (node 'pick') needs TensorRT 10, newer than the target's oldest TensorRT"
    ]


def test_a_model_with_qdq_tensorrt_cannot_take_is_refused(cpu_resnet, tmp_path):
    path = tmp_path / "cpu-qdq.onnx"
    onnx.save(cpu_resnet[0], str(path))
    with pytest.raises(ModelError, match="the model's own Q/DQ nodes break TensorRT's Q/DQ rules"):
        compile_model(path, target="jetson", precision="fp32", output=tmp_path / "b")


def test_runtime_module_imports_no_torch_onnx_or_tensorrt():
    code = (
        "import sys, edgekit.backends.tensorrt.runtime, edgekit.backends.tensorrt.engine_cache;"
        "print(sorted(m for m in ('torch', 'onnx', 'tensorrt', 'onnxruntime') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
