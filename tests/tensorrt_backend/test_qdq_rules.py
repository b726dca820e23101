"""TensorRT's Q/DQ rules, on graphs ONNX Runtime's quantizer really produced, and on broken copies of them."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekit.backends.tensorrt import qdq_rules


def consts(model) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def producers(model) -> dict:
    return {out: n for n in model.graph.node for out in n.output}


def nodes(model, op: str) -> list:
    return [n for n in model.graph.node if n.op_type == op]


@pytest.mark.parametrize("fixture", ["trt_resnet", "trt_mobile"])
def test_tensorrt_recipe_follows_the_rules_measured_directly(fixture, request):
    """Checked here without the checker: what the issue's rules say, read straight off the graph."""
    model, _, _ = request.getfixturevalue(fixture)
    c, prod = consts(model), producers(model)
    qdq = nodes(model, "QuantizeLinear") + nodes(model, "DequantizeLinear")
    assert qdq, "the recipe inserted no Q/DQ"
    for n in qdq:
        zp = c[n.input[2]]
        assert zp.dtype == np.int8 and not zp.any(), f"{n.name}: zero point {zp.dtype} {zp}"
        assert c[n.input[1]].dtype == np.float32 and (c[n.input[1]] > 0).all()
    for conv in nodes(model, "Conv"):
        w_dq, x_dq = prod[conv.input[1]], prod[conv.input[0]]
        assert w_dq.op_type == "DequantizeLinear" and x_dq.op_type == "DequantizeLinear"
        out_channels = c[w_dq.input[0]].shape[0]
        axis = next((a.i for a in w_dq.attribute if a.name == "axis"), 1)
        assert c[w_dq.input[1]].shape == (out_channels,) and axis == 0  # per channel, output-channel axis
        assert c[x_dq.input[1]].size == 1  # activation per tensor
        assert len(conv.input) < 3 or (conv.input[2] in c and c[conv.input[2]].dtype == np.float32)  # float bias
    for add in nodes(model, "Add"):
        assert [prod[i].op_type for i in add.input] == ["DequantizeLinear", "DequantizeLinear"]
    # NVIDIA's placement: Q/DQ only where a Conv/Gemm/MatMul/Add reads the tensor; never between a Conv
    # and its ReLU/ReLU6, never on the logits. TensorRT fuses Conv+BN+ReLU(+Add) itself.
    users = {}
    for n in model.graph.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    for q in nodes(model, "QuantizeLinear"):
        for dq in users[q.output[0]]:
            assert {u.op_type for u in users[dq.output[0]]} <= {"Conv", "Gemm", "MatMul", "Add"}, q.name
    for act in nodes(model, "Relu") + nodes(model, "Clip"):
        assert prod[act.input[0]].op_type in ("Conv", "Add"), f"{act.name} is fed by {prod[act.input[0]].op_type}"
    assert prod[model.graph.output[0].name].op_type == "Gemm"
    assert not any(c.get(n.input[0], np.zeros(1, np.int8)).dtype == np.int32 for n in nodes(model, "DequantizeLinear"))


@pytest.mark.parametrize("fixture", ["trt_resnet", "trt_mobile"])
def test_checker_passes_the_tensorrt_recipe(fixture, request):
    model, provenance, _ = request.getfixturevalue(fixture)
    report = qdq_rules.check(model)
    assert report.passed and not report.warnings and not report.higher_precision, report.summary()
    weighted = len(nodes(model, "Conv")) + len(nodes(model, "Gemm")) + len(nodes(model, "Add"))
    assert len(report.int8_nodes) == weighted
    assert provenance["bias"] == "float (not quantized)"
    assert provenance["quantized_op_types"] == ["Conv", "Gemm", "MatMul", "Add"]


def test_cpu_recipe_is_flagged_unsigned_and_int32_bias(cpu_resnet):
    """The cpu target's graph (u8 activations, int32 biases) is what TensorRT must not be given."""
    report = qdq_rules.check(cpu_resnet[0])
    rules = {f.rule for f in report.errors}
    assert {"zero-point-type", "int32-dq"} <= rules
    assert any("uint8" in f.message and "signed int8" in f.message for f in report.errors)


def test_onnx_runtime_default_bias_quantization_breaks_tensorrt(ort_default_bias):
    """Measured: symmetric activations alone are not enough; ORT's int32 biases need QuantizeBias=False."""
    report = qdq_rules.check(ort_default_bias[0])
    int32 = [f for f in report.errors if f.rule == "int32-dq"]
    assert len(int32) == len(nodes(ort_default_bias[0], "Conv")) + len(nodes(ort_default_bias[0], "Gemm"))
    assert {f.rule for f in report.errors} == {"int32-dq"}


def copy(model):
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def set_const(model, name: str, value: np.ndarray) -> None:
    for i, t in enumerate(model.graph.initializer):
        if t.name == name:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(value, name))
            return
    raise KeyError(name)


def first_activation_dq(model):
    c = consts(model)
    return next(n for n in nodes(model, "DequantizeLinear") if n.input[0] not in c)


def first_weight_dq(model):
    c = consts(model)
    return next(n for n in nodes(model, "DequantizeLinear") if n.input[0] in c and c[n.input[0]].ndim == 4)


def rules_of(model) -> set[str]:
    return {f.rule for f in qdq_rules.check(model).errors}


def test_flags_nonzero_zero_point(trt_resnet):
    m = copy(trt_resnet[0])
    dq = first_activation_dq(m)
    set_const(m, dq.input[2], np.array(3, np.int8))
    assert "zero-point-zero" in rules_of(m)


def test_flags_uint8_zero_point(trt_resnet):
    m = copy(trt_resnet[0])
    q = nodes(m, "QuantizeLinear")[0]
    set_const(m, q.input[2], np.array(0, np.uint8))
    errors = qdq_rules.check(m).errors
    assert {f.rule for f in errors} == {"zero-point-type"} and "uint8" in errors[0].message  # Q and its DQ


def test_flags_per_channel_activation(trt_resnet):
    m = copy(trt_resnet[0])
    dq = first_activation_dq(m)
    set_const(m, dq.input[1], np.full(3, 0.02, np.float32))
    assert "activation-per-tensor" in rules_of(m)


def test_flags_weight_axis_that_is_not_the_output_channel(trt_resnet):
    m = copy(trt_resnet[0])
    dq = first_weight_dq(m)
    del dq.attribute[:]
    dq.attribute.append(onnx.helper.make_attribute("axis", 1))
    errors = [f for f in qdq_rules.check(m).errors if f.rule == "weight-axis"]
    assert errors and "output-channel axis 0" in errors[0].message


def test_flags_per_tensor_conv_weights_as_a_warning(trt_resnet):
    m = copy(trt_resnet[0])
    dq = first_weight_dq(m)
    set_const(m, dq.input[1], np.array(0.01, np.float32))
    set_const(m, dq.input[2], np.array(0, np.int8))
    report = qdq_rules.check(m)
    assert report.passed and [f.rule for f in report.warnings] == ["weight-per-channel"]


@pytest.mark.parametrize(("value", "rule"), [(-0.5, "scale-positive"), (0.0, "scale-positive")])
def test_flags_bad_scales(trt_resnet, value, rule):
    m = copy(trt_resnet[0])
    set_const(m, first_activation_dq(m).input[1], np.array(value, np.float32))
    assert rule in rules_of(m)


def test_flags_scale_that_is_not_a_constant(trt_resnet):
    m = copy(trt_resnet[0])
    dq = first_activation_dq(m)
    m.graph.input.append(onnx.helper.make_tensor_value_info("runtime_scale", onnx.TensorProto.FLOAT, []))
    dq.input[1] = "runtime_scale"
    assert "scale-constant" in rules_of(m)


def test_residual_add_with_one_quantized_input_stays_in_higher_precision(trt_resnet):
    m = copy(trt_resnet[0])
    prod = producers(m)
    add = nodes(m, "Add")[0]
    dq = prod[add.input[1]]
    add.input[1] = prod[dq.input[0]].input[0]  # skip the Q/DQ pair: feed the float tensor straight in
    report = qdq_rules.check(m)
    assert report.passed
    [finding] = report.higher_precision
    assert (finding.node, finding.rule) == (add.name, "residual-add")
    assert "only one input of this residual Add is quantized" in finding.message and add.input[1] in finding.message


def test_conv_without_input_qdq_stays_in_higher_precision(trt_resnet):
    m = copy(trt_resnet[0])
    prod = producers(m)
    conv = nodes(m, "Conv")[1]
    dq = prod[conv.input[0]]
    conv.input[0] = prod[dq.input[0]].input[0]
    [finding] = qdq_rules.check(m).higher_precision
    assert finding.node == conv.name and "has no Q/DQ, so TensorRT runs it in FP16/FP32" in finding.message


def test_nodes_excluded_from_quantization_are_reported_with_the_reason(tiny_onnx, calib_tensors, tmp_path, quantize):
    first_conv = next(n.name for n in onnx.load(str(tiny_onnx)).graph.node if n.op_type == "Conv")
    model, provenance, _ = quantize(tiny_onnx, calib_tensors, tmp_path, nodes_to_exclude=(first_conv,))
    report = qdq_rules.check(model)
    assert report.passed and provenance["layers_kept_in_higher_precision"] == [first_conv]
    assert [f.node for f in report.higher_precision] == [first_conv]
    assert report.summary()["higher_precision"][0]["reason"].startswith("its input")
