"""What edgekit does before and around INT8 for older and third-party ONNX files: the opset upgrade the Q/DQ
recipes need, ONNX Runtime's pre-processing, backend errors with their fix, a dynamic height and width, and
the warning when INT8 is slower than FP32."""

from __future__ import annotations

import onnx
import pytest
from support import MODELS

from edgekit.calibration import qdq_recipe
from edgekit.errors import UsageError
from edgekit.pipeline import INT8_SLOWER_TOLERANCE, int8_slower_warning
from edgekit.quantize import onnxruntime_qdq as qdq
from edgekit.spec import build_spec


def test_recipes_need_opset_13_for_per_channel_qdq():
    for name in ("ort-qdq-u8s8-per-channel", "ort-qdq-s8s8-symmetric"):
        assert qdq.required_opset(qdq_recipe(name)) == 13


@pytest.mark.parametrize("opset", [11, 12])
def test_older_opsets_are_upgraded_to_13_and_recorded(corpus, opset, tmp_path):
    model = onnx.load(str(corpus[f"torch-opset{opset}"]))
    upgraded, prepped, record = qdq.prepare(model, qdq.CPU_RECIPE, tmp_path)
    assert qdq.model_opset(model) == opset and qdq.model_opset(upgraded) == 13
    assert qdq.model_opset(onnx.load(str(prepped))) == 13
    assert record["opset_upgrade"]["from"] == opset and record["opset_upgrade"]["to"] == 13
    (note,) = qdq.preparation_notes(record)
    assert f"opset {opset}" in note and "upgraded it to opset 13" in note


@pytest.mark.parametrize("folder", ["resnet", "mobilenetv2", "alexnet"])
def test_reference_models_are_quantized_as_they_are(folder, tmp_path):
    """The reference models are at opset 13 or newer: no conversion, no fallback, the provenance unchanged."""
    model = onnx.load(str(MODELS / folder / "model.onnx"))
    assert qdq.model_opset(model) >= 13
    same, _prepped, record = qdq.prepare(model, qdq.CPU_RECIPE, tmp_path)
    assert same is model and record == {} and qdq.preparation_notes(record) == []


def test_known_backend_errors_come_with_their_fix():
    raw = RuntimeError(
        "[ONNXRuntimeError] : 10 : INVALID_GRAPH : ... Error Unrecognized attribute: axis for operator DequantizeLinear"
    )
    assert "opset 13 or newer" in qdq.explain(raw)
    assert qdq.explain(RuntimeError("something else")) == qdq.GENERIC_FIX


def test_a_pre_processing_fallback_is_said():
    record = {"pre_processing": {"ran": "ONNX shape inference only", "failed": ["Fail: optimisation failed"]}}
    (note,) = qdq.preparation_notes(record)
    assert "fell back to ONNX shape inference only" in note and "Fail: optimisation failed" in note


def test_a_dynamic_height_and_width_needs_the_size():
    model_input = {"name": "input", "shape": (-1, 3, -1, -1), "layout": "NCHW", "dtype": "float32"}
    with pytest.raises(UsageError, match=r"dynamic height and width .*--input-shape -1,3,224,224"):
        build_spec(model_input=model_input, overrides={"input": {}})
    spec = build_spec(model_input=model_input, overrides={"input": {"shape": (1, 3, 48, 40)}})
    assert spec.input.shape == (-1, 3, 48, 40) and spec.preprocess.resize == (48, 40)


def test_int8_slower_than_fp32_is_said_with_both_figures():
    warning = int8_slower_warning(0.0963, 0.0713, "cpu", runs=1223)
    assert warning is not None
    assert "INT8 is slower than FP32 on cpu" in warning and "0.0963 ms against 0.0713 ms" in warning
    assert "0.74x" in warning and "1223 runs" in warning and "--precision fp32" in warning
    assert int8_slower_warning(0.05, 0.0713, "cpu") is None  # faster
    assert int8_slower_warning(0.0713 * (1 + INT8_SLOWER_TOLERANCE * 0.9), 0.0713, "cpu") is None  # within noise


def test_the_fp32_comparison_runs_for_a_compile_and_not_for_a_report(tiny_onnx, tmp_path):
    """A measured INT8 compile times FP32 beside it; the report, which compiles and measures FP32 itself, turns
    that off for its INT8 combinations so the FP32 model is not compiled twice."""
    from support import CIFAR_SPEC, LABELS, SAMPLE

    import edgekit
    from edgekit.report.combination import Combination, request_for
    from edgekit.targets import get_target

    base = edgekit.CompileRequest(model=tiny_onnx, target="cpu", precision="int8", output=tmp_path / "a",
                                  calib=SAMPLE / "calib", calib_size=32, spec=dict(CIFAR_SPEC), labels=LABELS)  # fmt: skip
    logs: list[str] = []
    edgekit.compile(base, log=logs.append)
    assert "timing FP32 on the same target to compare with INT8" in logs
    logs.clear()
    edgekit.compile(base.replace(output=tmp_path / "b", compare_int8_with_fp32=False), log=logs.append)
    assert not any("timing FP32" in line for line in logs) and (tmp_path / "b").is_dir()
    combo = Combination(target=get_target("cpu"), precision="int8")
    assert request_for(combo, base, tmp_path / "c").compare_int8_with_fp32 is False
