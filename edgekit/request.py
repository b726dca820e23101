"""``CompileRequest``: everything one compile is asked to do, typed, frozen and checked once.

``edgekit compile``, ``compile_model(...)`` and each combination of ``edgekit report`` build one of these
and hand it to ``edgekit.pipeline.compile_request``. Each default is defined here once (the module
constants below); the CLI's defaults and help texts read them. Checks that need no file and no target
(ranges, one budget at a time, a budget's syntax) run on construction; checks that need the target, the
model or the file system run when the request is compiled.

Derive a variant with ``dataclasses.replace(request, precision="int8", output=...)``: the checks run again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import UsageError
from edgekit.targets import Target

CALIB_SIZE = 300  # calibration images sampled deterministically from --calib
CALIBRATION_PERCENTILE = 99.999  # with the "percentile" method: the percentile of |activation| kept
BUDGET_CONFIDENCE = 0.95  # probability that the budget's check images confirm what its search found
INT8_DROP_WARNING = 1.0  # points of top-1: a larger simulated INT8 drop compiles with a warning

PREPROCESS_KEYS = ("resize", "resize_mode", "crop", "color_order", "scale", "mean", "std")


@dataclass(frozen=True, kw_only=True)
class CompileRequest:
    """One compile: ``model`` for ``target`` into a bundle at ``output``.

    ``model`` is an ONNX/TorchScript/.pt2 path or an nn.Module. ``precision`` and ``calibration_method``
    default to the target's. ``calib`` (a folder searched recursively; ``calib_size`` images sampled)
    calibrates INT8 and gives every precision its self-test inputs. ``val`` (one sub-folder a class)
    measures accuracy against FP32. ``max_accuracy_drop`` (top-1 points, or "B%" relative) or
    ``min_agreement`` (% top-1 agreement with FP32) sets an INT8 accuracy budget, confirmed at
    ``budget_confidence``. ``spec`` (a model-spec TOML or its dict) and ``name``, ``input_shape``, ``layout``,
    ``labels``, ``preprocess`` (keys of ``PREPROCESS_KEYS``) override what the model says. ``pack`` writes
    one file. ``trust_model_code`` allows a model file whose loader runs code stored in it.
    ``compare_int8_with_fp32`` times FP32 beside a measured INT8 bundle and warns when INT8 is slower.
    """

    model: Any
    target: str | Path | Target
    output: Path
    precision: str | None = None
    calib: Path | None = None
    val: Path | None = None
    calib_size: int = CALIB_SIZE
    calibration_method: str | None = None
    calibration_percentile: float = CALIBRATION_PERCENTILE
    max_accuracy_drop: str | None = None
    min_agreement: str | None = None
    budget_confidence: float = BUDGET_CONFIDENCE
    spec: str | Path | Mapping[str, Any] | None = None
    name: str | None = None
    input_shape: tuple[int, ...] | None = None
    layout: str | None = None
    labels: Path | tuple[str, ...] | None = None
    preprocess: Mapping[str, Any] | None = None
    pack: bool = False
    int8_drop_warning: float = INT8_DROP_WARNING
    trust_model_code: bool = False
    # When the target is this machine, time the backend's runtime settings (threads, streams, the daemon's
    # batch) and record the best in the bundle (``runtime_settings``). EDGEKIT_TUNE=0 turns it off by default.
    tune_runtime: bool = True
    # After an INT8 compile measured here, also compile FP32 and time both (interleaved) to warn when INT8 is
    # slower. A report turns it off: it compiles and measures FP32 itself and shows both.
    compare_int8_with_fp32: bool = True

    def __post_init__(self) -> None:
        normal = {
            "output": _path(self.output, "output"),
            "calib": None if self.calib is None else _path(self.calib, "calib"),
            "val": None if self.val is None else _path(self.val, "val"),
            "calib_size": _calib_size(self.calib_size),
            "calibration_percentile": _percentile(self.calibration_percentile),
            "budget_confidence": _confidence(self.budget_confidence),
            "max_accuracy_drop": None if self.max_accuracy_drop is None else str(self.max_accuracy_drop).strip(),
            "min_agreement": None if self.min_agreement is None else str(self.min_agreement).strip(),
            "input_shape": _shape(self.input_shape),
            "labels": _labels(self.labels),
            "preprocess": _preprocess(self.preprocess),
            "int8_drop_warning": _number(self.int8_drop_warning, "int8_drop_warning", "a Python API keyword"),
        }
        for key, value in normal.items():
            object.__setattr__(self, key, value)
        self.budget()  # a budget's syntax and range are checked here; what it needs (--val, int8) at compile time

    def budget(self):
        """The accuracy budget asked for (``edgekit.quantize.budget.Budget``), or None."""
        if self.max_accuracy_drop is None and self.min_agreement is None:
            return None
        if self.max_accuracy_drop is not None and self.min_agreement is not None:
            raise UsageError(
                "give one budget: --max-accuracy-drop or --min-agreement (max_accuracy_drop or min_agreement), not both"
            )
        from edgekit.quantize.budget import Budget

        if self.max_accuracy_drop is not None:
            return Budget.max_accuracy_drop(self.max_accuracy_drop, self.budget_confidence)
        return Budget.min_agreement(self.min_agreement, self.budget_confidence)

    def replace(self, **changes: Any) -> CompileRequest:
        """A copy with ``changes`` (``dataclasses.replace``); checked again."""
        return dataclasses.replace(self, **changes)


def defaults() -> dict[str, Any]:
    """Every field's default (the fields without one are left out)."""
    return {f.name: f.default for f in dataclasses.fields(CompileRequest) if f.default is not dataclasses.MISSING}


def _number(value: Any, field: str, flag: str) -> float:
    if isinstance(value, bool):
        raise UsageError(f"{field} ({flag}) must be a number, not {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{field} ({flag}) must be a number, not {value!r}") from None


def _path(value: Any, field: str) -> Path:
    if not isinstance(value, (str, Path)):
        raise UsageError(f"{field} must be a path (str or Path), not {type(value).__name__}")
    return Path(value)


def _calib_size(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"calib_size (--calib-size) must be a whole number of images, not {value!r}")
    if value < 1:
        raise UsageError(f"calib_size (--calib-size) must be at least 1, not {value}")
    return value


def _percentile(value: Any) -> float:
    value = _number(value, "calibration_percentile", "--calib-percentile")
    if not 50.0 < value <= 100.0:
        raise UsageError(f"calibration_percentile (--calib-percentile) must be above 50 and at most 100, not {value:g}")
    return value


def _confidence(value: Any) -> float:
    value = _number(value, "budget_confidence", "--budget-confidence")
    if not 0.5 <= value < 1.0:
        raise UsageError(
            f"--budget-confidence {value:g} is out of range (budget_confidence); give a probability from 0.5 to 0.999"
        )
    return value


def _shape(value: Sequence[int] | None) -> tuple[int, ...] | None:
    if value is None or len(value) == 0:
        return None
    try:
        return tuple(int(d) for d in value)
    except (TypeError, ValueError):
        raise UsageError(f"input_shape (--input-shape) must be integers, e.g. 1,3,224,224, not {value!r}") from None


def _labels(value: Any) -> Path | tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return Path(value)
    return tuple(str(v) for v in value) or None


def _preprocess(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if not value:
        return None
    unknown = sorted(set(value) - set(PREPROCESS_KEYS))
    if unknown:
        raise UsageError(f"preprocess has unknown keys {unknown}; use any of: {', '.join(PREPROCESS_KEYS)}")
    kept = {k: v for k, v in value.items() if v is not None}
    return kept or None


__all__ = ["BUDGET_CONFIDENCE", "CALIBRATION_PERCENTILE", "CALIB_SIZE", "CompileRequest", "defaults"]
