"""Apply an accuracy budget inside ``compile_model``: split the validation images, run the search on real
trial bundles of the target's own backend (or its simulator), and confirm on the images the search never saw.
"""

from __future__ import annotations

import tempfile
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
          task: str = "classification") -> tuple[bud.Part, bud.Part]:  # fmt: skip
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
        return bud.Part(sub, sub.labels, outputs, get_task(task))

    return part(search_idx), part(check_idx)


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
) -> tuple[tuple[str, ...], dict[str, Any], list[str]]:
    """Search, confirm on the check part; return the layers to keep, the manifest record and warnings."""
    latency = trials.latency if trials.on_target else None
    result = bud.search(layers=layers, build=trials.build, part=search_part, budget=budget,
                        check_images=len(check_part), latency=latency, log=log)  # fmt: skip
    final = trials.build(result.excluded)
    check = check_part.figures(np.concatenate([final(x) for x in iter_batches(check_part.images, 64)]))
    holds = budget.holds(check)
    log(f"check part ({len(check_part)} images the search did not use): budget "
        f"{'holds' if holds else 'does NOT hold'}")  # fmt: skip
    warnings = [] if holds else [
        f"the accuracy budget ({budget.describe()}) held on the search images but not on the check images "
        f"({check.to_dict()}); give --val more images"]  # fmt: skip
    speed = _speed(trials, final) if trials.on_target else None
    if speed and speed["budgeted_speedup_vs_fp32"] < WORTHWHILE_SPEEDUP:
        warnings.append(
            f"this budget costs the INT8 speed-up: with {len(result.excluded)} of {len(layers)} layers in higher "
            f"precision the bundle runs at {speed['budgeted_ms']:.3f} ms against FP32's {speed['fp32_ms']:.3f} ms "
            f"({speed['budgeted_speedup_vs_fp32']:.2f}x; naive INT8 {speed['naive_int8_speedup_vs_fp32']:.2f}x) at "
            "batch 1; relax the budget, or ship FP32/FP16"
        )
        log(warnings[-1])
    record = {
        "budget": budget.to_dict(),
        "met": holds,
        "search_images": len(search_part),
        "search_margin_points": round(result.margin, 3),
        "confidence": budget.confidence,
        "check_images": len(check_part),
        "naive_int8_on_search": result.naive.to_dict(),
        "on_search": result.search.to_dict(),
        "on_check": check.to_dict(),
        "layers_kept_in_higher_precision": list(result.excluded),
        "higher_precision": registry.backend(backend).higher_precision,
        "quantized_layers": len(layers),
        "sensitivity_ranking": result.ranking,
        "curve": result.curve,
        "batch1_latency": speed,
        "trial_builds": trials.count,
        "search_seconds": round(result.seconds, 1),
        "measured_with": measured_with,
    }
    return result.excluded, record, warnings


# Below this batch-1 speed-up over FP32, the compile says plainly that the budget costs INT8's speed-up.
WORTHWHILE_SPEEDUP = 1.2


def _speed(trials: Trials, final) -> dict[str, float]:
    """Batch-1 latency of FP32, naive INT8 and the budgeted bundle, measured interleaved on the target."""
    infers = {"fp32": trials.build((), precision="fp32"), "naive_int8": trials.build(()), "budgeted": final}
    ms = trials.compare(infers)
    return {
        "fp32_ms": round(ms["fp32"], 4), "naive_int8_ms": round(ms["naive_int8"], 4), "budgeted_ms": round(ms["budgeted"], 4),
        "naive_int8_speedup_vs_fp32": round(ms["fp32"] / ms["naive_int8"], 3),
        "budgeted_speedup_vs_fp32": round(ms["fp32"] / ms["budgeted"], 3),
    }  # fmt: skip


def layers_for(loaded_onnx: Any, spec: Any, target: Any) -> list[str]:
    """The layers the target's backend may keep in higher precision, by the names its compile takes."""
    return registry.backend(target.backend).quantizable_layers(loaded_onnx, spec=spec, target=target)
