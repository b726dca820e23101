"""Check a Q/DQ ONNX graph against TensorRT's explicit-quantization rules, statically.

TensorRT takes symmetric signed INT8 only: every QuantizeLinear/DequantizeLinear has an int8 zero point
of 0 and a constant, positive float32 scale; activations are quantized per tensor; weights per tensor or
per output channel (axis 0 for Conv and for Gemm with transB=1). Placement decides what runs in INT8:
Q/DQ on the data and weight inputs of Conv, Gemm and MatMul, and on *both* inputs of a residual Add, let
TensorRT fuse the block into INT8 kernels. Anything else it runs in FP16/FP32.

``check(model)`` returns the rule violations (errors: TensorRT would reject or misread the graph), the
departures from the recipe (warnings), and the compute nodes TensorRT will keep in higher precision, with
the reason for each. Build time only (imports onnx).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
RESIDUAL_OPS = ("Add",)
QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Finding:
    """One node and what is wrong with it, or why it stays in higher precision."""

    node: str
    op_type: str
    rule: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"node": self.node, "op": self.op_type, "rule": self.rule, "reason": self.message}

    def __str__(self) -> str:
        return f"{self.op_type} '{self.node}': {self.message}"


@dataclass
class QDQReport:
    errors: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    higher_precision: list[Finding] = field(default_factory=list)
    int8_nodes: list[str] = field(default_factory=list)
    qdq_nodes: int = 0

    @property
    def passed(self) -> bool:
        return not self.errors

    def summary(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "rules": "int8 zero point 0; constant positive float32 scales; activations per tensor; weights per "
            "output channel (Conv axis 0); Q/DQ on the inputs of Conv/Gemm/MatMul and on both inputs of Add",
            "qdq_nodes": self.qdq_nodes,
            "int8_nodes": len(self.int8_nodes),
            "errors": [f.to_dict() for f in self.errors],
            "warnings": [f.to_dict() for f in self.warnings],
            "higher_precision": [f.to_dict() for f in self.higher_precision],
        }


class _Graph:
    """Producers, initializers and constants of an ONNX graph, by tensor name."""

    def __init__(self, model: Any) -> None:
        from onnx import numpy_helper

        graph = model.graph
        self.nodes = list(graph.node)
        self.consts: dict[str, np.ndarray] = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.producer: dict[str, Any] = {}
        for node in self.nodes:
            for out in node.output:
                self.producer[out] = node
            if node.op_type == "Constant":
                value = next((a for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.consts[node.output[0]] = numpy_helper.to_array(value.t)

    def dq_feeding(self, tensor: str) -> Any | None:
        """The DequantizeLinear that produces ``tensor``, if one does."""
        node = self.producer.get(tensor)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def is_weight_dq(self, dq: Any) -> bool:
        """A DQ of a constant (int8 initializer), or of a Q of a constant (float weights with Q->DQ)."""
        source = dq.input[0]
        if source in self.consts:
            return True
        q = self.producer.get(source)
        return q is not None and q.op_type == "QuantizeLinear" and q.input[0] in self.consts


def _attr(node: Any, name: str, default: Any) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _name(node: Any) -> str:
    return node.name or node.output[0]


def _check_qdq_node(g: _Graph, node: Any, report: QDQReport) -> None:
    """Zero point, scale and dtype rules of one QuantizeLinear/DequantizeLinear."""
    name, op = _name(node), node.op_type

    def err(rule: str, msg: str) -> None:
        report.errors.append(Finding(name, op, rule, msg))

    scale_name = node.input[1] if len(node.input) > 1 else ""
    scale = g.consts.get(scale_name)
    if scale is None:
        err("scale-constant", f"scale '{scale_name}' is not a constant; TensorRT needs build-time scales")
    else:
        if scale.dtype != np.float32:
            err("scale-type", f"scale is {scale.dtype}; TensorRT 8.6 takes float32 scales")
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            err("scale-positive", "scale has zero, negative or non-finite values")
    zp_name = node.input[2] if len(node.input) > 2 else ""
    zp = g.consts.get(zp_name) if zp_name else None
    if not zp_name:
        if op == "QuantizeLinear" and _attr(node, "output_dtype", 0) not in (3,):  # 3 = INT8
            err("zero-point-type", "no zero point: by the ONNX spec the output is uint8; TensorRT takes int8 only")
    elif zp is None:
        err("zero-point-constant", f"zero point '{zp_name}' is not a constant")
    else:
        if zp.dtype == np.int32:
            err("int32-dq", "int32 input (a quantized bias); TensorRT dequantizes INT8 only, keep biases float")
        elif zp.dtype != np.int8:
            err("zero-point-type", f"zero point is {zp.dtype}; TensorRT takes signed int8 only")
        if np.any(zp != 0):
            err("zero-point-zero", "zero point is not 0; TensorRT quantization is symmetric")
    if op == "DequantizeLinear" and node.input[0] in g.consts and g.consts[node.input[0]].dtype == np.int32:
        if not any(f.node == name and f.rule == "int32-dq" for f in report.errors):
            err("int32-dq", "int32 input (a quantized bias); TensorRT dequantizes INT8 only, keep biases float")


def _weight_axis(consumer: Any) -> int | None:
    """The output-channel axis of a weighted op's weight (input 1), as TensorRT expects per-channel scales."""
    if consumer.op_type == "Conv":
        return 0
    if consumer.op_type == "ConvTranspose":
        return 1
    if consumer.op_type == "Gemm":
        return 0 if _attr(consumer, "transB", 0) else 1
    if consumer.op_type == "MatMul":
        return -1
    return None


def _consumers(g: _Graph) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for node in g.nodes:
        for inp in node.input:
            found.setdefault(inp, []).append(node)
    return found


def _check_weight_axis(g: _Graph, dq: Any, consumers: list[Any], report: QDQReport) -> None:
    """A per-channel weight DQ must use its consumer's output-channel axis."""
    weight = g.consts.get(dq.input[0])
    if weight is None:  # float weights behind a Q: the constant is the Q's input
        weight = g.consts.get(g.producer[dq.input[0]].input[0])
    rank = weight.ndim if weight is not None and weight.ndim else 1
    axis = _attr(dq, "axis", 1)
    for consumer in consumers:
        want = _weight_axis(consumer)
        if want is None or len(consumer.input) < 2 or consumer.input[1] != dq.output[0]:
            continue
        if axis % rank != want % rank:
            report.errors.append(
                Finding(_name(dq), dq.op_type, "weight-axis",
                        f"per-channel axis {axis} on the weight of {consumer.op_type} '{_name(consumer)}'; "
                        f"TensorRT needs the output-channel axis {want}")
            )  # fmt: skip


def _check_axes(g: _Graph, report: QDQReport) -> None:
    """Activations per tensor; weights per tensor or per output channel on the right axis."""
    consumers = _consumers(g)
    for node in g.nodes:
        if node.op_type != "DequantizeLinear":
            continue
        users = consumers.get(node.output[0], [])
        scale = g.consts.get(node.input[1])
        if scale is None or scale.size <= 1:
            if g.is_weight_dq(node) and any(c.op_type in ("Conv", "ConvTranspose") for c in users):
                msg = "Conv weights are quantized per tensor, not per output channel"
                report.warnings.append(Finding(_name(node), node.op_type, "weight-per-channel", msg))
        elif not g.is_weight_dq(node):
            msg = "activation quantized per channel; TensorRT needs per-tensor scales"
            report.errors.append(Finding(_name(node), node.op_type, "activation-per-tensor", msg))
        else:
            _check_weight_axis(g, node, users, report)


def _check_placement(g: _Graph, report: QDQReport) -> None:
    """Which compute nodes TensorRT can run in INT8, and why the others stay in FP16/FP32."""
    for node in g.nodes:
        name, op = _name(node), node.op_type
        if op in WEIGHTED_OPS:
            data = g.dq_feeding(node.input[0])
            weight = g.dq_feeding(node.input[1]) if len(node.input) > 1 else None
            if data is None:
                reason = f"its input '{node.input[0]}' has no Q/DQ, so TensorRT runs it in FP16/FP32"
            elif weight is None:
                reason = f"its weight '{node.input[1]}' has no Q/DQ, so TensorRT runs it in FP16/FP32"
            else:
                report.int8_nodes.append(name)
                continue
            report.higher_precision.append(Finding(name, op, "placement", reason))
        elif op in RESIDUAL_OPS:
            activations = [t for t in node.input if t not in g.consts]
            if len(activations) < 2:
                continue  # a bias-like Add of a constant: TensorRT folds it into the neighbouring layer
            fed = [g.dq_feeding(t) is not None for t in activations]
            if all(fed):
                report.int8_nodes.append(name)
            elif any(fed):
                missing = [t for t, f in zip(activations, fed, strict=True) if not f]
                report.higher_precision.append(
                    Finding(name, op, "residual-add",
                            f"only one input of this residual Add is quantized ('{missing[0]}' is not), so TensorRT "
                            "cannot fuse it into the INT8 convolution; quantize both inputs")
                )  # fmt: skip
            else:
                report.higher_precision.append(Finding(name, op, "residual-add", "neither input is quantized"))


def check(model: Any) -> QDQReport:
    """Check an ``onnx.ModelProto`` holding Q/DQ nodes against TensorRT's rules."""
    g = _Graph(model)
    report = QDQReport()
    for node in g.nodes:
        if node.op_type in QDQ_OPS:
            report.qdq_nodes += 1
            _check_qdq_node(g, node, report)
    _check_axes(g, report)
    _check_placement(g, report)
    return report


__all__ = ["Finding", "QDQReport", "check"]
