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
- Sensitivity: each quantized layer is reverted alone and the budget metric re-measured; layers are ranked
  by how much reverting them helps. Then layers are reverted in that order, re-measuring after each, until
  the budget holds; a last pass drops any reverted layer the budget does not need.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError, UsageError

Infer = Callable[[np.ndarray], np.ndarray]
Build = Callable[[tuple[str, ...]], Infer]


@dataclass(frozen=True)
class Budget:
    """``metric`` is "accuracy_drop" (points, or % of FP32's top-1 if ``relative``) or "agreement" (%)."""

    metric: str
    value: float
    relative: bool = False

    @classmethod
    def max_accuracy_drop(cls, text: str | float) -> Budget:
        raw = str(text).strip()
        relative = raw.endswith("%")
        value = _number(raw.rstrip("%"), "--max-accuracy-drop")
        if value < 0 or (relative and value > 100) or value > 100:
            raise UsageError(f"--max-accuracy-drop {raw} is out of range; give 0 to 100 points, or 0% to 100%")
        return cls("accuracy_drop", value, relative)

    @classmethod
    def min_agreement(cls, text: str | float) -> Budget:
        raw = str(text).strip()
        value = _number(raw.rstrip("%"), "--min-agreement")
        if not 0 <= value <= 100:
            raise UsageError(f"--min-agreement {raw} is out of range; give a percentage from 0 to 100")
        return cls("agreement", value)

    @property
    def needs_labels(self) -> bool:
        return self.metric == "accuracy_drop"

    def allowed_drop(self, fp32_top1: float) -> float:
        return self.value * fp32_top1 / 100.0 if self.relative else self.value

    def holds(self, figures: Figures, *, margin: float = 0.0) -> bool:
        """Whether the budget holds, with ``margin`` points to spare (the search asks for one standard error)."""
        if self.metric == "agreement":
            return figures.agreement - margin >= self.value - 1e-9
        return figures.drop + margin <= self.allowed_drop(figures.fp32_top1) + 1e-9

    def margin(self, images: int) -> float:
        """One standard error, in points, of the budget's figure measured on ``images`` images.

        Agreement: sqrt(p (1 - p) / n) at the budget's p. Drop: a paired difference whose discordant rate is
        about 1 - p; the search measures at the budget's edge, so sqrt((1 - p) / n) with p = 0.99 is used.
        Asking the search part for this much to spare is what keeps the budget holding on images it never saw.
        """
        if images <= 0:
            return 0.0
        p = self.value / 100.0 if self.metric == "agreement" else 0.99
        spread = p * (1 - p) if self.metric == "agreement" else (1 - p)
        return 100.0 * math.sqrt(spread / images)

    def describe(self) -> str:
        if self.metric == "agreement":
            return f"top-1 agreement with FP32 >= {self.value:g}%"
        unit = "% of FP32's top-1" if self.relative else " top-1 points"
        return f"accuracy drop <= {self.value:g}{unit}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "relative": self.relative, "text": self.describe()}


def _number(text: str, flag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{flag} takes a number, not '{text}'") from None
    if not math.isfinite(value):
        raise UsageError(f"{flag} takes a finite number, not '{text}'")
    return value


@dataclass(frozen=True)
class Figures:
    """INT8 against FP32 on one part of the validation images (top-1 only where labels exist)."""

    agreement: float
    fp32_top1: float = float("nan")
    top1: float = float("nan")

    @property
    def drop(self) -> float:
        return self.fp32_top1 - self.top1

    def to_dict(self) -> dict[str, float | None]:
        def r(v: float) -> float | None:
            return None if math.isnan(v) else round(v, 3)

        return {"agreement_with_fp32": r(self.agreement), "fp32_top1": r(self.fp32_top1), "top1": r(self.top1),
                "drop_points": r(self.drop)}  # fmt: skip


@dataclass(frozen=True)
class Part:
    """Preprocessed images, their labels (or None) and the FP32 model's outputs on them."""

    tensors: np.ndarray
    labels: np.ndarray | None
    fp32_outputs: np.ndarray

    def figures(self, outputs: np.ndarray) -> Figures:
        pred, ref = outputs.argmax(1), self.fp32_outputs.argmax(1)
        agreement = 100.0 * float((pred == ref).mean())
        if self.labels is None:
            return Figures(agreement)
        return Figures(
            agreement, 100.0 * float((ref == self.labels).mean()), 100.0 * float((pred == self.labels).mean())
        )


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


def _outputs(infer: Infer, tensors: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([infer(tensors[i : i + batch]) for i in range(0, len(tensors), batch)])


def search(
    *,
    layers: list[str],
    build: Build,
    part: Part,
    budget: Budget,
    batch: int = 64,
    latency: Callable[[Infer], float] | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> SearchResult:
    """Find the fewest layers to keep in higher precision for ``budget`` to hold on ``part``."""
    t0 = time.perf_counter()

    def measure(excluded: tuple[str, ...]) -> tuple[Figures, Infer]:
        infer = build(excluded)
        return part.figures(_outputs(infer, part.tensors, batch)), infer

    margin = budget.margin(len(part.tensors))
    naive, infer = measure(())
    curve = [_point(0, (), naive, infer, latency)]
    log(f"naive INT8: {_fmt(naive)}; budget: {budget.describe()}, searched with {margin:.2f} points to spare")
    if budget.holds(naive, margin=margin):
        return SearchResult((), naive, naive, [], curve, time.perf_counter() - t0, margin)
    ranking = _rank(layers, measure, budget, log)
    excluded: list[str] = []
    figures = naive
    for entry in ranking:
        excluded.append(entry["layer"])
        figures, infer = measure(tuple(excluded))
        curve.append(_point(len(excluded), tuple(excluded), figures, infer, latency))
        log(f"{len(excluded)} layer(s) in higher precision: {_fmt(figures)}")
        if budget.holds(figures, margin=margin):
            break
    if not budget.holds(figures, margin=margin) and not budget.holds(figures):
        raise BudgetNotMet(
            f"the budget ({budget.describe()}) does not hold even with all {len(layers)} quantized layers in "
            f"higher precision (best reached: {_fmt(figures)}); relax the budget or compile in fp16/fp32"
        )
    excluded, figures = _prune(excluded, figures, measure, budget, margin)
    return SearchResult(tuple(excluded), naive, figures, ranking, curve, time.perf_counter() - t0, margin)


def _score(figures: Figures, budget: Budget) -> float:
    return figures.agreement if budget.metric == "agreement" else -figures.drop


def _rank(layers: list[str], measure, budget: Budget, log) -> list[dict[str, Any]]:
    """Revert each layer alone; the most helpful first (ties keep the graph's order)."""
    scored = []
    for i, layer in enumerate(layers):
        figures, _ = measure((layer,))
        scored.append((-_score(figures, budget), i, layer, figures))
    scored.sort(key=lambda s: (s[0], s[1]))
    log(f"ranked {len(layers)} quantized layers by sensitivity; most sensitive: {scored[0][2]}")
    return [{"layer": layer, **figures.to_dict()} for _, _, layer, figures in scored]


def _prune(excluded: list[str], figures: Figures, measure, budget: Budget, margin: float) -> tuple[list[str], Figures]:
    """Drop any reverted layer (least sensitive first) that the budget does not need."""
    if not budget.holds(figures, margin=margin):  # every layer reverted and only the bare budget holds
        return excluded, figures
    kept = list(excluded)
    for layer in reversed(excluded[:-1]):
        trial = tuple(x for x in kept if x != layer)
        trial_figures, _ = measure(trial)
        if budget.holds(trial_figures, margin=margin):
            kept, figures = list(trial), trial_figures
    return kept, figures


def _point(n: int, excluded: tuple[str, ...], figures: Figures, infer: Infer, latency) -> dict[str, Any]:
    point: dict[str, Any] = {"layers_reverted": n, "last": excluded[-1] if excluded else None, **figures.to_dict()}
    if latency is not None:
        point["latency_ms"] = round(latency(infer), 4)
    return point


def _fmt(f: Figures) -> str:
    text = f"agreement {f.agreement:.2f}%"
    return text if math.isnan(f.top1) else f"{text}, top-1 {f.top1:.2f}% (FP32 {f.fp32_top1:.2f}%, drop {f.drop:+.2f})"
