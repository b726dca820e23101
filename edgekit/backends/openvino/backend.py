"""The OpenVINO backend (CPU, GPU and NPU plugins): what edgekit asks of it.

Light to import: the compiler, the runtime and openvino itself are imported inside the methods that use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, final

from edgekit.backends.base import Backend, CompileInput, CompileResult, Log, MeasureSite, Runtime
from edgekit.backends.openvino.options import OpenVINOOptions
from edgekit.errors import require
from edgekit.spec import ModelSpec
from edgekit.targets import Target


@final
class OpenVINOBackend(Backend):
    id = "openvino"
    options_type = OpenVINOOptions
    higher_precision = "fp32 (f32 inference hint)"
    calibration_recipe = "nncf-ptq-performance-full-bias-correction"
    packages = ("openvino", "nncf")

    @classmethod
    def compile(cls, job: CompileInput) -> CompileResult:
        from edgekit.backends.openvino import compiler

        return compiler.compile(job)

    @classmethod
    def runtime_class(cls) -> type[Runtime]:
        from edgekit.backends.openvino.runtime import OpenVINORuntime

        return OpenVINORuntime

    @classmethod
    def measure_here(cls, target: Target, host: str, log: Log) -> MeasureSite:
        """The target's plugin where its device is present; else the CPU plugin stands in."""
        ov = require("openvino", extra="compile", purpose="compiling for OpenVINO")
        if target.device in ov.Core().available_devices:
            return MeasureSite(device=None, on_target=True, description=f"OpenVINO {target.device} on this {host}")
        log(f"OpenVINO device {target.device} is absent here: accuracy is measured on the CPU plugin instead")
        return MeasureSite(
            device="CPU", on_target=False, description=f"OpenVINO CPU on this {host}, standing in for {target.device}"
        )

    @classmethod
    def quantizable_layers(cls, model: Any, *, spec: ModelSpec, target: Target) -> list[str]:
        from edgekit.backends.openvino import compiler

        return compiler.quantizable_layers(model, target)

    @classmethod
    def layer_blocks(cls, model: Any, *, spec: ModelSpec, target: Target) -> list[tuple[str, ...]]:
        from edgekit.backends.openvino import compiler

        return compiler.layer_blocks(model, target)

    @classmethod
    def named_files(cls, manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
        """An IR's weights: model.bin beside model.xml."""
        model_file = manifest["backend"]["model_file"]
        if model_file.endswith(".xml"):
            return [("backend.model_file (its weights beside it)", model_file[: -len(".xml")] + ".bin")]
        return []
