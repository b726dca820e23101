"""The fake backend: it stores the ONNX model as is (fp32) and runs it with ONNX Runtime on the CPU.

Only edgekit's public contract is used (``edgekit.backends.base``), as an installed plugin would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, final

from edgekit.backends.base import Backend, CompileInput, CompileResult, Log, MeasureSite, Runtime
from edgekit.targets import Target

MODEL_FILE = "model.onnx"


@dataclass(frozen=True, kw_only=True)
class FakeOptions:
    # Threads for one inference; 0 lets ONNX Runtime pick.
    threads: int = 0


@final
class FakeBackend(Backend):
    id = "fake"
    options_type = FakeOptions
    packages = ("onnxruntime",)

    @classmethod
    def compile(cls, job: CompileInput) -> CompileResult:
        import onnx
        import onnxruntime

        if job.precision != "fp32":
            raise ValueError(f"the fake backend compiles fp32 only, not {job.precision}")
        onnx.save(job.model, str(job.staging / MODEL_FILE))
        return CompileResult(
            files=[MODEL_FILE],
            model_file=MODEL_FILE,
            backend_version=f"fake 0.1 (ONNX Runtime {onnxruntime.__version__})",
            inference_precision="fp32",
        )

    @classmethod
    def runtime_class(cls) -> type[Runtime]:
        from edgekit_fake_backend.runtime import FakeRuntime

        return FakeRuntime

    @classmethod
    def measure_here(cls, target: Target, host: str, log: Log) -> MeasureSite:
        return MeasureSite(device=None, on_target=True, description=f"the fake backend on this {host}")

    @classmethod
    def quantizable_layers(cls, model: Any, *, spec: Any, target: Target) -> list[str]:
        return []
