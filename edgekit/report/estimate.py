"""Latency estimates for targets that are not present, and their check against measurements.

A model's cost is counted per layer from its ONNX graph at batch 1: multiply-accumulates (MACs) and the
elements it moves (weights read, activations read and written). Elementwise ops that directly follow a
Conv/Gemm/MatMul whose output has no other consumer (ReLU, BN, a residual Add, ...) are taken as fused
into it, as every backend here does: they add no MACs and move only their other operands. Then

    latency = floor + sum over unfused layers of
              max(2 * MACs / (peak_ops(precision) * efficiency), bytes(precision) / bandwidth) + overhead
    efficiency = class_efficiency * MACs / (MACs + half_efficiency_MACs)

with the peaks from the target file's [hardware] figures and the terms the roofline leaves out from the
same table, per device class: a per-inference floor (``inference_floor_ms``: the runtime call, input and
output transfers), a per-layer overhead (``layer_overhead_us``: kernel launch and scheduling), and the
fraction of peak a layer reaches (``conv_efficiency`` for dense Conv/Gemm, ``depthwise_efficiency`` for
depthwise Conv, both scaled down for small layers by Hockney's half-performance length
``half_efficiency_mmacs``). bench/bench_estimate.py fits them to published figures
(bench/data/published_latency.toml) and states the error per device class; the estimate carries a band
(``estimate_band``: [ms / band, ms x band]). Without the terms the estimate is the plain roofline
(every layer at peak compute or DRAM bandwidth), with the wide ``UNCALIBRATED_BAND``. ``validate``
measures how far real runs are from the estimate on this host, with this host's own measured ceilings.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from edgekit.targets import Hardware

ROOFLINE = "sum over layers of max(2*MACs/peak_ops, bytes/bandwidth)"
FORMULA = (
    "floor + sum over unfused layers of max(2*MACs/peak_ops, bytes/bandwidth) + overhead, "
    "peak_ops scaled by efficiency(op class, layer size)"
)
TERMS = ("layer_overhead_us", "inference_floor_ms", "conv_efficiency", "depthwise_efficiency", "half_efficiency_mmacs")
# The band of an estimate without fitted terms (a user's target file): measured latency was 0.73x to 12.9x the
# plain roofline on the published figures (bench/bench_estimate.py, "roofline" columns), so x/÷ 13.
UNCALIBRATED_BAND = 13.0
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
    # "conv", "depthwise", "gemm", "fused" (an epilogue), "other" (memory-only); "" infers it from ``op``
    kind: str = field(default="", compare=False)

    @property
    def op_class(self) -> str:
        if self.kind:
            return self.kind
        if self.op.endswith("(fused)"):
            return "fused"
        return {"Conv": "conv", "ConvTranspose": "conv", "Gemm": "gemm", "MatMul": "gemm"}.get(self.op, "other")


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


def _compute_kind(node: Any, shapes: dict[str, tuple[int, ...]]) -> str:
    """The kind of a compute node: "depthwise" (a grouped Conv, one input channel a group), "conv" or "gemm"."""
    if node.op_type not in ("Conv", "ConvTranspose"):
        return "gemm"
    group = next((a.i for a in node.attribute if a.name == "group"), 1)
    weight = shapes.get(node.input[1]) if len(node.input) > 1 else None
    return "depthwise" if group > 1 and weight is not None and len(weight) > 1 and weight[1] == 1 else "conv"


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
            kind = _compute_kind(node, shapes)
            layer = Layer(node.name, node.op_type, _macs(node, shapes), weights, sum(map(size, acts)) + outputs, kind)
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


def calibrated(hw: Hardware) -> bool:
    """True when the target file gives the estimator's terms beyond the roofline (see the module doc)."""
    return any(getattr(hw, name) is not None for name in TERMS)


def efficiency(layer: Layer, hw: Hardware) -> float:
    """The fraction of peak compute ``layer`` reaches on ``hw`` (1 without the fitted terms)."""
    if not layer.macs:
        return 1.0
    top = hw.depthwise_efficiency if layer.op_class == "depthwise" else hw.conv_efficiency
    half = (hw.half_efficiency_mmacs or 0.0) * 1e6
    return (top or 1.0) * layer.macs / (layer.macs + half)


def band_of(hw: Hardware) -> tuple[float, str]:
    """The estimate's band factor on ``hw`` and where it comes from."""
    if calibrated(hw) and hw.estimate_band:
        how = f"the {hw.estimate_class or 'device'} class's error on published figures"
        if hw.estimate_error_pct is not None:
            how += f" (median {hw.estimate_error_pct:g}%, bench/bench_estimate.py)"
        return hw.estimate_band, how
    return UNCALIBRATED_BAND, "no fitted terms in the target file: the plain roofline's error on published figures"


def estimate(cost: GraphCost, hw: Hardware, precision: str, *, roofline: bool = False) -> dict[str, Any] | None:
    """The latency of ``cost`` on ``hw`` at ``precision``, its band and how it was obtained; None without figures.

    ``roofline=True`` ignores the fitted terms (the plain roofline, as before they existed).
    """
    peak = peak_ops(hw, precision)
    if peak is None:
        return None
    if roofline:
        import dataclasses

        hw = dataclasses.replace(hw, **{name: None for name in TERMS}, estimate_band=None)
    ops, ops_how = peak
    bandwidth = (hw.memory_bandwidth_gbs or 0) * 1e9
    overhead_s = (hw.layer_overhead_us or 0.0) * 1e-6
    compute = memory = overhead = total = 0.0
    memory_bound = 0
    for layer in cost.layers:
        c = 2.0 * layer.macs / (ops * efficiency(layer, hw))
        m = (layer.weight_elements + layer.activation_elements) * BYTES[precision] / bandwidth if bandwidth else 0.0
        o = 0.0 if layer.op_class == "fused" else overhead_s
        compute, memory, overhead, total = compute + c, memory + m, overhead + o, total + max(c, m) + o
        memory_bound += m > c
    floor = (hw.inference_floor_ms or 0.0) * 1e-3
    total += floor
    figures = ops_how + (f", memory_bandwidth_gbs = {hw.memory_bandwidth_gbs:g}" if bandwidth else "")
    if calibrated(hw):
        figures += ", " + ", ".join(f"{n} = {getattr(hw, n):g}" for n in TERMS if getattr(hw, n) is not None)
    band, band_how = band_of(hw)
    ms = total * 1e3
    return {
        "ms": round(ms, 5),
        "low_ms": round(ms / band, 5),
        "high_ms": round(ms * band, 5),
        "band": band,
        "band_source": band_how,
        "model": "fitted" if calibrated(hw) else "roofline",
        "device_class": hw.estimate_class,
        "compute_ms": round(compute * 1e3, 5),
        "memory_ms": round(memory * 1e3, 5),
        "overhead_ms": round(overhead * 1e3, 5),
        "floor_ms": round(floor * 1e3, 5),
        "layers": len(cost.layers),
        "memory_bound_layers": memory_bound,
        "macs": cost.macs,
        "bytes": cost.bytes(precision),
        "figures": figures + ("" if bandwidth else " (no bandwidth figure: compute only)"),
        "formula": FORMULA if calibrated(hw) else ROOFLINE,
    }


def with_terms(host: Hardware, target: Hardware) -> Hardware:
    """``host``'s measured figures with ``target``'s fitted terms: how the host check estimates a target's run.

    The host's ceilings are measured rates (a 512^3 GEMM), not a data sheet's peak, so a large dense layer
    reaches them: the efficiencies are taken relative to the class's dense one (``conv_efficiency`` becomes 1,
    ``depthwise_efficiency`` its ratio to it). The floor, per-layer overhead and half-efficiency size are the
    host's own measured ones where ``host_hardware`` measured them, else the target's.
    """
    import dataclasses

    if not calibrated(target):
        return host
    dense = target.conv_efficiency or 1.0
    depthwise = None if target.depthwise_efficiency is None else min(1.0, target.depthwise_efficiency / dense)
    return dataclasses.replace(
        host,
        conv_efficiency=1.0,
        depthwise_efficiency=depthwise,
        half_efficiency_mmacs=target.half_efficiency_mmacs
        if host.half_efficiency_mmacs is None
        else host.half_efficiency_mmacs,
        layer_overhead_us=target.layer_overhead_us if host.layer_overhead_us is None else host.layer_overhead_us,
        inference_floor_ms=target.inference_floor_ms if host.inference_floor_ms is None else host.inference_floor_ms,
        estimate_class=target.estimate_class,
        estimate_band=target.estimate_band,
        estimate_error_pct=target.estimate_error_pct,
    )


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


ROUNDS = 5  # alternating timing rounds of the overhead graphs


def _ort_overheads(seconds: float, fp32_rate: float, chain: int = 32) -> tuple[float, float]:
    """ONNX Runtime's per-inference floor and per-layer overhead here, in seconds: the fast time (10th percentile)
    of a graph of one 1x1 Conv (16 channels, 32 x 32: big enough to be split across the thread pool, as a model's
    layers are), and the extra fast time per Conv of a chain of ``chain`` more, less the Conv's compute at
    ``fp32_rate``. A low percentile, like the ceilings' best rate, because on a shared machine the median took
    other processes' time: the overhead came out 6 us in one run and 17 us in the next."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    c, hw = 16, 32
    weight = numpy_helper.from_array(np.full((c, c, 1, 1), 0.1, np.float32), "w")

    sessions: dict[int, Any] = {}

    def fast_run(ops: int) -> float:
        if ops not in sessions:
            sessions[ops] = build(ops)
        session, feed = sessions[ops]
        session.run(None, feed)
        times = []
        start = time.perf_counter()
        while time.perf_counter() - start < seconds / ROUNDS or len(times) < 20:
            t = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - t)
        return float(np.percentile(times, 10))

    def build(ops: int) -> tuple[Any, dict[str, np.ndarray]]:
        names = ["x", *[f"y{i}" for i in range(ops)]]
        nodes = [helper.make_node("Conv", [a, "w"], [b]) for a, b in itertools.pairwise(names)]
        shape = [1, c, hw, hw]
        graph = helper.make_graph(nodes, "overhead", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info(names[-1], TensorProto.FLOAT, shape)], [weight])  # fmt: skip
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return session, {"x": np.ones(shape, np.float32)}

    # Sessions made once, timed in alternating short rounds: the thread pool's state and the machine's load
    # change between rounds, and the median of the rounds' figures is kept.
    compute = 2.0 * c * c * hw * hw / fp32_rate
    ones, chains = [], []
    for _ in range(ROUNDS):
        ones.append(fast_run(1))
        chains.append(fast_run(chain + 1))
    one = float(np.median(ones))
    return one, max(0.0, float(np.median([(c_ - o) / chain for o, c_ in zip(ones, chains, strict=True)])) - compute)


def _ort_half_efficiency(seconds: float, fp32_rate: float) -> float:
    """Hockney's n1/2 here, in M MACs: from the best rate of a small 3x3 Conv (16 channels, 32 x 32: 2.4 M MACs)
    against the GEMM ceiling ``fp32_rate`` (rate = ceiling x MACs / (MACs + n1/2)); 0 when it reaches the ceiling."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    c, hw = 16, 32
    weight = numpy_helper.from_array(np.full((c, c, 3, 3), 0.01, np.float32), "w")
    shape = [1, c, hw, hw]
    graph = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "small",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [weight])  # fmt: skip
    options = ort.SessionOptions()
    options.log_severity_level = 3
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feed = {"x": np.ones(shape, np.float32)}
    macs = c * c * 9 * hw * hw
    rate = _best_rate(lambda: session.run(None, feed), 2.0 * macs, seconds)
    return max(0.0, macs * (fp32_rate / rate - 1.0)) / 1e6


def host_hardware(seconds: float = 0.4) -> Hardware:
    """This machine's ceilings, measured as roofline tools do: the best rate of a 512^3 GEMM, and of a copy.

    512^3 rather than larger: on a busy machine a longer call is always interrupted, and 1024^3 measured
    up to 4x below what the models themselves reached.

    Compute: ONNX Runtime's fp32 ``MatMul`` and u8 x s8 ``MatMulInteger`` (the kernels the CPU bundles use);
    without ONNX Runtime, a numpy fp32 GEMM and int8 at 4x that where the CPU has 8-bit dot-product
    instructions (x86 VNNI, ARM dotprod), else 2x. fp16 runs at the fp32 rate unless the CPU has native fp16
    arithmetic (then 2x). Bandwidth: copying a 64 MiB array (bytes read + written per second). With ONNX
    Runtime, also the per-inference floor and per-layer overhead (``_ort_overheads``) and the half-efficiency
    layer size (``_ort_half_efficiency``), which ``with_terms`` uses in place of the target's fitted ones.
    """
    from edgekit.measure.machine import cpu_flags, describe_machine

    flags = cpu_flags()
    floor = overhead = half = None
    try:
        fp32 = _ort_gemm_rate("MatMul", seconds)
        int8 = _ort_gemm_rate("MatMulInteger", seconds)
        floor_s, overhead_s = _ort_overheads(seconds, fp32)
        floor, overhead = round(floor_s * 1e3, 4), round(overhead_s * 1e6, 3)
        half = round(_ort_half_efficiency(seconds, fp32), 3)
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
        inference_floor_ms=floor,
        layer_overhead_us=overhead,
        half_efficiency_mmacs=half,
    )


def best_of(first: Hardware, second: Hardware) -> Hardware:
    """Per figure, the better of two ceiling measurements (a ceiling is the best rate ever seen; an overhead the
    least)."""
    import dataclasses

    best = {
        f.name: (min if f.name in TERMS else max)(getattr(first, f.name), getattr(second, f.name))
        for f in dataclasses.fields(Hardware)
        if isinstance(getattr(first, f.name), float) and isinstance(getattr(second, f.name), float)
    }
    return dataclasses.replace(first, **best)


def validate(
    cost: GraphCost,
    hw: Hardware,
    measured: list[tuple[str, str, float]],
    terms: dict[str, Hardware] | None = None,
) -> dict[str, Any]:
    """Compare the estimate on ``hw`` with measured (id, precision, p50 ms) runs; report the error.

    ``terms`` maps a run's id to the target figures whose fitted terms apply (``with_terms``); a run not in it
    is estimated with ``hw`` alone. Each row also gives the plain roofline's figure, for comparison.
    """
    rows = []
    for ident, precision, ms in measured:
        on = with_terms(hw, terms[ident]) if terms and ident in terms else hw
        est = estimate(cost, on, precision)
        if est is None or not ms:
            continue
        roof = estimate(cost, on, precision, roofline=True)
        rows.append(
            {
                "id": ident,
                "precision": precision,
                "measured_ms": ms,
                "estimated_ms": est["ms"],
                "low_ms": est["low_ms"],
                "high_ms": est["high_ms"],
                "within_band": est["low_ms"] <= ms <= est["high_ms"],
                "error_pct": round(100.0 * (est["ms"] - ms) / ms, 1),
                "measured_over_estimate": round(ms / est["ms"], 2) if est["ms"] else None,
                "roofline_ms": roof["ms"],
                "roofline_error_pct": round(100.0 * (roof["ms"] - ms) / ms, 1),
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
            "within_band": sum(r["within_band"] for r in rows),
            "roofline_median_abs_error_pct": round(
                float(np.median(np.abs([r["roofline_error_pct"] for r in rows]))), 1
            ),
        }
    return {"rows": rows, "summary": summary}


__all__ = [
    "FORMULA",
    "ROOFLINE",
    "TERMS",
    "UNCALIBRATED_BAND",
    "GraphCost",
    "Layer",
    "band_of",
    "best_of",
    "calibrated",
    "efficiency",
    "estimate",
    "graph_cost",
    "host_hardware",
    "peak_ops",
    "validate",
    "with_terms",
]
