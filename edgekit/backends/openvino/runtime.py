"""Run an OpenVINO bundle. Imports numpy and openvino only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import Runtime, parse_options
from edgekit.backends.openvino.options import OpenVINOOptions
from edgekit.errors import BundleError, require


def compile_config(options: OpenVINOOptions, precision_hint: str | None) -> dict[str, str]:
    """The OpenVINO properties edgekit compiles with. ``precision_hint`` None keeps the plugin's default."""
    config = {"PERFORMANCE_HINT": options.performance_hint}
    if options.num_threads:
        config["INFERENCE_NUM_THREADS"] = str(options.num_threads)
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    return config


def compile_ir(xml: Path, device: str, config: dict[str, str]):
    """Read and compile an IR on a device; a missing device is a clear error."""
    ov = require("openvino", extra="openvino", purpose="running an OpenVINO bundle")
    core = ov.Core()
    if device not in core.available_devices:
        raise BundleError(
            f"OpenVINO device '{device}' is not available on this machine (available: "
            f"{', '.join(core.available_devices)}); run the bundle on the target device, or load it with "
            "device='CPU' to check it here"
        )
    return core.compile_model(core.read_model(str(xml)), device, config)


def inference_precision(compiled) -> str:
    """What the plugin really computes in (e.g. f32, bf16, f16), as it reports it."""
    try:
        return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    except Exception:  # a plugin without the property (NPU) reports nothing
        return "unknown"


class OpenVINORuntime(Runtime):
    backend = "openvino"

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], *, device: str | None = None) -> None:
        super().__init__(bundle_dir, manifest, device=device)
        target = manifest["target"]
        self.options = parse_options(
            OpenVINOOptions, target.get("backend_options", {}), backend=self.backend, source=target["name"]
        )
        hint = manifest["backend"].get("precision_hint")
        self.compiled = compile_ir(
            self.bundle_dir / manifest["backend"]["model_file"], self.device, compile_config(self.options, hint)
        )
        self.request = self.compiled.create_infer_request()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: batch})
        return self.request.get_output_tensor(0).data.copy()

    def describe(self) -> dict[str, Any]:
        import openvino as ov

        return {
            "backend": self.backend,
            "backend_version": ov.get_version(),
            "device": self.device,
            "inference_precision": inference_precision(self.compiled),
        }
