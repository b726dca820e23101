"""What every combination of a report shares, checked once before anything is compiled.

The model, its spec and labels, the validation set (and the FP32 reference accuracy on it, in the model's
task's metrics: a classifier's top-1, a detector's COCO mAP), the calibration set and the model's cost. Bad
input (an empty validation set, class folders that are not the model's labels, a detector's folder without
COCO annotations, int8 without calibration images) fails here with one clear error, before any work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit import spec as specs
from edgekit.errors import DataError, UsageError
from edgekit.measure import evaluate as ev
from edgekit.report.estimate import GraphCost, graph_cost
from edgekit.report.summary import figures
from edgekit.request import CompileRequest


@dataclass
class Prepared:
    request: CompileRequest  # what every combination compiles from; each replaces target, precision, output...
    model: dict[str, Any]
    val: dict[str, Any]
    calib: dict[str, Any] | None
    calib_size: int
    fp32: dict[str, Any]
    cost: GraphCost
    runtimes: dict[str, str]
    bench_images: Path | None = None  # what edgekit bench's end-to-end phase runs on (None: its synthetic frame)


def _overrides(options: Any, loaded: Any) -> dict[str, Any]:
    from edgekit.imagesets import class_folders

    data = specs.load_spec_file(options.spec) if options.spec else {}
    data.setdefault("input", {})
    data.setdefault("preprocess", {})
    if options.name:
        data["name"] = options.name
    if options.input_shape:
        data["input"]["shape"] = tuple(options.input_shape)
    if options.layout:
        data["input"]["layout"] = options.layout
    if options.preprocess:
        data["preprocess"].update(options.preprocess)
    if isinstance(options.labels, (str, Path)):
        data["labels"] = specs.read_labels_file(options.labels)
    elif options.labels:
        data["labels"] = tuple(options.labels)
    if not data.get("labels") and data.get("task") == "detection":
        raise UsageError("a detector's labels (one a class, in the model's class order) are not given; add labels "
                         "to its spec file or pass --labels FILE")  # fmt: skip
    if not data.get("labels"):
        data["labels"] = tuple(class_folders(options.val))
    if not data["labels"]:
        raise DataError(
            f"validation folder '{options.val}' has no class sub-folders with images; lay it out as "
            f"{options.val}/<label>/<image>.jpg"
        )
    if loaded.softmax_output:
        data.setdefault("output_kind", "probabilities")
    return data


def _reference(loaded: Any, spec: specs.ModelSpec):
    """ONNX Runtime FP32 on the source model, and the number of classes it outputs (compile's own check)."""
    from edgekit.pipeline import reference_session

    return reference_session(loaded, spec)


def _check_inputs(options: Any) -> None:
    if options.val is None:
        raise UsageError("a report needs validation images: pass --val FOLDER (one sub-folder a class)")
    if not Path(options.val).is_dir():
        raise UsageError(f"validation folder '{options.val}' does not exist; pass a folder with one sub-folder a class")
    if "int8" in options.precisions and options.calib is None:
        raise UsageError("int8 needs calibration images: pass --calib FOLDER, or leave int8 out of --precisions")


def _runtimes() -> dict[str, str]:
    """Installed versions of the build-time packages (every registered backend's, and onnx), read from their
    metadata (no vendor package is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    from edgekit import registry

    packages = [p for backend_id in registry.backend_ids() for p in registry.backend(backend_id).packages]
    versions = {}
    for package in dict.fromkeys([*packages, "onnx"]):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


def prepare(model: str | Path, options: Any, *, log: Callable[[str], None], bundles: Path) -> Prepared:
    """Load and check the model and data once; measure the FP32 reference on the validation set.

    ``bundles`` is the folder the combinations' bundles go into (the shared request's output until a
    combination names its own)."""
    from edgekit.frontends import load_model
    from edgekit.imagesets import load_calibration, load_detection, load_labelled
    from edgekit.tasks import get_task

    _check_inputs(options)
    log(f"loading {model}")
    loaded = load_model(model, input_shape=options.input_shape, trust_model_code=options.trust_model_code)
    overrides = _overrides(options, loaded)
    spec = specs.build_spec(model_input=loaded.input, overrides=overrides)
    session, classes = _reference(loaded, spec)
    if len(spec.labels) != classes:
        raise UsageError(
            f"{len(spec.labels)} labels ({', '.join(spec.labels[:4])}{' ...' if len(spec.labels) > 4 else ''}) but the "
            f"model outputs {classes} classes; the validation folder's class folders (or --labels) must match the model"
        )
    log(f"reading validation images from {options.val}")
    val = (
        load_detection(options.val, spec) if spec.task == "detection" else load_labelled(options.val, spec, spec.labels)
    )
    outputs = ev.run_batches(lambda x: session.run(None, {spec.input.name: x})[0], val, 64)
    task = get_task(spec.task)
    task = task.bind(task.postprocess_record(spec.output_kind, [-1, *outputs.shape[1:]], spec=spec))
    fp32 = ev.evaluate(outputs, val.labels, spec.labels, task)
    shown = figures(task.metric)
    calib = None
    if "int8" in options.precisions:
        cal = load_calibration(options.calib, spec, size=options.calib_size)
        calib = {
            "path": str(options.calib),
            "images": len(cal.paths),
            "skipped": len(cal.skipped),
            "sha256": cal.sha256,
        }
    cost = graph_cost(loaded.onnx, spec.input.shape)
    request = CompileRequest(
        model=Path(model), target=options.targets[0], output=bundles, spec=overrides, calib=options.calib,
        calib_size=options.calib_size, val=options.val, trust_model_code=options.trust_model_code,
        calibration_percentile=options.calibration_percentile,
    )  # fmt: skip
    return Prepared(
        request=request,
        model={
            "name": spec.name,
            "file": loaded.source_name,
            "format": loaded.source_format,
            "task": spec.task,
            "sha256": loaded.source_sha256,
            "input_shape": list(spec.input.shape),
            "classes": classes,
            "macs": cost.macs,
            "parameters": cost.parameters,
        },
        val={"path": str(options.val), "images": len(val.paths), "skipped": len(val.skipped), "sha256": val.sha256},
        calib=calib,
        calib_size=options.calib_size,
        fp32={
            "metric": task.metric,
            **fp32.summary(),
            "per_class": fp32.per_class,
            "how": "ONNX Runtime CPU, FP32, the source model, here",
        },
        cost=cost,
        runtimes=_runtimes(),
        bench_images=Path(options.val) if shown.end_to_end else None,
    )
