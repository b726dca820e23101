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
from collections.abc import Callable
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


FAST_PERCENTILE = 10  # the percentile of call times that is a call's "fast time" (fast_time)


def call_times(fn: Callable[[], object], seconds: float, *, min_calls: int = 20) -> np.ndarray:
    """Seconds per call of ``fn``, called repeatedly for ``seconds`` (at least ``min_calls`` times) after one
    untimed call."""
    fn()
    times = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(times) < min_calls:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return np.asarray(times)


def fast_time(fn: Callable[[], object], seconds: float, *, min_calls: int = 20) -> float:
    """The fast time of one call to ``fn`` in seconds: the 10th percentile of ``call_times``.

    The host's ceilings and overheads, and the models the host check compares them with, are all timed with
    this one statistic. On a busy machine a call that another process interrupts is slow: the median counts
    that time, a best rate does not, and the two are not comparable (on 2 shared cores, with the runtimes'
    default two threads, a bundle's p50 was up to 4.7 times its fast time in the same round). The 10th
    percentile is the time of an uninterrupted call and, unlike the minimum, not one lucky call.
    """
    return float(np.percentile(call_times(fn, seconds, min_calls=min_calls), FAST_PERCENTILE))


def _ort_session(model: Any, threads: int, *, optimize: bool = True) -> Any:
    """An ONNX Runtime CPU session of ``model`` with ``threads`` intra-op threads (0: ONNX Runtime's default)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _ort_gemm_rate(op: str, seconds: float, threads: int = 0, n: int = 512) -> float:
    """Operations per second (at the fast time) of one n x n x n ``MatMul`` in fp32 or fp16, or ``MatMulInteger``
    (u8 x s8), in ONNX Runtime."""
    from onnx import TensorProto, helper

    types = {"fp32": ("MatMul", TensorProto.FLOAT, TensorProto.FLOAT, TensorProto.FLOAT, np.float32, np.float32),
             "fp16": ("MatMul", TensorProto.FLOAT16, TensorProto.FLOAT16, TensorProto.FLOAT16, np.float16, np.float16),
             "int8": ("MatMulInteger", TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32, np.uint8, np.int8)}[op]  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node(types[0], ["A", "B"], ["C"])], "ceiling",
        [helper.make_tensor_value_info("A", types[1], [n, n]), helper.make_tensor_value_info("B", types[2], [n, n])],
        [helper.make_tensor_value_info("C", types[3], [n, n])],
    )  # fmt: skip
    session = _ort_session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), threads)
    rng = np.random.default_rng(0)
    feed = {"A": rng.integers(0, 100, (n, n)).astype(types[4]), "B": rng.integers(-50, 50, (n, n)).astype(types[5])}
    if op == "fp16":  # small values: the products stay finite in fp16
        feed = {k: (v / 100).astype(np.float16) for k, v in feed.items()}
    return 2.0 * n**3 / fast_time(lambda: session.run(None, feed), seconds)


ROUNDS = 5  # alternating timing rounds of the overhead graphs


def _conv_graph(convs: int, channels: int, kernel: int) -> Any:
    """A chain of ``convs`` Convs (``channels`` in and out, 32 x 32, ``kernel`` x ``kernel``, same padding), each
    weight 1 / fan-in so that the activations stay near 1 along the chain (no overflow, no slow denormals)."""
    from onnx import TensorProto, helper, numpy_helper

    fan_in = channels * kernel * kernel
    weight = numpy_helper.from_array(np.full((channels, channels, kernel, kernel), 1.0 / fan_in, np.float32), "w")
    names = ["x", *[f"y{i}" for i in range(convs)]]
    pads = [kernel // 2] * 4
    nodes = [helper.make_node("Conv", [a, "w"], [b], pads=pads) for a, b in itertools.pairwise(names)]
    shape = [1, channels, 32, 32]
    graph = helper.make_graph(nodes, "overhead", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(names[-1], TensorProto.FLOAT, shape)], [weight])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _ort_overheads(seconds: float, fp32_rate: float, threads: int = 0, chain: int = 32) -> tuple[float, float]:
    """ONNX Runtime's per-inference floor and per-layer overhead here, in seconds.

    Timed (fast time) in ``ROUNDS`` alternating rounds, on a graph of one 1x1 Conv (16 channels, 32 x 32: big
    enough to be split across the thread pool, as a model's layers are) and a chain of ``chain`` more. The
    per-layer overhead is the extra time per Conv of the chain less the Conv's compute at ``fp32_rate``; the
    floor is the one-Conv graph's time less that Conv's compute and overhead (the estimate adds both to the
    floor, so the floor must not hold them). The median over the rounds is kept: one round's figure moves with
    the machine's load (as the median time of one round, the overhead moved from 6 to 21 us between runs).
    """
    sessions = {n: _ort_session(_conv_graph(n, 16, 1), threads, optimize=False) for n in (1, chain + 1)}
    feed = {"x": np.ones((1, 16, 32, 32), np.float32)}
    ones, chains = [], []
    for _ in range(ROUNDS):  # sessions made once; the rounds alternate so that load changes hit both alike
        ones.append(fast_time(lambda: sessions[1].run(None, feed), seconds / ROUNDS))
        chains.append(fast_time(lambda: sessions[chain + 1].run(None, feed), seconds / ROUNDS))
    compute = 2.0 * 16 * 16 * 32 * 32 / fp32_rate
    overhead = max(0.0, float(np.median([(c - o) / chain for o, c in zip(ones, chains, strict=True)])) - compute)
    return max(0.0, float(np.median(ones)) - compute - overhead), overhead


def _ort_half_efficiency(seconds: float, fp32_rate: float, floor: float, overhead: float, threads: int = 0) -> float:
    """Hockney's n1/2 here, in M MACs: from the rate of a small 3x3 Conv (16 channels, 32 x 32: 2.4 M MACs) against
    the GEMM ceiling ``fp32_rate`` (rate = ceiling x MACs / (MACs + n1/2)); 0 when it reaches the ceiling.

    The Conv's rate is its fast time less the per-inference ``floor`` and per-layer ``overhead`` (seconds): the
    estimate adds those apart, so they must not be counted again as a small layer's inefficiency.
    """
    session = _ort_session(_conv_graph(1, 16, 3), threads)
    feed = {"x": np.ones((1, 16, 32, 32), np.float32)}
    macs = 16 * 16 * 9 * 32 * 32
    compute = max(fast_time(lambda: session.run(None, feed), seconds) - floor - overhead, 1e-9)
    return max(0.0, macs * (fp32_rate * compute / (2.0 * macs) - 1.0)) / 1e6


def host_hardware(seconds: float = 0.4, threads: int = 0) -> Hardware:
    """This machine's ceilings, measured as roofline tools do: the rate of a 512^3 GEMM, and of a copy, each at
    its fast time (``fast_time``).

    512^3 rather than larger: on a busy machine a longer call is always interrupted, and 1024^3 measured
    up to 4x below what the models themselves reached.

    Compute: ONNX Runtime's fp32 and fp16 ``MatMul`` and u8 x s8 ``MatMulInteger`` (the kernels the CPU bundles
    use; fp16 is measured, not taken as 2x fp32 from the CPU's fp16 flag, which on a Xeon with AVX512-FP16 put
    the estimate of OpenVINO's fp16 runs 57-61% under their time: they ran at 0.6-0.9x the fp32 ones), on
    ``threads`` intra-op threads (0: ONNX Runtime's default, one a physical core). Pin ``threads`` to
    what the measured bundles use: with two threads on two busy cores a call gets both cores or one, and the
    fp32 ceiling came out 0.15 or 0.32 TFLOPS from one round to the next. Without ONNX Runtime, a numpy fp32
    GEMM (numpy's own threads) and int8 at 4x that where the CPU has 8-bit dot-product instructions (x86 VNNI,
    ARM dotprod), else 2x; fp16 at 2x fp32 where the CPU has native fp16 arithmetic, else 1x. Bandwidth:
    copying a 64 MiB array (bytes read + written per second). With ONNX Runtime, also the per-inference floor
    and per-layer overhead (``_ort_overheads``) and the half-efficiency layer size (``_ort_half_efficiency``),
    which ``with_terms`` uses in place of the target's fitted ones.
    """
    from edgekit.measure.machine import cpu_flags, describe_machine

    flags = cpu_flags()
    floor = overhead = half = None
    try:
        fp32 = _ort_gemm_rate("fp32", seconds, threads)
        int8 = _ort_gemm_rate("int8", seconds, threads)
        fp16 = _ort_gemm_rate("fp16", seconds, threads)
        floor_s, overhead_s = _ort_overheads(seconds, fp32, threads)
        floor, overhead = round(floor_s * 1e3, 4), round(overhead_s * 1e6, 3)
        half = round(_ort_half_efficiency(seconds, fp32, floor_s, overhead_s, threads), 3)
    except ImportError:
        rng = np.random.default_rng(0)
        a, b = rng.random((512, 512), np.float32), rng.random((512, 512), np.float32)
        fp32 = 2.0 * 512**3 / fast_time(lambda: a @ b, seconds)
        int8 = fp32 * (4 if flags & {"avx512_vnni", "avx_vnni", "asimddp"} else 2)
        fp16 = fp32 * (2 if flags & {"avx512_fp16", "asimdhp"} else 1)
    src = np.ones(64 << 20, np.uint8)
    dst = np.empty_like(src)
    bandwidth = 2.0 * src.nbytes / fast_time(lambda: np.copyto(dst, src), seconds, min_calls=5)
    return Hardware(
        device_name=describe_machine()["summary"] + " (measured ceilings)",
        fp32_tflops=round(fp32 / 1e12, 4),
        fp16_tflops=round(fp16 / 1e12, 4),
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
    "FAST_PERCENTILE",
    "FORMULA",
    "ROOFLINE",
    "TERMS",
    "UNCALIBRATED_BAND",
    "GraphCost",
    "Layer",
    "band_of",
    "best_of",
    "calibrated",
    "call_times",
    "efficiency",
    "estimate",
    "fast_time",
    "graph_cost",
    "host_hardware",
    "peak_ops",
    "validate",
    "with_terms",
]
