"""Small things a new user runs into: choice flags in any case, the model spec beside the model, no test
folder shadowing NVIDIA's ``tensorrt``, and ``slow`` on every test that starts the CLI or the daemon."""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from support import MODELS, ROOT, SAMPLE, run_cli

from edgekit.cli import build_parser
from edgekit.spec import spec_beside

TESTS = ROOT / "tests"
RESNET = MODELS / "resnet"
NOTE = "(beside the model; pass --spec to choose another)"


# -- choice flags accept any case and give the canonical spelling
def test_choice_flags_accept_any_case():
    args = build_parser().parse_args(
        ["compile", "m.onnx", "-t", "cpu", "-o", "out", "--color-order", "bgr", "--resize-mode", "BILINEAR",
         "--precision", "INT8", "--layout", "nchw", "--calib-method", "Entropy"]
    )  # fmt: skip
    assert (args.color_order, args.resize_mode, args.precision, args.layout, args.calib_method) == (
        "BGR", "bilinear", "int8", "NCHW", "entropy"
    )  # fmt: skip
    report = build_parser().parse_args(
        ["report", "m.onnx", "-o", "r", "--val", "v", "--precisions", "FP32,Int8", "--calib-methods", "MinMax"]
    )
    assert report.precisions == ("fp32", "int8") and report.calib_methods == ("minmax",)


def test_a_wrong_choice_is_still_argparses_usage_error_listing_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["compile", "m.onnx", "-t", "cpu", "-o", "out", "--color-order", "grb"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --color-order: invalid choice: 'grb'" in err and "'RGB', 'BGR'" in err


def test_help_still_lists_the_canonical_choices(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["compile", "--help"])
    out = capsys.readouterr().out
    assert "{RGB,BGR}" in out and "{fp32,fp16,int8}" in out and "{NCHW,NHWC}" in out


# -- the model spec beside the model
def test_spec_beside_prefers_the_models_own_stem(tmp_path):
    model = tmp_path / "net.onnx"
    model.write_bytes(b"x")
    assert spec_beside(model) is None
    (tmp_path / "model.toml").write_text("")
    assert spec_beside(model) == tmp_path / "model.toml"
    (tmp_path / "net.toml").write_text("")
    assert spec_beside(str(model)) == tmp_path / "net.toml"
    assert spec_beside(tmp_path / "missing.onnx") is None and spec_beside(object()) is None


def _resnet_copy(tmp_path: Path, spec_name: str = "model.toml") -> Path:
    folder = tmp_path / "resnet"
    folder.mkdir()
    shutil.copy(RESNET / "model.onnx", folder / "model.onnx")
    shutil.copy(RESNET / "model.toml", folder / spec_name)
    return folder / "model.onnx"


def test_compile_model_without_spec_uses_the_one_beside_the_model_and_says_so(tmp_path):
    import edgekit

    model = _resnet_copy(tmp_path, spec_name="model.toml")
    lines: list[str] = []
    result = edgekit.compile_model(model, target="cpu", precision="fp32", output=tmp_path / "b", log=lines.append)
    assert f"using the model spec {model.with_suffix('.toml')} {NOTE}" in lines
    assert result.manifest["model"]["name"] == "cifar10-resnet"
    assert result.manifest["labels"][:2] == ["airplane", "automobile"] and len(result.manifest["labels"]) == 10


@pytest.mark.slow
def test_cli_compile_without_spec_uses_the_one_beside_the_model(tmp_path):
    """As a new user would: the example model and its spec copied anywhere, compiled with no --spec (and
    choices typed in another case)."""
    model = _resnet_copy(tmp_path)
    res = run_cli("compile", str(model), "-t", "cpu", "--precision", "FP32", "--layout", "nchw",
                  "-o", str(tmp_path / "b"), "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"edgekit: using the model spec {tmp_path / 'resnet' / 'model.toml'} {NOTE}" in res.stderr
    manifest = json.loads(res.stdout)
    assert manifest["labels"] == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                                  "truck"]  # fmt: skip
    assert manifest["precision"]["requested"] == "fp32" and manifest["preprocess"]["mean"] == [0.4914, 0.4822, 0.4465]


@pytest.mark.slow
def test_cli_report_without_spec_uses_the_one_beside_the_model(tmp_path):
    model = _resnet_copy(tmp_path, spec_name="model.toml")
    val = tmp_path / "val"
    for label in sorted(p.name for p in (SAMPLE / "test").iterdir()):
        (val / label).mkdir(parents=True)
        for src in sorted((SAMPLE / "test" / label).iterdir())[:3]:
            shutil.copy(src, val / label / src.name)
    res = run_cli("report", str(model), "--val", str(val), "--targets", "cpu", "--precisions", "FP32", "--no-bench",
                  "-o", str(tmp_path / "r"), "--json")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert f"edgekit: using the model spec {model.with_suffix('.toml')} {NOTE}" in res.stderr
    doc = json.loads(res.stdout)
    assert doc["model"]["name"] == "cifar10-resnet"
    assert [r["precision"] for r in doc["results"]] == ["fp32"] and doc["results"][0]["status"] == "ok"


# -- no test folder shadows an installed package
def test_tensorrt_does_not_resolve_into_the_tests(monkeypatch):
    """With tests/ on sys.path, ``import tensorrt`` finds NVIDIA's package where it is installed, else nothing."""
    monkeypatch.syspath_prepend(str(TESTS))
    assert not (TESTS / "tensorrt").exists()
    found = [importlib.machinery.PathFinder.find_spec("tensorrt", sys.path)]
    if "tensorrt" not in sys.modules:
        found.append(importlib.util.find_spec("tensorrt"))
    for spec in found:
        where = [spec.origin] if spec and spec.origin else list(spec.submodule_search_locations or []) if spec else []
        assert all(TESTS not in Path(w).resolve().parents for w in where), where


def test_no_test_folder_is_named_like_an_installed_module():
    """pytest puts tests/ on sys.path (pythonpath in pyproject.toml): a sub-folder named like a real package
    would be found in its place as a namespace package."""
    here = [Path(p or ".").resolve() for p in sys.path]  # less the checkout (cwd) and tests/ with its folders
    elsewhere = [str(p) for p in here if p != ROOT and TESTS not in (p / "x").parents]
    clashes = [d.name for d in TESTS.iterdir() if d.is_dir() and d.name.isidentifier()
               and importlib.machinery.PathFinder.find_spec(d.name, elsewhere) is not None]  # fmt: skip
    assert clashes == []


# -- every test that starts the CLI or the daemon is marked slow
STARTERS = {"run_cli", "DaemonProcess", "start_daemon", "cli", "spawn", "shared_report"}


def _called(node: ast.AST) -> set[str]:
    names = set()
    for n in ast.walk(node):
        if isinstance(n, ast.Call):
            f = n.func
            names.add(f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else "")
    return names


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """The module's own functions and fixtures, and the test methods of its classes (not nested functions)."""
    found = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        found |= {n.name: n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")}
    return found


def _fixture_name(node: ast.FunctionDef) -> str | None:
    for d in node.decorator_list:
        if "fixture" in ast.unparse(d):
            for kw in getattr(d, "keywords", []):
                if kw.arg == "name":
                    return kw.value.value
            return node.name
    return None


def _starting(functions: dict[str, ast.FunctionDef], known: set[str]) -> set[str]:
    """Names (functions and fixtures) that start the CLI or the daemon, to a fixed point."""
    found = set(known)
    while True:
        more = set()
        for name, fn in functions.items():
            fixture = _fixture_name(fn) or name
            params = {a.arg for a in fn.args.args}
            if fixture not in found and (_called(fn) & found or (_fixture_name(fn) and params & found)):
                more.add(fixture)
        if not more:
            return found
        found |= more


def _is_slow(fn: ast.FunctionDef, tree: ast.Module) -> bool:
    module_marks = [ast.unparse(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in n.targets)]  # fmt: skip
    return any("mark.slow" in m for m in module_marks) or any("mark.slow" in ast.unparse(d) for d in fn.decorator_list)


def test_every_test_that_starts_the_cli_or_the_daemon_is_marked_slow():
    shared = {}
    for helper in (*TESTS.glob("*support.py"), *TESTS.glob("*/*support.py"), *TESTS.rglob("conftest.py")):
        shared |= _functions(ast.parse(helper.read_text(encoding="utf-8")))
    starting_shared = _starting(shared, STARTERS)
    unmarked = []
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = _functions(tree)
        starting = _starting(functions, starting_shared)
        for name, fn in functions.items():
            uses = _called(fn) | ({a.arg for a in fn.args.args} if name.startswith("test") else set())
            if name.startswith("test") and uses & starting and not _is_slow(fn, tree):
                unmarked.append(f"{path.relative_to(TESTS)}::{name}")
    assert unmarked == [], "mark these @pytest.mark.slow (they start the CLI or the daemon): " + ", ".join(unmarked)
