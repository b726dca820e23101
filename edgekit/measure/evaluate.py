"""Accuracy of a model on a labelled image set, through a real runtime's ``infer`` and the model's task."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgekit.imagesets import Images, iter_batches
from edgekit.tasks import get_task
from edgekit.tasks.base import Metrics, Task
from edgekit.tasks.classification import Evaluation

__all__ = ["Evaluation", "agreement", "evaluate", "output_agreement", "run_batches"]


def run_batches(infer: Callable[[np.ndarray], np.ndarray], images: Images, batch: int) -> np.ndarray:
    """``infer``'s outputs on every image, ``batch`` at a time; an ``ImageSet`` is read one batch at a time."""
    return np.concatenate([infer(x) for x in iter_batches(images, batch)]).astype(np.float32)


def _task(task: Task | str) -> Task:
    return get_task(task) if isinstance(task, str) else task


def evaluate(outputs: np.ndarray, labels: np.ndarray, names: list[str] | tuple[str, ...],
             task: Task | str = "classification") -> Metrics:  # fmt: skip
    """The task's metrics (in %) of raw outputs against integer labels: for a classifier, an ``Evaluation``
    with top-1, top-5 and per-class accuracy."""
    return _task(task).evaluate(outputs, labels, names)


def output_agreement(outputs: np.ndarray, reference: np.ndarray, task: Task | str = "classification") -> float:
    """How often two models' raw outputs on the same images agree, in % (a classifier's: top-1 agreement)."""
    return _task(task).agreement(outputs, reference)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Agreement of two sets of per-image answers (a classifier's: top-1 class ids), in %."""
    return 100.0 * float((a == b).mean())
