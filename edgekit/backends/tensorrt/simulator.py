"""Stand in for TensorRT where it is absent: run the bundle's own ONNX in ONNX Runtime on the CPU.

At compile time on a machine without TensorRT or an NVIDIA GPU, the pipeline measures accuracy and
records the self-test through this runtime, and labels the result "simulated: ONNX Runtime CPU":

- int8: the bundle's Q/DQ graph exactly as TensorRT will parse it (ONNX Runtime runs it with int8
  kernels; TensorRT may still fuse differently and run unquantized layers in FP16);
- fp16: the graph converted to float16 by ONNX Runtime's converter (inputs and outputs float32), an
  approximation of TensorRT's FP16 mode, which keeps some layers in FP32 where that is faster;
- fp32: the graph itself.

Build time only (the fp16 conversion imports onnx); a device never loads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import Runtime
from edgekit.backends.onnxruntime.runtime import make_session

LABEL = "simulated: ONNX Runtime CPU"


class SimulatedRuntime(Runtime):
    backend = "tensorrt"
    simulated = True

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], *, device: str | None = None) -> None:
        super().__init__(bundle_dir, manifest, device=device)
        self.precision = manifest["precision"]["requested"]
        model = (self.bundle_dir / manifest["backend"]["model_file"]).read_bytes()
        if self.precision == "fp16":
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            model = convert_float_to_float16(onnx.load_from_string(model), keep_io_types=True).SerializeToString()
        self.session = make_session(model)
        self.input_name = self.session.get_inputs()[0].name

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        what = {
            "int8": "the bundle's Q/DQ ONNX",
            "fp16": "the bundle's ONNX converted to float16",
            "fp32": "the bundle's ONNX",
        }[self.precision]
        return {
            "backend": "tensorrt",
            "device": self.device,
            "simulation": f"{LABEL} {ort.__version__}, running {what}; TensorRT is not run here",
        }


__all__ = ["LABEL", "SimulatedRuntime"]
