"""No code in a model file runs unless the user says so (--trust-model-code).

Each hostile file carries a real payload that writes a marker file inside tmp_path when its loader runs it;
without the flag the CLI must refuse with one line and the marker must not exist.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import onnx
import pytest
import torch
from support import run_cli, tiny_module

from edgekit.errors import ModelError, UsageError
from edgekit.frontends import load_model


def exported_program_finding(path: Path) -> str | None:
    from edgekit.frontends.torch import exported_program_finding as finding  # lazy: the old code has none

    return finding(path)


class Payload:
    """Unpickling this runs exec(): it writes ``marker``. Used only with markers inside tmp_path."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _compile(model: Path, out: Path, *extra: str):
    return run_cli("compile", str(model), "--target", "cpu", "-p", "fp32", "--input-shape", "1,3,32,32",
                   "-o", str(out), *extra)  # fmt: skip


def _one_line_refusal(res, *needles: str) -> str:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("edgekit: error:")]
    assert len(errors) == 1, res.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def _program(*, example_inputs: bool = True, dynamic: bool = False):
    shapes = ({0: torch.export.Dim("batch", min=1, max=64)},) if dynamic else None
    program = torch.export.export(tiny_module(), (torch.zeros(2, 3, 32, 32),), dynamic_shapes=shapes)
    if not example_inputs:
        program.example_inputs = None  # the public setter: a .pt2 with no pickled member at all
    return program


def _save(program, path: Path) -> Path:
    torch.export.save(program, str(path))
    return path


def _rewrite(src: Path, dst: Path, change) -> Path:
    """Copy a zip, passing every (name, bytes) through ``change`` (returns new bytes, or None to keep)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            new = change(info.filename, data)
            zout.writestr(info, data if new is None else new)
    return dst


# --- .pt2: what torch.export.load really executes ---------------------------------------------------------


@pytest.mark.slow
def test_pt2_sample_inputs_payload_is_refused_and_never_runs(tmp_path):
    """Every torch.export.save writes data/sample_inputs/model.pt (a torch.save pickle); torch.export.load
    unpickles it with weights_only=True and, when that fails, again with weights_only=False."""
    marker = tmp_path / "marker"
    honest = _save(_program(), tmp_path / "honest.pt2")
    evil = _rewrite(honest, tmp_path / "evil.pt2",
                    lambda n, d: pickle.dumps(Payload(marker), protocol=2) if n.endswith("sample_inputs/model.pt") else None)  # fmt: skip
    res = _compile(evil, tmp_path / "out")
    _one_line_refusal(res, "evil.pt2", "data/sample_inputs/model.pt' is pickled data", "--trust-model-code")
    assert not marker.exists()
    assert not (tmp_path / "out").exists()
    # The payload is real: trusting the file reaches the loader, which runs it (the marker is in tmp_path).
    res = _compile(evil, tmp_path / "out", "--trust-model-code")
    assert marker.read_text() == "pwned"
    assert res.returncode != 0 and "edgekit: error:" in res.stderr  # the compile then fails


@pytest.mark.slow
def test_pt2_pickled_weight_is_refused(tmp_path):
    """A weight marked use_pickle is read with torch.load(weights_only=False)."""
    marker = tmp_path / "marker"
    honest = _save(_program(example_inputs=False), tmp_path / "honest.pt2")

    def change(name: str, data: bytes):
        if name.endswith("model_weights_config.json"):
            doc = json.loads(data)
            first = next(iter(doc["config"].values()))
            first["use_pickle"] = True
            return json.dumps(doc).encode()
        if name.endswith("data/weights/weight_0"):
            return pickle.dumps(Payload(marker), protocol=2)
        return None

    evil = _rewrite(honest, tmp_path / "weight.pt2", change)
    line = _one_line_refusal(_compile(evil, tmp_path / "out"), "weight.pt2", "stored pickled", "--trust-model-code")
    assert "export to ONNX" in line
    assert not marker.exists()


def test_pt2_opaque_constant_is_refused(tmp_path):
    """A constant named opaque_obj_N is read with pickle.loads (custom_obj_N with TorchScript's unpickler)."""
    honest = _save(_program(example_inputs=False), tmp_path / "honest.pt2")
    marker = tmp_path / "marker"

    def change(name: str, data: bytes):
        if name.endswith("model_constants_config.json"):
            meta = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True, "tensor_meta": None}
            return json.dumps({"config": {"c": meta}}).encode()
        return None

    evil = _rewrite(honest, tmp_path / "opaque.pt2", change)
    with zipfile.ZipFile(evil, "a") as zf:
        zf.writestr("honest/data/constants/opaque_obj_0", pickle.dumps(Payload(marker)))
    with pytest.raises(UsageError, match="a pickled object"):
        load_model(evil)
    assert not marker.exists()


@pytest.mark.slow
def test_pt2_shape_expression_is_evaluated_by_sympy_so_it_is_checked(tmp_path):
    """Without any pickle: torch.export.load passes each symbolic-shape expr_str to sympy.sympify, which
    evals it. A crafted expression is refused; with the flag the loader is reached and it runs."""
    marker = tmp_path / "marker"
    honest = _save(_program(example_inputs=False, dynamic=True), tmp_path / "honest.pt2")
    assert exported_program_finding(honest) is None
    code = f"__import__('builtins').open({str(marker)!r}, 'w').write('pwned')"

    def change(name: str, data: bytes):
        if name.endswith("models/model.json"):
            text = data.decode()
            old = '"expr_str": "Symbol(\'s77\', positive=True, integer=True)"'
            assert old in text
            return text.replace(old, json.dumps({"expr_str": code})[1:-1], 1).encode()
        return None

    evil = _rewrite(honest, tmp_path / "sym.pt2", change)
    _one_line_refusal(_compile(evil, tmp_path / "out"), "sym.pt2", "shape expression", "--trust-model-code")
    assert not marker.exists()
    _compile(evil, tmp_path / "out", "--trust-model-code")
    assert marker.read_text() == "pwned"


def test_pt2_graph_target_outside_torch_ops_is_refused(tmp_path):
    """torch.export.load resolves a node target by getattr from `torch`: 'torch.os.system' is os.system."""
    honest = _save(_program(example_inputs=False), tmp_path / "honest.pt2")

    def change(name: str, data: bytes):
        if name.endswith("models/model.json"):
            return data.replace(b'"torch.ops.aten.relu.default"', b'"torch.os.system"', 1)
        return None

    evil = _rewrite(honest, tmp_path / "target.pt2", change)
    with pytest.raises(UsageError, match="the graph calls 'torch.os.system'"):
        load_model(evil)
    from_file = _rewrite(honest, tmp_path / "from_file.pt2", lambda n, d: d.replace(
        b'"torch.ops.aten.relu.default"', b'"torch.ops.aten.from_file.default"', 1) if n.endswith("model.json") else None)  # fmt: skip
    with pytest.raises(UsageError, match="opens files"):
        load_model(from_file)


@pytest.mark.parametrize(
    "case",
    ["aotinductor", "unknown-member", "duplicate", "two-roots", "legacy-weights"],
)
def test_pt2_layout_tricks_are_refused(tmp_path, case):
    honest = _save(_program(example_inputs=False), tmp_path / "honest.pt2")
    evil = tmp_path / f"{case}.pt2"
    evil.write_bytes(honest.read_bytes())
    add = {
        "aotinductor": ("honest/data/aotinductor/model/model.so", b"\x7fELF"),
        "unknown-member": ("honest/code/__torch__.py", b"x = 1"),
        "duplicate": ("honest/models/model.json", b"{}"),
        "two-roots": ("other/archive_format", b"pt2"),
        "legacy-weights": ("honest/data/weights/model.pt", b"PK\x03\x04"),
    }[case]
    with zipfile.ZipFile(evil, "a") as zf:
        if case == "duplicate":
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                zf.writestr(*add)
        else:
            zf.writestr(*add)
    finding = exported_program_finding(evil)
    assert finding, case
    with pytest.raises(UsageError, match="--trust-model-code"):
        load_model(evil)


@pytest.mark.slow
def test_honest_pt2_with_example_inputs_needs_the_flag(tmp_path):
    """torch.export.save always pickles the example inputs: such a .pt2 is refused, with the way out."""
    path = _save(_program(dynamic=True), tmp_path / "model.pt2")
    line = _one_line_refusal(_compile(path, tmp_path / "out"), "model.pt2", "example inputs",
                             "ep.example_inputs = None", "--trust-model-code")  # fmt: skip
    assert len(line) < 600
    res = _compile(path, tmp_path / "out", "--trust-model-code")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.slow
def test_honest_pickle_free_pt2_compiles_without_the_flag(tmp_path):
    path = _save(_program(example_inputs=False, dynamic=True), tmp_path / "model.pt2")
    with zipfile.ZipFile(path) as zf:
        assert all(not zf.read(n).startswith(b"\x80") or "/data/weights/" in n for n in zf.namelist())
    assert exported_program_finding(path) is None
    res = _compile(path, tmp_path / "out")
    assert res.returncode == 0, res.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["model"]["source"]["format"] == "exported_program"


def test_python_api_refuses_without_trust_model_code(tmp_path, sample_calib):
    import edgekit

    path = _save(_program(), tmp_path / "model.pt2")
    with pytest.raises(UsageError, match="--trust-model-code"):
        edgekit.compile_model(path, target="cpu", precision="fp32", output=tmp_path / "b", input_shape=(1, 3, 32, 32))
    assert not (tmp_path / "b").exists()


@pytest.mark.slow
def test_report_refuses_a_pt2_with_pickles(tmp_path, sample_calib):
    path = _save(_program(), tmp_path / "model.pt2")
    res = run_cli("report", str(path), "--val", str(sample_calib), "--targets", "cpu", "--precisions", "fp32",
                  "--no-bench", "-o", str(tmp_path / "rep"), "-q")  # fmt: skip
    _one_line_refusal(res, "model.pt2", "--trust-model-code")


# --- TorchScript ----------------------------------------------------------------------------------------------


def _evil_torchscript(path: Path, marker: Path) -> Path:
    """A TorchScript module whose __setstate__ (run by torch.jit.load) writes ``marker`` via from_file."""

    class Evil(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.path = str(marker)
            self.w = torch.nn.Parameter(torch.ones(1))

        def forward(self, x):
            return x * self.w

        @torch.jit.export
        def __getstate__(self):
            return (self.path, self.w, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[str, torch.Tensor, bool]):
            self.path = state[0]
            self.training = state[2]
            t = torch.from_file(state[0], shared=True, size=5, dtype=torch.uint8)
            t.fill_(65)
            self.w = state[1] + t[0:1].to(torch.float32) * 0.0

    torch.jit.save(torch.jit.script(Evil()), str(path))
    assert not marker.exists()  # scripting and saving it did not run the payload
    return path


@pytest.mark.slow
def test_torchscript_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "marker"
    evil = _evil_torchscript(tmp_path / "evil.ts", marker)
    _one_line_refusal(_compile(evil, tmp_path / "out"), "evil.ts", "TorchScript", "--trust-model-code")
    assert not marker.exists()
    # Real: trusted, torch.jit.load runs the __setstate__, which writes the marker (inside tmp_path).
    _compile(evil, tmp_path / "out", "--trust-model-code")
    assert marker.read_bytes() == b"AAAAA"


@pytest.mark.slow
def test_honest_torchscript_needs_the_flag(tmp_path):
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(tiny_module()), str(path))
    _one_line_refusal(_compile(path, tmp_path / "out"), "model.ts", "TorchScript", "--trust-model-code")
    loaded = load_model(path, input_shape=(1, 3, 32, 32), trust_model_code=True)
    assert loaded.source_format == "torchscript"


def test_torchscript_python_pickle_in_data_pkl_is_not_run_by_jit_load(tmp_path):
    """TorchScript's own unpickler resolves only TorchScript types: a Python __reduce__ payload in data.pkl
    makes torch.jit.load fail (it does not run); edgekit refuses the file before that anyway."""
    marker = tmp_path / "marker"
    path = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(tiny_module()), str(path))
    evil = _rewrite(path, tmp_path / "pkl.ts",
                    lambda n, d: pickle.dumps(Payload(marker), protocol=2) if n.endswith("/data.pkl") else None)  # fmt: skip
    with pytest.raises(UsageError, match="TorchScript"):
        load_model(evil, input_shape=(1, 3, 32, 32))
    with pytest.raises(ModelError, match="not a loadable TorchScript"):
        load_model(evil, input_shape=(1, 3, 32, 32), trust_model_code=True)
    assert not marker.exists()


@pytest.mark.slow
def test_pickled_checkpoint_stays_refused_with_the_flag(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "model.pth"
    torch.save(Payload(marker), str(path))
    res = _compile(path, tmp_path / "out", "--trust-model-code")
    _one_line_refusal(res, "pickled PyTorch checkpoint")
    assert not marker.exists()


# --- ONNX -------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("where", ["parent", "absolute", "symlink"])
def test_onnx_external_data_outside_the_model_folder_is_refused(tiny_onnx, tmp_path, where):
    folder = tmp_path / "model"
    folder.mkdir()
    model = onnx.load(str(tiny_onnx))
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.data", size_threshold=0)  # fmt: skip
    outside = tmp_path / "secret.data"
    (folder / "model.data").rename(outside)
    location = {"parent": "../secret.data", "absolute": str(outside), "symlink": "model.data"}[where]
    if where == "symlink":
        (folder / "model.data").symlink_to(outside)
    proto = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    (folder / "model.onnx").write_bytes(proto.SerializeToString())
    line = _one_line_refusal(_compile(folder / "model.onnx", tmp_path / "out"), "model.onnx", "outside")
    assert location in line or where == "symlink"


@pytest.mark.slow
def test_onnx_custom_domain_is_one_line(tiny_onnx, tmp_path):
    model = onnx.load(str(tiny_onnx))
    model.graph.node[0].domain = "com.evil"
    model.opset_import.append(onnx.helper.make_opsetid("com.evil", 1))
    path = tmp_path / "custom.onnx"
    onnx.save_model(model, str(path))
    _one_line_refusal(_compile(path, tmp_path / "out"), "custom.onnx", "com.evil::")


@pytest.mark.slow
@pytest.mark.parametrize("opset", [1, 999])
def test_an_opset_onnx_runtime_cannot_load_is_one_line_not_a_bug(tiny_onnx, tmp_path, opset):
    """A model claiming an opset ONNX Runtime has no kernels for (1: Relu-1 has none; 999: beyond any release)
    was an internal error with a traceback (exit 3); it is the model's problem: one line, exit 1."""
    model = onnx.load(str(tiny_onnx))
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            imp.version = opset
    path = tmp_path / "odd.onnx"
    onnx.save(model, str(path))
    res = run_cli(
        "compile",
        str(path),
        "--target",
        "cpu",
        "--precision",
        "fp32",
        "--input-shape",
        "1,3,32,32",
        "-o",
        str(tmp_path / "b"),
    )
    assert res.returncode == 1, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("edgekit: ")
              and not line.startswith("edgekit: loading")]  # fmt: skip
    assert "Traceback" not in res.stderr and len(errors) == 1 and errors[0].startswith("edgekit: error: "), res.stderr
    # opset 1 is caught by the ONNX checker already; 999 passes it and reaches ONNX Runtime
    assert "re-export" in errors[0] or "export the model again" in errors[0]
    if opset == 999:
        assert "ONNX Runtime cannot load the model (opset 999;" in errors[0]
    assert not (tmp_path / "b").exists()
