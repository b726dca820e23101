"""The accuracy budget: measure INT8 against FP32 and return the most sensitive layers to higher precision
until the budget holds.

One algorithm for every backend. A backend supplies ``build(excluded) -> infer``: a function that
quantizes the model with the named layers kept in higher precision and returns something that runs a
batch. The search never sees the backend; it only measures.

- Budgets: ``--max-accuracy-drop B`` (top-1 points, absolute; ``B%`` relative to FP32's top-1) needs
  labelled images; ``--min-agreement A`` (top-1 agreement with FP32, in %) needs none.
- The validation images are split deterministically into a search part and a check part; the check part
  only confirms the result.
- Layers: the quantized weighted layers (Conv, Gemm, MatMul) and residual Adds, by the names the backend's
  tool takes.
- Sensitivity: each quantized layer is reverted alone and the FP32 model's outputs compared with the trial's
  (normalized mean squared error of the logits, the distance NNCF's accuracy control ranks by): a continuous
  figure, where agreement on a thousand images moves by whole images and ranks mostly noise. Layers are
  then reverted in that order, re-measuring the budget's own figure after each, until it holds with the
  margin below to spare.
- Margin: the check part is a second sample of the same images' kind, so a figure that only just meets the
  budget on the search part misses it on the check part about half the time. The search asks for
  z * sqrt(v (1/n_search + 1/n_check)) to spare, the one-sided prediction bound for the check part's figure
  at the budget's ``confidence`` (0.95 by default: z = 1.645); v is p (1 - p) at the budget's agreement p, or
  for a drop budget the rate of images on which FP32 and naive INT8 disagree about being right.
"""

from __future__ import annotations

import hashlib
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError, UsageError
from edgekit.imagesets import Images, iter_batches
from edgekit.tasks import get_task
from edgekit.tasks.base import Task

Infer = Callable[[np.ndarray], np.ndarray]
Build = Callable[[tuple[str, ...]], Infer]


@dataclass(frozen=True)
class Budget:
    """``metric`` is "accuracy_drop" (points, or % of FP32's top-1 if ``relative``) or "agreement" (%)."""

    metric: str
    value: float
    relative: bool = False
    confidence: float = 0.95

    @classmethod
    def max_accuracy_drop(cls, text: str | float, confidence: float = 0.95) -> Budget:
        raw = str(text).strip()
        relative = raw.endswith("%")
        value = _number(raw.rstrip("%"), "--max-accuracy-drop")
        if value < 0 or (relative and value > 100) or value > 100:
            raise UsageError(f"--max-accuracy-drop {raw} is out of range; give 0 to 100 points, or 0% to 100%")
        return cls("accuracy_drop", value, relative, _confidence(confidence))

    @classmethod
    def min_agreement(cls, text: str | float, confidence: float = 0.95) -> Budget:
        raw = str(text).strip()
        value = _number(raw.rstrip("%"), "--min-agreement")
        if not 0 <= value <= 100:
            raise UsageError(f"--min-agreement {raw} is out of range; give a percentage from 0 to 100")
        return cls("agreement", value, confidence=_confidence(confidence))

    @property
    def needs_labels(self) -> bool:
        return self.metric == "accuracy_drop"

    def allowed_drop(self, fp32_top1: float) -> float:
        return self.value * fp32_top1 / 100.0 if self.relative else self.value

    def holds(self, figures: Figures, *, margin: float = 0.0) -> bool:
        """Whether the budget holds, with ``margin`` points to spare (the search asks for ``margin()``)."""
        if self.metric == "agreement":
            return figures.agreement - margin >= self.value - 1e-9
        return figures.drop + margin <= self.allowed_drop(figures.fp32_top1) + 1e-9

    def margin(self, search_images: int, check_images: int, discordance: float = 0.01) -> float:
        """Points the search part's figure must clear the budget by for the check part to meet it too.

        The one-sided prediction bound z * sqrt(v (1/n_s + 1/n_c)) at ``confidence``: v = p (1 - p) at the
        budget's agreement p; for a drop, v = ``discordance``, the rate of images on which exactly one of
        FP32 and INT8 is right (the variance of a paired difference of two top-1 figures).
        """
        if search_images <= 0 or check_images <= 0:
            return 0.0
        if self.metric == "agreement":
            p = self.value / 100.0
            v = p * (1 - p)
        else:
            v = max(discordance, 1.0 / search_images)
        z = statistics.NormalDist().inv_cdf(self.confidence)
        return 100.0 * z * math.sqrt(v * (1.0 / search_images + 1.0 / check_images))

    def reachable(self, margin: float, fp32_top1: float = 100.0) -> bool:
        """Whether any model could meet the budget with ``margin`` to spare (an exact copy of FP32 at best)."""
        if self.metric == "agreement":
            return self.value + margin <= 100.0 + 1e-9
        return margin <= self.allowed_drop(fp32_top1) + 1e-9

    def images_needed(self, fp32_top1: float = 100.0, discordance: float = 0.01) -> int:
        """Validation images (both parts) for the margin to be at most half the room the budget leaves."""
        z = statistics.NormalDist().inv_cdf(self.confidence)
        if self.metric == "agreement":
            p = self.value / 100.0
            room, v = (1 - p) / 2, p * (1 - p)
        else:
            room, v = self.allowed_drop(fp32_top1) / 200.0, max(discordance, 1e-4)
        if room <= 0:
            return 0
        return 2 * math.ceil(2 * z * z * v / (room * room))

    def describe(self) -> str:
        if self.metric == "agreement":
            return f"top-1 agreement with FP32 >= {self.value:g}%"
        unit = "% of FP32's top-1" if self.relative else " top-1 points"
        return f"accuracy drop <= {self.value:g}{unit}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "relative": self.relative,
                "confidence": self.confidence, "text": self.describe()}  # fmt: skip


def _confidence(value: float | str) -> float:
    value = _number(str(value), "--budget-confidence")
    if not 0.5 <= value < 1.0:
        raise UsageError(f"--budget-confidence {value:g} is out of range; give a probability from 0.5 to 0.999")
    return value


def _number(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise UsageError(f"{flag} takes a number, not '{text}'") from exc
    if not math.isfinite(value):
        raise UsageError(f"{flag} takes a finite number, not '{text}'")
    return value


@dataclass(frozen=True)
class Figures:
    """INT8 against FP32 on one part of the validation images (top-1 only where labels exist)."""

    agreement: float
    fp32_top1: float = float("nan")
    top1: float = float("nan")
    nmse: float = float("nan")  # sum((int8 - fp32)^2) / sum(fp32^2) over the logits
    discordance: float = float("nan")  # share of images on which exactly one of FP32 and INT8 is right

    @property
    def drop(self) -> float:
        return self.fp32_top1 - self.top1

    def to_dict(self) -> dict[str, float | None]:
        def r(v: float) -> float | None:
            return None if math.isnan(v) else round(v, 3)

        out = {"agreement_with_fp32": r(self.agreement), "fp32_top1": r(self.fp32_top1), "top1": r(self.top1),
               "drop_points": r(self.drop)}  # fmt: skip
        if not math.isnan(self.nmse):
            out["output_nmse"] = float(f"{self.nmse:.4g}")
        return out


@dataclass(frozen=True)
class Part:
    """Images (an array, or an ``ImageSet`` read one batch at a time), their labels (or None) and the FP32
    model's outputs on them. Each measurement streams the images again; only outputs are held. The model's
    ``task`` says what agreement and accuracy are (a classifier's: top-1)."""

    images: Images
    labels: np.ndarray | None
    fp32_outputs: np.ndarray
    task: Task = field(default_factory=lambda: get_task("classification"))

    def __len__(self) -> int:
        return len(self.images)

    def figures(self, outputs: np.ndarray) -> Figures:
        c = self.task.compare(outputs, self.fp32_outputs, self.labels)
        diff = outputs.astype(np.float64) - self.fp32_outputs
        nmse = float((diff * diff).sum() / max(float((self.fp32_outputs.astype(np.float64) ** 2).sum()), 1e-30))
        return Figures(c.agreement, c.reference_score, c.score, nmse, c.discordance)


def split(paths: list[Path], root: Path) -> tuple[list[int], list[int]]:
    """Indices of the search and check parts: every image goes to one, by the sha256 of its relative path."""
    search, check = [], []
    for i, p in enumerate(paths):
        rel = str(p.relative_to(root)).replace("\\", "/") if root in p.parents else p.name
        (search if hashlib.sha256(rel.encode()).digest()[0] % 2 == 0 else check).append(i)
    return search, check


@dataclass
class SearchResult:
    excluded: tuple[str, ...]
    naive: Figures
    search: Figures
    ranking: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    margin: float = 0.0


class BudgetNotMet(EdgekitError):
    """The budget does not hold even with every quantized layer in higher precision."""


def _outputs(infer: Infer, images: Images, batch: int) -> np.ndarray:
    return np.concatenate([infer(x) for x in iter_batches(images, batch)])


def search(
    *,
    layers: list[str],
    build: Build,
    part: Part,
    budget: Budget,
    check_images: int,
    batch: int = 64,
    latency: Callable[[Infer], float] | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> SearchResult:
    """Find the fewest layers to keep in higher precision for ``budget`` to hold on ``part``, with enough to
    spare that it holds on a check part of ``check_images`` images too."""
    t0 = time.perf_counter()

    def measure(excluded: tuple[str, ...]) -> tuple[Figures, Infer]:
        infer = build(excluded)
        return part.figures(_outputs(infer, part.images, batch)), infer

    naive, infer = measure(())
    n = len(part)
    discordance = 0.01 if math.isnan(naive.discordance) else naive.discordance  # drop budgets only
    margin = budget.margin(n, check_images, discordance)
    if not budget.reachable(margin, naive.fp32_top1):
        need = budget.images_needed(naive.fp32_top1, discordance)
        raise BudgetNotMet(
            f"{n + check_images} validation images are too few to confirm {budget.describe()}: the search part "
            f"would need {margin:.2f} points to spare at {budget.confidence:.0%} confidence, more than any model "
            f"can reach; give --val at least {need} images, or relax the budget or --budget-confidence"
        )
    curve = [_point(0, (), naive, infer, latency)]
    log(f"naive INT8: {_fmt(naive)}; budget: {budget.describe()}, searched with {margin:.2f} points to spare")
    if budget.holds(naive, margin=margin):
        return SearchResult((), naive, naive, [], curve, time.perf_counter() - t0, margin)
    ranking = _rank(layers, measure, log)
    excluded: list[str] = []
    figures = naive
    for entry in ranking:
        excluded.append(entry["layer"])
        figures, infer = measure(tuple(excluded))
        curve.append(_point(len(excluded), tuple(excluded), figures, infer, latency))
        log(f"{len(excluded)} layer(s) in higher precision: {_fmt(figures)}")
        if budget.holds(figures, margin=margin):
            break
    if not budget.holds(figures, margin=margin):
        raise BudgetNotMet(
            f"the budget ({budget.describe()}, with {margin:.2f} points to spare on {n} search images) does not "
            f"hold even with all {len(layers)} quantized layers in higher precision (best reached: {_fmt(figures)}); "
            "relax the budget or compile in fp16/fp32"
        )
    return SearchResult(tuple(excluded), naive, figures, ranking, curve, time.perf_counter() - t0, margin)


def _rank(layers: list[str], measure, log) -> list[dict[str, Any]]:
    """Revert each layer alone; rank by how close the trial's outputs come to FP32's (ties keep graph order)."""
    scored = []
    for i, layer in enumerate(layers):
        figures, _ = measure((layer,))
        scored.append((figures.nmse, -figures.agreement, i, layer, figures))
    scored.sort(key=lambda s: s[:3])
    log(f"ranked {len(layers)} quantized layers by sensitivity; most sensitive: {scored[0][3]}")
    return [{"layer": layer, **figures.to_dict()} for *_, layer, figures in scored]


def _point(n: int, excluded: tuple[str, ...], figures: Figures, infer: Infer, latency) -> dict[str, Any]:
    point: dict[str, Any] = {"layers_reverted": n, "last": excluded[-1] if excluded else None, **figures.to_dict()}
    if latency is not None:
        point["latency_ms"] = round(latency(infer), 4)
    return point


def _fmt(f: Figures) -> str:
    text = f"agreement {f.agreement:.2f}%"
    return text if math.isnan(f.top1) else f"{text}, top-1 {f.top1:.2f}% (FP32 {f.fp32_top1:.2f}%, drop {f.drop:+.2f})"
