"""Which ONNX operators TensorRT's ONNX parser takes: known statically, checked at compile time.

The lists are the "Y" rows of onnx-tensorrt's operator support matrix (docs/operators.md): the table for
TensorRT 8.5 (opset <= 17), and the operators its TensorRT 10.15 table adds. An op in neither, or in a
custom domain (which needs a TensorRT plugin), cannot be parsed; an op only in the 10.x table needs
TensorRT 10 on the device. Restrictions within a supported op (attribute values, dynamic inputs) are
left to the parser on the device. Build time only.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

SOURCE = "onnx-tensorrt docs/operators.md (TensorRT 8.5 and 10.15 tables)"

TENSORRT_8 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu Clip
Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div Dropout
Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm GlobalAveragePool
GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GRU HardSwish HardSigmoid Identity If ImageScaler
InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool
MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range
Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum
ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements
ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt
Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())  # fmt: skip

TENSORRT_10_ONLY = frozenset("""
Attention BlackmanWindow CastLike DeformConv Gelu GroupNormalization HammingWindow HannWindow Hardmax IsInf
LayerNormalization Mish RMSNormalization RotaryEmbedding STFT TensorScatter
""".split())  # fmt: skip

MAX_OPSET_TENSORRT_8 = 17


def _nodes_by_op(model: Any) -> dict[tuple[str, str], list[str]]:
    found: dict[tuple[str, str], list[str]] = defaultdict(list)
    for node in model.graph.node:
        found[(node.domain or "", node.op_type)].append(node.name or node.output[0])
    return found


def _named(op: str, nodes: list[str]) -> str:
    shown = ", ".join(f"'{n}'" for n in nodes[:3]) + (f" and {len(nodes) - 3} more" if len(nodes) > 3 else "")
    return f"{op} (node {shown})"


def unsupported_ops(model: Any, *, min_tensorrt_major: int = 8) -> list[str]:
    """The ops of ``model`` that TensorRT's parser cannot take on the target, each with its nodes."""
    problems = []
    for (domain, op), nodes in sorted(_nodes_by_op(model).items()):
        if domain not in ("", "ai.onnx"):
            problems.append(_named(f"{domain}.{op}", nodes) + " is a custom-domain op, which needs a TensorRT plugin")
        elif op in TENSORRT_10_ONLY and min_tensorrt_major < 10:
            problems.append(_named(op, nodes) + " needs TensorRT 10, newer than the target's oldest TensorRT")
        elif op not in TENSORRT_8 and op not in TENSORRT_10_ONLY:
            problems.append(_named(op, nodes) + " is not supported by TensorRT's ONNX parser")
    return problems


def opset_note(model: Any, *, min_tensorrt_major: int = 8) -> str | None:
    """A note when the model's opset is newer than TensorRT 8.x's parser documents."""
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if min_tensorrt_major < 10 and opset > MAX_OPSET_TENSORRT_8:
        return (
            f"the model uses ONNX opset {opset}; TensorRT 8.x documents opsets up to {MAX_OPSET_TENSORRT_8}, so "
            "devices on JetPack 5 may fail to parse it (JetPack 6.1+ ships TensorRT 10)"
        )
    return None


__all__ = ["SOURCE", "TENSORRT_8", "TENSORRT_10_ONLY", "opset_note", "unsupported_ops"]
