"""Errors: a user error is one line (exit 2 or 1) and keeps its cause for --debug / EDGEKIT_DEBUG=1; a bug in
edgekit is a distinct internal error (exit 3) with its traceback and a request for a report."""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import pytest
from support import ROOT, run_cli

from edgekit.cli import COMMANDS, INTERNAL_ERROR, main
from edgekit.errors import ModelError

CAUSE_LINE = "The above exception was the direct cause of the following exception"


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("edgekit: error:", "edgekit: internal error:"))]


def _corrupt_onnx(tmp_path: Path) -> Path:
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"\x08\x07 this is not a protobuf \xff\xff\xff")
    return model


def _damaged_bundle(tmp_path: Path) -> Path:
    bundle = tmp_path / "damaged.edgekit"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{not json")
    return bundle


@pytest.mark.slow
def test_user_error_is_one_line_without_debug(tmp_path):
    model = _corrupt_onnx(tmp_path)
    res = run_cli("compile", str(model), "--target", "cpu", "--precision", "fp32", "-o", str(tmp_path / "out"),
                  env={"EDGEKIT_DEBUG": ""})  # fmt: skip
    assert res.returncode == 1, res.stderr
    errors = _error_lines(res.stderr)
    assert len(errors) == 1 and errors[0].startswith("edgekit: error: ") and "not a readable ONNX model" in errors[0]
    assert res.stderr.rstrip().splitlines()[-1] == errors[0]
    assert "Traceback" not in res.stderr and "DecodeError:" not in res.stderr and CAUSE_LINE not in res.stderr


@pytest.mark.slow
@pytest.mark.parametrize("how", ["flag-before", "flag-after", "env"])
def test_debug_shows_the_traceback_and_the_cause(tmp_path, how):
    model = _corrupt_onnx(tmp_path)
    args = ["compile", str(model), "--target", "cpu", "--precision", "fp32", "-o", str(tmp_path / "out")]
    env = {"EDGEKIT_DEBUG": "1" if how == "env" else ""}
    args = {"flag-before": ["--debug", *args], "flag-after": [*args, "--debug"], "env": args}[how]
    res = run_cli(*args, env=env)
    assert res.returncode == 1, res.stderr  # the same exit code as without --debug
    assert "Traceback (most recent call last)" in res.stderr and CAUSE_LINE in res.stderr
    # the cause is protobuf's own parse error, and the error itself is still the last line
    assert "google.protobuf.message.DecodeError" in res.stderr, res.stderr
    assert "edgekit.errors.ModelError" in res.stderr
    last = res.stderr.rstrip().splitlines()[-1]
    assert last.startswith("edgekit: error: ") and "not a readable ONNX model" in last


@pytest.mark.slow
def test_damaged_bundle_keeps_its_json_cause_for_debug(tmp_path):
    bundle = _damaged_bundle(tmp_path)
    plain = run_cli("inspect", str(bundle), env={"EDGEKIT_DEBUG": ""})
    assert plain.returncode == 1 and plain.stderr.count("\n") == 1, plain.stderr
    assert plain.stderr.startswith("edgekit: error: ") and "not valid JSON" in plain.stderr
    debug = run_cli("inspect", str(bundle), env={"EDGEKIT_DEBUG": "1"})
    assert debug.returncode == 1 and "json.decoder.JSONDecodeError" in debug.stderr and CAUSE_LINE in debug.stderr
    assert debug.stderr.rstrip().splitlines()[-1] == plain.stderr.strip()


@pytest.mark.slow
def test_usage_error_keeps_exit_2_with_debug(tmp_path):
    res = run_cli("--debug", "inspect", str(tmp_path / "missing.edgekit"), env={"EDGEKIT_DEBUG": ""})
    assert res.returncode == 2 and "Traceback" in res.stderr, res.stderr
    assert res.stderr.rstrip().splitlines()[-1].startswith("edgekit: error: ")


def test_edgekit_debug_0_is_off(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EDGEKIT_DEBUG", "0")
    assert main(["inspect", str(_damaged_bundle(tmp_path))]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_causes_are_kept_on_the_exception(tmp_path):
    from edgekit.frontends.onnx import load_onnx

    with pytest.raises(ModelError) as info:
        load_onnx(_corrupt_onnx(tmp_path))
    assert type(info.value.__cause__).__name__ == "DecodeError"


def _command(monkeypatch, raises: BaseException) -> str:
    """Register a command 'boom' whose run raises, the way a bug deep in a real command would."""
    module = types.ModuleType("edgekit_test_boom")

    def add_parser(sub):
        p = sub.add_parser("boom", help="raises")
        p.set_defaults(run=run)

    def run(args):
        try:
            {}["missing"]
        except KeyError as exc:
            raise raises from exc

    module.add_parser = add_parser
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(COMMANDS, "boom", module.__name__)
    return "boom"


def test_a_bug_is_an_internal_error_with_its_traceback(monkeypatch, capsys):
    monkeypatch.delenv("EDGEKIT_DEBUG", raising=False)
    command = _command(monkeypatch, RuntimeError("the graph has no node 'conv1'\nsecond line"))
    assert main([command]) == INTERNAL_ERROR == 3
    err = capsys.readouterr().err
    last = err.rstrip().splitlines()[-1]
    assert last.startswith("edgekit: internal error: RuntimeError: the graph has no node 'conv1' (a bug in edgekit")
    assert "please report it" in last and "second line" not in last
    assert "edgekit: error:" not in err  # not dressed up as a user error
    assert "Traceback (most recent call last)" in err and "KeyError: 'missing'" in err and CAUSE_LINE in err


def test_a_bug_with_debug_is_the_same_internal_error(monkeypatch, capsys):
    command = _command(monkeypatch, AttributeError("'NoneType' object has no attribute 'shape'"))
    assert main(["--debug", command]) == INTERNAL_ERROR
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("edgekit: internal error: AttributeError")


def test_interrupt_is_not_an_internal_error(monkeypatch, capsys):
    monkeypatch.delenv("EDGEKIT_DEBUG", raising=False)
    command = _command(monkeypatch, KeyboardInterrupt())
    assert main([command]) == 130
    assert capsys.readouterr().err == "edgekit: interrupted\n"


def test_a_full_disk_is_one_line_not_a_bug(monkeypatch, capsys):
    """ENOSPC (or a read-only or forbidden path) is the machine's state, not a bug: one line, exit 1."""
    import errno

    monkeypatch.delenv("EDGEKIT_DEBUG", raising=False)
    command = _command(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "out/m.edgekit"))
    assert main([command]) == 1
    assert capsys.readouterr().err == (
        "edgekit: error: No space left on device: out/m.edgekit; free space on that disk or write somewhere else\n"
    )
    command = _command(monkeypatch, OSError(errno.EROFS, "Read-only file system", "/mnt/ro/report"))
    assert main([command]) == 1
    assert "that file system is read-only" in capsys.readouterr().err
    # any other OSError is still a bug of edgekit's, with its traceback
    command = _command(monkeypatch, OSError(errno.EBADF, "Bad file descriptor"))
    assert main([command]) == INTERNAL_ERROR
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.slow
def test_stdout_to_a_full_device_and_to_a_closed_pipe():
    """`edgekit targets > /dev/full` is one line and exit 1; `edgekit targets | head -0` (the reader gone
    before edgekit writes) is silent, exit 141 as a shell reports SIGPIPE, with no traceback."""
    import os
    import subprocess

    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "edgekit", "targets"], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=120, cwd=ROOT)  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == "edgekit: error: No space left on device; free space on that disk or write somewhere else\n"
    read, write = os.pipe()
    os.close(read)  # the reader is gone before edgekit writes a byte
    try:
        done = subprocess.run([sys.executable, "-m", "edgekit", "targets"], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120, cwd=ROOT)  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == 141 and done.stderr == ""


def _cut_causes(path: Path, root: Path = ROOT) -> list[str]:
    """`raise X from None` inside `except E as name:` (the nearest handler in the same function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Raise) and isinstance(node.cause, ast.Constant) and node.cause.value is None):
            continue
        scope = parents.get(node)
        while scope is not None and not isinstance(scope, (ast.ExceptHandler, ast.FunctionDef,
                                                           ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):  # fmt: skip
            scope = parents.get(scope)
        if isinstance(scope, ast.ExceptHandler) and scope.name:
            found.append(f"{path.relative_to(root)}:{node.lineno}: 'from None' cuts the cause '{scope.name}'")
    return found


def test_no_bound_cause_is_cut():
    sources = sorted((ROOT / "edgekit").rglob("*.py"))
    assert len(sources) > 50
    cut = [line for path in sources for line in _cut_causes(path)]
    assert not cut, "write 'from <name>' so --debug can show the cause:\n" + "\n".join(cut)


def test_the_cut_cause_check_can_fail(tmp_path):
    sample = tmp_path / "cut.py"
    bad = "def f():\n    try:\n        pass\n    except ValueError as exc:\n        raise KeyError(1) from None\n"
    unbound = "def g():\n    try:\n        pass\n    except ValueError:\n        raise KeyError(1) from None\n"
    sample.write_text(bad + unbound)
    assert _cut_causes(sample, tmp_path) == ["cut.py:5: 'from None' cuts the cause 'exc'"]
