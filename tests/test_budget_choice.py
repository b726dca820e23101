"""The accuracy budget ships the fastest configuration that holds it (issue 12, part 1).

The search runs here on a model whose figures the test sets: each layer adds a known error to the outputs
when quantized and a known cost when kept in higher precision, so which configuration is fastest, and
which holds, are known in advance. The search, the walks, the pruning and the choice are edgekit's own code;
only the model is the test's.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgekit import budgeting
from edgekit.quantize import budget as bud
from edgekit.quantize.budget import Budget, Figures

N = 2000  # images in the search part
CLASSES = 10


def _model(sensitivity: dict[str, float], seed: int = 0):
    """FP32 logits of N 'images' and ``build(excluded)``: INT8 outputs whose error is the sum of the
    quantized layers' sensitivities (the image index rides in the input)."""
    rng = np.random.default_rng(seed)
    fp32 = rng.standard_normal((N, CLASSES)).astype(np.float32) * 3
    noise = {name: rng.standard_normal((N, CLASSES)).astype(np.float32) for name in sensitivity}

    def build(excluded: tuple[str, ...]):
        err = sum((s * noise[k] for k, s in sensitivity.items() if k not in excluded), np.zeros_like(fp32))
        out = fp32 + err

        def infer(x: np.ndarray) -> np.ndarray:
            return out[x[:, 0, 0, 0].astype(int)]

        infer.excluded = tuple(sorted(excluded))
        return infer

    images = np.arange(N, dtype=np.float32).reshape(N, 1, 1, 1)
    return bud.Part(images, None, fp32), build


def _latency(costs: dict[str, float], base: float = 1.0, fp32: float | None = None):
    def latency(infer) -> float:
        if getattr(infer, "precision", None) == "fp32":
            return fp32
        return base + sum(costs[k] for k in infer.excluded)

    return latency


def _fp32(part: bud.Part):
    def make():
        def infer(x):
            return part.fp32_outputs[x[:, 0, 0, 0].astype(int)]

        infer.precision = "fp32"
        return infer

    return make


SENS = {"a": 0.9, "b": 0.5, "c": 0.4, "d": 0.05, "e": 0.05}


def test_probability_that_naive_int8_meets_the_budget():
    b = Budget.min_agreement("99")
    # 99.26% of 5,000 images: the Jeffreys posterior puts 97% of its mass above 99% (normal approximation: 98%)
    assert 0.96 < b.probability(Figures(99.26, images=5000)) < 0.99
    assert b.probability(Figures(99.0, images=5000)) == pytest.approx(0.5, abs=0.02)
    assert b.probability(Figures(98.5, images=5000)) < 0.001
    assert b.probability(Figures(99.26, images=500)) < b.probability(Figures(99.26, images=5000))  # less evidence
    assert b.probability(Figures(99.26, images=0)) == 0.0
    d = Budget.max_accuracy_drop("0.5")
    # a paired drop of 0.1 points with 2% discordant images over 5,000: sd = sqrt((0.02 - 0.001^2) / 5000)
    f = Figures(99.0, fp32_top1=80.0, top1=79.9, discordance=0.02, images=5000)
    sd = math.sqrt((0.02 - 0.001**2) / 5000)
    assert d.probability(f) == pytest.approx(0.5 * (1 + math.erf((0.005 - 0.001) / sd / math.sqrt(2))), rel=1e-6)
    assert Figures.pooled(Figures(99.0, images=1000), Figures(100.0, images=3000)).agreement == pytest.approx(99.75)


def test_without_timings_the_fewest_layers_in_sensitivity_order_ship():
    part, build = _model(SENS)
    budget = Budget.min_agreement("99", confidence=0.6)
    result = bud.search(layers=list(SENS), build=build, part=part, budget=budget, check_images=N)
    assert [r["layer"] for r in result.ranking][:3] == ["a", "b", "c"]
    assert result.excluded and result.excluded[0] == "a"
    assert budget.holds(result.search, margin=result.margin)
    assert all(c.latency_ms is None for c in result.candidates)


def test_with_timings_the_cheaper_order_is_walked_and_the_fastest_holding_one_wins():
    """'a' is the most sensitive layer but its fallback costs 0.5 ms; 'b' and 'c' together fix enough for
    0.02 ms. The sensitivity walk takes 'a' first; the gain-per-ms walk finds the cheaper set."""
    part, build = _model({"a": 0.12, "b": 0.10, "c": 0.10, "d": 0.005})
    costs = {"a": 0.5, "b": 0.01, "c": 0.01, "d": 0.01}
    budget = Budget.min_agreement("95.5", confidence=0.6)
    result = bud.search(layers=list(costs), build=build, part=part, budget=budget, check_images=N,
                        latency=_latency(costs, fp32=2.0), alternatives={"fp32": _fp32(part)})  # fmt: skip
    held = [c for c in result.candidates if c.holds]
    by_how = {c.how: c for c in held}
    assert "a" in by_how["sensitivity"].excluded
    assert "a" not in by_how["gain per ms"].excluded
    best = bud.fastest(result.candidates)
    assert best.how == "gain per ms" and best.latency_ms < by_how["sensitivity"].latency_ms < 2.0
    assert by_how["fp32"].figures.agreement == 100.0


def test_a_walk_stops_once_it_is_slower_than_what_already_holds_and_fp32_ships():
    """Every fallback costs 0.4 ms and FP32 runs at 1.2 ms: past two layers INT8 cannot win."""
    part, build = _model({"a": 0.6, "b": 0.6, "c": 0.6, "d": 0.6})
    costs = dict.fromkeys("abcd", 0.4)
    budget = Budget.min_agreement("99.9", confidence=0.6)
    result = bud.search(layers=list(costs), build=build, part=part, budget=budget, check_images=N,
                        latency=_latency(costs, base=0.8, fp32=1.2), alternatives={"fp32": _fp32(part)})  # fmt: skip
    walked = [c for c in result.candidates if c.how == "sensitivity"]
    assert max(len(c.excluded) for c in walked) == 2  # 0.8 + 2 x 0.4 = 1.6 ms > 1.2 x 1.1: stopped there
    assert bud.fastest(result.candidates).precision == "fp32"


def test_blocks_are_tried_whole():
    part, build = _model({"a": 0.3, "b": 0.003, "c": 0.003, "d": 0.003})
    costs = dict.fromkeys("abcd", 0.05)
    budget = Budget.min_agreement("99", confidence=0.6)
    result = bud.search(layers=list(costs), build=build, part=part, budget=budget, check_images=N,
                        latency=_latency(costs), blocks=[("a", "b"), ("c", "d")])  # fmt: skip
    blocks = [c for c in result.candidates if c.how == "blocks"]
    assert blocks and set(blocks[0].excluded) == {"a", "b"}


def test_the_choice_on_this_machine_is_retimed_interleaved():
    """``budgeting._choose`` times the shortlist again in the same rounds and keeps the fastest."""

    class Trials:
        on_target = True

        def compare(self, infers):
            return {"fp32": 1.0, "naive int8": 0.7, "int8, 2 layer(s) in higher precision (sensitivity)": 0.9}

    f = Figures(99.5, images=100)
    cands = [bud.Candidate("sensitivity", "int8", ("a", "b"), f, True, 0.5, lambda x: x),
             bud.Candidate("fp32", "fp32", (), f, True, 1.1, lambda x: x),
             bud.Candidate("naive", "int8", (), f, False, 0.4, lambda x: x)]  # fmt: skip
    best = budgeting._choose(cands, Trials(), "fp32", lambda _m: None)
    assert best.how == "sensitivity" and best.latency_ms == 0.9 and best.interleaved
    assert not cands[2].interleaved  # naive does not hold: never a choice

    class Absent(Trials):
        on_target = False

    cands[0].holds = False
    assert budgeting._choose(cands, Absent(), "fp16", lambda _m: None).precision == "fp32"


def test_off_target_int8_with_every_layer_kept_is_not_an_int8_answer():
    """Where nothing can be timed, INT8 with all its layers in higher precision loses to the higher precision
    that holds (it is that precision plus Q/DQ); INT8 with fewer fallbacks still wins."""

    class Absent:
        on_target = False

    f = Figures(99.9, images=100)
    every = bud.Candidate("sensitivity", "int8", ("a", "b", "c"), f, True, None, lambda x: x)
    fp16 = bud.Candidate("fp16", "fp16", (), f, True, None, lambda x: x)
    assert budgeting._choose([every, fp16], Absent(), "fp16", lambda _m: None, n_layers=3) is fp16
    some = bud.Candidate("sensitivity", "int8", ("a", "b"), f, True, None, lambda x: x)
    assert budgeting._choose([every, some, fp16], Absent(), "fp16", lambda _m: None, n_layers=3) is some
    # nothing else holds: the INT8 candidate still ships rather than nothing
    assert budgeting._choose([every], Absent(), "fp16", lambda _m: None, n_layers=3) is every
