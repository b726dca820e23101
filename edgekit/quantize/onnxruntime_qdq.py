"""INT8 Q/DQ graphs with ONNX Runtime's own quantizer (``quantize_static``).

edgekit chooses the settings, ONNX Runtime does the work. Two recipes:

- ``cpu``: unsigned (asymmetric) 8-bit activations, signed symmetric per-channel 8-bit weights. Measured
  here, this is the layout ONNX Runtime's MLAS kernels fuse best (see docs/design.md); its defaults
  (signed activations) leave residual Adds unfused and run slower than FP32.
- ``symmetric``: signed symmetric activations and weights, zero points of 0, as TensorRT requires.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UsageError, require

OPS_TO_QUANTIZE = ("Conv", "Gemm", "MatMul", "Add", "Mul", "Relu", "Clip", "MaxPool", "AveragePool",
                   "GlobalAveragePool", "Concat", "Flatten", "Reshape")  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class QDQRecipe:
    name: str
    activations: str  # "uint8" or "int8"
    symmetric_activations: bool
    method: str = "minmax"
    percentile: float = 99.999
    per_channel: bool = True


CPU_RECIPE = QDQRecipe(name="ort-qdq-u8s8-per-channel", activations="uint8", symmetric_activations=False)
SYMMETRIC_RECIPE = QDQRecipe(name="ort-qdq-s8s8-symmetric", activations="int8", symmetric_activations=True)


class _Reader:
    """ONNX Runtime's one-method calibration reader protocol over preprocessed batches."""

    def __init__(self, name: str, tensors: np.ndarray, batch: int) -> None:
        self._batches = iter([tensors[i : i + batch] for i in range(0, len(tensors), batch)])
        self._name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch}


def _calibrate_method(recipe: QDQRecipe):
    from onnxruntime.quantization import CalibrationMethod

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}  # fmt: skip
    if recipe.method not in methods:
        raise UsageError(f"calibration method '{recipe.method}' is not one of: {', '.join(methods)}")
    return methods[recipe.method]


def quantize(
    model: Any,
    tensors: np.ndarray,
    out: Path,
    *,
    recipe: QDQRecipe,
    input_name: str,
    static_batch: int | None = None,
    nodes_to_exclude: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Write a Q/DQ INT8 copy of ``model`` (an onnx.ModelProto) to ``out``; return its provenance."""
    onnx = require("onnx", extra="compile", purpose="INT8 quantization")
    ort = require("onnxruntime", extra="compile", purpose="INT8 quantization")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp:
        src, prepped = Path(tmp) / "fp32.onnx", Path(tmp) / "prepped.onnx"
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        act = QuantType.QUInt8 if recipe.activations == "uint8" else QuantType.QInt8
        extra = {
            "ActivationSymmetric": recipe.symmetric_activations,
            "WeightSymmetric": True,
            "CalibPercentile": recipe.percentile,
            "CalibNumBins": 2048,  # with 128 (the default) entropy calibration has a single candidate
        }
        quantize_static(
            str(prepped),
            str(out),
            _Reader(input_name, tensors, static_batch or 32),
            quant_format=QuantFormat.QDQ,
            activation_type=act,
            weight_type=QuantType.QInt8,
            per_channel=recipe.per_channel,
            calibrate_method=_calibrate_method(recipe),
            op_types_to_quantize=list(OPS_TO_QUANTIZE),
            nodes_to_exclude=list(nodes_to_exclude),
            extra_options=extra,
        )
    return {
        "recipe": recipe.name,
        "tool": f"onnxruntime.quantization.quantize_static (onnxruntime {ort.__version__})",
        "format": "QDQ",
        "activations": f"{recipe.activations} per-tensor {'symmetric' if recipe.symmetric_activations else 'asymmetric'}",
        "weights": "int8 per-channel symmetric" if recipe.per_channel else "int8 per-tensor symmetric",
        "calibration_method": recipe.method,
        **({"percentile": recipe.percentile} if recipe.method == "percentile" else {}),
        "layers_kept_in_higher_precision": sorted(nodes_to_exclude),
    }
