"""The roofline estimator: MACs and traffic from the ONNX graph, the formula, the figures it uses."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekit.report.estimate import GraphCost, Layer, estimate, graph_cost, host_hardware, peak_ops, validate
from edgekit.targets import Hardware, get_target


def test_macs_of_the_tiny_model_match_a_hand_count(tiny_onnx):
    cost = graph_cost(onnx.load(str(tiny_onnx)), (-1, 3, 32, 32))
    stem = 8 * 32 * 32 * (3 * 3 * 3)  # Conv 3->8, 3x3, on 32x32
    block = 2 * 8 * 32 * 32 * (8 * 3 * 3)  # two Conv 8->8
    head = 16 * 16 * 16 * (8 * 3 * 3)  # after MaxPool(2): Conv 8->16 on 16x16
    linear = 16 * 10
    assert cost.macs == stem + block + head + linear
    params = (3 * 9 * 8 + 8) + 2 * (8 * 9 * 8 + 8) + (8 * 9 * 16 + 16) + (16 * 10 + 10)
    assert cost.parameters == params


def _graph() -> onnx.ModelProto:
    """x -> Conv(4->4, 1x1) -> Relu -> Add(x) -> MaxPool(2): one conv with a fused epilogue, one pool."""
    w = numpy_helper.from_array(__import__("numpy").ones((4, 4, 1, 1), "float32"), "w")
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "x"], ["a"], name="add"),
        helper.make_node("MaxPool", ["a"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4, 4, 4])], [w])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_elementwise_ops_after_a_conv_are_fused_and_traffic_is_counted_per_layer():
    cost = graph_cost(_graph(), (-1, 4, 8, 8))
    by_name = {la.name: la for la in cost.layers}
    act = 4 * 8 * 8
    assert by_name["conv"] == Layer("conv", "Conv", act * 4, 16, act + act)  # reads x, writes c
    assert by_name["relu"] == Layer("relu", "Relu (fused)", 0, 0, 0)
    assert by_name["add"] == Layer("add", "Add (fused)", 0, 0, act)  # reads the residual x only
    assert by_name["pool"] == Layer("pool", "MaxPool", 0, 0, act + 4 * 4 * 4)
    assert cost.bytes("fp32") == 4 * (16 + 2 * act + act + act + 64) and cost.bytes("int8") == cost.bytes("fp32") // 4


def test_the_roofline_takes_the_slower_of_compute_and_memory_per_layer():
    cost = GraphCost((Layer("a", "Conv", 1_000_000, 0, 0), Layer("b", "MaxPool", 0, 0, 1_000_000)), 0)
    hw = Hardware(int8_tops=2.0, fp32_tflops=0.5, memory_bandwidth_gbs=1.0)
    int8 = estimate(cost, hw, "int8")
    # layer a: 2e6 ops / 2e12 = 1 us of compute; layer b: 1e6 bytes / 1e9 B/s = 1 ms of memory
    assert int8["compute_ms"] == pytest.approx(0.001) and int8["memory_ms"] == pytest.approx(1.0)
    assert int8["ms"] == pytest.approx(1.001) and int8["memory_bound_layers"] == 1
    fp32 = estimate(cost, hw, "fp32")
    assert fp32["ms"] == pytest.approx(0.004 + 4.0)  # 4 bytes an element, a quarter of the ops rate
    assert "int8_tops = 2" in int8["figures"] and "memory_bandwidth_gbs = 1" in int8["figures"]


def test_missing_figures_fall_back_in_a_documented_order():
    assert peak_ops(Hardware(fp16_tflops=10), "fp32") == (5e12, "fp16_tflops = 10 x 0.5")
    assert peak_ops(Hardware(fp16_tflops=10), "int8") == (20e12, "fp16_tflops = 10 x 2")
    assert peak_ops(Hardware(fp32_tflops=1), "fp16") == (1e12, "fp32_tflops = 1")
    assert peak_ops(Hardware(), "fp32") is None
    assert estimate(GraphCost((), 0), Hardware(), "int8") is None
    no_bw = estimate(GraphCost((Layer("a", "Conv", 10**9, 0, 10**9),), 0), Hardware(fp32_tflops=1), "fp32")
    assert no_bw["ms"] == pytest.approx(2.0) and "compute only" in no_bw["figures"]


def test_every_shipped_target_with_figures_gets_an_estimate(tiny_onnx):
    from edgekit.targets import list_targets

    cost = graph_cost(onnx.load(str(tiny_onnx)), (1, 3, 32, 32))
    for target in list_targets():
        for precision in target.precisions:
            est = estimate(cost, target.hardware, precision)
            assert est is not None and est["ms"] > 0, (target.name, precision)
    pi = estimate(cost, get_target("raspberry-pi-5").hardware, "fp32")
    assert pi["ms"] > estimate(cost, get_target("cpu").hardware, "fp32")["ms"]


def test_validation_reports_the_error_against_measurements():
    cost = GraphCost((Layer("a", "Conv", 500_000, 0, 0),), 0)
    hw = Hardware(fp32_tflops=1.0, int8_tops=4.0)  # fp32: 1 us, int8: 0.25 us
    check = validate(cost, hw, [("x-fp32", "fp32", 0.002), ("x-int8", "int8", 0.00025)])
    assert [r["error_pct"] for r in check["rows"]] == [-50.0, 0.0]
    assert check["summary"]["median_abs_error_pct"] == 25.0 and check["summary"]["max_abs_error_pct"] == 50.0
    assert check["summary"]["range_measured_over_estimate"] == [1.0, 2.0]
    assert validate(cost, hw, [])["summary"] is None


def test_host_ceilings_are_measured():
    hw = host_hardware(seconds=0.1)
    assert hw.fp32_tflops > 0.001 and hw.int8_tops >= hw.fp32_tflops and hw.memory_bandwidth_gbs > 0.5
    assert "measured ceilings" in hw.device_name


def test_ceilings_measured_twice_keep_the_best_of_each_figure():
    from edgekit.report.estimate import best_of

    first = Hardware(device_name="host", fp32_tflops=0.1, int8_tops=0.8, memory_bandwidth_gbs=30.0)
    second = Hardware(device_name="host", fp32_tflops=0.2, int8_tops=0.4, memory_bandwidth_gbs=20.0)
    assert best_of(first, second) == Hardware(
        device_name="host", fp32_tflops=0.2, int8_tops=0.8, memory_bandwidth_gbs=30.0
    )
