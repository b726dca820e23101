"""The architecture contract: the layers in pyproject.toml's [tool.importlinter] hold, and break on an upward import."""

from __future__ import annotations

import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import edgekit
from edgekit import _toml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(edgekit.__file__).parent
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the tree under test comes from cwd
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on the pyproject.toml in ``cwd`` against the ``edgekit`` package found from there."""
    return subprocess.run([sys.executable, "-c", LINT], cwd=cwd, capture_output=True, text=True, timeout=120, env=ENV)


def layers() -> list[str]:
    config = _toml.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = [c for c in config["contracts"] if c["id"] == "layers"]
    return contract["layers"]


def test_the_layers_contract_is_kept():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 1 kept, 0 broken." in proc.stdout


def test_every_top_level_module_is_placed_in_a_layer():
    placed = {m.strip("() ") for layer in layers() for m in re.split(r"[|:]", layer)}
    present = {f"edgekit.{m.name}" for m in pkgutil.iter_modules([str(PACKAGE)])} - {"edgekit.__main__"}
    assert present - placed == set(), "place each new top-level module in a layer of [tool.importlinter]"
    assert "edgekit.measure" in placed and not (PACKAGE / "report" / "bench.py").exists()


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # the measurement layer reaching up into compile, at module level
        ("measure/latency.py", "from edgekit.pipeline import compile_model\n", "edgekit.measure is not allowed to import edgekit.pipeline"),
        # the runtime reaching up into measure from inside a function: lazy imports count too
        ("runtime/selftest.py", "def _up():\n    from edgekit.measure import latency\n", "edgekit.runtime is not allowed to import edgekit.measure"),
        # two independent siblings: the daemon must not use the build-time report
        ("serve/config.py", "import edgekit.report.summary\n", "edgekit.serve is not allowed to import edgekit.report"),
    ],
)  # fmt: skip
def test_an_upward_import_breaks_the_contract(tmp_path, module, line, broken):
    shutil.copytree(PACKAGE, tmp_path / "edgekit", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "edgekit" / module
    target.write_text(target.read_text() + "\n\n" + line)
    proc = lint_imports(tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Contracts: 0 kept, 1 broken." in proc.stdout
    assert broken in proc.stdout
    assert f"edgekit.{module[:-3].replace('/', '.')} ->" in proc.stdout  # the copy was linted, not the installed tree
