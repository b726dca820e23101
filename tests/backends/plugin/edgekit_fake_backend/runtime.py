"""Run a fake-backend bundle: its ONNX in ONNX Runtime on the CPU. numpy and onnxruntime only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import Runtime


class FakeRuntime(Runtime):
    backend = "fake"

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], *, device: str | None = None) -> None:
        import onnxruntime as ort

        from edgekit_fake_backend.backend import FakeBackend

        super().__init__(bundle_dir, manifest, device=device)
        target = manifest["target"]
        self.options = FakeBackend.parse_options(target.get("backend_options", {}), source=target["name"])
        so = ort.SessionOptions()
        if self.options.threads:
            so.intra_op_num_threads = self.options.threads
        model = str(self.bundle_dir / manifest["backend"]["model_file"])
        self.session = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "device": self.device, "runs": "ONNX Runtime CPU"}
