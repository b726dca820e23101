"""The TensorRT backend (NVIDIA Jetson): what edgekit asks of it.

The bundle carries ONNX and a build plan; the device builds the engine (runtime.py). Where TensorRT or an
NVIDIA GPU is absent (here, CI), ``simulator()`` runs the bundle's ONNX in ONNX Runtime on the CPU.
Light to import: nothing here imports TensorRT, onnx or the compiler until a method needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, final

from edgekit.backends.base import Backend, CompileInput, CompileResult, Log, MeasureSite, Runtime
from edgekit.backends.tensorrt.options import TensorRTOptions
from edgekit.spec import ModelSpec
from edgekit.targets import Target


@final
class TensorRTBackend(Backend):
    id = "tensorrt"
    options_type = TensorRTOptions
    higher_precision = "fp16"
    calibration_recipe = "ort-qdq-s8s8-symmetric"
    packages = ("tensorrt",)
    builds_engines = True

    @classmethod
    def compile(cls, job: CompileInput) -> CompileResult:
        from edgekit.backends.tensorrt import compiler

        return compiler.compile(job)

    @classmethod
    def runtime_class(cls) -> type[Runtime]:
        from edgekit.backends.tensorrt.runtime import TensorRTRuntime

        return TensorRTRuntime

    @classmethod
    def simulator(cls) -> type[Runtime]:
        from edgekit.backends.tensorrt.simulator import SimulatedRuntime

        return SimulatedRuntime

    @classmethod
    def measure_here(cls, target: Target, host: str, log: Log) -> MeasureSite:
        """The GPU where TensorRT and one are present; else the simulator (ONNX Runtime on the CPU)."""
        from edgekit.backends.tensorrt.runtime import gpu_available
        from edgekit.backends.tensorrt.simulator import LABEL

        if gpu_available():
            return MeasureSite(
                device=None, on_target=True, description=f"TensorRT on this machine's NVIDIA GPU ({host})"
            )
        log("TensorRT or an NVIDIA GPU is absent here: the bundle's ONNX runs in ONNX Runtime on the CPU instead")
        return MeasureSite(device=None, on_target=False, description=LABEL)

    @classmethod
    def quantizable_layers(cls, model: Any, *, spec: ModelSpec, target: Target) -> list[str]:
        """ONNX Runtime's quantizer writes the Q/DQ graph, so its quantizable nodes are the layers."""
        from edgekit.quantize import onnxruntime_qdq

        return onnxruntime_qdq.quantizable_layers(model)

    @classmethod
    def layer_blocks(cls, model: Any, *, spec: ModelSpec, target: Target) -> list[tuple[str, ...]]:
        from edgekit.quantize import onnxruntime_qdq

        return onnxruntime_qdq.layer_blocks(model)

    @classmethod
    def named_files(cls, manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The build plan's ONNX and calibration cache, and the INT8 calibration cache."""
        named = []
        plan = manifest["backend"].get("build_plan")
        if plan:
            named.append(("backend.build_plan.onnx", plan["onnx"]))
            if plan.get("calibration_cache"):
                named.append(("backend.build_plan.calibration_cache", plan["calibration_cache"]))
        cache = (manifest.get("quantization") or {}).get("calibration_cache")
        if cache:
            named.append(("quantization.calibration_cache.file", cache["file"]))
        return named

    @classmethod
    def simulation_note(cls, precision: str) -> str:
        qdq = " with its INT8 Q/DQ nodes" if precision == "int8" else ""
        return f" (the bundle's ONNX graph{qdq}, run here because the GPU is absent)"

    @classmethod
    def build_engine(
        cls, bundle_dir: Path, manifest: dict[str, Any], *, cache_dir: str | Path | None, rebuild: bool
    ) -> Runtime:
        from edgekit.backends.tensorrt.runtime import TensorRTRuntime

        return TensorRTRuntime(bundle_dir, manifest, cache_dir=cache_dir, rebuild=rebuild)
