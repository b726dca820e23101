"""Shared test helpers: tiny models built in code with a fixed seed, image folders, the committed sample, the CLI.

Imported as ``support`` (pytest puts tests/ on sys.path): a module named conftest would be shadowed by the
conftest.py files of sub-folders.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "data" / "cifar10"
MODELS = ROOT / "examples" / "models"
LABELS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_SPEC = {
    "name": "tiny",
    "preprocess": {"resize": (32, 32), "mean": (0.4914, 0.4822, 0.4465), "std": (0.2470, 0.2435, 0.2616)},
}


def _tiny_class():
    import torch
    from torch import nn

    class Tiny(nn.Module):
        """A small residual conv-net: conv-BN-ReLU, a residual Add, pooling, a linear head."""

        def __init__(self, classes: int = 10) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
            self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                       nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))  # fmt: skip
            self.head = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes))  # fmt: skip

        def forward(self, x):
            x = self.stem(x)
            return self.head(torch.relu(x + self.block(x)))

    Tiny.__module__ = __name__
    Tiny.__qualname__ = "Tiny"
    globals()["Tiny"] = Tiny
    return Tiny


def tiny_module(seed: int = 0, classes: int = 10):
    """The Tiny net with seeded weights and non-trivial BN statistics (so folding matters)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = _tiny_class()(classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def write_images(root: Path, per_class: int, classes=LABELS[:3], size=(40, 48), seed=0) -> Path:
    """Class folders of real PNG/JPEG files with distinct colour statistics per class."""
    rng = np.random.default_rng(seed)
    for ci, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            img[..., ci % 3] = np.clip(img[..., ci % 3].astype(int) + 80, 0, 255).astype(np.uint8)
            cv2.imwrite(str(folder / f"{i:04d}.{'png' if i % 2 else 'jpg'}"), img)
    return root


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600):
    """Run the installed ``edgekit`` entry point in a subprocess."""
    exe = Path(sys.executable).with_name("edgekit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "edgekit"]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, env=full_env, timeout=timeout)


def json_paths(value, prefix=()):
    """Every path (tuple of keys / indexes) in a JSON value, the root (``()``) included."""
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from json_paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from json_paths(v, (*prefix, i))
