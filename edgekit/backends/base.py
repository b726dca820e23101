"""The backend contract and its one registry.

A backend has a stable string id and two halves, imported lazily and separately:

- a compiler (build time): ``compile(model, precision, ...) -> CompileResult``, writing model files
  into a staging folder. It may import onnx, NNCF and the vendor's build tools.
- a runtime (run time): ``Runtime(bundle_dir, manifest)`` with ``infer(batch) -> outputs``. It imports
  numpy and the vendor's runtime only, never torch.

Third-party backends register through the ``edgekit.backends`` entry-point group, whose value names a
module that defines ``compiler_module`` and ``runtime_module`` strings.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgekit.errors import UsageError

# id -> (compiler module, runtime module). Greppable: this is every built-in backend.
BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("edgekit.backends.onnxruntime.compiler", "edgekit.backends.onnxruntime.runtime"),
    "openvino": ("edgekit.backends.openvino.compiler", "edgekit.backends.openvino.runtime"),
    "tensorrt": ("edgekit.backends.tensorrt.compiler", "edgekit.backends.tensorrt.runtime"),
}


def _registry() -> dict[str, tuple[str, str]]:
    found = dict(BACKENDS)
    from importlib.metadata import entry_points

    for ep in entry_points(group="edgekit.backends"):
        mod = importlib.import_module(ep.value)
        found.setdefault(ep.name, (mod.compiler_module, mod.runtime_module))
    return found


def _lookup(backend: str, half: int) -> ModuleType:
    registry = BACKENDS if backend in BACKENDS else _registry()
    if backend not in registry:
        raise UsageError(f"backend '{backend}' is not registered; registered: {', '.join(sorted(registry))}")
    return importlib.import_module(registry[backend][half])


def compiler_for(backend: str) -> ModuleType:
    """The build-time module of a backend (it defines ``compile``)."""
    return _lookup(backend, 0)


def runtime_for(backend: str) -> ModuleType:
    """The run-time module of a backend (it defines ``Runtime``)."""
    return _lookup(backend, 1)


@dataclass(kw_only=True)
class CompileResult:
    """What a backend's compiler produced: its files (relative to the staging folder) and provenance."""

    files: list[str]
    model_file: str
    backend_version: str
    inference_precision: str
    precision_hint: str | None = None
    quantization: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    build_plan: dict[str, Any] | None = None  # how the device builds its engine (TensorRT), stored in the manifest


class Runtime(ABC):
    """A loaded model, ready to run batches of preprocessed input."""

    backend: str = ""

    def __init__(self, bundle_dir: Path, manifest: dict[str, Any], *, device: str | None = None) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        self.device = device or manifest["target"]["device"]

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (N, ...) of the model's input; return the first output, (N, classes)."""

    def describe(self) -> dict[str, Any]:
        """What actually runs: backend version, device, the precision the backend reports."""
        return {"backend": self.backend, "device": self.device}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the backend's resources."""


def parse_options(cls: type, options: dict[str, Any], *, backend: str, source: str) -> Any:
    """Build a backend's frozen options dataclass from a target's [backend_options] table."""
    import dataclasses

    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UsageError(
            f"{source}: unknown key 'backend_options.{unknown[0]}' for backend {backend}; "
            f"allowed: {', '.join(sorted(allowed))}"
        )
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    except TypeError as exc:
        raise UsageError(f"{source}: backend_options: {exc}") from exc
