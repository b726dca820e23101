"""Compile for TensorRT: an ONNX the device turns into an engine, plus the build plan that says how.

No engine is built here: engines are specific to the GPU, the TensorRT version and the JetPack release,
so the device builds one from the bundle on first start and caches it (see runtime.py).

- fp32 / fp16: the ONNX itself; the plan sets TensorRT's precision flags (fp32 bundles turn TF32 off).
- int8: a symmetric signed Q/DQ ONNX from ONNX Runtime's quantizer (explicit quantization, the path
  TensorRT 10 keeps), checked against TensorRT's Q/DQ rules; plus a TensorRT calibration cache and the
  FP32 graph its tensor names belong to, for the implicit path the DLA needs.

Where TensorRT is absent, the backend's simulator (simulator.py) runs the bundle's ONNX in ONNX Runtime on
the CPU so that the pipeline can still measure (simulated) accuracy and record the self-test.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from edgekit.backends.base import CompileInput, CompileResult, parse_options
from edgekit.backends.tensorrt import calibration_cache, onnx_support, qdq_rules
from edgekit.backends.tensorrt.build_plan import PLAN_FILE, implicit_variant, make_plan
from edgekit.backends.tensorrt.options import TensorRTOptions
from edgekit.calibration import qdq_recipe
from edgekit.errors import ModelError, require
from edgekit.imagesets import ImageSet
from edgekit.quantize import onnxruntime_qdq
from edgekit.spec import ModelSpec
from edgekit.targets import Target
from edgekit.tasks import get_task

MODEL_FILE = "model.onnx"
FP32_FILE = "model_fp32.onnx"
INFERENCE_PRECISION = {
    "fp32": "fp32 (TF32 off), built on the device",
    "fp16": "fp16 where TensorRT finds it faster, fp32 elsewhere; built on the device",
    "int8": "int8 where the Q/DQ graph says, fp16/fp32 elsewhere; built on the device",
}


def tensorrt_range(target: Target) -> tuple[int, str]:
    """(oldest TensorRT major, newest TensorRT version) of the target's JetPack range, e.g. (8, '10.3')."""
    versions = re.findall(r"\d+(?:\.\d+)*", target.hardware.tensorrt or "8.6")
    return int(versions[0].split(".")[0]), versions[-1]


def _check_parsable(model: Any, target: Target) -> list[str]:
    """Refuse ops TensorRT cannot parse; return notes (opset) for the manifest."""
    oldest, _ = tensorrt_range(target)
    problems = onnx_support.unsupported_ops(model, min_tensorrt_major=oldest)
    if problems:
        raise ModelError(
            f"TensorRT cannot parse this model for {target.name} ({target.hardware.tensorrt or 'TensorRT 8.6+'}): "
            f"{'; '.join(problems)}; replace these ops in the model or compile for another target"
        )
    if any(n.op_type == "QuantizeLinear" for n in model.graph.node):
        _check_qdq(model, "the model's own Q/DQ nodes", "re-export the model without Q/DQ and let edgekit quantize it")
    note = onnx_support.opset_note(model, min_tensorrt_major=oldest)
    return [note] if note else []


def _check_qdq(model: Any, what: str, fix: str) -> qdq_rules.QDQReport:
    report = qdq_rules.check(model)
    if not report.passed:
        more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
        raise ModelError(
            f"{what} break TensorRT's Q/DQ rules: {report.errors[0]}{more}; TensorRT would reject or misread "
            f"them: {fix}"
        )
    return report


def _quantize(
    model: Any,
    spec: ModelSpec,
    calibration: ImageSet,
    method: str,
    staging: Path,
    keep: tuple[str, ...],
    newest_trt: str,
    percentile: float,
    recipe_name: str,
) -> tuple[dict[str, Any], list[str]]:
    """Write the Q/DQ ONNX, the FP32 graph it came from and the calibration cache; return provenance, notes."""
    onnx = require("onnx", extra="compile", purpose="compiling for TensorRT")
    recipe = dataclasses.replace(qdq_recipe(recipe_name), method=method, percentile=percentile)
    quantization = onnxruntime_qdq.quantize(
        model,
        calibration,
        staging / MODEL_FILE,
        recipe=recipe,
        input_name=spec.input.name,
        static_batch=None if spec.input.dynamic_batch else spec.input.shape[0],
        nodes_to_exclude=keep,
        prepared_out=staging / FP32_FILE,
        keep_output_tail=get_task(spec.task).keeps_output_tail_in_float,
    )
    qdq = onnx.load(str(staging / MODEL_FILE))
    report = _check_qdq(qdq, "the INT8 graph's Q/DQ nodes", "compile with --precision fp16 instead")
    scales = calibration_cache.scales_from_qdq(qdq)
    text = calibration_cache.format_cache(scales, tensorrt_version=newest_trt)
    (staging / calibration_cache.CACHE_FILE).write_text(text, encoding="utf-8")
    quantization["tensorrt_qdq_check"] = report.summary()
    quantization["calibration_cache"] = {
        "file": calibration_cache.CACHE_FILE,
        "tensors": len(scales),
        "header": text.partition("\n")[0],
        "use": f"TensorRT's implicit INT8 path (e.g. on the DLA) with {FP32_FILE}; the same scales as the Q/DQ graph",
    }
    notes = []
    if report.higher_precision:
        shown = "; ".join(str(f) for f in report.higher_precision[:5])
        more = f" (and {len(report.higher_precision) - 5} more)" if len(report.higher_precision) > 5 else ""
        notes.append(f"TensorRT will keep {len(report.higher_precision)} nodes in higher precision: {shown}{more}")
    return quantization, notes


def compile(job: CompileInput) -> CompileResult:
    """Write the ONNX (int8: Q/DQ, plus the FP32 graph and calibration cache) and the build plan."""
    model, spec, target, precision, staging = job.model, job.spec, job.target, job.precision, job.staging
    onnx = require("onnx", extra="compile", purpose="compiling for TensorRT")
    options = parse_options(
        TensorRTOptions, target.backend_options, backend="tensorrt", source=target.source or target.name
    )
    notes = _check_parsable(model, target)
    _, newest = tensorrt_range(target)
    files, quantization = [MODEL_FILE], None
    if precision == "int8":
        quantization, more = _quantize(
            model,
            spec,
            job.calibration,
            job.calibration_method,
            staging,
            job.keep_in_higher_precision,
            newest,
            job.calibration_percentile,
            target.calibration_recipe,
        )
        notes += more
        files += [FP32_FILE, calibration_cache.CACHE_FILE]
    else:
        onnx.save(model, str(staging / MODEL_FILE))
    shape = tuple(-1 if spec.input.dynamic_batch and i == 0 else d for i, d in enumerate(spec.input.shape))
    plan = make_plan(
        precision=precision, input_name=spec.input.name, input_shape=shape, options=options, onnx=MODEL_FILE,
        tensorrt=newest, fp32_onnx=FP32_FILE, calibration_cache=calibration_cache.CACHE_FILE,
    )  # fmt: skip
    plan_data = plan.to_dict()
    if precision == "int8" and plan.calibration_cache is None:
        implicit = implicit_variant(plan, fp32_onnx=FP32_FILE, calibration_cache=calibration_cache.CACHE_FILE)
        plan_data["trtexec_implicit"] = implicit.trtexec()
    (staging / PLAN_FILE).write_text(json.dumps(plan_data, indent=2) + "\n", encoding="utf-8")
    return CompileResult(
        files=[*files, PLAN_FILE],
        model_file=MODEL_FILE,
        backend_version=f"{target.hardware.tensorrt or '8.6+'} on the device",
        quantization=quantization,
        inference_precision=INFERENCE_PRECISION[precision],
        notes=notes,
        build_plan=plan_data,
    )
