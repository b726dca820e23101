"""Roofline latency estimates for targets that are not present, and their check against measurements.

A model's cost is counted per layer from its ONNX graph at batch 1: multiply-accumulates (MACs) and the
elements it moves (weights read, activations read and written). Elementwise ops that directly follow a
Conv/Gemm/MatMul whose output has no other consumer (ReLU, BN, a residual Add, ...) are taken as fused
into it, as every backend here does: they add no MACs and move only their other operands. Then

    latency = sum over layers of max(2 * MACs / peak_ops(precision), bytes(precision) / bandwidth)

with the peaks from the target file's [hardware] figures. It is idealised: every layer at the device's
peak compute or DRAM bandwidth, no per-layer overhead, no cache. ``validate`` measures how far real runs
are from it on this host, with this host's own measured ceilings.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from edgekit.targets import Hardware

FORMULA = "sum over layers of max(2*MACs/peak_ops, bytes/bandwidth)"
BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
COMPUTE = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
FREE = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Shape", "Constant", "Dropout", "Cast"}
EPILOGUE = {
    "Relu", "Clip", "BatchNormalization", "Sigmoid", "HardSigmoid", "HardSwish", "LeakyRelu", "PRelu",
    "Tanh", "Elu", "Selu", "Gelu", "Add", "Sub", "Mul", "Div",
}  # fmt: skip


@dataclass(frozen=True)
class Layer:
    """One costed layer: its MACs and the elements it moves (weights; activations read and written)."""

    name: str
    op: str
    macs: int
    weight_elements: int
    activation_elements: int


@dataclass(frozen=True)
class GraphCost:
    layers: tuple[Layer, ...]
    parameters: int

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def bytes(self, precision: str) -> int:
        return sum((la.weight_elements + la.activation_elements) * BYTES[precision] for la in self.layers)


def _shapes(model: Any) -> dict[str, tuple[int, ...]]:
    out = {}
    for value in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            out[value.name] = tuple(d.dim_value for d in dims)
    for init in model.graph.initializer:
        out[init.name] = tuple(init.dims)
    return out


def _with_batch_one(model: Any, input_shape: tuple[int, ...]) -> Any:
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    initializers = {i.name for i in copy.graph.initializer}
    graph_input = next(i for i in copy.graph.input if i.name not in initializers)
    for dim, size in zip(graph_input.type.tensor_type.shape.dim, (1, *input_shape[1:]), strict=True):
        dim.Clear()
        dim.dim_value = size
    return onnx.shape_inference.infer_shapes(copy, data_prop=True)


def _macs(node: Any, shapes: dict[str, tuple[int, ...]]) -> int:
    """MACs of a compute node; 0 where a shape is unknown."""
    ins = [shapes.get(name) for name in node.input]
    out = shapes.get(node.output[0])
    if out is None or any(s is None for s in ins[:2]):
        return 0
    if node.op_type == "Conv":  # weight (Cout, Cin/groups, kh, kw)
        return prod(out) * prod(ins[1][1:])
    if node.op_type == "ConvTranspose":  # weight (Cin, Cout/groups, kh, kw)
        return prod(ins[0]) * prod(ins[1][1:])
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        return prod(out) * ins[0][0 if trans_a else 1]
    return prod(out) * ins[0][-1]  # MatMul


def graph_cost(model: Any, input_shape: tuple[int, ...]) -> GraphCost:
    """Per-layer MACs and element traffic of an ONNX classifier at batch 1 (see the module doc)."""
    model = _with_batch_one(model, input_shape)
    shapes = _shapes(model)
    consts = {i.name for i in model.graph.initializer}
    consumers = Counter(name for node in model.graph.node for name in node.input)
    consumers.update(o.name for o in model.graph.output)
    size = lambda name: prod(shapes.get(name, (0,)))  # noqa: E731
    open_tails: set[str] = set()  # outputs of a compute op (or its fused chain) with a single consumer
    layers = []
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant" or (inputs and all(i in consts for i in inputs)):
            consts.update(node.output)
            continue
        if node.op_type in FREE:
            continue
        acts = [i for i in inputs if i not in consts]
        weights = sum(size(i) for i in inputs if i in consts)
        outputs = sum(size(o) for o in node.output if o)
        if node.op_type in COMPUTE:
            layer = Layer(node.name, node.op_type, _macs(node, shapes), weights, sum(map(size, acts)) + outputs)
        elif node.op_type in EPILOGUE and any(i in open_tails for i in acts):
            others = [i for i in acts if i not in open_tails]
            layer = Layer(node.name, node.op_type + " (fused)", 0, weights, sum(map(size, others)))
        else:
            layer = Layer(node.name, node.op_type, 0, weights, sum(map(size, acts)) + outputs)
        if (node.op_type in COMPUTE or layer.op.endswith("(fused)")) and consumers[node.output[0]] == 1:
            open_tails.add(node.output[0])
        layers.append(layer)
    params = sum(prod(i.dims) for i in model.graph.initializer)
    return GraphCost(tuple(layers), int(params))


def peak_ops(hw: Hardware, precision: str) -> tuple[float, str] | None:
    """Peak operations per second for ``precision`` and the figure it came from, or None."""
    chains = {
        "fp32": (("fp32_tflops", 1.0), ("fp16_tflops", 0.5)),
        "fp16": (("fp16_tflops", 1.0), ("fp32_tflops", 1.0)),
        "int8": (("int8_tops", 1.0), ("fp16_tflops", 2.0), ("fp32_tflops", 4.0)),
    }
    for name, factor in chains[precision]:
        value = getattr(hw, name)
        if value:
            how = f"{name} = {value:g}" + (f" x {factor:g}" if factor != 1 else "")
            return value * factor * 1e12, how
    return None


def estimate(cost: GraphCost, hw: Hardware, precision: str) -> dict[str, Any] | None:
    """The roofline latency of ``cost`` on ``hw`` at ``precision``, with how it was obtained; None without figures."""
    peak = peak_ops(hw, precision)
    if peak is None:
        return None
    ops, ops_how = peak
    bandwidth = (hw.memory_bandwidth_gbs or 0) * 1e9
    compute = memory = total = 0.0
    memory_bound = 0
    for layer in cost.layers:
        c = 2.0 * layer.macs / ops
        m = (layer.weight_elements + layer.activation_elements) * BYTES[precision] / bandwidth if bandwidth else 0.0
        compute, memory, total = compute + c, memory + m, total + max(c, m)
        memory_bound += m > c
    figures = ops_how + (f", memory_bandwidth_gbs = {hw.memory_bandwidth_gbs:g}" if bandwidth else "")
    return {
        "ms": round(total * 1e3, 5),
        "compute_ms": round(compute * 1e3, 5),
        "memory_ms": round(memory * 1e3, 5),
        "layers": len(cost.layers),
        "memory_bound_layers": memory_bound,
        "macs": cost.macs,
        "bytes": cost.bytes(precision),
        "figures": figures + ("" if bandwidth else " (no bandwidth figure: compute only)"),
        "formula": FORMULA,
    }


def _best_rate(fn, work: float, seconds: float) -> float:
    """The best work-per-second of repeated calls to ``fn`` (a ceiling, as roofline tools measure it)."""
    fn()
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        best = max(best, work / (time.perf_counter() - t))
    return best


def _ort_gemm_rate(op: str, seconds: float, n: int = 512) -> float:
    """Best operations per second of one n x n x n ``MatMul`` (fp32) or ``MatMulInteger`` (u8 x s8) in ONNX Runtime."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    types = {"MatMul": (TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT, np.float32, np.float32),
             "MatMulInteger": (TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, np.uint8, np.int8)}[op]  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node(op, ["A", "B"], ["C"])], "ceiling",
        [helper.make_tensor_value_info("A", types[0], [n, n]), helper.make_tensor_value_info("B", types[1], [n, n])],
        [helper.make_tensor_value_info("C", types[2], [n, n])],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"A": rng.integers(0, 100, (n, n)).astype(types[3]), "B": rng.integers(-50, 50, (n, n)).astype(types[4])}
    return _best_rate(lambda: session.run(None, feed), 2.0 * n**3, seconds)


def host_hardware(seconds: float = 0.4) -> Hardware:
    """This machine's ceilings, measured as roofline tools do: the best rate of a 512^3 GEMM, and of a copy.

    512^3 rather than larger: on a busy machine a longer call is always interrupted, and 1024^3 measured
    up to 4x below what the models themselves reached.

    Compute: ONNX Runtime's fp32 ``MatMul`` and u8 x s8 ``MatMulInteger`` (the kernels the CPU bundles use);
    without ONNX Runtime, a numpy fp32 GEMM and int8 at 4x that where the CPU has 8-bit dot-product
    instructions (x86 VNNI, ARM dotprod), else 2x. fp16 runs at the fp32 rate unless the CPU has native fp16
    arithmetic (then 2x). Bandwidth: copying a 64 MiB array (bytes read + written per second).
    """
    from edgekit.measure.machine import cpu_flags, describe_machine

    flags = cpu_flags()
    try:
        fp32 = _ort_gemm_rate("MatMul", seconds)
        int8 = _ort_gemm_rate("MatMulInteger", seconds)
    except ImportError:
        rng = np.random.default_rng(0)
        a, b = rng.random((512, 512), np.float32), rng.random((512, 512), np.float32)
        fp32 = _best_rate(lambda: a @ b, 2.0 * 512**3, seconds)
        int8 = fp32 * (4 if flags & {"avx512_vnni", "avx_vnni", "asimddp"} else 2)
    src = np.ones(64 << 20, np.uint8)
    dst = np.empty_like(src)
    bandwidth = _best_rate(lambda: np.copyto(dst, src), 2.0 * src.nbytes, seconds)
    fp16 = 2 if flags & {"avx512_fp16", "asimdhp"} else 1
    return Hardware(
        device_name=describe_machine()["summary"] + " (measured ceilings)",
        fp32_tflops=round(fp32 / 1e12, 4),
        fp16_tflops=round(fp16 * fp32 / 1e12, 4),
        int8_tops=round(int8 / 1e12, 4),
        memory_bandwidth_gbs=round(bandwidth / 1e9, 2),
    )


def best_of(first: Hardware, second: Hardware) -> Hardware:
    """Per figure, the higher of two ceiling measurements (a ceiling is the best rate ever seen)."""
    import dataclasses

    best = {
        f.name: max(getattr(first, f.name), getattr(second, f.name))
        for f in dataclasses.fields(Hardware)
        if isinstance(getattr(first, f.name), float) and isinstance(getattr(second, f.name), float)
    }
    return dataclasses.replace(first, **best)


def validate(cost: GraphCost, hw: Hardware, measured: list[tuple[str, str, float]]) -> dict[str, Any]:
    """Compare the estimate on ``hw`` with measured (id, precision, p50 ms) runs; report the error."""
    rows = []
    for ident, precision, ms in measured:
        est = estimate(cost, hw, precision)
        if est is None or not ms:
            continue
        rows.append(
            {
                "id": ident,
                "precision": precision,
                "measured_ms": ms,
                "estimated_ms": est["ms"],
                "error_pct": round(100.0 * (est["ms"] - ms) / ms, 1),
                "measured_over_estimate": round(ms / est["ms"], 2) if est["ms"] else None,
            }
        )
    summary = None
    if rows:
        errors = np.abs([r["error_pct"] for r in rows])
        ratios = [r["measured_over_estimate"] for r in rows if r["measured_over_estimate"]]
        summary = {
            "combinations": len(rows),
            "median_abs_error_pct": round(float(np.median(errors)), 1),
            "max_abs_error_pct": round(float(errors.max()), 1),
            "median_measured_over_estimate": round(float(np.median(ratios)), 2) if ratios else None,
            "range_measured_over_estimate": [min(ratios), max(ratios)] if ratios else None,
        }
    return {"rows": rows, "summary": summary}


__all__ = [
    "FORMULA",
    "GraphCost",
    "Layer",
    "best_of",
    "estimate",
    "graph_cost",
    "host_hardware",
    "peak_ops",
    "validate",
]
