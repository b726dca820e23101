"""Accuracy of a model on a labelled image set, through a real runtime's ``infer``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.imagesets import Images, iter_batches


@dataclass(frozen=True)
class Evaluation:
    top1: float
    top5: float
    per_class: dict[str, float]
    predictions: np.ndarray  # top-1 class id per image
    outputs: np.ndarray  # raw outputs, (N, classes)

    def summary(self) -> dict[str, Any]:
        return {"top1": round(self.top1, 3), "top5": round(self.top5, 3)}


def run_batches(infer: Callable[[np.ndarray], np.ndarray], images: Images, batch: int) -> np.ndarray:
    """``infer``'s outputs on every image, ``batch`` at a time; an ``ImageSet`` is read one batch at a time."""
    return np.concatenate([infer(x) for x in iter_batches(images, batch)]).astype(np.float32)


def evaluate(outputs: np.ndarray, labels: np.ndarray, names: list[str] | tuple[str, ...]) -> Evaluation:
    """Top-1, top-5 and per-class accuracy (in %) of raw outputs against integer labels."""
    pred = outputs.argmax(1)
    k = min(5, outputs.shape[1])
    top5 = np.argsort(-outputs, axis=1)[:, :k]
    per_class = {}
    for cid, name in enumerate(names):
        mask = labels == cid
        if mask.any():
            per_class[name] = round(100.0 * float((pred[mask] == cid).mean()), 3)
    return Evaluation(
        top1=100.0 * float((pred == labels).mean()),
        top5=100.0 * float((top5 == labels[:, None]).any(1).mean()),
        per_class=per_class,
        predictions=pred,
        outputs=outputs,
    )


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Top-1 agreement of two sets of predictions (class ids), in %."""
    return 100.0 * float((a == b).mean())
