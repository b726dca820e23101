"""Compile for ONNX Runtime: the ONNX model itself (fp32), converted to fp16, or INT8 Q/DQ."""

from __future__ import annotations

from edgekit import calibration
from edgekit.backends.base import CompileInput, CompileResult
from edgekit.errors import require
from edgekit.quantize import onnxruntime_qdq
from edgekit.tasks import get_task

MODEL_FILE = "model.onnx"


def compile(job: CompileInput) -> CompileResult:
    """Write model.onnx into ``job.staging``: the model itself (fp32), converted to fp16, or INT8 Q/DQ."""
    model, spec, precision = job.model, job.spec, job.precision
    onnx = require("onnx", extra="compile", purpose="compiling for ONNX Runtime")
    ort = require("onnxruntime", extra="compile", purpose="compiling for ONNX Runtime")
    out = job.staging / MODEL_FILE
    quantization = None
    if precision == "fp32":
        onnx.save(model, str(out))
    elif precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        onnx.save(convert_float_to_float16(model, keep_io_types=True), str(out))
    else:
        import dataclasses

        recipe = dataclasses.replace(
            calibration.qdq_recipe(job.target.calibration_recipe),
            method=job.calibration_method,
            percentile=job.calibration_percentile,
        )
        quantization = onnxruntime_qdq.quantize(
            model,
            job.calibration,
            out,
            recipe=recipe,
            input_name=spec.input.name,
            static_batch=None if spec.input.dynamic_batch else spec.input.shape[0],
            nodes_to_exclude=job.keep_in_higher_precision,
            keep_output_tail=get_task(spec.task).keeps_output_tail_in_float,
        )
    return CompileResult(
        files=[MODEL_FILE],
        model_file=MODEL_FILE,
        backend_version=ort.__version__,
        quantization=quantization,
        inference_precision={"fp32": "fp32", "fp16": "fp16 (I/O fp32)", "int8": "int8 Q/DQ, fp32 elsewhere"}[precision],
    )
