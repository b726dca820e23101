"""Load an ONNX model (with external data), check it, and read its input spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekit.errors import ModelError, UsageError, require

# Domains ONNX Runtime and OpenVINO both read: the standard ones and ONNX Runtime's contrib ops.
KNOWN_DOMAINS = ("", "ai.onnx", "ai.onnx.ml", "com.microsoft")
_DTYPES = {1: "float32", 10: "float16", 2: "uint8", 3: "int8"}


def load_onnx(path: Path) -> Any:
    """Read an ONNX file and its external-data files; raise ModelError if it is not a valid model."""
    onnx = require("onnx", extra="compile", purpose="compiling a model")
    if path.stat().st_size == 0:
        raise ModelError(f"model file '{path}' is empty; export the model again")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ModelError(f"'{path}' is not a readable ONNX model ({type(exc).__name__}); export it again") from exc
    _load_external_data(model, path)
    if not model.graph.node:
        raise ModelError(f"'{path}' has no graph nodes; it is not a usable ONNX model, export it again")
    check_ops(model, source=str(path))
    try:
        onnx.checker.check_model(model, full_check=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"'{path}' fails the ONNX checker: {first}; export the model again") from exc
    return model


def _load_external_data(model: Any, path: Path) -> None:
    """Load tensors stored in external-data files next to the model, naming any file that is missing."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    locations = set()
    for tensor in _all_tensors(model):
        if uses_external_data(tensor):
            info = {e.key: e.value for e in tensor.external_data}
            locations.add(info.get("location", ""))
    folder = path.parent.resolve()
    for location in sorted(locations):
        target = (folder / location).resolve()
        if Path(location).is_absolute() or ".." in Path(location).parts or not target.is_relative_to(folder):
            raise ModelError(
                f"'{path}' refers to external data outside its folder ({location}); edgekit reads only data files "
                "in the model's own folder: move the data file there and save the model again with a plain file name"
            )
        if not (path.parent / location).is_file():
            raise ModelError(
                f"'{path}' refers to an external-data file that is missing ({location}); keep the .onnx file "
                "and its data files in the same folder"
            )
    if locations:
        try:
            load_external_data_for_model(model, str(path.parent))
        except Exception as exc:
            raise ModelError(
                f"'{path}': its external data cannot be read ({type(exc).__name__}); export it again"
            ) from exc


def _all_tensors(model: Any) -> list[Any]:
    """Every TensorProto onnx.load would read external data for: initializers and attribute tensors, in
    subgraphs and functions too."""
    tensors: list[Any] = []
    graphs = [model.graph]
    nodes = [n for f in model.functions for n in f.node]
    while graphs or nodes:
        if graphs:
            graph = graphs.pop()
            tensors.extend(graph.initializer)
            nodes.extend(graph.node)
            continue
        for attr in nodes.pop().attribute:
            if attr.HasField("t"):
                tensors.append(attr.t)
            tensors.extend(attr.tensors)
            if attr.HasField("g"):
                graphs.append(attr.g)
            graphs.extend(attr.graphs)
    return tensors


def check_ops(model: Any, *, source: str) -> None:
    """Every node must be a standard ONNX op (or an ONNX Runtime contrib op) known to this onnx version."""
    import onnx.defs

    opset = {imp.domain or "": imp.version for imp in model.opset_import}
    unsupported = []
    for node in model.graph.node:
        domain = node.domain or ""
        if domain not in KNOWN_DOMAINS:
            unsupported.append(f"{domain}::{node.op_type}")
        elif domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type, ""):
            unsupported.append(node.op_type)
        elif domain in ("", "ai.onnx"):
            try:
                onnx.defs.get_schema(node.op_type, opset.get(domain, opset.get("", 1)), "")
            except Exception:
                unsupported.append(f"{node.op_type} (opset {opset.get(domain)})")
    if unsupported:
        names = ", ".join(sorted(set(unsupported)))
        raise ModelError(
            f"'{source}' uses ops that edgekit's backends cannot run: {names}; replace them with standard "
            "ONNX ops when exporting (or export with a different opset)"
        )


def input_info(model: Any) -> dict[str, Any]:
    """The first graph input that is not an initializer: name, shape (-1 for symbolic dims), layout, dtype.

    Not yet validated: spatial sizes may be unknown until the user's flags fill them in.
    """
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ModelError(f"the model has {len(inputs)} inputs ({names}); edgekit compiles single-image models")
    tensor = inputs[0].type.tensor_type
    dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in tensor.shape.dim)
    dtype = _DTYPES.get(tensor.elem_type)
    if dtype != "float32":
        raise ModelError(f"the model's input '{inputs[0].name}' is {dtype or tensor.elem_type}; edgekit needs float32")
    if len(dims) != 4:
        raise ModelError(f"the model's input '{inputs[0].name}' has shape {list(dims)}; edgekit needs a 4-D image")
    layout = "NHWC" if dims[3] in (1, 3) and dims[1] not in (1, 3) else "NCHW"
    return {"name": inputs[0].name, "shape": dims, "layout": layout, "dtype": "float32"}


def ends_in_softmax(model: Any) -> bool:
    output = model.graph.output[0].name
    return any(n.op_type == "Softmax" and output in n.output for n in model.graph.node)


def fix_batch(model: Any, batch: int) -> Any:
    """Make the input's (and outputs') batch dimension static (for static-shape devices such as NPUs)."""
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if dims and not (dims[0].HasField("dim_value") and dims[0].dim_value > 0):
            dims[0].Clear()
            dims[0].dim_value = batch
    return model


def require_file(path: Path) -> None:
    if not path.exists():
        raise UsageError(f"model file '{path}' does not exist; check the path")
    if path.is_dir():
        raise UsageError(f"'{path}' is a folder; pass the model file (.onnx, .ts/.pt TorchScript, .pt2)")
