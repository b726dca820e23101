"""The host check of the latency estimator (bench/bench_estimate.py --host): the ceilings and the models are
timed with one statistic on a pinned thread count, and this host's band is checked held out by model."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from edgekit import registry
from edgekit.report.estimate import TERMS, best_of, call_times, host_hardware

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_estimate

    return bench_estimate


def test_call_times_times_every_call_but_the_first():
    calls = []
    times = call_times(lambda: calls.append(1), 0.0, min_calls=7)
    assert len(times) == 7 and len(calls) == 8 and (times >= 0).all()  # one untimed warm-up call


def test_host_ceilings_on_one_thread_give_every_rate_and_term():
    hw = host_hardware(seconds=0.05, threads=1)
    assert hw.fp32_tflops > 0.001 and hw.fp16_tflops > 0 and hw.int8_tops > 0 and hw.memory_bandwidth_gbs > 0.5
    # the floor, overhead and n1/2 are measured (not the target's), and none is negative after the compute and
    # overhead that the estimate adds apart are taken out of them
    assert all(getattr(hw, name) is not None and getattr(hw, name) >= 0 for name in
               ("inference_floor_ms", "layer_overhead_us", "half_efficiency_mmacs"))  # fmt: skip


def test_the_best_of_rounds_keeps_the_highest_rate_and_the_least_overhead():
    first, second = host_hardware(seconds=0.02, threads=1), host_hardware(seconds=0.02, threads=1)
    best = best_of(first, second)
    assert best.fp32_tflops == max(first.fp32_tflops, second.fp32_tflops)
    assert best.layer_overhead_us == min(first.layer_overhead_us, second.layer_overhead_us)
    assert "layer_overhead_us" in TERMS and "fp32_tflops" not in TERMS


@pytest.mark.parametrize("target", ["cpu", "intel-cpu"])
def test_the_host_runs_pin_their_threads_with_an_option_their_backend_accepts(target):
    bench = _bench()
    pinned = bench._pinned(target, 1)
    options = registry.backend(pinned.backend).parse_options(pinned.backend_options, source=target)
    assert 1 in vars(options).values()
    assert bench._pinned(target, 0).backend_options == bench.get_target(target).backend_options  # 0: as shipped


def test_the_host_band_holds_every_run_and_is_checked_held_out_by_model():
    bench = _bench()
    rows = [{"model": m, "measured_ms": ms, "estimated_ms": 1.0}
            for m, ms in (("a", 1.0), ("a", 1.5), ("b", 0.5), ("c", 1.2))]  # fmt: skip
    band, held_out = bench.host_bands(rows)
    assert band == 2.0  # 0.5 is a ratio of 2 the other way
    assert held_out == {"a": 2.0, "b": 1.5, "c": 2.0}  # without b's run, 1.5 is the widest
    assert bench._band([1.3]) == 1.3 and bench._band([1.31]) == 1.4  # rounded up, and 1.3 stays 1.3
