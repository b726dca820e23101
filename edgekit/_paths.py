"""Where edgekit's shipped data folders are: the project's top-level ``targets/`` and ``calibration/``.

In a checkout (and an editable install) they are the folders beside ``edgekit/``; a wheel carries copies of
them as ``edgekit/_shipped/<name>/`` (pyproject.toml maps the folders there as package data).
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
SHIPPED = "_shipped"  # the wheel's folder for the data, inside the package


def shipped_folder(name: str) -> Path:
    """The folder of shipped data ``name`` ("targets" or "calibration"): the wheel's copy, else the checkout's."""
    installed = PACKAGE / SHIPPED / name
    if installed.is_dir():
        return installed
    # A checkout or an editable install: the folder sits beside the package, in the project root.
    return PACKAGE.parent / name


__all__ = ["shipped_folder"]
