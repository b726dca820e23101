"""The bundle manifest as typed, frozen dataclasses: the one definition of the manifest.json format.

Every field is declared once, with its Python type and its check (``edgekit.bundle.checks``). From these
declarations come the validation (``manifest.SCHEMA`` is ``Manifest.CHECK``), the typed values
(``Manifest.from_dict``), the JSON written back (``to_dict``, which round-trips exactly: same keys, same order,
unknown keys kept in ``extra``) and the published JSON Schema (``edgekit.bundle.schema``).

Parts that a backend or the quantizer owns (``target.backend_options``, ``backend.build_plan``,
``quantization.budget``, ``accuracy.per_class``) stay ``dict[str, Any]``, checked as before.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, TypeVar

from edgekit.bundle.checks import (
    MANIFEST,
    Check,
    anything,
    boolean,
    bundle_file,
    dict_of,
    either,
    files_of,
    integer,
    list_of,
    number,
    obj,
    one_of,
    optional,
    shape,
    std,
    string,
)
from edgekit.bundle.checks import sha256 as sha256_hex
from edgekit.errors import BundleError

SCHEMA_VERSION = 1  # bump on an incompatible change; a reader refuses a newer version
DTYPES = ("float32", "float16", "uint8", "int8")
PRECISIONS = ("fp32", "fp16", "int8")
MAX_SELFTEST_TOLERANCE = 0.5  # pipeline.SELFTEST_TOLERANCE is at most 0.15 (int8); beyond 0.5 checks nothing

__all__ = [
    "DTYPES", "MANIFEST", "SCHEMA_VERSION", "Accuracy", "BackendInfo", "Calibration", "CalibrationCache",
    "Dataset", "FileEntry", "InputInfo", "Latency", "Manifest", "ModelInfo", "ModelSource", "OutputInfo",
    "Postprocess", "Precision", "Preprocess", "Quantization", "RuntimeSettings", "Selftest", "TargetInfo", "TopK",
    "Tuning",
]  # fmt: skip

R = TypeVar("R", bound="Record")


def spec(check: Check, *, optional_key: bool = False) -> Any:
    """A manifest field checked by ``check``; an ``optional_key`` may be absent from the JSON (then None)."""
    meta = {"check": check, "optional_key": optional_key}
    if optional_key:
        return dataclasses.field(default=None, metadata=meta)
    return dataclasses.field(metadata=meta)


def _dump(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


class Record:
    """A JSON object of the manifest. ``extra`` holds keys the format does not define (kept, not checked)."""

    CHECK: ClassVar[Check]  # the object's check, derived from the fields
    closed: ClassVar[bool] = False
    extra: dict[str, Any]
    _keys: tuple[str, ...]

    @classmethod
    def declared(cls) -> list[dataclasses.Field]:
        return [f for f in dataclasses.fields(cls) if "check" in f.metadata]

    @classmethod
    def _build(cls: type[R], data: dict[str, Any]) -> R:
        """The record of a JSON object that passed ``cls.CHECK``."""
        declared = cls.declared()
        names = {f.name for f in declared}
        values = {f.name: f.metadata["check"].build(data[f.name]) for f in declared if f.name in data}
        extra = {k: _dump(v) for k, v in data.items() if k not in names}
        return cls(**values, extra=extra, _keys=tuple(data))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object: the keys read (in their order), then any declared field set since, then extra."""
        declared = {f.name: f for f in self.declared()}
        keys = list(self._keys)
        for name, f in declared.items():
            if name not in keys and (not f.metadata["optional_key"] or getattr(self, name) is not None):
                keys.append(name)
        keys += [k for k in self.extra if k not in keys]
        out: dict[str, Any] = {}
        for key in keys:
            if key in declared:
                out[key] = _dump(getattr(self, key))
            elif key in self.extra:
                out[key] = _dump(self.extra[key])
        return out


def record(cls: type[R]) -> type[R]:
    """Make ``cls`` a frozen, keyword-only dataclass whose ``CHECK`` is derived from its fields."""
    ns = dict(cls.__dict__)
    annotations = dict(ns.get("__annotations__", {}))
    annotations["extra"] = "dict[str, Any]"
    annotations["_keys"] = "tuple[str, ...]"
    cls.__annotations__ = annotations
    cls.extra = dataclasses.field(default_factory=dict)  # type: ignore[assignment]
    cls._keys = dataclasses.field(default=(), repr=False, compare=False)  # type: ignore[assignment]
    cls = dataclasses.dataclass(frozen=True, kw_only=True)(cls)
    declared = cls.declared()
    doc = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
    cls.CHECK = obj(
        {f.name: f.metadata["check"] for f in declared},
        optional_keys=tuple(f.name for f in declared if f.metadata["optional_key"]),
        closed=cls.closed,
        build=cls._build,
        doc=doc,
    )
    cls.CHECK.schema = {"title": cls.__name__, **cls.CHECK.schema}
    return cls


_PAIR = list_of(integer(1), length=2)
_FIGURE = obj({"agreement_with_fp32": number(), "top1": optional(number()), "drop_points": optional(number())},
              optional_keys=("drop_points",))  # fmt: skip
_BUDGET = obj(
    {
        "budget": obj({"text": string}), "met": boolean, "search_margin_points": optional(number()),
        "confidence": number(0, 1), "search_images": integer(0), "naive_int8_on_search": _FIGURE,
        "layers_kept_in_higher_precision": list_of(string), "quantized_layers": integer(0),
        "higher_precision": string, "on_search": _FIGURE, "on_check": _FIGURE, "check_images": integer(0),
        "trial_builds": integer(0), "search_seconds": number(0), "measured_with": string,
        "batch1_latency": optional(obj({
            "budgeted_ms": number(), "fp32_ms": number(), "budgeted_speedup_vs_fp32": number(),
            "naive_int8_speedup_vs_fp32": number(),
        })),
    },
    optional_keys=("search_margin_points", "confidence", "batch1_latency"),
    doc="The accuracy-budget search (edgekit.budgeting): the budget, whether it was met, its figures.",
)  # fmt: skip
_BUILD_PLAN = obj(
    {
        "precision": one_of(*PRECISIONS), "onnx": bundle_file, "quantization": string,
        "flags": list_of(one_of("fp16", "int8")), "tf32": boolean, "calibration_cache": optional(bundle_file),
        "workspace_mib": integer(1), "dla_core": optional(integer(0)), "gpu_fallback": boolean,
        "input_name": string, "input_shape": list_of(integer(-1), length=4), "min_shape": list_of(integer(1), length=4),
        "opt_shape": list_of(integer(1), length=4), "max_shape": list_of(integer(1), length=4),
        "timing_cache": boolean, "builder_optimization_level": integer(0, 5), "tensorrt": string,
        "trtexec": string, "trtexec_implicit": string,
    },
    optional_keys=("trtexec_implicit",),
    doc="How the device builds its TensorRT engine from the bundle's ONNX (written by the TensorRT backend).",
)  # fmt: skip


@record
class ModelSource(Record):
    """The model the bundle was compiled from."""

    format: str = spec(string)
    file: str = spec(string)
    sha256: str | None = spec(string, optional_key=True)


@record
class ModelInfo(Record):
    """The model: its name, task and source."""

    name: str = spec(string)
    task: str = spec(string)
    source: ModelSource = spec(ModelSource.CHECK)


@record
class InputInfo(Record):
    """The model's input tensor."""

    name: str = spec(string)
    shape: tuple[int, int, int, int] = spec(shape)
    layout: str = spec(one_of("NCHW", "NHWC"))
    dtype: str = spec(one_of(*DTYPES))
    dynamic_batch: bool | None = spec(boolean, optional_key=True)


@record
class OutputInfo(Record):
    """The model's output tensor."""

    name: str = spec(string)
    shape: tuple[int, ...] | None = spec(list_of(integer(-1)), optional_key=True)


@record
class Preprocess(Record):
    """How an image becomes the input tensor; no key other than these."""

    closed: ClassVar[bool] = True
    resize: int | tuple[int, int] | None = spec(
        optional(either(integer(1), _PAIR, want="null, a positive integer or [height, width]")), optional_key=True
    )
    resize_mode: str | None = spec(one_of("bilinear", "nearest", "bicubic", "area"), optional_key=True)
    crop: tuple[int, int] | None = spec(optional(_PAIR), optional_key=True)
    color_order: str | None = spec(one_of("RGB", "BGR"), optional_key=True)
    scale: float | None = spec(number(0, lo_open=True), optional_key=True)
    mean: tuple[float, float, float] | None = spec(list_of(number(), length=3), optional_key=True)
    std: tuple[float, float, float] | None = spec(std, optional_key=True)
    fit: str | None = spec(one_of("resize", "letterbox"), optional_key=True)
    pad_value: int | None = spec(integer(0, 255), optional_key=True)


@record
class Postprocess(Record):
    """How the output becomes class scores."""

    output: str | None = spec(one_of("logits", "probabilities"), optional_key=True)
    activation: str = spec(string)
    top_k: int = spec(integer(1))


@record
class TargetInfo(Record):
    """The target compiled for, with its backend options and the target file's text for the record."""

    name: str = spec(string)
    device: str = spec(string)
    backend: str | None = spec(string, optional_key=True)
    backend_options: dict[str, Any] | None = spec(dict_of(anything), optional_key=True)
    arch: str | None = spec(optional(string), optional_key=True)
    static_shapes: bool | None = spec(boolean, optional_key=True)
    file: str | None = spec(string, optional_key=True)
    toml: str | None = spec(string, optional_key=True)


@record
class BackendInfo(Record):
    """The backend that runs the bundle and the model file it loads."""

    name: str = spec(string)
    version: str = spec(string)
    model_file: str = spec(bundle_file)
    precision_hint: str | None = spec(optional(string), optional_key=True)
    build_plan: dict[str, Any] | None = spec(_BUILD_PLAN, optional_key=True)


@record
class Precision(Record):
    """The precision asked for and what really runs."""

    requested: str = spec(one_of(*PRECISIONS))
    inference: str = spec(string)


@record
class Calibration(Record):
    """The INT8 calibration images."""

    images: int | None = spec(integer(0), optional_key=True)
    skipped_unreadable: int | None = spec(integer(0), optional_key=True)
    sha256: str | None = spec(optional(string), optional_key=True)


@record
class CalibrationCache(Record):
    """A TensorRT calibration cache written beside the model."""

    file: str = spec(bundle_file)


@record
class Quantization(Record):
    """How the model was quantized to INT8."""

    recipe: str = spec(string)
    tool: str = spec(string)
    activations: str = spec(string)
    weights: str = spec(string)
    calibration_method: str | None = spec(optional(string))
    layers_kept_in_higher_precision: tuple[str, ...] = spec(list_of(string))
    calibration: Calibration | None = spec(Calibration.CHECK, optional_key=True)
    budget: dict[str, Any] | None = spec(optional(_BUDGET), optional_key=True)
    calibration_cache: CalibrationCache | None = spec(CalibrationCache.CHECK, optional_key=True)
    format: str | None = spec(string, optional_key=True)


@record
class TopK(Record):
    """Top-1 (and top-5) accuracy, in percent."""

    top1: float = spec(number())
    top5: float | None = spec(number(), optional_key=True)


@record
class DetectionScores(Record):
    """A detector's COCO mAP@[.5:.95] and mAP@.5, and precision, recall and F1 at its score threshold, in %."""

    map50_95: float | None = spec(optional(number()))
    map50: float | None = spec(optional(number()))
    precision: float | None = spec(optional(number()), optional_key=True)
    recall: float | None = spec(optional(number()), optional_key=True)
    f1: float | None = spec(optional(number()), optional_key=True)
    score_threshold: float | None = spec(number(0, 1), optional_key=True)


_SCORES = either(TopK.CHECK, DetectionScores.CHECK, want="top-1 figures or a detector's mAP figures")


@record
class Dataset(Record):
    """The validation images."""

    images: int = spec(integer(0))
    skipped: int | None = spec(integer(0), optional_key=True)
    sha256: str | None = spec(optional(string), optional_key=True)
    labelled: bool | None = spec(boolean, optional_key=True)


@record
class Accuracy(Record):
    """Accuracy measured at compile time on the validation images."""

    value: TopK | DetectionScores | None = spec(optional(_SCORES))
    fp32: TopK | DetectionScores | None = spec(optional(_SCORES), optional_key=True)
    drop_points: float | None = spec(optional(number()), optional_key=True)
    agreement_with_fp32: float = spec(number())
    dataset: Dataset = spec(Dataset.CHECK)
    measured_with: str = spec(string)
    metric: str | None = spec(string, optional_key=True)
    per_class: Any = spec(anything, optional_key=True)
    simulated: bool | None = spec(boolean, optional_key=True)
    fp32_reference: str | None = spec(string, optional_key=True)


@record
class Latency(Record):
    """Latency measured at compile time (``measured`` false, with a ``note``, when the device is not here)."""

    measured: bool | None = spec(boolean, optional_key=True)
    note: str | None = spec(string, optional_key=True)
    p50_ms: float | None = spec(number(0), optional_key=True)
    p90_ms: float | None = spec(number(0), optional_key=True)
    what: str | None = spec(string, optional_key=True)
    machine: str | None = spec(string, optional_key=True)
    batch: int | None = spec(integer(1), optional_key=True)
    p99_ms: float | None = spec(number(0), optional_key=True)
    mean_ms: float | None = spec(number(0), optional_key=True)
    runs: int | None = spec(integer(0), optional_key=True)


@record
class Selftest(Record):
    """The stored self-test the bundle runs at load."""

    file: str = spec(bundle_file)
    inputs: int = spec(integer(1, 10_000))
    source: str = spec(string)
    tolerance: float = spec(number(0, MAX_SELFTEST_TOLERANCE, lo_open=True))
    check: str = spec(string)


@record
class FileEntry(Record):
    """A bundle file's size and sha256."""

    size: int = spec(integer(0))
    sha256: str = spec(sha256_hex)


# Runtime settings (``runtime_settings``, issue 14): the knobs a backend's runtime takes, by edgekit's names
# (each backend maps them to its own: ONNX Runtime intra_op_num_threads, OpenVINO INFERENCE_NUM_THREADS, ...),
# with their ranges; edgekit.runtime.settings checks a user's overrides with the same checks.
MAX_THREADS = 1024
MAX_STREAMS = 64
MAX_BATCH = 1024
PERFORMANCE_HINTS = ("LATENCY", "THROUGHPUT")
SETTING_CHECKS: dict[str, Check] = {
    "threads": integer(1, MAX_THREADS),
    "inter_op_threads": integer(1, MAX_THREADS),
    "streams": integer(1, MAX_STREAMS),
    "performance_hint": one_of(*PERFORMANCE_HINTS),
}
TUNED_BY = ("edgekit compile", "edgekit bench --tune")
_KNOBS = obj(SETTING_CHECKS, optional_keys=tuple(SETTING_CHECKS), doc="Runtime knobs; absent keys: the default.")
_SETTINGS_CANDIDATE = obj(
    {
        "settings": _KNOBS, "p50_ms": optional(number(0)), "rounds_ms": list_of(number(0), max_len=1000),
        "runs": integer(0), "rounds_won": integer(0, 1000), "error": string, "same_as_default": boolean,
    },
    optional_keys=("rounds_won", "error", "same_as_default"),
    doc="One candidate of the settings search: its knobs ({} is the default), batch-1 p50 (median of the "
    "rounds' medians), each round's median, the timed runs, in how many rounds it beat the default; p50_ms "
    "null with an error when it did not load, or with same_as_default when the backend runs it as the default.",
)  # fmt: skip
_BATCH_CANDIDATE = obj(
    {
        "batch": integer(1, MAX_BATCH), "ms_per_frame": number(0), "frames_per_s": number(0),
        "rounds_ms": list_of(number(0), max_len=1000), "runs": integer(0), "rounds_won": integer(0, 1000),
    },
    optional_keys=("rounds_won",),
    doc="One batch size of the batch search: per-frame time (median of the rounds' batch p50 / batch), and in "
    "how many rounds it beat batch 1 per frame.",
)  # fmt: skip


@record
class Tuning(Record):
    """How the runtime settings were chosen: where, by what, every candidate's figures and the rule."""

    by: str = spec(one_of(*TUNED_BY))
    measured_on: str = spec(string)
    device: str = spec(string)
    backend: str = spec(string)
    edgekit: str = spec(string)
    created: str = spec(string)
    metric: str = spec(string)
    rule: str = spec(string)
    noise_margin: float = spec(number(0, 1))
    rounds: int = spec(integer(1, 1000))
    min_rounds_won: int | None = spec(integer(0, 1000), optional_key=True)
    seconds: float = spec(number(0))
    candidates: tuple[dict[str, Any], ...] = spec(list_of(_SETTINGS_CANDIDATE, max_len=64))
    chosen: str = spec(string)
    batch_candidates: tuple[dict[str, Any], ...] | None = spec(list_of(_BATCH_CANDIDATE, max_len=64), optional_key=True)
    batch_chosen: str | None = spec(string, optional_key=True)


@record
class RuntimeSettings(Record):
    """Runtime settings measured on the target itself (compile on the target, or ``edgekit bench --tune`` on
    the device): the knobs the runtime applies unless the user overrides them (absent: the backend's default),
    the batch size for the daemon (dynamic-batch bundles), and how they were chosen."""

    threads: int | None = spec(SETTING_CHECKS["threads"], optional_key=True)
    inter_op_threads: int | None = spec(SETTING_CHECKS["inter_op_threads"], optional_key=True)
    streams: int | None = spec(SETTING_CHECKS["streams"], optional_key=True)
    performance_hint: str | None = spec(SETTING_CHECKS["performance_hint"], optional_key=True)
    batch: int | None = spec(integer(1, MAX_BATCH), optional_key=True)
    how: Tuning = spec(Tuning.CHECK)

    def knobs(self) -> dict[str, Any]:
        """The knobs set (not the batch), by edgekit's names."""
        return {name: getattr(self, name) for name in SETTING_CHECKS if getattr(self, name) is not None}


@record
class Manifest(Record):
    """An edgekit bundle's manifest.json.

    ``Manifest.from_dict(data, source=...)`` checks the schema version and every field (one BundleError line
    naming the dotted field) and builds the typed manifest; ``to_dict()`` gives back the same JSON object.
    """

    schema_version: int = spec(integer(1, SCHEMA_VERSION))
    edgekit_version: str = spec(string)
    created: str = spec(string)
    model: ModelInfo = spec(ModelInfo.CHECK)
    input: InputInfo = spec(InputInfo.CHECK)
    output: OutputInfo = spec(OutputInfo.CHECK)
    preprocess: Preprocess = spec(Preprocess.CHECK)
    labels: tuple[str, ...] = spec(list_of(string))
    postprocess: Postprocess = spec(Postprocess.CHECK)
    target: TargetInfo = spec(TargetInfo.CHECK)
    backend: BackendInfo = spec(BackendInfo.CHECK)
    precision: Precision = spec(Precision.CHECK)
    quantization: Quantization | None = spec(optional(Quantization.CHECK))
    accuracy: Accuracy | None = spec(optional(Accuracy.CHECK))
    latency: Latency | None = spec(optional(Latency.CHECK))
    selftest: Selftest = spec(Selftest.CHECK)
    notes: tuple[str, ...] | None = spec(list_of(string), optional_key=True)
    files: dict[str, FileEntry] = spec(files_of(FileEntry.CHECK))
    # An accuracy budget whose answer was not INT8 (fp16 or fp32 held it, or ran faster): its record, here
    # because the bundle has no quantization record; an INT8 bundle keeps it in quantization.budget.
    budget: dict[str, Any] | None = spec(optional(_BUDGET), optional_key=True)
    # Settings tuned on the target (edgekit.measure.tune); absent when compiled off-target (the runtime then
    # uses the backend's defaults and the target's backend_options).
    runtime_settings: RuntimeSettings | None = spec(RuntimeSettings.CHECK, optional_key=True)

    @property
    def budget_record(self) -> dict[str, Any] | None:
        """The accuracy-budget record, wherever the bundle keeps it (``quantization.budget`` or ``budget``)."""
        if self.quantization is not None and self.quantization.budget is not None:
            return self.quantization.budget
        return self.budget

    @classmethod
    def from_dict(cls, data: Any, *, source: str = MANIFEST) -> Manifest:
        """Validate ``data`` (a parsed manifest.json) and build it; BundleError naming ``source`` otherwise."""
        from edgekit.bundle.manifest import TAMPERED, validate

        checked = validate(data, source=source)
        try:
            return cls._build(checked)
        except RecursionError as exc:  # free-form parts (extra keys, per_class) nested deeper than Python copies
            raise BundleError(f"{source}: manifest.json is nested too deeply; {TAMPERED}") from exc

    @classmethod
    def required_keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in cls.declared() if not f.metadata["optional_key"])
