"""Shared fixtures. The helpers they use live in support.py, which tests import as ``support``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support import CIFAR_SPEC, LABELS, SAMPLE, tiny_module

# The tests check what a user sees by default (one line, no traceback); a developer's EDGEKIT_DEBUG=1
# would add tracebacks to every CLI run they start.
os.environ.pop("EDGEKIT_DEBUG", None)
# Compiles on this machine time the runtime's settings (a few seconds each); the suite compiles hundreds of
# bundles, so it turns that off by default. tests/test_runtime_settings.py turns it back on for its own.
os.environ["EDGEKIT_TUNE"] = "0"


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    """tiny_module exported to ONNX with a dynamic batch, input (N, 3, 32, 32)."""
    import torch

    path = tmp_path_factory.mktemp("tiny") / "tiny.onnx"
    torch.onnx.export(
        tiny_module(), (torch.zeros(1, 3, 32, 32),), str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
    )  # fmt: skip
    return path


@pytest.fixture(scope="session")
def sample_calib() -> Path:
    return SAMPLE / "calib"


@pytest.fixture(scope="session")
def sample_test() -> Path:
    return SAMPLE / "test"


@pytest.fixture(scope="session")
def small_val(tmp_path_factory) -> Path:
    """200 images of the committed test sample (20 a class), copied: quick accuracy checks."""
    root = tmp_path_factory.mktemp("val")
    for label in LABELS:
        (root / label).mkdir()
        for src in sorted((SAMPLE / "test" / label).iterdir())[:20]:
            (root / label / src.name).write_bytes(src.read_bytes())
    return root


@pytest.fixture(scope="session")
def trt_int8_bundle(tiny_onnx, tmp_path_factory) -> Path:
    """tiny_onnx compiled for jetson-orin-nano in int8 (ONNX Q/DQ, calibration cache and build plan); compiled
    once for every test that reads such a bundle (tests copy it before changing it)."""
    import edgekit

    out = tmp_path_factory.mktemp("trt-int8") / "trt.edgekit"
    edgekit.compile_model(tiny_onnx, target="jetson-orin-nano", precision="int8", output=out, spec=dict(CIFAR_SPEC),
                          labels=LABELS, calib=SAMPLE / "calib")  # fmt: skip
    return out
