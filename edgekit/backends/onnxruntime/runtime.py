"""Run an ONNX Runtime bundle. Imports numpy and onnxruntime only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import Runtime, parse_options
from edgekit.backends.onnxruntime.options import ONNXRuntimeOptions
from edgekit.errors import require


def make_session(model: str | Path | bytes, options: ONNXRuntimeOptions | None = None):
    """An InferenceSession with all graph optimisations, on the options' providers."""
    ort = require("onnxruntime", extra="onnxruntime", purpose="running an ONNX Runtime bundle")
    options = options or ONNXRuntimeOptions()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if options.intra_op_threads:
        so.intra_op_num_threads = options.intra_op_threads
    available = set(ort.get_available_providers())
    providers = [p for p in options.providers if p in available]
    if "CPUExecutionProvider" not in providers:
        providers.append("CPUExecutionProvider")
    model_arg = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(model_arg, sess_options=so, providers=providers)


class ONNXRuntimeRuntime(Runtime):
    backend = "onnxruntime"

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], *, device: str | None = None) -> None:
        super().__init__(bundle_dir, manifest, device=device)
        target = manifest["target"]
        self.options = parse_options(
            ONNXRuntimeOptions, target.get("backend_options", {}), backend=self.backend, source=target["name"]
        )
        self.session = make_session(self.bundle_dir / manifest["backend"]["model_file"], self.options)
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            "backend": self.backend,
            "backend_version": ort.__version__,
            "device": self.device,
            "providers": self.session.get_providers(),
        }
