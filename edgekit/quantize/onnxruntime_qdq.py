"""INT8 Q/DQ graphs with ONNX Runtime's own quantizer (``quantize_static``).

edgekit chooses the settings, ONNX Runtime does the work. Two recipes:

- ``cpu``: unsigned (asymmetric) 8-bit activations, signed symmetric per-channel 8-bit weights. Measured
  here, this is the layout ONNX Runtime's MLAS kernels fuse best (see docs/design.md); its defaults
  (signed activations) leave residual Adds unfused and run slower than FP32.
- ``symmetric``: signed symmetric activations and weights, zero points of 0, as TensorRT requires; biases
  stay float (TensorRT dequantizes INT8 only, not ONNX Runtime's int32 biases), and Q/DQ go on the inputs
  of Conv, Gemm, MatMul and Add only, not on their outputs (NVIDIA's placement: quantize the inputs of
  weighted layers and both inputs of a residual Add; let TensorRT fuse Conv+BN+ReLU(+Add) itself).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import UsageError, require

ENTROPY_BINS = 2048  # histogram bins for entropy calibration (TensorRT's entropy calibrator uses 2048 too)
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
    op_types: tuple[str, ...] = OPS_TO_QUANTIZE
    quantize_bias: bool = True  # ONNX Runtime's default: int32 biases behind a DequantizeLinear
    dedicated_qdq_pair: bool = False  # ONNX Runtime's default: consumers of a tensor share one Q/DQ pair
    outputs_unquantized: tuple[str, ...] = ()  # op types whose outputs get no Q/DQ (default: all are quantized)


CPU_RECIPE = QDQRecipe(name="ort-qdq-u8s8-per-channel", activations="uint8", symmetric_activations=False)
SYMMETRIC_RECIPE = QDQRecipe(
    name="ort-qdq-s8s8-symmetric",
    activations="int8",
    symmetric_activations=True,
    op_types=("Conv", "Gemm", "MatMul", "Add"),
    quantize_bias=False,
    dedicated_qdq_pair=True,
    outputs_unquantized=("Conv", "Gemm", "MatMul", "Add"),
)


class _Reader:
    """ONNX Runtime's one-method calibration reader protocol over preprocessed batches."""

    def __init__(self, name: str, tensors: np.ndarray, batch: int) -> None:
        self._batches = iter([tensors[i : i + batch] for i in range(0, len(tensors), batch)])
        self._name = name

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {self._name: batch}


def _extra_options(recipe: QDQRecipe) -> dict[str, Any]:
    """quantize_static's extra_options for a recipe; the CPU recipe's are ONNX Runtime's defaults plus these four."""
    extra: dict[str, Any] = {
        "ActivationSymmetric": recipe.symmetric_activations,
        "WeightSymmetric": True,
        "CalibPercentile": recipe.percentile,
        "CalibNumBins": 2048,  # not forwarded by quantize_static (see _entropy_ranges); kept for older releases
    }
    if not recipe.quantize_bias:
        extra["QuantizeBias"] = False
    if recipe.dedicated_qdq_pair:
        extra["DedicatedQDQPair"] = True
    if recipe.outputs_unquantized:
        extra["OpTypesToExcludeOutputQuantization"] = list(recipe.outputs_unquantized)
    return extra


def _dynamic_batch(count: int, method: str) -> int:
    """Calibration batch size for a dynamic-batch model. ONNX Runtime's histogram collectors (entropy,
    percentile) stack every batch's activations, so the batches must be the same size: take the largest
    divisor of ``count`` up to 32. MinMax takes any batches; it keeps 32."""
    if method == "minmax":
        return 32
    return max(d for d in range(1, min(32, count) + 1) if count % d == 0)


def _entropy_ranges(prepped: Path, reader: _Reader, recipe: QDQRecipe, tmp: Path) -> Path | None:
    """Entropy ranges from ONNX Runtime's own calibrator, with ENTROPY_BINS histogram bins.

    Measured with onnxruntime 1.32: quantize_static forwards no bin count to its entropy calibrator, whose
    default (128 bins, 128 quantized bins) leaves one candidate threshold, so "entropy" returned exactly
    the minmax ranges. Calibrating with ``create_calibrator`` and handing quantize_static the ranges
    through its calibration cache gives the KL search its 2048 bins. Returns None (quantize_static
    calibrates, at 128 bins) on a release without ``calibration_cache_path``.
    """
    import inspect

    from onnxruntime.quantization import create_calibrator, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        return None
    calibrator = create_calibrator(
        prepped,
        list(recipe.op_types),
        augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=_calibrate_method(recipe),
        extra_options={"num_bins": ENTROPY_BINS, "num_quantized_bins": 128},
    )
    calibrator.collect_data(reader)
    path = tmp / "ranges.json"
    save_tensors_data(calibrator.compute_data(), path)
    return path


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
    prepared_out: Path | None = None,
) -> dict[str, Any]:
    """Write a Q/DQ INT8 copy of ``model`` (an onnx.ModelProto) to ``out``; return its provenance.

    ``prepared_out``, if given, receives the pre-processed FP32 graph that was quantized: its tensor
    names are the ones the Q/DQ graph's scales belong to.
    """
    onnx = require("onnx", extra="compile", purpose="INT8 quantization")
    ort = require("onnxruntime", extra="compile", purpose="INT8 quantization")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp:
        src, prepped = Path(tmp) / "fp32.onnx", Path(tmp) / "prepped.onnx"
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        act = QuantType.QUInt8 if recipe.activations == "uint8" else QuantType.QInt8
        reader = _Reader(input_name, tensors, static_batch or _dynamic_batch(len(tensors), recipe.method))
        # ONNX Runtime's histogram calibrators print progress on stdout; keep stdout for the command's output
        with contextlib.redirect_stdout(sys.stderr):
            ranges = _entropy_ranges(prepped, reader, recipe, Path(tmp)) if recipe.method == "entropy" else None
            quantize_static(
                str(prepped),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=act,
                weight_type=QuantType.QInt8,
                per_channel=recipe.per_channel,
                calibrate_method=_calibrate_method(recipe),
                op_types_to_quantize=list(recipe.op_types),
                nodes_to_exclude=list(nodes_to_exclude),
                extra_options=_extra_options(recipe),
                **({"calibration_cache_path": str(ranges)} if ranges else {}),
            )
        if prepared_out is not None:
            shutil.copyfile(prepped, prepared_out)
    provenance = {
        "recipe": recipe.name,
        "tool": f"onnxruntime.quantization.quantize_static (onnxruntime {ort.__version__})",
        "format": "QDQ",
        "activations": f"{recipe.activations} per-tensor {'symmetric' if recipe.symmetric_activations else 'asymmetric'}",
        "weights": "int8 per-channel symmetric" if recipe.per_channel else "int8 per-tensor symmetric",
        "calibration_method": recipe.method,
        **({"percentile": recipe.percentile} if recipe.method == "percentile" else {}),
        **({"entropy_histogram_bins": ENTROPY_BINS if ranges else 128} if recipe.method == "entropy" else {}),
        "layers_kept_in_higher_precision": sorted(nodes_to_exclude),
    }
    if not recipe.quantize_bias:
        provenance["bias"] = "float (not quantized)"
    if recipe.op_types != OPS_TO_QUANTIZE:
        provenance["quantized_op_types"] = list(recipe.op_types)
    return provenance


# What an accuracy budget may return to higher precision: the weighted layers and the residual Adds (whose
# Q/DQ would otherwise stay, so that even "every layer reverted" could not reach FP32's agreement).
BUDGET_OPS = ("Conv", "Gemm", "MatMul", "Add")


def quantizable_layers(model: Any) -> list[str]:
    """Names of the layers (Conv, Gemm, MatMul, Add) the quantizer sees, in graph order.

    ``quantize`` pre-processes the graph first, so the names are read from the pre-processed graph: they
    are the names ``nodes_to_exclude`` takes.
    """
    onnx = require("onnx", extra="compile", purpose="INT8 quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="edgekit-layers-") as tmp:
        src, prepped = Path(tmp) / "fp32.onnx", Path(tmp) / "prepped.onnx"
        onnx.save(model, str(src))
        quant_pre_process(str(src), str(prepped), skip_symbolic_shape=True)
        graph = onnx.load(str(prepped)).graph
    return [n.name for n in graph.node if n.op_type in BUDGET_OPS and n.name]
