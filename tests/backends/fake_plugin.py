"""Install the fake backend plugin (plugin/edgekit_fake_backend) the way pip would: a ``*.dist-info``
folder whose ``entry_points.txt`` registers it in the ``edgekit.backends`` group, on a path of its own.

Not a conftest.py on purpose: the tests import what they use from here.
"""

from __future__ import annotations

import os
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent / "plugin"
ENTRY_POINT = "edgekit_fake_backend.backend:FakeBackend"
TARGET_TOML = """\
name = "fake-box"
description = "A device run by the fake backend plugin"
backend = "fake"
device = "CPU"
precisions = ["fp32"]

[backend_options]
threads = 1
"""


def write_dist_info(site: Path, entry_points: dict[str, str], *, name: str = "edgekit-fake-backend") -> Path:
    """A distribution's metadata in ``site`` with ``entry_points`` (id -> "module:Class") in the group."""
    dist = site / f"{name.replace('-', '_')}-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n", encoding="utf-8")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (dist / "entry_points.txt").write_text(f"[edgekit.backends]\n{lines}", encoding="utf-8")
    return dist


def install(site: Path) -> dict[str, str]:
    """Register the fake backend from ``site``; return the environment a subprocess needs to see it."""
    write_dist_info(site, {"fake": ENTRY_POINT})
    path = os.pathsep.join([str(site), str(PLUGIN), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {"PYTHONPATH": path}
