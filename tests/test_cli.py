from __future__ import annotations

import subprocess
import sys

import pytest
from support import run_cli

from edgekit import __version__
from edgekit.cli import COMMANDS


@pytest.mark.slow
def test_version():
    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"edgekit {__version__}"


@pytest.mark.slow
@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_on_every_command(command):
    res = run_cli(*([command] if command else []), "--help")
    assert res.returncode == 0, res.stderr
    assert "usage: edgekit" in res.stdout


@pytest.mark.slow
def test_targets_lists_every_target_with_aliases():
    res = run_cli("targets")
    assert res.returncode == 0
    lines = res.stdout.splitlines()
    assert lines[0].split()[:4] == ["TARGET", "ALIASES", "BACKEND", "DEVICE"]
    row = next(line for line in lines if line.startswith("intel-cpu "))
    assert "openvino, intel" in row and "CPU" in row and "int8" in row


@pytest.mark.slow
def test_help_and_targets_import_no_torch_or_vendor_runtime():
    code = (
        "import sys, contextlib, io\n"
        "from edgekit.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['targets'])\n"
        "    try:\n        main(['compile', '--help'])\n    except SystemExit:\n        pass\n"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'nncf') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == ""


@pytest.mark.slow
def test_unknown_precision_is_a_usage_error():
    res = run_cli("compile", "m.onnx", "--target", "cpu", "--precision", "int4", "-o", "x")
    assert res.returncode == 2 and "invalid choice: 'int4'" in res.stderr
