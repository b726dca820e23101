"""Fixtures for the TensorRT backend: tiny real models, real calibration images, real ORT-quantized graphs."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "data" / "cifar10"
CIFAR = {
    "name": "tiny",
    "preprocess": {"resize": (32, 32), "mean": (0.4914, 0.4822, 0.4465), "std": (0.247, 0.2435, 0.2616)},
}


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed ``edgekit`` entry point in a subprocess."""
    exe = Path(sys.executable).with_name("edgekit")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "edgekit"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(name="cli", scope="session")
def cli_fixture():
    return run_cli


def tiny_mobile_module(seed: int = 0):
    """A MobileNetV2-style block: 1x1 expand, depthwise 3x3, ReLU6 (Clip), 1x1 project, residual Add."""
    import torch
    from torch import nn

    def cbr(cin: int, cout: int, k: int, groups: int = 1, act: bool = True) -> nn.Sequential:
        layers = [nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, *([nn.ReLU6()] if act else []))

    class TinyMobile(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = cbr(3, 8, 3)
            self.block = nn.Sequential(cbr(8, 16, 1), cbr(16, 16, 3, groups=16), cbr(16, 8, 1, act=False))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))

        def forward(self, x):
            x = self.stem(x)
            return self.head(x + self.block(x))

    torch.manual_seed(seed)
    return TinyMobile().eval()


@pytest.fixture(scope="session")
def tiny_mobile_onnx(tmp_path_factory) -> Path:
    import torch

    path = tmp_path_factory.mktemp("mobile") / "mobile.onnx"
    torch.onnx.export(
        tiny_mobile_module(), (torch.zeros(1, 3, 32, 32),), str(path), input_names=["input"],
        output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
        dynamo=False,
    )  # fmt: skip
    return path


@pytest.fixture(scope="session")
def calib_tensors(tiny_onnx):
    """32 real CIFAR-10 calibration images, preprocessed by the runtime's own code."""
    from edgekit.frontends import load_model
    from edgekit.imagesets import load_calibration
    from edgekit.spec import build_spec

    loaded = load_model(tiny_onnx)
    spec = build_spec(
        model_input=loaded.input, overrides={k: dict(v) if isinstance(v, dict) else v for k, v in CIFAR.items()}
    )
    return load_calibration(SAMPLE / "calib", spec, size=32).tensors


def quantize(model_path: Path, tensors, out_dir: Path, recipe=None, **kw):
    """Quantize with edgekit's ORT recipe (TensorRT's by default); return (Q/DQ model, provenance, fp32 path)."""
    import onnx

    from edgekit.quantize import onnxruntime_qdq

    out_dir.mkdir(parents=True, exist_ok=True)
    recipe = recipe or onnxruntime_qdq.SYMMETRIC_RECIPE
    fp32 = out_dir / "prepared.onnx"
    provenance = onnxruntime_qdq.quantize(
        onnx.load(str(model_path)), tensors, out_dir / "qdq.onnx", recipe=recipe, input_name="input",
        prepared_out=fp32, **kw,
    )  # fmt: skip
    return onnx.load(str(out_dir / "qdq.onnx")), provenance, fp32


@pytest.fixture(name="quantize", scope="session")
def quantize_fixture():
    return quantize


@pytest.fixture(scope="session")
def trt_resnet(tiny_onnx, calib_tensors, tmp_path_factory):
    return quantize(tiny_onnx, calib_tensors, tmp_path_factory.mktemp("q-resnet"))


@pytest.fixture(scope="session")
def trt_mobile(tiny_mobile_onnx, calib_tensors, tmp_path_factory):
    return quantize(tiny_mobile_onnx, calib_tensors, tmp_path_factory.mktemp("q-mobile"))


@pytest.fixture(scope="session")
def cpu_resnet(tiny_onnx, calib_tensors, tmp_path_factory):
    from edgekit.quantize import onnxruntime_qdq

    return quantize(tiny_onnx, calib_tensors, tmp_path_factory.mktemp("q-cpu"), onnxruntime_qdq.CPU_RECIPE)


@pytest.fixture(scope="session")
def ort_default_bias(tiny_onnx, calib_tensors, tmp_path_factory):
    """The symmetric recipe with ONNX Runtime's default bias handling (int32 biases behind a DQ)."""
    from edgekit.quantize import onnxruntime_qdq

    recipe = dataclasses.replace(onnxruntime_qdq.SYMMETRIC_RECIPE, quantize_bias=True)
    return quantize(tiny_onnx, calib_tensors, tmp_path_factory.mktemp("q-bias"), recipe)
