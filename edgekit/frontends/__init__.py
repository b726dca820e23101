"""Frontends: turn a user's model (ONNX, TorchScript, .pt2, nn.Module) into a checked ONNX model."""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekit.errors import ModelError, UsageError
from edgekit.frontends.onnx import ends_in_softmax, input_info, load_onnx, require_file

ONNX_SUFFIXES = (".onnx",)
TORCH_SUFFIXES = (".ts", ".pt", ".pth", ".pt2", ".jit", ".torchscript")


@dataclass
class LoadedModel:
    """A model as ONNX, with what the model itself says about its input."""

    onnx: Any  # onnx.ModelProto
    input: dict[str, Any]
    source_format: str
    source_name: str
    source_sha256: str
    softmax_output: bool


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def load_model(
    model: Any, *, input_shape: tuple[int, ...] | None = None, trust_model_code: bool = False
) -> LoadedModel:
    """Load a model path or nn.Module; return it as a checked ONNX model.

    ``input_shape`` is needed for TorchScript and nn.Module inputs, which do not record their shape.
    A TorchScript file, or a .pt2 carrying pickled data or anything else its loader would execute, is
    refused (UsageError) unless ``trust_model_code`` is true; pickled checkpoints are refused always.
    """
    if isinstance(model, (str, Path)):
        path = Path(model)
        require_file(path)
        if path.stat().st_size == 0:
            raise ModelError(f"model file '{path}' is empty; export the model again")
        suffix = path.suffix.lower()
        if suffix in ONNX_SUFFIXES or _looks_like_onnx(path):
            proto = load_onnx(path)
            return _loaded(proto, "onnx", path.name, _sha256(path))
        if suffix in TORCH_SUFFIXES or suffix == "":
            return _from_torch_file(path, input_shape, trust_model_code)
        raise UsageError(
            f"'{path}' has an unknown model extension '{suffix}'; pass .onnx, TorchScript (.ts/.pt) or .pt2"
        )
    if type(model).__module__.startswith("torch") or hasattr(model, "state_dict"):
        return _from_module(model, input_shape)
    raise UsageError(f"cannot compile a {type(model).__name__}; pass a model file path or a torch nn.Module")


def _looks_like_onnx(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(2)
    return head[:1] == b"\x08"  # protobuf field 1 (ir_version), varint


def _loaded(proto: Any, fmt: str, name: str, sha: str) -> LoadedModel:
    return LoadedModel(proto, input_info(proto), fmt, name, sha, ends_in_softmax(proto))


def _from_torch_file(path: Path, input_shape: tuple[int, ...] | None, trust_model_code: bool) -> LoadedModel:
    from edgekit.frontends import torch as torch_frontend

    kind = torch_frontend.sniff(path)
    with tempfile.TemporaryDirectory(prefix="edgekit-export-") as tmp:
        out = torch_frontend.torch_file_to_onnx(
            path, input_shape, Path(tmp) / "model.onnx", trust_model_code=trust_model_code
        )
        proto = load_onnx(out)
    return _loaded(proto, kind, path.name, _sha256(path))


def _from_module(module: Any, input_shape: tuple[int, ...] | None) -> LoadedModel:
    from edgekit.frontends import torch as torch_frontend

    with tempfile.TemporaryDirectory(prefix="edgekit-export-") as tmp:
        out = torch_frontend.module_to_onnx(module, input_shape, Path(tmp) / "model.onnx", source=type(module).__name__)
        proto = load_onnx(out)
        sha = _sha256(out)
    return _loaded(proto, "torch.nn.Module", type(module).__name__, sha)


__all__ = ["LoadedModel", "load_model"]
