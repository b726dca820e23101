"""PyTorch frontends: TorchScript files, torch.export programs (.pt2) and nn.Modules, exported to ONNX.

The only module in edgekit that imports torch. Pickled checkpoints (.pt/.pth written by torch.save of a
module or state dict) are refused: unpickling them runs arbitrary code.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from edgekit.errors import ModelError, UsageError, require

OPSET = 17

PICKLE_REFUSAL = (
    "'{path}' is a pickled PyTorch checkpoint; edgekit does not load it, because unpickling runs "
    "arbitrary code. Export the model first: torch.jit.save(torch.jit.script(model), 'model.ts'), "
    "torch.export.save(torch.export.export(model, (x,)), 'model.pt2'), or "
    "torch.onnx.export(model, (x,), 'model.onnx'); or pass the nn.Module to edgekit.compile_model()"
)


def sniff(path: Path) -> str:
    """'torchscript', 'exported_program' or 'pickle', from the file's bytes (never by unpickling)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head[:2] == b"\x80\x02" or head[:1] == b"\x80":
        return "pickle"
    if not zipfile.is_zipfile(path):
        return "unknown"
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    if any(n.endswith(".archive_format") or ("/models/" in n and n.endswith(".json")) for n in names):
        return "exported_program"
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("data.pkl") for n in names):
        return "pickle"
    return "unknown"


def _torch():
    return require("torch", extra="torch", purpose="reading a PyTorch model")


def _dummy(shape: tuple[int, ...] | None, source: str):
    torch = _torch()
    if not shape:
        raise UsageError(
            f"{source} does not record its input shape; give it with --input-shape 1,3,H,W "
            "(or input.shape in the spec file)"
        )
    return torch.zeros(tuple(max(1, d) for d in shape))


def module_to_onnx(module: Any, shape: tuple[int, ...] | None, out: Path, *, source: str = "the module") -> Path:
    """Export an nn.Module or ScriptModule to ONNX with a dynamic batch dimension."""
    torch = _torch()
    module.eval()
    dummy = _dummy(shape, source)
    try:
        with torch.no_grad():
            module(dummy)
    except Exception as exc:
        raise UsageError(
            f"{source} does not run on an input of shape {list(dummy.shape)} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); fix --input-shape"
        ) from None
    try:
        torch.onnx.export(
            module,
            (dummy,),
            str(out),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    except Exception as exc:
        raise ModelError(f"{source} could not be exported to ONNX: {str(exc).splitlines()[0]}") from None
    return out


def exported_program_to_onnx(path: Path, out: Path) -> Path:
    """Export a torch.export program file (.pt2) to ONNX, keeping its dynamic dimensions."""
    torch = _torch()
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise ModelError(
            f"'{path}' is not a loadable torch.export program ({type(exc).__name__}); save it again "
            "with torch.export.save"
        ) from None
    try:
        onnx_program = torch.onnx.export(program, (), dynamo=True, opset_version=max(OPSET, 18), verbose=False)
        onnx_program.save(str(out))
    except Exception as exc:
        raise ModelError(f"'{path}' could not be exported to ONNX: {str(exc).splitlines()[0]}") from None
    return out


def torch_file_to_onnx(path: Path, shape: tuple[int, ...] | None, out: Path) -> Path:
    kind = sniff(path)
    if kind == "pickle":
        raise UsageError(PICKLE_REFUSAL.format(path=path))
    if kind == "exported_program":
        return exported_program_to_onnx(path, out)
    if kind == "torchscript":
        torch = _torch()
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ModelError(
                f"'{path}' is not a loadable TorchScript file ({type(exc).__name__}); save it again"
            ) from None
        return module_to_onnx(module, shape, out, source=f"'{path}'")
    raise ModelError(
        f"'{path}' is neither ONNX, TorchScript nor a torch.export program; export the model to one of these"
    )
