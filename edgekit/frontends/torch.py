"""PyTorch frontends: TorchScript files, torch.export programs (.pt2) and nn.Modules, exported to ONNX.

The only module in edgekit that imports torch. Pickled checkpoints (.pt/.pth written by torch.save of a
module or state dict) are refused: unpickling them runs arbitrary code. A file whose loader would run code
stored in it is refused unless the caller trusts it (``--trust-model-code``): every TorchScript archive
(torch.jit.load compiles and runs the TorchScript in its code/ folder, e.g. a ``__setstate__``), and a
.pt2 that :func:`exported_program_finding` finds anything executable in, by reading its zip members as
bytes and JSON (never unpickling, never importing torch).
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

from edgekit.errors import ModelError, UsageError, require

OPSET = 17

PICKLE_REFUSAL = (
    "'{path}' is a pickled PyTorch checkpoint; edgekit does not load it, because unpickling runs "
    "arbitrary code. Export the model first: torch.onnx.export(model, (x,), 'model.onnx'), or "
    "ep = torch.export.export(model, (x,)); ep.example_inputs = None; torch.export.save(ep, 'model.pt2'); "
    "or pass the nn.Module to edgekit.compile_model()"
)


TRUST_FIX = "pass --trust-model-code if you trust who made this file, or export to ONNX"

# Node targets torch.export.load may resolve (it walks getattr from `torch`, `_operator` or `math`, so a
# target such as "torch.os.system" would be os.system): registered ATen/prims operators and a few
# torch-defined higher-order ops, the arithmetic of symbolic shapes, and nothing else.
_OP_TARGET = re.compile(r"torch\.ops\.(aten|prims)\.[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?\Z")
_HIGHER_ORDER = {"cond", "while_loop", "map_impl", "wrap_with_set_grad_enabled", "wrap_with_autocast"}
_SYM_TARGET = re.compile(r"(torch\.(sym_[a-z_]+|_sym_sqrt)|math\.[a-z][a-z0-9_]*)\Z")
_OPERATOR = {
    "getitem", "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "eq", "ne",
    "lt", "le", "gt", "ge", "and_", "or_", "xor", "not_", "invert", "lshift", "rshift", "truth",
}  # fmt: skip
_DENIED_OPS = {"from_file", "save"}  # ATen ops that open files (from_file(shared=True) writes)
# Symbolic-shape expressions are parsed with sympy.sympify, which evals them: allow only sympy's
# constructors, torch's shape functions, symbol names ('s77'), numbers and operators.
_EXPR_TOKEN = re.compile(
    r"\s+|(?P<num>\d+(\.\d+)?(e[+-]?\d+)?)|(?P<str>'[a-z]+[0-9]*')|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|\*\*|//|==|!=|<=|>=|[-+*/%()<>,=&|~]"
)
_EXPR_NAMES = {
    "Symbol", "Integer", "Float", "Rational", "True", "False", "positive", "negative", "integer", "real",
    "nonnegative", "nonpositive", "finite", "oo", "zoo", "nan", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "And", "Or", "Not", "floor", "ceiling", "sqrt", "Mul", "Add", "Pow", "Mod", "Piecewise",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt", "CeilDiv",
    "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv", "TruncToFloat", "TruncToInt",
    "IsNonOverlappingAndDenseIndicator", "RoundToInt", "RoundDecimal", "ToFloat", "Identity", "OpaqueUnaryFn_sqrt",
    "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or",
}  # fmt: skip
_SYMBOL_NAME = re.compile(r"[a-z]+[0-9]+\Z")
_PT2_MEMBERS = re.compile(
    r"(archive_format|archive_version|byteorder|version|\.data/version|\.data/serialization_id"
    r"|models/[A-Za-z0-9_.-]+\.json|extra/.+"
    r"|data/weights/[A-Za-z0-9_.-]+_weights_config\.json|data/constants/[A-Za-z0-9_.-]+_constants_config\.json"
    r"|data/weights/weight_\d+|data/constants/tensor_\d+|data/sample_inputs/[A-Za-z0-9_.-]+\.pt)\Z"
)


def trust_refusal(path: Path, finding: str) -> str:
    """The one-line refusal for a model file whose loader would run code found in it."""
    return f"'{path}' is not loaded, because loading it would run code stored in the file: {finding}; {TRUST_FIX}"


def _pickled(data: bytes) -> str | None:
    """How ``data`` is pickled (a raw pickle, or a torch.save zip holding data.pkl), from its bytes alone."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return "pickled data"
    if data[:4] == b"PK\x03\x04":
        return "a nested zip (torch.save writes pickled data.pkl in one)"
    return None


def _expr_finding(expr: str) -> str | None:
    pos = 0
    while pos < len(expr):
        match = _EXPR_TOKEN.match(expr, pos)
        if not match or match.end() == pos:
            return f"the shape expression {expr[:60]!r} is not plain arithmetic (torch.export.load evals it)"
        name = match.group("name")
        if name and name not in _EXPR_NAMES and not _SYMBOL_NAME.match(name):
            return f"the shape expression {expr[:60]!r} calls '{name}' (torch.export.load evals it)"
        pos = match.end()
    return None


def _target_finding(target: str) -> str | None:
    name = target.split(".")
    if "__" in target:
        return f"the graph calls '{target[:80]}', which is not a torch operator"
    if _OP_TARGET.match(target):
        op = target.split(".")[3]
        return None if op not in _DENIED_OPS else f"the graph calls '{target}', which opens files"
    if len(name) == 4 and target.startswith("torch.ops.higher_order.") and name[3] in _HIGHER_ORDER:
        return None
    if target.startswith("_operator.") and target.split(".", 1)[1] in _OPERATOR:
        return None
    if _SYM_TARGET.match(target):
        return None
    return f"the graph calls '{target[:80]}', which is not a torch operator (torch.export.load resolves it to Python)"


def _graph_finding(doc: Any) -> str | None:
    """Walk a models/*.json document: every node target and every shape expression must be inert."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "target" and isinstance(value, str):
                    finding = _target_finding(value)
                elif key == "target":
                    finding = "a graph node has a target that is not a name"
                elif key == "expr_str":
                    finding = _expr_finding(value) if isinstance(value, str) else "a shape expression is not text"
                else:
                    finding = None
                    stack.append(value)
                if finding:
                    return finding
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _payload_finding(member: str, doc: Any, kind: str) -> tuple[str | None, set[str]]:
    """A weights/constants config: the raw tensor files it names, or a finding for any pickled entry."""
    raw: set[str] = set()
    entries = doc.get("config") if isinstance(doc, dict) else None
    if not isinstance(entries, dict):
        return f"member '{member}' is not a {kind} config", raw
    prefix = "weight_" if kind == "weights" else "tensor_"
    for fqn, meta in entries.items():
        path_name = meta.get("path_name") if isinstance(meta, dict) else None
        if not isinstance(path_name, str) or not re.fullmatch(prefix + r"\d+", path_name):
            what = "a pickled object" if isinstance(path_name, str) and "obj_" in path_name else "not a raw tensor"
            return f"{kind} entry '{fqn}' in '{member}' is {what} (torch.export.load unpickles it)", raw
        if meta.get("use_pickle") is not False:
            return (
                f"{kind} entry '{fqn}' in '{member}' is stored pickled (torch.export.load reads it with "
                "torch.load(weights_only=False))",
                raw,
            )
        raw.add(path_name)
    return None, raw


def exported_program_finding(path: Path) -> str | None:
    """What in a .pt2 file torch.export.load would execute, or None if nothing: read as bytes, never unpickled.

    Safe means: one root folder holding only the members torch.export.save writes; every weight and
    constant a raw tensor (``use_pickle`` false); no example inputs (torch.save'd, hence pickled, and read
    with torch.load falling back to ``weights_only=False``); no AOTInductor shared library; every graph node
    an ATen/prims operator; every shape expression plain arithmetic (sympy.sympify evals it).
    """
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        return f"it is not a readable zip archive ({exc})"
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            dup = next(n for n in names if names.count(n) > 1)
            return f"member '{dup}' appears twice (the zip readers of torch and edgekit could see different files)"
        roots = {n.split("/", 1)[0] for n in names}
        if len(roots) != 1 or any("/" not in n for n in names):
            return "its members are not in one root folder, as torch.export.save writes them"
        root = roots.pop() + "/"
        rel = {n: n[len(root) :] for n in names}
        if root + "archive_format" not in rel or zf.read(root + "archive_format") != b"pt2":
            return "it has no 'archive_format' member reading 'pt2' (an older torch.export format, which is pickled)"
        raw: set[str] = set()
        configs = [n for n in names if rel[n].endswith(("_weights_config.json", "_constants_config.json"))]
        models = [n for n in names if rel[n].startswith("models/")]
        for name in configs + models:
            try:
                doc = json.loads(zf.read(name))
            except (ValueError, UnicodeDecodeError):
                return f"member '{name}' is not JSON"
            if name in configs:
                kind = "weights" if rel[name].endswith("_weights_config.json") else "constants"
                finding, files = _payload_finding(name, doc, kind)
                raw |= {f"data/{kind}/{f}" for f in files}
            else:
                finding = _graph_finding(doc)
                finding = f"member '{name}': {finding}" if finding else None
            if finding:
                return finding
        for name in names:
            member = rel[name]
            if name.endswith("/"):
                continue
            if not _PT2_MEMBERS.match(member):
                if member.startswith("data/aotinductor/"):
                    return f"member '{name}' is AOTInductor native code, which torch loads as a shared library"
                return f"member '{name}' is not one torch.export.save writes, so edgekit cannot vouch for it"
        for name in names:
            member = rel[name]
            if member in raw or name.endswith("/"):
                continue  # raw tensor bytes (read as storage, never unpickled)
            data = zf.read(name)
            if member.startswith("data/sample_inputs/") and data:
                return (
                    f"member '{name}' is pickled data (the example inputs, which torch.export.load unpickles, "
                    "retrying with weights_only=False); save without them (ep.example_inputs = None before "
                    "torch.export.save)"
                )
            if member.startswith(("data/weights/", "data/constants/")) and not member.endswith(".json"):
                how = _pickled(data) or "not a raw tensor named by its config"
                return f"member '{name}' is {how}"
            how = _pickled(data)
            if how and not member.startswith("extra/"):
                return f"member '{name}' is {how}"
    return None


def torchscript_finding(path: Path) -> str:
    """Why a TorchScript archive always counts as code (no inspection can make it inert)."""
    try:
        with zipfile.ZipFile(path) as zf:
            code = next((n for n in zf.namelist() if "/code/" in n and n.endswith(".py")), None)
    except (zipfile.BadZipFile, OSError):
        code = None
    where = f" ('{code}')" if code else ""
    return (
        f"it is a TorchScript archive, and torch.jit.load compiles and runs the TorchScript code stored in it{where}, "
        "e.g. a __setstate__ that can write files"
    )


def check_model_code(path: Path, kind: str, *, trust_model_code: bool) -> None:
    """Refuse (UsageError) a TorchScript or .pt2 file whose loading would run code, unless it is trusted."""
    if trust_model_code:
        return
    finding = torchscript_finding(path) if kind == "torchscript" else exported_program_finding(path)
    if finding:
        raise UsageError(trust_refusal(path, finding))


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
        ) from exc
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
        raise ModelError(f"{source} could not be exported to ONNX: {str(exc).splitlines()[0]}") from exc
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
        ) from exc
    try:
        onnx_program = torch.onnx.export(program, (), dynamo=True, opset_version=max(OPSET, 18), verbose=False)
        onnx_program.save(str(out))
    except Exception as exc:
        raise ModelError(f"'{path}' could not be exported to ONNX: {str(exc).splitlines()[0]}") from exc
    return out


def torch_file_to_onnx(path: Path, shape: tuple[int, ...] | None, out: Path, *, trust_model_code: bool = False) -> Path:
    """Export a TorchScript or .pt2 file to ONNX; refuse it first if loading it would run code it carries.

    ``trust_model_code`` lets such a file through (the user vouches for its maker). Pickled checkpoints
    stay refused even then: there is no module class to rebuild them with.
    """
    kind = sniff(path)
    if kind == "pickle":
        raise UsageError(PICKLE_REFUSAL.format(path=path))
    if kind in ("exported_program", "torchscript"):
        check_model_code(path, kind, trust_model_code=trust_model_code)
    if kind == "exported_program":
        return exported_program_to_onnx(path, out)
    if kind == "torchscript":
        torch = _torch()
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ModelError(
                f"'{path}' is not a loadable TorchScript file ({type(exc).__name__}); save it again"
            ) from exc
        return module_to_onnx(module, shape, out, source=f"'{path}'")
    raise ModelError(
        f"'{path}' is neither ONNX, TorchScript nor a torch.export program; export the model to one of these"
    )
