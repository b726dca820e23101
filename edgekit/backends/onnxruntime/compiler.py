"""Compile for ONNX Runtime: the ONNX model itself (fp32), converted to fp16, or INT8 Q/DQ."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.backends.base import CompileResult
from edgekit.errors import require
from edgekit.imagesets import ImageSet
from edgekit.quantize import onnxruntime_qdq
from edgekit.spec import ModelSpec
from edgekit.targets import Target

MODEL_FILE = "model.onnx"


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
    onnx = require("onnx", extra="compile", purpose="compiling for ONNX Runtime")
    ort = require("onnxruntime", extra="compile", purpose="compiling for ONNX Runtime")
    out = staging / MODEL_FILE
    quantization = None
    if precision == "fp32":
        onnx.save(model, str(out))
    elif precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(model, keep_io_types=True), str(out))
    else:
        import dataclasses

        recipe = dataclasses.replace(
            onnxruntime_qdq.CPU_RECIPE, method=calibration_method, percentile=calibration_percentile
        )
        quantization = onnxruntime_qdq.quantize(
            model,
            calibration,
            out,
            recipe=recipe,
            input_name=spec.input.name,
            static_batch=None if spec.input.dynamic_batch else spec.input.shape[0],
            nodes_to_exclude=keep_in_higher_precision,
        )
    return CompileResult(
        files=[MODEL_FILE],
        model_file=MODEL_FILE,
        backend_version=ort.__version__,
        quantization=quantization,
        inference_precision={"fp32": "fp32", "fp16": "fp16 (I/O fp32)", "int8": "int8 Q/DQ, fp32 elsewhere"}[precision],
    )


def quantizable_layers(model: Any, *, spec: ModelSpec, target: Target) -> list[str]:
    """The layers an accuracy budget may keep in higher precision (fp32 here), by the names compile takes."""
    return onnxruntime_qdq.quantizable_layers(model)


def measure_here(target: Target, host: str, log) -> tuple[str | None, bool, str]:
    """(device override, runs on the target itself, description) for measuring a bundle on this machine."""
    if target.arch_matches_host():
        return None, True, f"ONNX Runtime CPU on this {host}"
    return None, False, f"ONNX Runtime CPU on this {host}, standing in for {target.arch}"
