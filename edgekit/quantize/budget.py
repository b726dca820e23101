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
- Naive first: naive INT8 is chosen by nobody, so every validation image (search and check parts) is
  evidence about it. ``Budget.probability`` is the probability that its figure on images of this kind meets
  the budget (a Jeffreys posterior for an agreement, a normal one for a paired top-1 drop); at or above the
  budget's confidence the search stops at naive INT8. The margin above is for configurations the search
  selected, which the check part must confirm; applying it to naive INT8 forced fallbacks that a larger
  sample would not (issue 12: 4 layers kept, a slower bundle that agreed less on held-out images).
- Candidates: the search walks the sensitivity order (fewest layers) and, where latency is measured, the
  order of NMSE gained per millisecond a layer's fallback costs (each single revert is timed: an FP32
  island between Q/DQ pairs can cost more than the layer), and tries each found set with its blocks kept
  whole (``blocks``: a fallback that breaks a quantized chain pays Q/DQ at both ends; a whole block may cost
  less). The caller adds other precisions (FP16, FP32) and keeps the fastest candidate that holds.
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

    def probability(self, figures: Figures) -> float:
        """The probability that the budget holds on images of this kind, given ``figures`` measured on
        ``figures.images`` images the configuration was not chosen on.

        Agreement: k of n images agree; the Jeffreys posterior Beta(k + 1/2, n - k + 1/2) of the agreement
        rate, P(rate >= budget). Drop: the paired per-image difference d (FP32 right minus INT8 right, -1, 0
        or 1) has mean drop/100 and variance discordance - mean^2; the normal posterior of its mean,
        P(mean <= allowed drop).
        """
        n = figures.images
        if n <= 0:
            return 0.0
        if self.metric == "agreement":
            from scipy.stats import beta

            k = figures.agreement / 100.0 * n
            return float(beta.sf(self.value / 100.0, k + 0.5, n - k + 0.5))
        if math.isnan(figures.top1):
            return 0.0
        mean = figures.drop / 100.0
        var = max((figures.discordance if not math.isnan(figures.discordance) else 0.0) - mean * mean, 0.0)
        room = self.allowed_drop(figures.fp32_top1) / 100.0 - mean
        sd = math.sqrt(max(var, 0.25 / (n * n)) / n)  # a floor for a sample with no discordant image
        return float(statistics.NormalDist().cdf(room / sd))

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
    images: int = 0  # how many images the figures are over

    @property
    def drop(self) -> float:
        return self.fp32_top1 - self.top1

    @staticmethod
    def pooled(*parts: Figures) -> Figures:
        """The figures over the union of disjoint image sets (each weighted by its ``images``)."""
        n = sum(p.images for p in parts)

        def mean(name: str) -> float:
            return sum(getattr(p, name) * p.images for p in parts) / n if n else float("nan")

        return Figures(mean("agreement"), mean("fp32_top1"), mean("top1"), mean("nmse"), mean("discordance"), n)

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
        return Figures(c.agreement, c.reference_score, c.score, nmse, c.discordance, len(self))


def split(paths: list[Path], root: Path) -> tuple[list[int], list[int]]:
    """Indices of the search and check parts: every image goes to one, by the sha256 of its relative path."""
    search, check = [], []
    for i, p in enumerate(paths):
        rel = str(p.relative_to(root)).replace("\\", "/") if root in p.parents else p.name
        (search if hashlib.sha256(rel.encode()).digest()[0] % 2 == 0 else check).append(i)
    return search, check


@dataclass
class Candidate:
    """One configuration the search measured: its precision, the layers it keeps in higher precision and
    its figures on the search part. ``latency_ms`` is its batch-1 p50 where the target is this machine."""

    how: str  # "naive", "sensitivity", "gain per ms", "blocks", or a precision ("fp16", "fp32")
    precision: str
    excluded: tuple[str, ...]
    figures: Figures
    holds: bool
    latency_ms: float | None = None
    infer: Infer | None = field(default=None, repr=False, compare=False)
    interleaved: bool = False  # latency_ms is from the final interleaved rounds, not the one timing

    @property
    def label(self) -> str:
        if self.precision != "int8":
            return self.precision
        if not self.excluded:
            return "naive int8"
        return f"int8, {len(self.excluded)} layer(s) in higher precision ({self.how})"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "how": self.how, "precision": self.precision,
                               "layers_kept": len(self.excluded), "holds_on_search": self.holds,
                               **self.figures.to_dict()}  # fmt: skip
        if self.latency_ms is not None:
            out["latency_ms"] = round(self.latency_ms, 4)
        if self.interleaved:
            out["timed_interleaved"] = True
        return out


@dataclass
class SearchResult:
    excluded: tuple[str, ...]
    naive: Figures
    search: Figures
    ranking: list[dict[str, Any]] = field(default_factory=list)
    curve: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    margin: float = 0.0
    candidates: list[Candidate] = field(default_factory=list)


class BudgetNotMet(EdgekitError):
    """The budget does not hold even with every quantized layer in higher precision."""


def _outputs(infer: Infer, images: Images, batch: int) -> np.ndarray:
    return np.concatenate([infer(x) for x in iter_batches(images, batch)])


# A walk down one order of layers stops once its configuration runs this much slower than the fastest
# configuration that already holds: reverting more layers rarely makes a Q/DQ graph faster.
PRUNE_SLOWER = 0.10


def search(
    *,
    layers: list[str],
    build: Build,
    part: Part,
    budget: Budget,
    check_images: int,
    batch: int = 64,
    latency: Callable[[Infer], float] | None = None,
    blocks: list[tuple[str, ...]] | None = None,
    alternatives: dict[str, Callable[[], Infer]] | None = None,
    naive_infer: Infer | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> SearchResult:
    """Find the configurations for which ``budget`` holds on ``part``, with enough to spare that it holds on
    a check part of ``check_images`` images too.

    Without ``latency`` (the target is not this machine) the answer is the fewest layers in higher precision,
    in sensitivity order. With it, each configuration is timed and the search also walks the layers in order
    of NMSE gained per millisecond of fallback cost, tries the found sets with their ``blocks`` kept whole,
    and measures ``alternatives`` (other precisions: name -> build); every candidate is in
    ``SearchResult.candidates`` and ``excluded`` is the holding INT8 one with the fewest layers. The caller
    picks the fastest that holds (``fastest``)."""
    t0 = time.perf_counter()

    def measure(excluded: tuple[str, ...]) -> tuple[Figures, Infer]:
        infer = build(excluded)
        return part.figures(_outputs(infer, part.images, batch)), infer

    if naive_infer is None:
        naive, infer = measure(())
    else:
        infer = naive_infer
        naive = part.figures(_outputs(infer, part.images, batch))
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
    timed = (lambda f: latency(f)) if latency is not None else (lambda _f: None)
    candidates = [Candidate("naive", "int8", (), naive, budget.holds(naive, margin=margin), timed(infer), infer)]
    curve = [_point(0, (), naive, candidates[0].latency_ms)]
    log(f"naive INT8: {_fmt(naive)}; budget: {budget.describe()}, searched with {margin:.2f} points to spare")
    for name, make in (alternatives or {}).items():
        alt = make()
        figures = part.figures(_outputs(alt, part.images, batch))
        candidates.append(Candidate(name, name, (), figures, budget.holds(figures, margin=margin), timed(alt), alt))
        log(f"{name}: {_fmt(figures)}" + (f", {candidates[-1].latency_ms:.3f} ms" if latency else ""))
    if candidates[0].holds:
        return SearchResult((), naive, naive, [], curve, time.perf_counter() - t0, margin, candidates)

    def best_ms() -> float | None:
        held = [c.latency_ms for c in candidates if c.holds and c.latency_ms is not None]
        return min(held) if held else None

    def walk(order: list[str], how: str, record_curve: bool) -> Candidate | None:
        excluded: list[str] = []
        c = None
        for layer in order:
            excluded.append(layer)
            figures, infer = measure(tuple(excluded))
            c = Candidate(how, "int8", tuple(excluded), figures, budget.holds(figures, margin=margin), timed(infer),
                          infer)  # fmt: skip
            if record_curve:
                curve.append(_point(len(excluded), c.excluded, figures, c.latency_ms))
            ms = f", {c.latency_ms:.3f} ms" if c.latency_ms is not None else ""
            log(f"{len(excluded)} layer(s) in higher precision ({how}): {_fmt(figures)}{ms}")
            if c.holds:
                candidates.append(c)
                return c
            fastest = best_ms()
            if c.latency_ms is not None and fastest is not None and c.latency_ms > fastest * (1 + PRUNE_SLOWER):
                c.latency_ms = min(c.latency_ms, timed(infer))  # once more: one timing can be a spike
            if c.latency_ms is not None and fastest is not None and c.latency_ms > fastest * (1 + PRUNE_SLOWER):
                log(f"stopped the {how} order: {c.latency_ms:.3f} ms is already slower than {fastest:.3f} ms, "
                    "which holds")  # fmt: skip
                candidates.append(c)
                return None
        if c is not None:
            candidates.append(c)
        return None

    ranking, single = _rank(layers, measure, log, timed)
    first = walk([r["layer"] for r in ranking], "sensitivity", True)
    found = [first] if first else []
    if latency is not None:
        cost_floor = 0.01 * (candidates[0].latency_ms or 0.0) + 1e-4
        naive_ms = candidates[0].latency_ms or 0.0
        order = sorted(single, key=lambda k: -(naive.nmse - single[k][0]) / max((single[k][1] or 0.0) - naive_ms,
                                                                              cost_floor))  # fmt: skip
        if order != [r["layer"] for r in ranking]:
            second = walk(order, "gain per ms", False)
            found += [second] if second else []
        for c in list(found):
            whole = _with_blocks(c.excluded, blocks or [])
            if whole != set(c.excluded):
                kept = tuple(name for name in layers if name in whole)
                figures, infer = measure(kept)
                candidates.append(Candidate("blocks", "int8", kept, figures, budget.holds(figures, margin=margin),
                                            timed(infer), infer))  # fmt: skip
                log(f"{len(kept)} layer(s) in higher precision (whole blocks): {_fmt(figures)}, "
                    f"{candidates[-1].latency_ms:.3f} ms")  # fmt: skip
    int8 = [c for c in candidates if c.precision == "int8" and c.holds]
    if not int8 and not any(c.holds for c in candidates):
        last = candidates[-1].figures if len(candidates) > 1 else naive
        raise BudgetNotMet(
            f"the budget ({budget.describe()}, with {margin:.2f} points to spare on {n} search images) does not "
            f"hold even with all {len(layers)} quantized layers in higher precision (best reached: {_fmt(last)}); "
            "relax the budget or compile in fp16/fp32"
        )
    fewest = min(int8, key=lambda c: len(c.excluded)) if int8 else None
    return SearchResult(fewest.excluded if fewest else (), naive, fewest.figures if fewest else naive, ranking,
                        curve, time.perf_counter() - t0, margin, candidates)  # fmt: skip


def _with_blocks(excluded: tuple[str, ...], blocks: list[tuple[str, ...]]) -> set[str]:
    """``excluded`` with every block that one of its layers is in kept whole."""
    whole = set(excluded)
    for block in blocks:
        if whole.intersection(block):
            whole.update(block)
    return whole


# Candidates within this fraction of the fastest one's latency are as fast (a machine's noise): of those, the
# most faithful ships (fp32, then fp16, then INT8 with the most layers in higher precision).
SAME_SPEED = 0.05
_FAITHFUL = {"fp32": 0, "fp16": 1, "int8": 2}


def fastest(candidates: list[Candidate]) -> Candidate:
    """The holding candidate with the lowest measured latency; of those within ``SAME_SPEED`` of it, the most
    faithful (fp32 over fp16 over INT8, then more layers in higher precision)."""
    held = [c for c in candidates if c.holds and c.latency_ms is not None]
    best = min(c.latency_ms for c in held)
    tied = [c for c in held if c.latency_ms <= best * (1 + SAME_SPEED)]
    return min(tied, key=lambda c: (_FAITHFUL.get(c.precision, 3), -len(c.excluded), c.latency_ms))


def _rank(layers: list[str], measure, log, timed) -> tuple[list[dict[str, Any]], dict[str, tuple[float, Any]]]:
    """Revert each layer alone; rank by how close the trial's outputs come to FP32's (ties keep graph order).
    Each trial is timed where the target is this machine: what that layer's fallback costs. Also returns,
    in ranking order, each layer's (NMSE, ms) reverted alone."""
    scored = []
    for i, layer in enumerate(layers):
        figures, infer = measure((layer,))
        scored.append((figures.nmse, -figures.agreement, i, layer, figures, timed(infer)))
    scored.sort(key=lambda s: s[:3])
    log(f"ranked {len(layers)} quantized layers by sensitivity; most sensitive: {scored[0][3]}")
    ranking, single = [], {}
    for *_, layer, figures, ms in scored:
        entry = {"layer": layer, **figures.to_dict()}
        if ms is not None:
            entry["latency_ms"] = round(ms, 4)
        ranking.append(entry)
        single[layer] = (figures.nmse, ms)
    return ranking, single


def _point(n: int, excluded: tuple[str, ...], figures: Figures, latency_ms: float | None) -> dict[str, Any]:
    point: dict[str, Any] = {"layers_reverted": n, "last": excluded[-1] if excluded else None, **figures.to_dict()}
    if latency_ms is not None:
        point["latency_ms"] = round(latency_ms, 4)
    return point


def _fmt(f: Figures) -> str:
    text = f"agreement {f.agreement:.2f}%"
    return text if math.isnan(f.top1) else f"{text}, top-1 {f.top1:.2f}% (FP32 {f.fp32_top1:.2f}%, drop {f.drop:+.2f})"
