"""edgekit installs on Python 3.10, JetPack 6's Python (its TensorRT bindings are built for it). No 3.10
interpreter exists here, so this is checked statically: vermin reads every module for standard-library
names, syntax and annotations newer than 3.10."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_edgekit_needs_nothing_newer_than_python_3_10():
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    assert vermin, "vermin is part of the [dev] extra: pip install -e '.[dev]'"
    proc = subprocess.run(
        [vermin, "--no-tips", "--violations", "--target=3.10-", "--eval-annotations", str(ROOT / "edgekit")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:]


def test_pyproject_says_3_10_and_brings_tomli_there():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert 'requires-python = ">=3.10"' in text
    assert "tomli>=1.1; python_version < '3.11'" in text
