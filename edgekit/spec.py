"""What a model expects: its input tensor, its preprocessing and its labels.

These small dataclasses are shared by build time (frontends, calibration) and run time (the runtime
applies exactly the preprocessing recorded in the bundle), so they import nothing heavy.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit import _toml as tomllib
from edgekit.errors import UsageError
from edgekit.tasks import unsupported

RESIZE_MODES = ("bilinear", "nearest", "bicubic", "area")
FITS = ("resize", "letterbox")
COLOR_ORDERS = ("RGB", "BGR")
LAYOUTS = ("NCHW", "NHWC")


@dataclass(frozen=True, kw_only=True)
class InputSpec:
    """The model's image input. A batch dimension of -1 means dynamic."""

    name: str = "input"
    shape: tuple[int, ...] = (-1, 3, 224, 224)
    layout: str = "NCHW"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise UsageError(f"input layout '{self.layout}' is not one of {', '.join(LAYOUTS)}")
        if len(self.shape) != 4:
            raise UsageError(
                f"input shape {list(self.shape)} is not 4-D; edgekit compiles image models "
                "with an input of (batch, channels, height, width) or (batch, height, width, channels)"
            )
        if any(d <= 0 for d in self.shape[1:]):
            raise UsageError(
                f"input shape {list(self.shape)} has unknown spatial or channel sizes; "
                "give them with --input-shape, e.g. --input-shape 1,3,224,224"
            )

    @property
    def dynamic_batch(self) -> bool:
        return self.shape[0] <= 0

    @property
    def hw(self) -> tuple[int, int]:
        return (self.shape[2], self.shape[3]) if self.layout == "NCHW" else (self.shape[1], self.shape[2])

    @property
    def channels(self) -> int:
        return self.shape[1] if self.layout == "NCHW" else self.shape[3]

    def with_batch(self, batch: int) -> InputSpec:
        return dataclasses.replace(self, shape=(batch, *self.shape[1:]))


@dataclass(frozen=True, kw_only=True)
class PreprocessSpec:
    """How an image becomes the input tensor; applied identically at calibration and on the device.

    ``resize`` is (height, width) to resize to exactly, or one int: resize the shorter side to it,
    keeping the aspect ratio. ``crop`` is a centre crop (height, width) taken after the resize.
    ``fit`` "letterbox" (detectors) instead resizes keeping the aspect ratio so the image fits the input,
    and pads both sides with ``pad_value`` (``edgekit.tasks.detection.geometry.fit_image``); resize and
    crop are then unused. Pixel values become ``(pixel * scale - mean) / std`` per channel, in ``color_order``.
    """

    resize: tuple[int, int] | int | None = None
    resize_mode: str = "bilinear"
    crop: tuple[int, int] | None = None
    color_order: str = "RGB"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    fit: str = "resize"
    pad_value: int = 114

    def __post_init__(self) -> None:
        if self.fit not in FITS:
            raise UsageError(f"preprocess fit '{self.fit}' is not one of {', '.join(FITS)}")
        if isinstance(self.pad_value, bool) or not isinstance(self.pad_value, int) or not 0 <= self.pad_value <= 255:
            raise UsageError(f"preprocess pad_value {self.pad_value!r} is not a pixel value; give 0 to 255")
        if self.resize_mode not in RESIZE_MODES:
            raise UsageError(f"resize mode '{self.resize_mode}' is not one of {', '.join(RESIZE_MODES)}")
        if self.color_order not in COLOR_ORDERS:
            raise UsageError(f"colour order '{self.color_order}' is not one of {', '.join(COLOR_ORDERS)}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise UsageError("mean and std take three values, one per colour channel")
        if any(s == 0 for s in self.std):
            raise UsageError("std values must be non-zero")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """Everything about a model that is not in its weights."""

    name: str = "model"
    task: str = "classification"
    input: InputSpec = field(default_factory=InputSpec)
    preprocess: PreprocessSpec = field(default_factory=PreprocessSpec)
    labels: tuple[str, ...] = ()
    output_kind: str = "logits"  # "logits" (softmax applied after) or "probabilities"
    detection: dict[str, Any] | None = None  # a detector's checked [detection] section (DetectionConfig.to_dict)

    def __post_init__(self) -> None:
        why = unsupported(self.task)
        if why is not None:
            raise UsageError(f"{why}; fix the model spec's 'task'")
        if (self.task == "detection") != (self.detection is not None):
            raise UsageError(
                "a detection model spec needs a [detection] section (and only a detector has one); "
                'see the README\'s "Object detection"'
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(
            name=data["name"],
            task=data["task"],
            input=_input_from(data["input"]),
            preprocess=_preprocess_from(data["preprocess"]),
            labels=tuple(data["labels"]),
            output_kind=data.get("output_kind", "logits"),
            detection=data.get("detection"),
        )


def _tuple_or(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _input_from(data: dict[str, Any]) -> InputSpec:
    return InputSpec(**{k: _tuple_or(v) for k, v in data.items()})


def _preprocess_from(data: dict[str, Any]) -> PreprocessSpec:
    return PreprocessSpec(**{k: _tuple_or(v) for k, v in data.items()})


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Read a model-spec TOML into a dict of overrides; unknown keys are errors naming file and key."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(
            f"model spec '{path}' does not exist; pass a TOML file (see the README's \"Inputs and the model spec\")"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML ({exc})") from exc
    allowed = {
        "": {"name", "task", "labels", "output_kind", "input", "preprocess", "detection"},
        "input.": {f.name for f in dataclasses.fields(InputSpec)},
        "preprocess.": {f.name for f in dataclasses.fields(PreprocessSpec)},
    }
    for prefix, section in (("", data), ("input.", data.get("input", {})), ("preprocess.", data.get("preprocess", {}))):
        unknown = sorted(set(section) - allowed[prefix])
        if unknown:
            raise UsageError(
                f"{path}: unknown key '{prefix}{unknown[0]}'; allowed: {', '.join(sorted(allowed[prefix]))}"
            )
    why = unsupported(data["task"]) if "task" in data else None
    if why is not None:
        raise UsageError(f"{path}: {why}")
    return data


def spec_beside(model: Any) -> Path | None:
    """The model-spec TOML beside a model file, used when no spec is given: ``<folder>/<model stem>.toml``,
    else ``<folder>/model.toml``; None when there is neither, or ``model`` is not a file path."""
    if not isinstance(model, (str, Path)) or not Path(model).is_file():
        return None
    path = Path(model)
    for candidate in (path.with_suffix(".toml"), path.with_name("model.toml")):
        if candidate != path and candidate.is_file():
            return candidate
    return None


def spec_beside_note(path: Path) -> str:
    """What compile and report say when they use the spec found by :func:`spec_beside`."""
    return f"using the model spec {path} (beside the model; pass --spec to choose another)"


def read_labels_file(path: str | Path) -> tuple[str, ...]:
    """One label a line; blank lines are ignored."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"labels file '{path}' does not exist; pass a text file with one label a line")
    labels = tuple(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())
    if not labels:
        raise UsageError(f"labels file '{path}' is empty; it needs one label a line")
    return labels


def build_spec(
    *,
    model_input: dict[str, Any] | None,
    overrides: dict[str, Any],
) -> ModelSpec:
    """Merge what the model says about its input with user overrides (spec file, then flags).

    A user-given shape must agree with the model's where the model fixes a dimension; where the model
    leaves a dimension open and the user fixes it, the user's value is kept.
    """
    inp = dict(model_input or {})
    user_inp = overrides.get("input", {})
    if model_input and user_inp.get("shape"):
        _check_shape(tuple(model_input["shape"]), tuple(user_inp["shape"]))
    inp.update({k: v for k, v in user_inp.items() if v is not None and k != "shape"})
    if user_inp.get("shape"):
        user_shape = tuple(user_inp["shape"])
        model_shape = tuple(inp.get("shape") or (-1,) * len(user_shape))
        # Fixed model dims win; open ones take the user's value, but a dynamic batch stays dynamic.
        inp["shape"] = tuple(
            m if m > 0 or (i == 0 and model_input) else u
            for i, (m, u) in enumerate(zip(model_shape, user_shape, strict=False))
        )
    if not inp.get("shape"):
        raise UsageError("the model does not record its input shape; give it with --input-shape 1,3,H,W")
    _check_size_given(tuple(inp["shape"]), inp.get("layout", "NCHW"), inp.get("name", "input"))
    input_spec = _input_from(inp)
    pre = {k: v for k, v in overrides.get("preprocess", {}).items() if v is not None}
    pre.setdefault("resize", input_spec.hw)
    task = overrides.get("task") or "classification"
    labels = tuple(overrides.get("labels") or ())
    detection = _detection(overrides.get("detection"), task, labels, pre)
    return ModelSpec(
        name=overrides.get("name") or "model",
        task=task,
        input=input_spec,
        preprocess=_preprocess_from(pre),
        labels=labels,
        output_kind=overrides.get("output_kind") or "logits",
        detection=detection,
    )


def _detection(section: Any, task: str, labels: tuple[str, ...], pre: dict[str, Any]) -> dict[str, Any] | None:
    """A detector's [detection] section, checked (``DetectionConfig``), with the class count from the labels
    when it gives none; its ``fit`` and ``pad_value`` become the preprocessing's (in ``pre``)."""
    if task != "detection":
        if section is not None:
            raise UsageError("the model spec has a [detection] section but its task is not 'detection'; "
                             "set task = \"detection\" or remove the section")  # fmt: skip
        return None
    if not isinstance(section, dict):
        raise UsageError("a detection model spec needs a [detection] section with at least its format, e.g. "
                         "format = \"yolov8\"; see the README's \"Object detection\"")  # fmt: skip
    from edgekit.tasks.detection.config import DetectionConfig

    section = dict(section)
    if labels and "num_classes" not in section:
        section["num_classes"] = len(labels)
    config = DetectionConfig.from_dict(section)
    if config.num_classes is not None and labels and config.num_classes != len(labels):
        raise UsageError(f"[detection] num_classes is {config.num_classes} but {len(labels)} labels were given; "
                         "give one label a class")  # fmt: skip
    if config.fit == "letterbox":
        pre["fit"], pre["pad_value"] = "letterbox", config.pad_value
    return config.to_dict()


def _check_size_given(shape: tuple[int, ...], layout: str, name: str) -> None:
    """A model input with a dynamic height and width (as exporters write for fully convolutional models) needs
    the size to compile, calibrate and measure it at: one line saying how to give it."""
    if len(shape) != 4 or layout not in LAYOUTS:
        return
    h, w = (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])
    if h > 0 and w > 0:
        return
    batch, channels = shape[0] if shape[0] > 0 else -1, shape[1] if layout == "NCHW" else shape[3]
    channels = channels if channels > 0 else 3
    example = f"{batch},{channels},224,224" if layout == "NCHW" else f"{batch},224,224,{channels}"
    raise UsageError(
        f"the model's input '{name}' has a dynamic height and width ({list(shape)}); give the size to compile "
        f"for with --input-shape, e.g. --input-shape {example} (or [input] shape in the model spec); the bundle "
        "then takes images preprocessed to that size"
    )


def _check_shape(model_shape: tuple[int, ...], user_shape: tuple[int, ...]) -> None:
    ok = len(model_shape) == len(user_shape) and all(
        m <= 0 or u <= 0 or m == u for m, u in zip(model_shape, user_shape, strict=False)
    )
    if not ok:
        raise UsageError(
            f"input shape {list(user_shape)} does not match the model's input {list(model_shape)} "
            "(-1 is a dynamic dimension); fix --input-shape or the spec file"
        )
