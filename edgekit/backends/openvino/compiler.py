"""Compile for OpenVINO: an IR (model.xml + model.bin) in fp32, fp16-compressed, or NNCF INT8."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from edgekit.backends.base import CompileResult, parse_options
from edgekit.backends.openvino.options import OpenVINOOptions
from edgekit.backends.openvino.runtime import compile_config, inference_precision
from edgekit.errors import require
from edgekit.imagesets import ImageSet
from edgekit.quantize import nncf_ov
from edgekit.spec import ModelSpec
from edgekit.targets import Target

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


def compile(
    model: Any,
    *,
    spec: ModelSpec,
    target: Target,
    precision: str,
    staging: Path,
    calibration: ImageSet | None = None,
    calibration_method: str = "minmax",
    calibration_percentile: float = 99.999,
    keep_in_higher_precision: tuple[str, ...] = (),
) -> CompileResult:
    ov = require("openvino", extra="compile", purpose="compiling for OpenVINO")
    static_batch = 1 if target.static_shapes else (None if spec.input.dynamic_batch else spec.input.shape[0])
    ov_model = _to_ov(model, static_batch if target.static_shapes else None)
    quantization = None
    if precision == "int8":
        ov_model, quantization = nncf_ov.quantize(
            ov_model, calibration, static_batch=static_batch, ignored_names=keep_in_higher_precision,
            method=calibration_method, percentile=calibration_percentile,
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


def quantizable_layers(model: Any, *, spec: ModelSpec, target: Target) -> list[str]:
    """The layers an accuracy budget may keep in higher precision (f32 here), by the names compile takes."""
    static_batch = 1 if target.static_shapes else None
    return nncf_ov.quantizable_layers(_to_ov(model, static_batch))


def measure_here(target: Target, host: str, log) -> tuple[str | None, bool, str]:
    """(device override, runs on the target itself, description): the CPU plugin stands in for absent devices."""
    ov = require("openvino", extra="compile", purpose="compiling for OpenVINO")
    if target.device in ov.Core().available_devices:
        return None, True, f"OpenVINO {target.device} on this {host}"
    log(f"OpenVINO device {target.device} is absent here: accuracy is measured on the CPU plugin instead")
    return "CPU", False, f"OpenVINO CPU on this {host}, standing in for {target.device}"
