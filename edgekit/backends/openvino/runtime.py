"""Run an OpenVINO bundle. Imports numpy and openvino only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import Runtime, parse_options
from edgekit.backends.openvino.options import OpenVINOOptions
from edgekit.errors import BundleError, require
from edgekit.runtime.graph_front import FrameRunner, Front

# The runtime settings (edgekit.runtime.settings) this runtime applies, and the property each one sets.
SETTINGS_PROPERTIES = {
    "threads": "INFERENCE_NUM_THREADS",
    "streams": "NUM_STREAMS",
    "performance_hint": "PERFORMANCE_HINT",
}


def compile_config(
    options: OpenVINOOptions, precision_hint: str | None, settings: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The OpenVINO properties edgekit compiles with. ``precision_hint`` None keeps the plugin's default; the
    runtime ``settings`` (``threads``, ``streams``, ``performance_hint``) override the target's options."""
    config = {"PERFORMANCE_HINT": options.performance_hint}
    if options.num_threads:
        config["INFERENCE_NUM_THREADS"] = str(options.num_threads)
    if precision_hint:
        config["INFERENCE_PRECISION_HINT"] = precision_hint
    for key, prop in SETTINGS_PROPERTIES.items():
        if (settings or {}).get(key) is not None:
            config[prop] = str(settings[key])
    return config


def settings_candidates(cores: int) -> list[dict[str, Any]]:
    """The default (the target's hint, LATENCY unless it says otherwise), one thread, every core, and the
    THROUGHPUT hint (streams sharing the cores)."""
    found: list[dict[str, Any]] = [{}]
    for threads in (1, cores):
        if {"threads": threads} not in found:
            found.append({"threads": threads})
    found.append({"performance_hint": "THROUGHPUT"})
    return found


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
    settings_keys = tuple(SETTINGS_PROPERTIES)

    def __init__(
        self,
        bundle_dir: Path,
        manifest: dict[str, Any],
        *,
        device: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(bundle_dir, manifest, device=device, settings=settings)
        target = manifest["target"]
        self.options = parse_options(
            OpenVINOOptions, target.get("backend_options", {}), backend=self.backend, source=target["name"]
        )
        hint = manifest["backend"].get("precision_hint")
        self.compiled = compile_ir(
            self.bundle_dir / manifest["backend"]["model_file"],
            self.device,
            compile_config(self.options, hint, self.settings),
        )
        self.request = self.compiled.create_infer_request()

    @classmethod
    def settings_candidates(cls, cores: int) -> list[dict[str, Any]]:
        return settings_candidates(cores)

    def applied_settings(self) -> dict[str, Any]:
        """The compiled model's properties, read back from the plugin."""
        out: dict[str, Any] = {}
        for key, prop in SETTINGS_PROPERTIES.items():
            try:
                value = self.compiled.get_property(prop)
            except Exception:  # a plugin without the property
                continue
            out[key] = str(value).rsplit(".", 1)[-1] if key == "performance_hint" else int(value)
        return out

    def infer(self, batch: np.ndarray) -> np.ndarray:
        self.request.infer({0: batch})
        return self.request.get_output_tensor(0).data.copy()

    def frame_runner(self, front: Front) -> FrameRunner:
        """Frames in, outputs out: the bundle's model with PrePostProcessor steps in front of it
        (edgekit.runtime.graph_front), compiled a second time with the same properties as the first. Frames
        come in BGR; RGB frames are flipped on the host (a copy of the model-size frame)."""
        import openvino as ov

        from edgekit.runtime.graph_front import OPENVINO_FRAME_ORDER, openvino_front

        core = ov.Core()
        model = openvino_front(core.read_model(str(self.bundle_dir / self.manifest["backend"]["model_file"])), front)
        config = compile_config(self.options, self.manifest["backend"].get("precision_hint"), self.settings)
        self.frame_compiled = core.compile_model(model, self.device, config)
        request = self.frame_compiled.create_infer_request()

        def infer_frames(frames: np.ndarray, color_order: str) -> np.ndarray:
            if color_order != OPENVINO_FRAME_ORDER:
                frames = np.ascontiguousarray(frames[..., ::-1])
            request.infer({0: frames})
            return request.get_output_tensor(0).data.copy()

        return infer_frames

    def describe(self) -> dict[str, Any]:
        import openvino as ov

        return {
            "backend": self.backend,
            "backend_version": ov.get_version(),
            "device": self.device,
            "inference_precision": inference_precision(self.compiled),
        }
