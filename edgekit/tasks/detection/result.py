"""One image's detections: boxes in the original image's pixels, their scores and classes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from edgekit.tasks.base import TaskResult


@dataclass(frozen=True, eq=False)
class Detections(TaskResult):
    """Detections of one image, best score first (as the decoder returns them).

    ``boxes`` (N, 4) float32 x1, y1, x2, y2 in the original image's pixels; ``scores`` (N,) float32;
    ``class_ids`` (N,) int64; ``labels`` the label names in class order (a class beyond them is ``class_<id>``).
    """

    task: ClassVar[str] = "detection"

    boxes: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    labels: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        scores = np.asarray(self.scores, np.float32).reshape(-1)
        class_ids = np.asarray(self.class_ids).reshape(-1).astype(np.int64)
        if not boxes.shape[0] == scores.shape[0] == class_ids.shape[0]:
            raise ValueError(
                f"Detections: {boxes.shape[0]} boxes, {scores.shape[0]} scores and {class_ids.shape[0]} class ids"
            )
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "class_ids", class_ids)
        object.__setattr__(self, "labels", tuple(self.labels))

    @classmethod
    def empty(cls, labels: Sequence[str] = ()) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64), tuple(labels))

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def label(self, i: int) -> str:
        """The label of detection ``i``."""
        cid = int(self.class_ids[i])
        return self.labels[cid] if 0 <= cid < len(self.labels) else f"class_{cid}"

    def items(self) -> list[dict[str, Any]]:
        """One dict a detection: ``{"box": [x1, y1, x2, y2], "score", "class_id", "label"}`` (box in pixels,
        rounded to 0.01; score to 6 decimals)."""
        return [
            {
                "box": [round(float(v), 2) for v in self.boxes[i]],
                "score": round(float(self.scores[i]), 6),
                "class_id": int(self.class_ids[i]),
                "label": self.label(i),
            }
            for i in range(len(self))
        ]

    def to_json(self) -> dict[str, Any]:
        """``{"detections": items()}``: a dict, as every task's result is, so the daemon can add its own fields."""
        return {"detections": self.items()}

    def to_text(self) -> str:
        if not len(self):
            return "no detections"
        return ", ".join(
            f"{self.label(i)} {self.scores[i]:.3f} [{', '.join(f'{v:.0f}' for v in self.boxes[i])}]"
            for i in range(len(self))
        )
