"""Apply an accuracy budget inside ``compile_model``: split the validation images, run the search on real
trial bundles of the target's own backend (or its simulator), and confirm on the images the search never saw.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import registry
from edgekit.imagesets import ImageSet, iter_batches
from edgekit.measure.latency import measure
from edgekit.quantize import budget as bud
from edgekit.tasks import get_task


@dataclass
class Trials:
    """Builds trial bundles in a scratch folder and keeps their runtimes until closed."""

    compile_trial: Callable[[Path, tuple[str, ...], str | None], Any]  # (folder, excluded, precision) -> Runtime
    on_target: bool
    spec_input_shape: tuple[int, ...]

    def __post_init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="edgekit-budget-")
        self._runtimes: list[Any] = []
        self.count = 0

    def build(self, excluded: tuple[str, ...], precision: str | None = None):
        self.count += 1
        folder = Path(self._tmp.name) / f"trial-{self.count}"
        folder.mkdir()
        runtime = self.compile_trial(folder, excluded, precision)
        self._runtimes.append(runtime)
        return runtime.infer

    def latency(self, infer) -> float:
        x = np.zeros((1, *self.spec_input_shape[1:]), np.float32)
        return measure(lambda: infer(x), warmup=5, min_runs=30, seconds=0.2)["p50_ms"]

    def compare(self, infers: dict[str, Any], rounds: int = 5) -> dict[str, float]:
        """Batch-1 p50 latency of each, in ms, measured in interleaved rounds (the median of the rounds)."""
        x = np.zeros((1, *self.spec_input_shape[1:]), np.float32)
        runs: dict[str, list[float]] = {k: [] for k in infers}
        for _ in range(rounds):
            for k, infer in infers.items():
                runs[k].append(measure(lambda infer=infer: infer(x), warmup=5, min_runs=30, seconds=0.1)["p50_ms"])
        return {k: float(np.median(v)) for k, v in runs.items()}

    def close(self) -> None:
        for runtime in self._runtimes:
            runtime.close()
        self._tmp.cleanup()


def parts(images: ImageSet, root: Path, reference: Callable[[np.ndarray], np.ndarray],
          task: Any = "classification") -> tuple[bud.Part, bud.Part]:  # fmt: skip
    """The search and check parts of the validation images, with the FP32 model's outputs on each."""
    search_idx, check_idx = bud.split(images.paths, root)
    if len(search_idx) < 10 or len(check_idx) < 10:
        from edgekit.errors import DataError

        raise DataError(
            f"an accuracy budget needs at least 20 validation images outside the calibration set ({len(images.paths)} "
            "were usable); give --val more images"
        )

    def part(idx: list[int]) -> bud.Part:
        sub = images.subset(idx)
        outputs = np.concatenate([reference(x) for x in sub.batches(64)])  # streamed: only outputs are held
        return bud.Part(sub, sub.labels, outputs, get_task(task) if isinstance(task, str) else task)

    return part(search_idx), part(check_idx)


@dataclass
class Choice:
    """What the budget ships: the precision, the layers kept in higher precision (INT8 only), the manifest
    record of the search and the warnings for the compile."""

    precision: str
    excluded: tuple[str, ...]
    record: dict[str, Any]
    warnings: list[str]


def _outputs(infer, part: bud.Part) -> np.ndarray:
    return np.concatenate([infer(x) for x in iter_batches(part.images, 64)])


def run(
    *,
    budget: bud.Budget,
    layers: list[str],
    trials: Trials,
    search_part: bud.Part,
    check_part: bud.Part,
    backend: str,
    measured_with: str,
    log: Callable[[str], None],
    blocks: list[tuple[str, ...]] | None = None,
    precisions: tuple[str, ...] = ("fp32",),
) -> Choice:
    """Decide what the budget ships, confirm it on the check part, and say why.

    1. Naive INT8 on every validation image: if the probability that it meets the budget is at least the
       budget's confidence, it ships (nothing was selected, so nothing needs confirming apart).
    2. Otherwise the search (``bud.search``) measures INT8 with fallbacks and, as alternatives, the other
       precisions the target offers (``precisions``: fp16, fp32). On a target that is this machine the
       holding candidates are timed again in interleaved rounds and the fastest ships; where the device is
       absent nothing can be timed, and the fewest INT8 fallbacks ship, else the higher precision that holds.
    """
    t0 = time.perf_counter()
    latency = trials.latency if trials.on_target else None
    naive = trials.build(())
    naive_search, naive_check = (
        search_part.figures(_outputs(naive, search_part)),
        check_part.figures(_outputs(naive, check_part)),
    )
    pooled = bud.Figures.pooled(naive_search, naive_check)
    # the posterior is of a share of images; a detector's agreement (an F1 over boxes) and mAP are not one
    per_image = search_part.task.agreement_is_per_image
    probability = budget.probability(pooled) if per_image else float("nan")
    log(f"naive INT8 on all {pooled.images} validation images: agreement {pooled.agreement:.2f}%; probability "
        f"that it meets the budget ({budget.describe()}): "
        + (f"{probability:.3f}" if per_image else "not computed (not a share of images)"))  # fmt: skip
    result = None
    if per_image and probability >= budget.confidence:
        log(f"naive INT8 meets the budget with probability {probability:.3f} >= {budget.confidence:g}: no fallbacks")
        chosen = bud.Candidate("naive", "int8", (), naive_search, True, None, naive)
        margin = budget.margin(len(search_part), len(check_part), _discordance(naive_search))
    else:
        alternatives = {p: (lambda p=p: trials.build((), precision=p)) for p in ("fp16", "fp32") if p in precisions}
        result = bud.search(layers=layers, build=trials.build, part=search_part, budget=budget,
                            check_images=len(check_part), latency=latency, blocks=blocks, alternatives=alternatives,
                            naive_infer=naive, log=log)  # fmt: skip
        margin = result.margin
        chosen = _choose(
            result.candidates, trials, registry.backend(backend).higher_precision, log, n_layers=len(layers)
        )
    speed = _speed(trials, naive, chosen) if trials.on_target else None
    if result is None and speed and speed["naive_int8_ms"] > speed["fp32_ms"] * (1 + SLOWER_TOLERANCE):
        fp32 = speed.pop("_fp32_infer")
        chosen = bud.Candidate("fp32", "fp32", (), search_part.figures(_outputs(fp32, search_part)), True, None, fp32)
        speed["budgeted_ms"], speed["budgeted_speedup_vs_fp32"] = speed["fp32_ms"], 1.0
        log(f"naive INT8 runs slower than FP32 here ({speed['naive_int8_ms']:.3f} against {speed['fp32_ms']:.3f} ms "
            "at batch 1): FP32 is the fastest bundle that meets the budget")  # fmt: skip
    if speed:
        speed.pop("_fp32_infer", None)
    check = naive_check if chosen.infer is naive else check_part.figures(_outputs(chosen.infer, check_part))
    holds = budget.holds(check) if chosen.how != "naive" or result is not None else True
    if result is not None:
        log(f"check part ({len(check_part)} images the search did not use): budget "
            f"{'holds' if holds else 'does NOT hold'}")  # fmt: skip
    warnings = [] if holds else [
        f"the accuracy budget ({budget.describe()}) held on the search images but not on the check images "
        f"({check.to_dict()}); give --val more images"]  # fmt: skip
    warnings += _speed_warnings(budget, chosen, speed, result, len(layers), trials.on_target, log)
    record = {
        "budget": budget.to_dict(),
        "met": holds,
        "search_images": len(search_part),
        "search_margin_points": round(margin, 3),
        "confidence": budget.confidence,
        "check_images": len(check_part),
        "naive_int8_on_search": naive_search.to_dict(),
        "naive_int8_on_all": {**pooled.to_dict(), "images": pooled.images},
        "naive_int8_probability_meets_budget": round(probability, 4) if per_image else None,
        "stopped_at_naive": result is None,
        "chosen": {
            "label": chosen.label,
            "precision": chosen.precision,
            "how": chosen.how,
            "by": _chosen_by(result, trials, chosen),
        },
        "on_search": chosen.figures.to_dict(),
        "on_check": check.to_dict(),
        "layers_kept_in_higher_precision": list(chosen.excluded),
        "higher_precision": registry.backend(backend).higher_precision,
        "quantized_layers": len(layers),
        "sensitivity_ranking": result.ranking if result else [],
        "curve": result.curve if result else [],
        "candidates": [c.to_dict() for c in result.candidates] if result else [],
        "batch1_latency": speed,
        "trial_builds": trials.count,
        "search_seconds": round(time.perf_counter() - t0, 1),
        "measured_with": measured_with,
    }
    return Choice(chosen.precision, chosen.excluded, record, warnings)


def _chosen_by(result, trials: Trials, chosen: bud.Candidate) -> str:
    if result is None and chosen.precision != "int8":
        return "measured batch-1 latency: naive INT8 meets the budget but runs slower than FP32"
    if result is None:
        return "the probability that naive INT8 meets the budget"
    if trials.on_target:
        return "measured batch-1 latency: the fastest configuration that holds the budget"
    return "fewest layers in higher precision (latency cannot be measured here)"


def _discordance(f: bud.Figures) -> float:
    import math

    return 0.01 if math.isnan(f.discordance) else f.discordance


# The holding candidates timed again, interleaved, to pick the fastest: the few fastest by their single
# timing (one 0.2 s measurement each, taken minutes apart while the machine's load drifts).
SHORTLIST = 3


def _choose(candidates: list[bud.Candidate], trials: Trials, higher: str, log, *, n_layers: int = 0) -> bud.Candidate:
    held = [c for c in candidates if c.holds]
    if not trials.on_target:  # nothing can be timed here: fewest INT8 fallbacks, else the higher precision
        # INT8 with every layer in higher precision is the higher precision plus Q/DQ: not an INT8 answer
        int8 = [c for c in held if c.precision == "int8" and not (n_layers and len(c.excluded) >= n_layers)]
        if int8:
            return min(int8, key=lambda c: len(c.excluded))
        order = [higher, "fp16", "fp32"]
        return min(held, key=lambda c: order.index(c.precision) if c.precision in order else len(order))
    shortlist = sorted(held, key=lambda c: c.latency_ms)[:SHORTLIST]
    if not any(c.precision == "fp32" for c in shortlist):
        shortlist += [c for c in held if c.precision == "fp32"][:1]
    ms = trials.compare({c.label: c.infer for c in shortlist})
    for c in shortlist:
        c.latency_ms, c.interleaved = ms[c.label], True
    best = bud.fastest(shortlist)
    log("fastest that holds, timed interleaved: " + ", ".join(f"{c.label} {ms[c.label]:.3f} ms" for c in shortlist)
        + f" -> {best.label}")  # fmt: skip
    return best


def _speed_warnings(budget: bud.Budget, chosen: bud.Candidate, speed: dict[str, float] | None, result,
                    n_layers: int, on_target: bool, log) -> list[str]:  # fmt: skip
    """What the compile says when the budget's answer is not INT8, or INT8 that is barely faster."""
    warnings = []
    if chosen.precision != "int8":
        int8 = [c for c in (result.candidates if result else []) if c.precision == "int8" and c.holds]
        ms = f"{chosen.precision} {speed['budgeted_ms']:.3f} ms at batch 1" if speed else ""
        if result is None and speed:
            why = (f"naive INT8 meets it but runs slower than {chosen.precision} here ({speed['naive_int8_ms']:.3f} "
                   f"against {speed['fp32_ms']:.3f} ms at batch 1, timed in the same rounds)")  # fmt: skip
        elif on_target and int8 and speed:
            best = min(int8, key=lambda c: c.latency_ms)
            why = (f"the fastest INT8 configuration that holds it ({best.label}, {best.latency_ms:.3f} ms) runs no "
                   f"faster than {chosen.precision} here ({ms})")  # fmt: skip
        elif on_target and speed:
            why = (f"no INT8 configuration that holds it runs faster than {chosen.precision} here ({ms}; naive INT8, "
                   f"which misses it, {speed['naive_int8_ms']:.3f} ms)")  # fmt: skip
        else:
            why = "no INT8 configuration holds it"
        fix = "INT8 does not pay on this model here" if result is None else "relax the budget for INT8"
        warnings.append(f"the accuracy budget ({budget.describe()}): {why}; the bundle is {chosen.precision}, which "
                        f"holds it ({fix})")  # fmt: skip
    elif speed and speed["budgeted_speedup_vs_fp32"] < WORTHWHILE_SPEEDUP:
        warnings.append(
            f"this budget costs most of the INT8 speed-up: with {len(chosen.excluded)} of {n_layers} layers in "
            f"higher precision the bundle runs at {speed['budgeted_ms']:.3f} ms against FP32's "
            f"{speed['fp32_ms']:.3f} ms ({speed['budgeted_speedup_vs_fp32']:.2f}x; naive INT8 "
            f"{speed['naive_int8_speedup_vs_fp32']:.2f}x) at batch 1; it is the fastest configuration that holds "
            "the budget; relax the budget for more"
        )
    for w in warnings:
        log(w)
    return warnings


# Below this batch-1 speed-up over FP32, the compile says plainly that the budget costs INT8's speed-up.
WORTHWHILE_SPEEDUP = 1.2
# Naive INT8 that meets the budget ships unless FP32, timed in the same rounds, is faster by more than this
# (a few percent is the machine's noise, as for the pipeline's INT8-slower-than-FP32 check).
SLOWER_TOLERANCE = 0.05


def _speed(trials: Trials, naive, chosen: bud.Candidate) -> dict[str, float]:
    """Batch-1 latency of FP32, naive INT8 and the budget's bundle, measured interleaved on the target."""
    infers = {"fp32": trials.build((), precision="fp32"), "naive_int8": naive, "budgeted": chosen.infer}
    ms = trials.compare(infers)
    return {
        "_fp32_infer": infers["fp32"],
        "fp32_ms": round(ms["fp32"], 4), "naive_int8_ms": round(ms["naive_int8"], 4), "budgeted_ms": round(ms["budgeted"], 4),
        "naive_int8_speedup_vs_fp32": round(ms["fp32"] / ms["naive_int8"], 3),
        "budgeted_speedup_vs_fp32": round(ms["fp32"] / ms["budgeted"], 3),
    }  # fmt: skip


def layers_for(loaded_onnx: Any, spec: Any, target: Any) -> list[str]:
    """The layers the target's backend may keep in higher precision, by the names its compile takes."""
    return registry.backend(target.backend).quantizable_layers(loaded_onnx, spec=spec, target=target)


def blocks_for(loaded_onnx: Any, spec: Any, target: Any) -> list[tuple[str, ...]]:
    """Those layers in graph order, in the blocks the budget may keep whole (``Backend.layer_blocks``)."""
    return registry.backend(target.backend).layer_blocks(loaded_onnx, spec=spec, target=target)
