"""Every corpus model (tests/corpus/corpus_models.py) compiles to fp32, fp16 and int8 on every target this machine
runs (cpu = ONNX Runtime, intel-cpu = OpenVINO; jetson-orin-nano through the TensorRT simulation), and its
INT8 agrees with FP32 within the stated bounds.

The bounds, for these random-weight nets on 200 CIFAR-10 test images (64 calibration images), INT8 against
the source model in ONNX Runtime FP32: top-1 agreement at least ``MIN_AGREEMENT`` percent, and a relative
output error (the RMS of INT8 - FP32 over the RMS of FP32's spread across the images) at most
``MAX_RELATIVE_ERROR``. fp32 must match to ``FP32_ERROR`` and fp16 to ``FP16_ERROR`` of the same measure.
Measured (onnxruntime 1.32, OpenVINO 2026.4, NNCF 3.4): INT8 agreement 96.0 to 97.0%, relative error 0.09 to
0.20; fp16 at most 0.025. Random features are less regular than trained ones: the bounds are for these nets.
"""

from __future__ import annotations

import numpy as np
import pytest
from corpus_models import CORPUS
from support import run_cli

import edgekit

TARGETS = ("cpu", "intel-cpu", "jetson-orin-nano")
PRECISIONS = ("fp32", "fp16", "int8")
MIN_AGREEMENT = 90.0
MAX_RELATIVE_ERROR = 0.3
FP32_ERROR = 1e-4
FP16_ERROR = 0.05


def _reference(path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _bundle_outputs(bundle_path, target: str, x: np.ndarray) -> np.ndarray:
    if target.startswith("jetson"):  # TensorRT is absent: its ONNX in ONNX Runtime, as the simulator runs it
        return _reference(bundle_path / "model.onnx", x)
    with edgekit.load_bundle(bundle_path) as bundle:
        return np.concatenate([bundle.infer(x[i : i + 50]) for i in range(0, len(x), 50)])


def relative_error(out: np.ndarray, ref: np.ndarray) -> float:
    """RMS(out - ref) / RMS(ref - its mean over the images): 0 is exact, 1 is as far off as the outputs vary."""
    spread = np.sqrt(np.mean((ref - ref.mean(axis=0)) ** 2))
    return float(np.sqrt(np.mean((out - ref) ** 2)) / spread)


@pytest.mark.slow
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", CORPUS)
def test_corpus_model_compiles_and_agrees(corpus, name, target, corpus_images, sample_calib, tmp_path):
    images = corpus_images
    source = corpus[name]
    ref = _reference(source, images)
    assert len(set(ref.argmax(1))) >= 3, "the random net must not predict one class for every image"
    for precision in PRECISIONS:
        result = edgekit.compile_model(
            str(source), target=target, precision=precision, output=tmp_path / precision,
            calib=sample_calib if precision == "int8" else None, calib_size=64, input_shape=(1, 3, 32, 32),
        )  # fmt: skip
        out = _bundle_outputs(result.path, target, images)
        error = relative_error(out, ref)
        agreement = 100.0 * float(np.mean(out.argmax(1) == ref.argmax(1)))
        print(f"{name} {target} {precision}: agreement {agreement:.1f}%, relative error {error:.4f}")
        if precision == "fp32":
            assert error <= FP32_ERROR
        elif precision == "fp16":
            assert error <= FP16_ERROR
        else:
            assert agreement >= MIN_AGREEMENT and error <= MAX_RELATIVE_ERROR, (name, target, agreement, error)
            quantization = result.manifest["quantization"]
            opset = int(name.rsplit("opset", 1)[1])
            if target != "intel-cpu":  # ONNX Runtime's Q/DQ: per-channel needs opset 13
                assert ("opset_upgrade" in quantization) == (opset < 13)
                if opset < 13:
                    assert quantization["opset_upgrade"] == {
                        "from": opset, "to": 13, "tool": "onnx.version_converter.convert_version",
                        "why": "per-channel Q/DQ needs opset 13",
                    }  # fmt: skip
                    assert any("upgraded it to opset 13" in w for w in result.warnings)


@pytest.mark.slow
def test_cli_compiles_an_opset11_model_with_dynamic_size_to_int8(corpus, sample_calib, tmp_path):
    """Before: ``edgekit: internal error: InvalidGraph ... Unrecognized attribute: axis for operator
    DequantizeLinear``. Now: the size is asked for in one line, then INT8 compiles and says what it upgraded."""
    model = str(corpus["torch-opset11"])
    res = run_cli("compile", model, "-t", "cpu", "-p", "fp32", "-o", str(tmp_path / "no-size"))
    assert res.returncode != 0
    (error,) = [line for line in res.stderr.splitlines() if "error" in line]
    assert "dynamic height and width" in error and "--input-shape" in error
    res = run_cli("compile", model, "-t", "cpu", "-p", "int8", "--calib", str(sample_calib), "--calib-size", "64",
                  "--input-shape", "1,3,32,32", "-o", str(tmp_path / "int8"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "edgekit: warning: the model is at opset 11; edgekit upgraded it to opset 13" in res.stderr
    assert "compiling, calibrating and measuring it at 32x32" in res.stderr
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr
