"""The ONNX Runtime backend (CPU execution provider; x86-64 and ARM64): what edgekit asks of it.

Light to import: the compiler and the runtime are imported inside the methods that use them.
"""

from __future__ import annotations

from typing import Any, final

from edgekit.backends.base import Backend, CompileInput, CompileResult, Log, MeasureSite, Runtime
from edgekit.backends.onnxruntime.options import ONNXRuntimeOptions
from edgekit.spec import ModelSpec
from edgekit.targets import Target


@final
class ONNXRuntimeBackend(Backend):
    id = "onnxruntime"
    options_type = ONNXRuntimeOptions
    higher_precision = "fp32"
    calibration_recipe = "ort-qdq-u8s8-per-channel"
    packages = ("onnxruntime",)

    @classmethod
    def compile(cls, job: CompileInput) -> CompileResult:
        from edgekit.backends.onnxruntime import compiler

        return compiler.compile(job)

    @classmethod
    def runtime_class(cls) -> type[Runtime]:
        from edgekit.backends.onnxruntime.runtime import ONNXRuntimeRuntime

        return ONNXRuntimeRuntime

    @classmethod
    def measure_here(cls, target: Target, host: str, log: Log) -> MeasureSite:
        """The CPU provider runs here; it is the target itself when the CPU architecture matches."""
        if target.arch_matches_host():
            return MeasureSite(device=None, on_target=True, description=f"ONNX Runtime CPU on this {host}")
        return MeasureSite(
            device=None, on_target=False, description=f"ONNX Runtime CPU on this {host}, standing in for {target.arch}"
        )

    @classmethod
    def quantizable_layers(cls, model: Any, *, spec: ModelSpec, target: Target) -> list[str]:
        from edgekit.quantize import onnxruntime_qdq

        return onnxruntime_qdq.quantizable_layers(model)

    @classmethod
    def layer_blocks(cls, model: Any, *, spec: ModelSpec, target: Target) -> list[tuple[str, ...]]:
        from edgekit.quantize import onnxruntime_qdq

        return onnxruntime_qdq.layer_blocks(model)
