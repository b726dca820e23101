"""What a task is: everything that depends on what a model's outputs mean.

The runtime, the daemon, the compile-time evaluation and the accuracy budget ask the bundle's task (its
manifest's ``model.task``) to decode outputs, score them and draw them, so a new task is a new ``Task``
subclass and needs no change to them. numpy only (OpenCV is imported by ``draw`` alone); never torch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

Colour = tuple[int, int, int]  # BGR, as OpenCV draws


class TaskResult(ABC):
    """One input's decoded result. ``to_json()`` is its JSON form: the fields the daemon publishes and
    ``/v1/predict`` answers (beside the daemon's own, such as ``seq`` and ``inference_ms``)."""

    task: ClassVar[str]

    @abstractmethod
    def to_json(self) -> dict[str, Any]:
        """A new dict of JSON-ready values (rounded numbers, no numpy types)."""

    def to_dict(self) -> dict[str, Any]:
        """The same as ``to_json()`` (the name the runtime's ``Prediction`` has always had)."""
        return self.to_json()

    @abstractmethod
    def to_text(self) -> str:
        """One line for a person (``edgekit predict`` without ``--json``)."""


class Metrics(ABC):
    """A task's accuracy figures of a model on a labelled image set."""

    @abstractmethod
    def summary(self) -> dict[str, Any]:
        """The headline figures, as stored in a bundle's manifest (``accuracy.value``) and in reports."""

    @property
    @abstractmethod
    def score(self) -> float:
        """The headline figure (the task's ``metric``), in %: what an accuracy drop is measured in."""


@dataclass(frozen=True)
class Comparison:
    """A model's outputs against a reference model's (FP32) on the same images: what the accuracy budget
    measures. Figures are in %; those that need labels are NaN without them."""

    agreement: float  # how often the two give the same answer (the task's own sense of "the same")
    reference_score: float = math.nan  # the reference's headline figure against the labels
    score: float = math.nan  # the model's headline figure against the labels
    discordance: float = math.nan  # share (0-1) of images that exactly one of the two gets right


class Task(ABC):
    """One kind of model output. Subclasses are stateless: one instance serves every bundle of the task."""

    name: ClassVar[str]
    metric: ClassVar[str]  # the headline metric's name, as in a manifest's ``accuracy.metric``
    mismatch_name: ClassVar[str]  # what a self-test mismatch counts, as a plural noun ("top-1 mismatches")
    # INT8 keeps the ops after the last weighted layers in float (a detector's decoding and concatenation)
    keeps_output_tail_in_float: ClassVar[bool] = False
    # agreement is the share of images on which the two models give the same answer (a classifier's top-1);
    # the accuracy budget's posterior of "naive INT8 meets it" needs that
    agreement_is_per_image: ClassVar[bool] = True

    def bind(self, postprocess: Mapping[str, Any]) -> Task:
        """This task for one model, whose manifest ``postprocess`` record is given: the methods below that
        take no record (``agreement``, ``evaluate``, the self-test's) need it for a task whose outputs mean
        nothing without their config (a detector's). A task that needs none returns itself."""
        return self

    @abstractmethod
    def decode(
        self,
        outputs: np.ndarray,
        postprocess: Mapping[str, Any],
        labels: Sequence[str],
        *,
        top_k: int = 5,
        sizes: Sequence[tuple[int, int]] | None = None,
    ) -> list[TaskResult]:
        """Raw outputs of a batch (N, ...) -> one result per input. ``postprocess`` is the manifest's
        ``postprocess`` record; ``top_k`` bounds how many answers a result holds; ``sizes`` are the source
        images' (height, width), for results in their coordinates (a detector's boxes)."""

    @abstractmethod
    def postprocess_record(self, output_kind: str, output_shape: Sequence[int], *, spec: Any = None) -> dict[str, Any]:
        """The manifest's ``postprocess`` record that ``decode`` reads, for a model whose raw output has
        ``output_shape`` (batch first) and is of ``output_kind`` (a model spec's ``output_kind``); ``spec`` is
        the model spec, for a task whose record needs more of it."""

    def retune(self, outputs: np.ndarray, reference: np.ndarray, labels: Any) -> dict[str, Any] | None:
        """For a task with a decision threshold (a detector's score threshold): the threshold this model should
        ship with so that it behaves as the reference (FP32) does at the user's, as a record whose ``shipped``
        the pipeline writes into the postprocess record; None for a task without one."""
        return None

    @abstractmethod
    def evaluate(self, outputs: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> Metrics:
        """The task's metrics of raw outputs against the labels (``names``: the label names, in class order)."""

    @abstractmethod
    def agreement(self, outputs: np.ndarray, reference: np.ndarray) -> float:
        """How often ``outputs`` agree with ``reference`` (the FP32 model's outputs on the same inputs), in %."""

    @abstractmethod
    def compare(self, outputs: np.ndarray, reference: np.ndarray, labels: np.ndarray | None) -> Comparison:
        """The accuracy budget's figures of ``outputs`` against the reference's (and the labels, if any)."""

    @abstractmethod
    def selftest_mismatches(self, outputs: np.ndarray, expected: np.ndarray) -> int:
        """The self-test's task check: how many inputs' answers differ from the stored expected outputs'
        (the bundle is refused unless this is 0; the normalised output error is checked as well)."""

    @abstractmethod
    def selftest_margin(self, outputs: np.ndarray) -> np.ndarray:
        """Per input, how unambiguous its answer is (larger: safer); compile keeps the inputs with the largest,
        so that a faithful runtime on another machine passes ``selftest_mismatches``."""

    @abstractmethod
    def draw(self, image: np.ndarray, result: Mapping[str, Any]) -> int:
        """Draw ``result`` (its JSON form, maybe with other fields beside) on ``image`` in place, for the
        daemon's live view. Returns how many rows at the top its text took, so the caller's text goes below."""


def draw_text_rows(image: np.ndarray, rows: Sequence[tuple[str, Colour]], y: int = 0) -> int:
    """Draw lines of text, each on a black band, down from row ``y`` at the left; returns the row below them.

    The text size follows the image's width, so a daemon's stream stays readable at any frame size.
    """
    import cv2

    scale = max(0.5, image.shape[1] / 800)
    thick = max(1, round(scale * 2))
    for text, colour in rows:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        cv2.rectangle(image, (0, y), (tw + 12, y + th + base + 12), (0, 0, 0), -1)
        cv2.putText(image, text, (6, y + th + 6), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thick, cv2.LINE_AA)
        y += th + base + 12
    return y
