"""``compile_model``: from a trained model to a verified bundle for one target and precision."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import budgeting, registry
from edgekit import spec as specs
from edgekit._version import __version__
from edgekit.backends.base import CompileInput, CompileResult
from edgekit.bundle import SCHEMA_VERSION, BundleWriter
from edgekit.errors import EdgekitError, ModelError, UsageError
from edgekit.frontends import LoadedModel, load_model
from edgekit.imagesets import ImageSet, class_folders, load_calibration, load_labelled, load_unlabelled
from edgekit.measure import evaluate as ev
from edgekit.measure import tune
from edgekit.measure.latency import measure
from edgekit.quantize import onnxruntime_qdq
from edgekit.quantize.budget import Budget
from edgekit.request import INT8_DROP_WARNING, CompileRequest
from edgekit.runtime import selftest
from edgekit.targets import Target, get_target
from edgekit.tasks import get_task

SELFTEST_INPUTS = 4
SELFTEST_TOLERANCE = {"fp32": 0.01, "fp16": 0.05, "int8": 0.15}
Log = Callable[[str], None]


@dataclass
class CompiledBundle:
    """What ``compile_model`` wrote, and what it found out on the way."""

    path: Path
    manifest: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


def _overrides(
    spec: str | Path | dict | None,
    *,
    name: str | None,
    input_shape: Sequence[int] | None,
    layout: str | None,
    labels: str | Path | Sequence[str] | None,
    preprocess: dict[str, Any] | None,
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if isinstance(spec, dict):
        data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in spec.items()}
    elif spec is not None:
        data = specs.load_spec_file(spec)
    data.setdefault("input", {})
    data.setdefault("preprocess", {})
    if name:
        data["name"] = name
    if input_shape:
        data["input"]["shape"] = tuple(int(d) for d in input_shape)
    if layout:
        data["input"]["layout"] = layout
    if preprocess:
        data["preprocess"].update({k: v for k, v in preprocess.items() if v is not None})
    if isinstance(labels, (str, Path)):
        data["labels"] = specs.read_labels_file(labels)
    elif labels:
        data["labels"] = tuple(labels)
    return data


def _reference_session(loaded: LoadedModel):
    """ONNX Runtime FP32 on the source model: the reference every bundle is compared with."""
    from edgekit.backends.onnxruntime.runtime import make_session

    try:
        return make_session(loaded.onnx.SerializeToString())
    except EdgekitError:
        raise
    except Exception as exc:  # ONNX Runtime refuses the graph (an opset it lacks, an op with no kernel)
        text = str(exc).strip()
        first = (text.splitlines()[0] if text else type(exc).__name__)[:300]
        opset = onnxruntime_qdq.model_opset(loaded.onnx)
        raise ModelError(
            f"ONNX Runtime cannot load the model (opset {opset}; {first}); re-export it with standard operators "
            "at an opset ONNX Runtime supports (13 to 17 are safe choices)"
        ) from exc


def reference_session(
    loaded: LoadedModel, spec: specs.ModelSpec, merged: dict[str, Any] | None = None
) -> tuple[Any, int]:
    """ONNX Runtime FP32 on the source model, checked on the spec's input; and the number of classes.
    ``merged``: the record of an SSD's outputs joined into one (``merge_detector_outputs``)."""
    session = _reference_session(loaded)
    return session, _check_runs(session, spec, merged)


def _check_runs(session, spec: specs.ModelSpec, merged: dict[str, Any] | None = None) -> int:
    """Run a zero input through the FP32 model; return the number of classes it outputs."""
    outputs = _run_zero(session, spec)
    out = outputs[0]
    if spec.task == "detection":
        if merged is not None:
            k = int(merged["box_values"])
            outputs = [out[..., :k], out[..., k:]]
        return _check_detector(outputs, spec, merged is not None)
    if out.ndim != 2:
        raise UsageError(
            f"the model's output has shape {list(out.shape)}; edgekit compiles classifiers "
            "with an output of (batch, classes)"
        )
    return int(out.shape[1])


def _run_zero(session, spec: specs.ModelSpec) -> list[np.ndarray]:
    x = np.zeros(spec.input.with_batch(1).shape, np.float32)
    try:
        return session.run(None, {spec.input.name: x})
    except Exception as exc:
        raise UsageError(
            f"the model does not run on an input of shape {list(x.shape)} ({str(exc).splitlines()[0][:200]}); "
            "fix --input-shape or the preprocessing size"
        ) from exc


def _check_detector(outputs: list[np.ndarray], spec: specs.ModelSpec, merged: bool = False) -> int:
    """A detector's outputs against its [detection] section (one ModelError line naming both shapes); the
    number of classes. A two-output SSD reaches here joined into one (``merge_detector_outputs``)."""
    from edgekit.tasks.detection.config import DetectionConfig

    config = DetectionConfig.from_dict(spec.detection)
    layout = config.check_outputs([o.shape for o in outputs], spec.input.hw)
    if len(outputs) != 1 and not merged:
        raise ModelError(
            f"the detector has {len(outputs)} outputs ({', '.join(str(list(o.shape)) for o in outputs)}) but "
            f"[detection] format '{config.format}' takes one; fix the format, or export the model with one output"
        )
    return int(layout.num_classes or 0)


def merge_detector_outputs(loaded: LoadedModel, spec: specs.ModelSpec) -> tuple[LoadedModel, dict[str, Any] | None]:
    """An SSD-style detector's two outputs (box deltas [B, N, K], class scores [B, N, C]) joined into one
    [B, N, K + C] by a Concat appended to the graph, so every runtime returns one array; the record the
    decoder splits them by (``postprocess.merged_outputs``). Other models are returned as they are."""
    if spec.task != "detection" or len(loaded.onnx.graph.output) < 2:
        return loaded, None
    import dataclasses

    import onnx

    from edgekit.tasks.detection.config import DetectionConfig

    config = DetectionConfig.from_dict(spec.detection)
    session = _reference_session(loaded)
    outputs = _run_zero(session, spec)
    layout = config.check_outputs([o.shape for o in outputs], spec.input.hw)
    if config.format != "ssd" or layout.scores is None or len(outputs) != 2:
        return loaded, None
    boxes, scores = outputs[layout.boxes], outputs[layout.scores]
    if boxes.ndim != 3 or scores.ndim != 3 or boxes.shape[1] != scores.shape[1]:
        raise ModelError(
            f"the SSD outputs {list(boxes.shape)} and {list(scores.shape)} are not [batch, candidates, values] "
            "with the same candidate count; export them so"
        )
    model = onnx.ModelProto()
    model.CopyFrom(loaded.onnx)
    graph = model.graph
    names = [graph.output[layout.boxes].name, graph.output[layout.scores].name]
    merged = "edgekit_ssd_boxes_scores"
    dim = graph.output[layout.boxes].type.tensor_type.shape.dim
    batch = (dim[0].dim_param or dim[0].dim_value or "batch") if len(dim) else "batch"
    shape = [batch, int(boxes.shape[1]), int(boxes.shape[2] + scores.shape[2])]
    graph.node.append(onnx.helper.make_node("Concat", names, [merged], axis=-1, name="edgekit_merge_ssd_outputs"))
    del graph.output[:]
    graph.output.append(onnx.helper.make_tensor_value_info(merged, onnx.TensorProto.FLOAT, shape))
    record = {"outputs": names, "box_values": int(boxes.shape[2]), "order": ["boxes", "scores"]}
    return dataclasses.replace(loaded, onnx=model), record


def output_shape(session, spec: specs.ModelSpec) -> list[int]:
    """The model's (first) output shape, batch first (-1 when the batch is dynamic)."""
    shape = list(_run_zero(session, spec)[0].shape)
    return [-1 if spec.input.dynamic_batch else spec.input.shape[0], *shape[1:]]


def _resolve_spec(loaded: LoadedModel, overrides: dict[str, Any], val: Path | None, target: Target) -> specs.ModelSpec:
    if not overrides.get("labels") and val is not None and val.is_dir():
        overrides["labels"] = tuple(class_folders(val))
    if loaded.softmax_output:
        overrides.setdefault("output_kind", "probabilities")
    spec = specs.build_spec(model_input=loaded.input, overrides=overrides)
    if target.static_shapes and spec.input.dynamic_batch:
        import dataclasses

        spec = dataclasses.replace(spec, input=spec.input.with_batch(1))
    return spec


def _eval_device(target: Target, log: Log) -> tuple[str | None, bool, str]:
    """Where to run the bundle here: (device override, runs on the target itself, description).

    Each backend answers through ``Backend.measure_here(target, host, log)``."""
    from edgekit.measure.machine import cpu_model, usable_cores

    host = f"{platform.machine()} host ({cpu_model()}, {usable_cores()} cores)"
    site = registry.backend(target.backend).measure_here(target, host, log)
    return site.device, site.on_target, site.description


def _eval_runtime(target: Target, on_target: bool) -> tuple[type, bool]:
    """The runtime that measures the bundle here, and whether it is a simulation: the backend's own, or,
    where the device is absent, the simulator it offers (TensorRT: ONNX Runtime on the CPU)."""
    backend = registry.backend(target.backend)
    simulator = None if on_target else backend.simulator()
    return (simulator or backend.runtime_class()), simulator is not None


def _drop_warning(accuracy: dict[str, Any], precision: str, threshold: float) -> list[str]:
    """A warning naming the drop when simulated INT8 top-1 falls more than ``threshold`` points below FP32."""
    drop = accuracy["drop_points"]
    if precision != "int8" or drop <= threshold:
        return []
    key = "top1" if "top1" in accuracy["value"] else accuracy["metric"]
    name = {"top1": "top-1", "map50_95": "mAP@[.5:.95]"}.get(key, key)
    return [
        f"simulated INT8 {name} is {drop:.2f} points below FP32 ({accuracy['fp32'][key]:.2f}% -> "
        f"{accuracy['value'][key]:.2f}%), more than {threshold:g}; try --calib-method entropy or "
        "percentile, or more calibration images"
    ]


def _base_manifest(
    loaded: LoadedModel,
    spec: specs.ModelSpec,
    target: Target,
    precision: str,
    result: CompileResult,
    num_classes: int,
    output: Sequence[int] | None = None,
) -> dict[str, Any]:
    labels = list(spec.labels) or [f"class_{i}" for i in range(num_classes)]
    shape = list(output) if output else [-1 if spec.input.dynamic_batch else spec.input.shape[0], num_classes]
    return {
        "schema_version": SCHEMA_VERSION,
        "edgekit_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {
            "name": spec.name,
            "task": spec.task,
            "source": {"format": loaded.source_format, "file": loaded.source_name, "sha256": loaded.source_sha256},
        },
        "input": {**_asdict(spec.input), "dynamic_batch": spec.input.dynamic_batch},
        "output": {"name": loaded.onnx.graph.output[0].name, "shape": shape},
        "preprocess": _preprocess_record(spec.preprocess),
        "labels": labels,
        "postprocess": get_task(spec.task).postprocess_record(spec.output_kind, shape, spec=spec),
        "target": {
            "name": target.name,
            "backend": target.backend,
            "device": target.device,
            "arch": target.arch,
            "static_shapes": target.static_shapes,
            "backend_options": target.backend_options,
            "file": target.source,
            "toml": target.text,
        },
        "backend": {
            "name": target.backend,
            "version": result.backend_version,
            "model_file": result.model_file,
            "precision_hint": result.precision_hint,
            **({"build_plan": result.build_plan} if result.build_plan else {}),
        },
        "precision": {"requested": precision, "inference": result.inference_precision},
        "quantization": result.quantization,
        "accuracy": None,
        "latency": None,
        "selftest": None,
        "notes": list(result.notes),
        "files": {},
    }


def _preprocess_record(pre: specs.PreprocessSpec) -> dict[str, Any]:
    """The manifest's preprocess record; ``fit`` and ``pad_value`` only for a letterbox (a classifier's
    record is as it always was)."""
    record = _asdict(pre)
    if pre.fit == "resize":
        del record["fit"], record["pad_value"]
    return record


def _asdict(obj: Any) -> dict[str, Any]:
    import dataclasses

    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(obj).items()}


def _accuracy(
    runtime,
    reference,
    spec: specs.ModelSpec,
    val: ImageSet,
    labels: list[str],
    measured_with: str,
    batch: int,
    task: Any = None,
    retune: bool = False,
) -> dict[str, Any]:
    """Accuracy on the validation images against FP32 (and the labels); with ``retune``, a task with a
    decision threshold (a detector) is re-tuned first (``Task.retune``) and measured at the threshold it will
    ship with, which the record's ``score_threshold`` holds."""
    # two streamed passes, one a model: alternating two ONNX Runtime sessions batch by batch makes their
    # spinning thread pools fight over the cores (measured: 31 s against 3 s for 10,000 CIFAR-10 images)
    ref_out = ev.run_batches(lambda x: reference.run(None, {spec.input.name: x})[0], val, batch)
    out = ev.run_batches(runtime.infer, val, batch)
    dataset = {"images": len(val.paths), "skipped": len(val.skipped), "sha256": val.sha256}
    task = task or get_task(spec.task)
    fp32_task = task
    threshold = task.retune(out, ref_out, val.labels) if retune else None
    if threshold is not None:
        task = task.bind({**task.record, "score_threshold": threshold["shipped"]})
    extra = {"score_threshold": threshold} if threshold is not None else {}
    if val.labels is None:  # unlabelled images: only agreement with FP32 can be measured
        return {
            "metric": "agreement_with_fp32", "dataset": {**dataset, "labelled": False}, "fp32": None, "value": None,
            "drop_points": None, "agreement_with_fp32": round(ev.output_agreement(out, ref_out, task), 3),
            "per_class": {}, "fp32_reference": "ONNX Runtime CPU, FP32, the source model",
            "measured_with": measured_with, **extra,
        }  # fmt: skip
    fp32 = ev.evaluate(ref_out, val.labels, labels, fp32_task)
    this = ev.evaluate(out, val.labels, labels, task)
    return {
        "metric": task.metric,
        "dataset": dataset,
        "fp32": fp32.summary(),
        "value": this.summary(),
        "drop_points": round(fp32.score - this.score, 3),
        "agreement_with_fp32": round(ev.output_agreement(out, ref_out, task), 3),
        "per_class": this.per_class,
        "fp32_reference": "ONNX Runtime CPU, FP32, the source model",
        "measured_with": measured_with,
        **extra,
    }


def _selftest(runtime, staging: Path, pool: np.ndarray | ImageSet, precision: str, source: str,
              task: Any = "classification") -> dict[str, Any]:  # fmt: skip
    """Keep the stored inputs whose answer is least ambiguous (a classifier's top-1), so a faithful runtime
    always agrees."""
    candidates = pool[:64] if isinstance(pool, np.ndarray) else pool.head(64)
    outputs = np.concatenate([runtime.infer(candidates[i : i + 1]) for i in range(len(candidates))])
    margin = (get_task(task) if isinstance(task, str) else task).selftest_margin(outputs)
    pick = np.sort(np.argsort(-margin, kind="stable")[:SELFTEST_INPUTS])
    selftest.save(staging / selftest.SELFTEST_FILE, candidates[pick], outputs[pick].astype(np.float32))
    return {
        "file": selftest.SELFTEST_FILE,
        "inputs": len(pick),
        "source": source,
        "tolerance": SELFTEST_TOLERANCE[precision],
        "check": "max |output - expected| / range(expected) per input, and equal top-1",
    }


def _latency(runtime, spec: specs.ModelSpec, on_target: bool, measured_with: str) -> dict[str, Any]:
    if not on_target:
        return {
            "measured": False,
            "note": "the target device is not present on this machine; run "
            "'edgekit bench BUNDLE' on the device to measure it",
        }
    x = np.zeros(spec.input.with_batch(1).shape, np.float32)
    stats = measure(lambda: runtime.infer(x), warmup=20, min_runs=100, seconds=1.0)
    return {
        "measured": True,
        "batch": 1,
        "what": "model inference on a preprocessed input",
        "machine": measured_with,
        **stats,
    }


def compile_model(
    model: Any,
    *,
    target: str | Path | Target,
    output: str | Path,
    log: Log | None = None,
    **options: Any,
) -> CompiledBundle:
    """Compile ``model`` (an ONNX/TorchScript/.pt2 path or an nn.Module) for ``target`` into a bundle.

    The convenient front door: the keywords are ``CompileRequest``'s fields (``precision``, ``calib``,
    ``val``, ``calib_size``, ``calibration_method``, ``calibration_percentile``, ``max_accuracy_drop``,
    ``min_agreement``, ``budget_confidence``, ``spec``, ``name``, ``input_shape``, ``layout``, ``labels``,
    ``preprocess``, ``pack``, ``int8_drop_warning``, ``trust_model_code``, ``compare_int8_with_fp32``), with its
    defaults; see ``edgekit.request.CompileRequest``. Same as ``compile_request(CompileRequest(model=..., ...), log=log)``.

    INT8 is calibrated on ``calib`` (a folder searched recursively; a deterministic sample of
    ``calib_size`` images). ``val`` (one sub-folder a class) measures accuracy against FP32 and gives the
    labels unless ``labels`` or the spec file does. ``max_accuracy_drop`` (top-1 points, or "B%" relative)
    or ``min_agreement`` (% top-1 agreement with FP32; ``val`` may then be unlabelled) sets an accuracy
    budget: the most sensitive layers go back to higher precision until it holds, with enough to spare on the
    search images that the check images confirm it at ``budget_confidence``. The bundle at ``output``
    is replaced only once the new one is complete and has passed its self-test.

    Without ``spec``, a model-spec TOML beside a model file (``<stem>.toml``, else ``model.toml``) is used,
    and the log says so.

    A TorchScript file, or a .pt2 whose loader would run code stored in it (pickled data, say), is refused
    unless ``trust_model_code`` is true: only for files from someone you trust.
    """
    import dataclasses

    unknown = sorted(set(options) - {f.name for f in dataclasses.fields(CompileRequest)})
    if unknown:
        raise TypeError(f"compile_model() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}")
    return compile_request(CompileRequest(model=model, target=target, output=output, **options), log=log)


def compile_request(request: CompileRequest, *, log: Log | None = None) -> CompiledBundle:
    """Compile one ``CompileRequest`` into a verified bundle; ``log`` receives one line per step."""
    return _build(_prepare(request, log or (lambda _msg: None)))


def _prepare(request: CompileRequest, log: Log) -> _Prepared:
    """Resolve the target, load and check the model and the images: what the build needs beyond the request."""
    target = request.target if isinstance(request.target, Target) else get_target(request.target)
    precision = target.check_precision(request.precision or target.default_precision)
    budget = _budget(request, precision)
    if precision == "int8" and request.calib is None:
        raise UsageError("int8 needs calibration images: pass --calib FOLDER (images like those the model will see)")
    from edgekit.bundle.writer import check_output_path

    check_output_path(request.output, pack=request.pack)
    model, spec = request.model, request.spec
    if spec is None and (beside := specs.spec_beside(model)) is not None:
        log(specs.spec_beside_note(beside))
        spec = beside
    overrides = _overrides(
        spec, name=request.name, input_shape=request.input_shape, layout=request.layout, labels=request.labels,
        preprocess=request.preprocess,
    )  # fmt: skip
    log(f"loading {model if isinstance(model, (str, Path)) else type(model).__name__}")
    loaded = load_model(model, input_shape=overrides["input"].get("shape"), trust_model_code=request.trust_model_code)
    model_spec = _resolve_spec(loaded, overrides, request.val, target)
    loaded, merged = merge_detector_outputs(loaded, model_spec)
    if merged is not None:
        log(f"joined the SSD outputs {', '.join(merged['outputs'])} into one for the runtimes")
    if _dynamic_size(loaded.input):
        h, w = model_spec.input.hw
        log(f"the model's input has a dynamic height and width; compiling, calibrating and measuring it at {h}x{w}")
    reference, num_classes = reference_session(loaded, model_spec, merged)
    if model_spec.labels and len(model_spec.labels) != num_classes:
        raise UsageError(
            f"{len(model_spec.labels)} labels were given but the model outputs {num_classes} "
            "classes; fix the labels file or the spec"
        )
    calibration = None
    if request.calib is not None:  # INT8 calibrates on them; every precision takes its self-test inputs from them
        log(f"reading up to {request.calib_size} calibration images from {request.calib}")
        calibration = load_calibration(request.calib, model_spec, size=request.calib_size)
    return _Prepared(
        request=request, log=log, loaded=loaded, spec=model_spec, target=target, precision=precision,
        calibration_method=request.calibration_method or target.calibration_method, budget=budget,
        reference=reference, num_classes=num_classes, calibration=calibration,
        val_set=_validation(request.val, model_spec, budget), merged_outputs=merged,
    )  # fmt: skip


def _dynamic_size(model_input: dict[str, Any]) -> bool:
    """Whether the model leaves its input's height or width open (the spec then fixes it)."""
    shape, layout = tuple(model_input["shape"]), model_input["layout"]
    return min(shape[2:4] if layout == "NCHW" else shape[1:3]) <= 0


def _budget(request: CompileRequest, precision: str) -> Budget | None:
    """The request's accuracy budget, checked against what it needs: validation images and an int8 compile."""
    budget = request.budget()
    if budget is None:
        return None
    flag = "--max-accuracy-drop" if request.max_accuracy_drop is not None else "--min-agreement"
    if request.val is None:
        raise UsageError(f"{flag} needs validation images to measure it on: pass --val FOLDER")
    if precision != "int8":
        raise UsageError(f"{flag} applies to int8 compiles (it returns INT8 layers to higher precision)")
    return budget


def _validation(val_path: Path | None, spec: specs.ModelSpec, budget: Budget | None) -> ImageSet | None:
    """Labelled images (class folders), or, for an agreement budget, any images when they have no labels."""
    if val_path is None:
        return None
    if spec.task == "detection":
        from edgekit.imagesets import annotations_file, load_detection

        if annotations_file(val_path) is not None:
            return load_detection(val_path, spec)
        if budget is None or budget.needs_labels:
            raise UsageError(
                f"validation folder '{val_path}' has no COCO annotations (annotations.json) to measure the "
                "detector's mAP on; add them, or give --min-agreement, which needs no labels"
            )
        return load_unlabelled(val_path, spec)
    if budget is not None and not budget.needs_labels:
        folders = class_folders(val_path) if val_path.is_dir() else []
        if not folders or not set(folders) <= set(spec.labels):
            return load_unlabelled(val_path, spec)
    return load_labelled(val_path, spec, spec.labels)


@dataclass
class _Prepared:
    """A request with what compiling it found out before the build: the resolved target, precision and
    calibration method, the loaded model, its spec and FP32 reference, and the images."""

    request: CompileRequest
    log: Log
    loaded: LoadedModel
    spec: specs.ModelSpec
    target: Target
    precision: str
    calibration_method: str
    budget: Budget | None
    reference: Any
    num_classes: int
    calibration: ImageSet | None
    val_set: ImageSet | None
    requested_precision: str | None = None  # what the request asked for, when the budget ships another
    merged_outputs: dict[str, Any] | None = None  # an SSD's two outputs joined into one (merge_detector_outputs)

    def postprocess_record(self) -> dict[str, Any]:
        """The manifest's postprocess record for this model (what its task's decode reads)."""
        shape = output_shape(self.reference, self.spec) if self.spec.task != "classification" else None
        record = get_task(self.spec.task).postprocess_record(
            self.spec.output_kind, shape or (-1, self.num_classes), spec=self.spec
        )
        if self.merged_outputs is not None:
            record["merged_outputs"] = self.merged_outputs
        return record

    def compile_into(
        self, staging: Path, excluded: tuple[str, ...] = (), precision: str | None = None
    ) -> dict[str, Any]:
        """Compile into ``staging`` with ``excluded`` layers in higher precision; return the manifest so far."""
        precision = precision or self.precision
        job = CompileInput(
            model=self.loaded.onnx, spec=self.spec, target=self.target, precision=precision, staging=staging,
            calibration=self.calibration, calibration_method=self.calibration_method,
            calibration_percentile=self.request.calibration_percentile, keep_in_higher_precision=excluded,
        )  # fmt: skip
        result = registry.backend(self.target.backend).compile(job)
        shape = output_shape(self.reference, self.spec) if self.spec.task != "classification" else None
        manifest = _base_manifest(self.loaded, self.spec, self.target, precision, result, self.num_classes, shape)
        if self.requested_precision and precision == self.precision:
            manifest["precision"]["requested"] = self.requested_precision
        if self.merged_outputs is not None:
            manifest["postprocess"]["merged_outputs"] = self.merged_outputs
        return manifest

    def reference_infer(self, x: np.ndarray) -> np.ndarray:
        return self.reference.run(None, {self.spec.input.name: x})[0]


def _apply_budget(job: _Prepared, device, on_target: bool, measured_with: str) -> budgeting.Choice:
    """Run the accuracy budget on trial bundles; return what it ships (precision, layers in higher precision)."""
    images, overlap = job.val_set.without(set(job.calibration.hashes))
    runtime_cls, _ = _eval_runtime(job.target, on_target)

    def trial(folder: Path, excluded: tuple[str, ...], precision: str | None = None):
        manifest = job.compile_into(folder, excluded, precision)
        return runtime_cls(folder, manifest, device=device)

    trials = budgeting.Trials(trial, on_target, job.spec.input.shape)
    try:
        task = get_task(job.spec.task).bind(job.postprocess_record())
        search_part, check_part = budgeting.parts(images, job.request.val, job.reference_infer, task)
        blocks = budgeting.blocks_for(job.loaded.onnx, job.spec, job.target)
        layers = [name for block in blocks for name in block]
        job.log(f"accuracy budget: {job.budget.describe()}; {len(layers)} quantized layers, "
                f"{len(search_part)} search and {len(check_part)} check images")  # fmt: skip
        choice = budgeting.run(
            budget=job.budget, layers=layers, blocks=blocks, trials=trials, search_part=search_part,
            check_part=check_part, backend=job.target.backend, measured_with=measured_with, log=job.log,
            precisions=tuple(job.target.precisions),
        )  # fmt: skip
    finally:
        trials.close()
    choice.record["validation_images_also_in_calibration_set_excluded"] = overlap
    return choice


def _build(job: _Prepared) -> CompiledBundle:
    import dataclasses

    warnings: list[str] = []
    device, on_target, measured_with = _eval_device(job.target, job.log)
    excluded, budget_record = (), None
    if job.budget is not None:
        choice = _apply_budget(job, device, on_target, measured_with)
        excluded, budget_record = choice.excluded, choice.record
        warnings += choice.warnings
        if choice.precision != job.precision:  # the budget's answer: a higher precision holds it, or is faster
            job = dataclasses.replace(job, precision=choice.precision, requested_precision=job.precision)
    with BundleWriter(job.request.output, pack=job.request.pack) as writer:
        job.log(f"compiling for {job.target.name} ({job.target.backend} {job.target.device}, {job.precision})")
        manifest = job.compile_into(writer.staging, excluded)
        warnings += onnxruntime_qdq.preparation_notes(manifest["quantization"])
        warnings += _record_calibration(manifest, job.calibration)
        if budget_record is not None and manifest["quantization"] is not None:
            manifest["quantization"]["budget"] = budget_record
        elif budget_record is not None:  # no INT8 in the bundle: the record stands on its own
            manifest["budget"] = budget_record
        runtime_cls, simulated = _eval_runtime(job.target, on_target)
        if on_target and not simulated and job.request.tune_runtime and os.environ.get("EDGEKIT_TUNE", "1") != "0":
            # the target is this machine: time the runtime's settings here
            settings = tune.tune_runtime(runtime_cls, writer.staging, manifest, device=device, log=job.log)
            if settings is not None:
                manifest["runtime_settings"] = settings
        runtime = _load_runtime(runtime_cls, writer.staging, manifest, device, job)
        try:
            warnings += _measure(job, runtime, manifest, writer.staging, measured_with, on_target, simulated)
        finally:
            runtime.close()
        warnings += _int8_speed_check(job, manifest, runtime_cls, device, writer.staging)
        if not on_target:
            warnings.append(
                f"{job.target.name}: the device is not present on this machine, so latency is not "
                "measured here; accuracy was measured with " + measured_with
            )
        manifest["notes"] += warnings
        path = writer.commit(manifest)
    return CompiledBundle(path=path, manifest=manifest, warnings=warnings)


# Errors that mean a bug in edgekit's own code, not a backend refusing the model: they stay internal errors.
_BUG_ERRORS = (TypeError, AttributeError, KeyError, NameError, IndexError, AssertionError)


def _load_runtime(runtime_cls: type, staging: Path, manifest: dict[str, Any], device: str | None, job: _Prepared):
    """The runtime on the bundle just written; a backend's refusal to load it is one line with what to do."""
    try:
        return runtime_cls(staging, manifest, device=device)
    except (EdgekitError, *_BUG_ERRORS):
        raise
    except Exception as exc:
        text = str(exc).strip()
        first = (text.splitlines()[0] if text else type(exc).__name__)[:300]
        fix = (
            onnxruntime_qdq.explain(exc)
            if job.precision == "int8"
            else "re-export the model at opset 13 or newer, or try another precision or target"
        )
        raise ModelError(
            f"the {job.precision} model edgekit compiled for {job.target.name} does not load in "
            f"{job.target.backend} ({type(exc).__name__}: {first}); {fix}"
        ) from exc


# INT8 is reported as slower than FP32 when its median latency is above FP32's by more than this fraction:
# on a shared machine a few percent is noise, not a finding.
INT8_SLOWER_TOLERANCE = 0.05
# Both are timed in the same rounds, interleaved (FP32, INT8, FP32, ...), so drift in the machine's load hits
# both alike; the median of the rounds' medians is compared. A check, not the bundle's latency figure.
SPEED_CHECK_ROUNDS = 3
SPEED_CHECK_TIMING = {"warmup": 5, "min_runs": 20, "seconds": 0.1}


def int8_slower_warning(int8_ms: float, fp32_ms: float, target: str, *, runs: int | None = None) -> str | None:
    """The warning when INT8's median latency (``int8_ms``) is above FP32's (``fp32_ms``) on ``target`` by
    more than ``INT8_SLOWER_TOLERANCE``; None when INT8 is as fast or faster."""
    if fp32_ms <= 0 or int8_ms <= fp32_ms * (1 + INT8_SLOWER_TOLERANCE):
        return None
    timed = f", {runs} runs" if runs else ""
    return (
        f"INT8 is slower than FP32 on {target}: {int8_ms:.4g} ms against {fp32_ms:.4g} ms at batch 1 "
        f"({fp32_ms / int8_ms:.2f}x FP32's speed; p50s of both timed in the same interleaved rounds here, FP32 "
        f"being the same model compiled for {target}, on the same input{timed}). Small models with many ops INT8 does not cover pay more for the "
        "Q/DQ conversions around them than INT8 saves. edgekit kept the INT8 bundle you asked for and "
        "recorded both figures; for speed, compile with --precision fp32 (or fp16 where the target runs it fast)"
    )


def _int8_speed_check(
    job: _Prepared, manifest: dict[str, Any], runtime_cls: type, device: str | None, staging: Path
) -> list[str]:
    """On a target measured here, compile FP32 of the same model for the target, time it and the INT8 bundle
    in the same interleaved rounds on the same input, and warn when INT8 is slower (``int8_slower_warning``)."""
    import tempfile

    latency = manifest.get("latency") or {}
    if job.precision != "int8" or not latency.get("measured") or not job.request.compare_int8_with_fp32:
        return []
    if ((manifest["quantization"] or {}).get("budget") or {}).get("batch1_latency"):
        return []  # the budget timed FP32 against this bundle already, and chose it as the fastest that holds
    job.log("timing FP32 on the same target to compare with INT8")
    x = np.zeros(job.spec.input.with_batch(1).shape, np.float32)
    with tempfile.TemporaryDirectory(prefix="edgekit-fp32-") as tmp:
        fp32_manifest = job.compile_into(Path(tmp), precision="fp32")
        if "runtime_settings" in manifest:  # both timed with the settings the bundle runs with
            fp32_manifest["runtime_settings"] = manifest["runtime_settings"]
        fp32 = runtime_cls(Path(tmp), fp32_manifest, device=device)
        int8 = runtime_cls(staging, manifest, device=device)
        try:
            rounds = [
                (
                    measure(lambda: fp32.infer(x), **SPEED_CHECK_TIMING),
                    measure(lambda: int8.infer(x), **SPEED_CHECK_TIMING),
                )
                for _ in range(SPEED_CHECK_ROUNDS)
            ]
        finally:
            fp32.close()
            int8.close()
    fp32_ms = float(np.median([f["p50_ms"] for f, _ in rounds]))
    int8_ms = float(np.median([i["p50_ms"] for _, i in rounds]))
    runs = sum(f["runs"] for f, _ in rounds)
    warning = int8_slower_warning(int8_ms, fp32_ms, job.target.name, runs=runs)
    return [warning] if warning else []


def _record_calibration(manifest: dict[str, Any], calibration: ImageSet | None) -> list[str]:
    if calibration is None or manifest["quantization"] is None:
        return []
    manifest["quantization"]["calibration"] = {
        "images": len(calibration.paths),
        "skipped_unreadable": len(calibration.skipped),
        "sha256": calibration.sha256,
    }
    if calibration.skipped:
        return [f"{len(calibration.skipped)} calibration images could not be read and were skipped"]
    return []


def _measure(job: _Prepared, runtime, manifest, staging: Path, measured_with: str, on_target: bool, simulated: bool):
    """Accuracy on the validation images, the self-test inputs and the latency, into the manifest."""
    warnings: list[str] = []
    spec, val_set = job.spec, job.val_set
    batch = 64 if spec.input.dynamic_batch else spec.input.shape[0]
    task = get_task(spec.task).bind(manifest["postprocess"])
    if val_set is not None:
        job.log(f"measuring accuracy on {len(val_set.paths)} validation images")
        manifest["accuracy"] = _accuracy(
            runtime,
            job.reference,
            spec,
            val_set,
            manifest["labels"],
            measured_with,
            batch,
            task,
            retune=job.precision != "fp32",
        )
        retuned = manifest["accuracy"].get("score_threshold")
        if retuned is not None:  # the bundle ships with the threshold re-tuned for its precision
            manifest["postprocess"]["score_threshold"] = retuned["shipped"]
            task = get_task(spec.task).bind(manifest["postprocess"])
            job.log(f"score threshold for {job.precision}: {retuned['shipped']:g} (the spec's {retuned['user']:g}, "
                    f"re-tuned against {retuned['against']} to keep FP32's precision and recall)")  # fmt: skip
        if simulated:
            manifest["accuracy"]["simulated"] = True
            if val_set.labels is not None:
                warnings += _drop_warning(manifest["accuracy"], job.precision, job.request.int8_drop_warning)
    if job.calibration is not None:
        pool, source = job.calibration, "calibration images"
    elif val_set is not None:
        pool, source = val_set, "validation images"
    else:
        pool, source = _synthetic(spec)
    manifest["selftest"] = _selftest(runtime, staging, pool, job.precision, source, task)
    manifest["latency"] = _latency(runtime, spec, on_target, measured_with)
    return warnings


def _synthetic(model_spec: specs.ModelSpec) -> tuple[np.ndarray | ImageSet, str]:
    """Self-test inputs for a compile given no images, and where they came from: edgekit's shipped calibration
    images (calibration/images/, 32x32 photographs) preprocessed by the model's spec, resized to the input's
    size if the spec's own resize and crop do not give it; seeded random inputs if the input is no RGB image."""
    import dataclasses

    from edgekit import calibration
    from edgekit.errors import DataError

    inp, folder = model_spec.input, calibration.images_folder()
    if inp.channels != 3 or not folder.is_dir():
        why = f"the model's input has {inp.channels} channel(s), not 3" if inp.channels != 3 else f"{folder} is missing"
        rng = np.random.default_rng(0)
        return rng.standard_normal((16, *inp.shape[1:])).astype(np.float32), f"seeded random inputs ({why})"
    source = "edgekit's shipped calibration images"
    try:
        return load_unlabelled(folder, model_spec), source
    except DataError:  # e.g. a 224x224 input whose spec has no resize
        pass
    h, w = inp.hw
    resized = dataclasses.replace(model_spec.preprocess, resize=(h, w), crop=None)
    return load_unlabelled(folder, dataclasses.replace(model_spec, preprocess=resized)), f"{source}, resized to {h}x{w}"


__all__ = ["INT8_DROP_WARNING", "CompileRequest", "CompiledBundle", "compile_model", "compile_request"]
