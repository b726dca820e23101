"""Run an ONNX Runtime bundle. Imports numpy and onnxruntime only."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import Runtime, parse_options
from edgekit.backends.onnxruntime.options import ONNXRuntimeOptions
from edgekit.errors import require
from edgekit.runtime.graph_front import FrameRunner, Front

# The runtime settings (edgekit.runtime.settings) this runtime applies: intra_op_num_threads, and
# inter_op_num_threads, which only the parallel execution mode uses (so setting it selects that mode).
SETTINGS_KEYS = ("threads", "inter_op_threads")


def session_options(ort, options: ONNXRuntimeOptions, settings: Mapping[str, Any] | None = None):
    """The SessionOptions edgekit runs with: all graph optimisations; the target's intra_op_threads, which the
    runtime ``settings`` (``threads``, ``inter_op_threads``) override."""
    settings = settings or {}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    threads = settings.get("threads") or options.intra_op_threads
    if threads:
        so.intra_op_num_threads = int(threads)
    if settings.get("inter_op_threads"):
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        so.inter_op_num_threads = int(settings["inter_op_threads"])
    return so


def settings_candidates(cores: int) -> list[dict[str, Any]]:
    """The default, one thread, every core, half the cores (if that is another count), and, with two cores
    or more, the parallel executor with two inter-op threads."""
    found: list[dict[str, Any]] = [{}]
    for threads in (1, cores, max(1, cores // 2)):
        if {"threads": threads} not in found:
            found.append({"threads": threads})
    if cores >= 2:
        found.append({"threads": max(1, cores // 2), "inter_op_threads": 2})
    return found


def make_session(
    model: str | Path | bytes, options: ONNXRuntimeOptions | None = None, *, settings: Mapping[str, Any] | None = None
):
    """An InferenceSession with all graph optimisations, on the options' providers, with the runtime settings."""
    ort = require("onnxruntime", extra="onnxruntime", purpose="running an ONNX Runtime bundle")
    options = options or ONNXRuntimeOptions()
    so = session_options(ort, options, settings)
    available = set(ort.get_available_providers())
    providers = [p for p in options.providers if p in available]
    if "CPUExecutionProvider" not in providers:
        providers.append("CPUExecutionProvider")
    model_arg = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(model_arg, sess_options=so, providers=providers)


class ONNXRuntimeRuntime(Runtime):
    backend = "onnxruntime"
    settings_keys = SETTINGS_KEYS

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
            ONNXRuntimeOptions, target.get("backend_options", {}), backend=self.backend, source=target["name"]
        )
        self.session = make_session(
            self.bundle_dir / manifest["backend"]["model_file"], self.options, settings=self.settings
        )
        self.input_name = self.session.get_inputs()[0].name

    @classmethod
    def settings_candidates(cls, cores: int) -> list[dict[str, Any]]:
        return settings_candidates(cores)

    def applied_settings(self) -> dict[str, Any]:
        """The session's own options, read back (0: ONNX Runtime's default)."""
        so = self.session.get_session_options()
        return {"threads": so.intra_op_num_threads, "inter_op_threads": so.inter_op_num_threads,
                "execution_mode": str(so.execution_mode).rsplit(".", 1)[-1]}  # fmt: skip

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]

    def frame_runner(self, front: Front) -> FrameRunner:
        """Frames in, outputs out: a second session of the bundle's model with the preprocessing composed in
        front of it (edgekit.runtime.graph_front), with the same options and settings as the first."""
        from edgekit.runtime.graph_front import FRAME_INPUT, ORDER_INPUT, onnx_front

        model = (self.bundle_dir / self.manifest["backend"]["model_file"]).read_bytes()
        self.frame_session = make_session(onnx_front(model, front), self.options, settings=self.settings)
        run = self.frame_session.run

        def infer_frames(frames: np.ndarray, color_order: str) -> np.ndarray:
            return run(None, {FRAME_INPUT: frames, ORDER_INPUT: front.order(color_order)})[0]

        return infer_frames

    def describe(self) -> dict[str, Any]:
        import onnxruntime as ort

        return {
            "backend": self.backend,
            "backend_version": ort.__version__,
            "device": self.device,
            "providers": self.session.get_providers(),
        }
