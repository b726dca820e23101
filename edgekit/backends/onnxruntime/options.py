"""Typed options of the ONNX Runtime backend, from a target file's [backend_options]."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class ONNXRuntimeOptions:
    # Threads for one inference; 0 lets ONNX Runtime pick (one per physical core).
    intra_op_threads: int = 0
    # Execution providers in order of preference; CPUExecutionProvider is always appended.
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
