"""Classification: one output row of class scores (logits or probabilities) per image.

Decoded to the top-k labels with softmax probabilities; scored by top-1/top-5 and per-class accuracy;
compared with FP32 by top-1 agreement; drawn as the top label and its score.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edgekit.tasks.base import Comparison, Metrics, Task, TaskResult, draw_text_rows


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def probabilities(outputs: np.ndarray, postprocess: Mapping[str, Any]) -> np.ndarray:
    """Class probabilities of raw outputs: softmax of logits, or the outputs when the model gives probabilities."""
    if postprocess.get("output", "logits") == "probabilities":
        return outputs.astype(np.float32)
    z = outputs.astype(np.float32, copy=True)  # softmax in place: the same values, fewer temporaries
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


@dataclass(frozen=True)
class Prediction(TaskResult):
    """Top-k classes of one image, best first."""

    task: ClassVar[str] = "classification"

    top: list[tuple[str, float]]
    class_ids: list[int]

    @property
    def label(self) -> str:
        return self.top[0][0]

    @property
    def score(self) -> float:
        return self.top[0][1]

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": round(self.score, 6),
            "top_k": [
                {"label": lab, "class_id": cid, "score": round(p, 6)}
                for (lab, p), cid in zip(self.top, self.class_ids, strict=True)
            ],
        }

    def to_text(self) -> str:
        return ", ".join(f"{label} {p:.3f}" for label, p in self.top)


@dataclass(frozen=True)
class Evaluation(Metrics):
    """Top-1, top-5 and per-class accuracy, in %."""

    top1: float
    top5: float
    per_class: dict[str, float]
    predictions: np.ndarray  # top-1 class id per image
    outputs: np.ndarray  # raw outputs, (N, classes)

    def summary(self) -> dict[str, Any]:
        return {"top1": round(self.top1, 3), "top5": round(self.top5, 3)}

    @property
    def score(self) -> float:
        return self.top1


class Classification(Task):
    name = "classification"
    metric = "top1"
    mismatch_name = "top-1 mismatches"

    def decode(
        self,
        outputs: np.ndarray,
        postprocess: Mapping[str, Any],
        labels: Sequence[str],
        *,
        top_k: int = 5,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[Prediction]:
        probs = probabilities(outputs, postprocess)
        ids, n = top_k_ids(probs, top_k), len(labels)
        if probs.shape[1] > 64:  # many classes: only the top k's values become Python floats
            values = np.take_along_axis(probs, ids, axis=1).tolist()
            return [Prediction([(labels[i] if i < n else f"class_{i}", p) for i, p in zip(row_ids, row, strict=True)],
                               row_ids) for row_ids, row in zip(ids.tolist(), values, strict=True)]  # fmt: skip
        rows = probs.tolist()  # few: one conversion of the batch is fewer NumPy calls than a gather
        return [Prediction([(labels[i] if i < n else f"class_{i}", row[i]) for i in row_ids], row_ids)
                for row_ids, row in zip(ids.tolist(), rows, strict=True)]  # fmt: skip

    def postprocess_record(self, output_kind: str, output_shape: Sequence[int], *, spec: Any = None) -> dict[str, Any]:
        return {
            "output": output_kind,
            "activation": "softmax" if output_kind == "logits" else "none",
            "top_k": min(5, int(output_shape[1])),
        }

    def evaluate(self, outputs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> Evaluation:
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

    def agreement(self, outputs: np.ndarray, reference: np.ndarray) -> float:
        """Top-1 agreement, in %."""
        return 100.0 * float((outputs.argmax(1) == reference.argmax(1)).mean())

    def compare(self, outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> Comparison:
        pred, ref = outputs.argmax(1), reference.argmax(1)
        agreement = 100.0 * float((pred == ref).mean())
        if labels is None:
            return Comparison(agreement)
        right, right_ref = pred == labels, ref == labels
        return Comparison(agreement, 100.0 * float(right_ref.mean()), 100.0 * float(right.mean()),
                          float((right != right_ref).mean()))  # fmt: skip

    def selftest_mismatches(self, outputs: np.ndarray, expected: np.ndarray) -> int:
        return int((outputs.argmax(1) != expected.argmax(1)).sum())

    def selftest_margin(self, outputs: np.ndarray) -> np.ndarray:
        """The gap between the two largest outputs, over the output's range."""
        top2 = np.sort(outputs, axis=1)[:, -2:]
        return (top2[:, 1] - top2[:, 0]) / np.maximum(np.ptp(outputs, axis=1), 1e-6)

    def draw(self, image: np.ndarray, result: Mapping[str, Any]) -> int:
        """The top label and its score, white on black, at the top left."""
        return draw_text_rows(image, [(f"{result['label']} {result['score'] * 100:.0f}%", (255, 255, 255))])


def top_k_ids(scores: np.ndarray, top_k: int) -> np.ndarray:
    """(N, k) ids of each row's ``top_k`` largest of (N, C) ``scores``, best first, ties to the lower id (as a
    stable sort of every class gives). With many classes (k under a quarter of them) every class is not
    sorted: a partition finds each row's k-th value, and only the classes at or above it (k of them, more on
    a tie) are sorted; with few, one sort of the whole batch is fewer NumPy calls."""
    n = scores.shape[1]
    k = max(1, min(int(top_k), n))
    if 4 * k >= n:
        return (-scores).argsort(axis=1, kind="stable")[:, :k]
    kth = np.partition(scores, n - k, axis=1)[:, n - k]
    out = np.empty((len(scores), k), np.int64)
    for r, (row, t) in enumerate(zip(scores, kth, strict=True)):
        cand = np.flatnonzero(row >= t)  # ascending ids, so the stable sort breaks ties to the lower one
        out[r] = cand[(-row[cand]).argsort(kind="stable")[:k]]
    return out


def _label(labels: Sequence[str], class_id: int) -> str:
    return labels[class_id] if class_id < len(labels) else f"class_{class_id}"
