"""Compile for OpenVINO: an IR (model.xml + model.bin) in fp32, fp16-compressed, or NNCF INT8."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgekit import calibration
from edgekit.backends.base import CompileInput, CompileResult, parse_options
from edgekit.backends.openvino.options import OpenVINOOptions
from edgekit.backends.openvino.runtime import compile_config, inference_precision
from edgekit.errors import require
from edgekit.quantize import nncf_ov
from edgekit.targets import Target
from edgekit.tasks import get_task

MODEL_FILE = "model.xml"
# The precision OpenVINO is told to compute in. fp32 must mean fp32: the CPU plugin otherwise runs
# bf16 where the processor has it. INT8 bundles keep their non-quantized layers in f32 too.
PRECISION_HINTS = {"fp32": "f32", "fp16": "f16", "int8": "f32"}


def _to_ov(model: Any, static_batch: int | None) -> Any:
    ov = require("openvino", extra="compile", purpose="compiling for OpenVINO")
    onnx = require("onnx", extra="compile", purpose="compiling for OpenVINO")
    with tempfile.TemporaryDirectory(prefix="edgekit-ov-") as tmp:
        path = Path(tmp) / "model.onnx"
        onnx.save(model, str(path))
        ov_model = ov.convert_model(str(path))
    if static_batch:
        shape = ov_model.input(0).get_partial_shape()
        shape[0] = static_batch
        ov_model.reshape({0: shape})
    return ov_model


def compile(job: CompileInput) -> CompileResult:
    """Write model.xml + model.bin into ``job.staging``: fp32, fp16-compressed, or NNCF INT8."""
    spec, target, precision, staging = job.spec, job.target, job.precision, job.staging
    ov = require("openvino", extra="compile", purpose="compiling for OpenVINO")
    static_batch = 1 if target.static_shapes else (None if spec.input.dynamic_batch else spec.input.shape[0])
    ov_model = _to_ov(job.model, static_batch if target.static_shapes else None)
    quantization = None
    if precision == "int8":
        ov_model, quantization = nncf_ov.quantize(
            ov_model, job.calibration, static_batch=static_batch, ignored_names=job.keep_in_higher_precision,
            method=job.calibration_method, percentile=job.calibration_percentile,
            recipe=calibration.nncf_recipe(target.calibration_recipe),
            keep_output_tail=get_task(job.spec.task).keeps_output_tail_in_float,
        )  # fmt: skip
    ov.save_model(ov_model, str(staging / MODEL_FILE), compress_to_fp16=precision == "fp16")
    hint = PRECISION_HINTS[precision]
    return CompileResult(
        files=[MODEL_FILE, "model.bin"],
        model_file=MODEL_FILE,
        backend_version=ov.get_version(),
        quantization=quantization,
        precision_hint=hint,
        inference_precision=_actual_precision(staging / MODEL_FILE, target, hint, precision),
    )


def _actual_precision(xml: Path, target: Target, hint: str, precision: str) -> str:
    """Compile once on the target's device, if present, and read back what the plugin computes in."""
    ov = require("openvino", extra="compile", purpose="compiling for OpenVINO")
    core = ov.Core()
    if target.device not in core.available_devices:
        return f"not measured: OpenVINO device {target.device} is absent here (requested {hint})"
    options = parse_options(OpenVINOOptions, target.backend_options, backend="openvino", source=target.name)
    compiled = core.compile_model(core.read_model(str(xml)), target.device, compile_config(options, hint))
    actual = inference_precision(compiled)
    return f"int8 where quantized, {actual} elsewhere" if precision == "int8" else actual


def layer_blocks(model: Any, target: Target) -> list[tuple[str, ...]]:
    """The layers of ``quantizable_layers`` in blocks that end at residual Adds."""
    return nncf_ov.layer_blocks(_to_ov(model, 1 if target.static_shapes else None))


def quantizable_layers(model: Any, target: Target) -> list[str]:
    """The layers NNCF quantizes in this model's IR, by the names ``compile`` ignores when told to."""
    return nncf_ov.quantizable_layers(_to_ov(model, 1 if target.static_shapes else None))
