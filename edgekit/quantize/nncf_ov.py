"""INT8 OpenVINO IR with NNCF's post-training quantization, OpenVINO's own recipe.

The settings are a recipe, data in the project's calibration/recipes/ (``edgekit.calibration.NNCFRecipe``):
``DEFAULT_RECIPE`` is ``nncf-ptq-performance-full-bias-correction``.
"""

from __future__ import annotations

import contextlib
import copy
import io
from collections.abc import Iterator
from typing import Any

import numpy as np

from edgekit.calibration import NNCFRecipe, nncf_recipe
from edgekit.errors import ModelError, UsageError, require
from edgekit.imagesets import Images, iter_batches

# edgekit's calibration methods in NNCF's terms: the activations' range estimator (weights are always
# per-channel min/max). NNCF has no entropy (KL) estimator.
RANGE_ESTIMATORS = {
    "minmax": "MINMAX (global min and max over the calibration images)",
    "mean-minmax": "MEAN_MINMAX (NNCF's default for per-tensor activations: the mean of each image's min and max)",
    "percentile": "MEAN_QUANTILE (the mean of each image's quantiles, outlier probability 1 - P/100)",
    "mse": "HISTOGRAM (the range minimising the quantization error's L2 norm on a histogram)",
}
DEFAULT_RECIPE = nncf_recipe("nncf-ptq-performance-full-bias-correction")


def _range_estimator(method: str, percentile: float) -> Any:
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    if method not in RANGE_ESTIMATORS:
        raise UsageError(
            f"calibration method '{method}' is not offered for OpenVINO (NNCF has no entropy calibration); "
            f"choose one of: {', '.join(RANGE_ESTIMATORS)}"
        )
    if method == "percentile":
        params = copy.deepcopy(RangeEstimatorParametersSet.MEAN_QUANTILE)
        for side in (params.min, params.max):
            side.quantile_outlier_prob = (100.0 - percentile) / 100.0
        return params
    return {"minmax": RangeEstimatorParametersSet.MINMAX, "mean-minmax": RangeEstimatorParametersSet.MEAN_MINMAX,
            "mse": RangeEstimatorParametersSet.HISTOGRAM}[method]  # fmt: skip


def quantize(
    ov_model: Any,
    tensors: Images,
    *,
    static_batch: int | None = None,
    ignored_names: tuple[str, ...] = (),
    method: str | None = None,
    percentile: float | None = None,
    recipe: NNCFRecipe = DEFAULT_RECIPE,
    keep_output_tail: bool = False,
) -> tuple[Any, dict[str, Any]]:
    """Quantize an ``openvino.Model`` on preprocessed calibration tensors; return it and its provenance.

    ``method`` and ``percentile`` default to the recipe's. ``keep_output_tail`` puts the ops after the last
    weighted layers (``output_tail``: a detector's decoding) in NNCF's ignored scope too.
    """
    nncf = require("nncf", extra="compile", purpose="OpenVINO INT8 quantization")
    import logging

    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters

    logging.getLogger("nncf").setLevel(logging.ERROR)
    method = recipe.method if method is None else method
    percentile = recipe.percentile if percentile is None else percentile
    # A dynamic-batch model takes the calibration images in equal batches (the largest divisor of the count up
    # to 32): statistics collection then takes a second instead of two or three, which counts in a budget
    # search's dozens of trial builds. A static-batch model takes its own batch.
    batch = static_batch or max(d for d in range(1, min(32, len(tensors)) + 1) if len(tensors) % d == 0)
    items = _Batches(tensors, batch)
    tail = output_tail(ov_model) if keep_output_tail else []
    names = list(ignored_names) + [n for n in tail if n not in ignored_names]
    ignored = nncf.IgnoredScope(names=names, validate=False) if names else None
    kwargs = {"ignored_scope": ignored} if ignored else {}
    estimator = _range_estimator(method, percentile)
    if method != "mean-minmax":  # NNCF's own default needs no advanced parameters
        kwargs["advanced_parameters"] = AdvancedQuantizationParameters(activations_range_estimator_params=estimator)
    # NNCF draws progress bars on stdout: drop them (edgekit logs its own progress, and keeps stdout for the
    # command's output, e.g. --json; a budget search would draw dozens).
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(
                ov_model,
                nncf.Dataset(items),
                subset_size=len(items),
                preset=getattr(nncf.QuantizationPreset, recipe.preset.upper()),
                # The shipped recipe takes NNCF's full BiasCorrection rather than its default FastBiasCorrection
                # (measured: see its file, calibration/recipes/nncf-ptq-performance-full-bias-correction.toml).
                fast_bias_correction=recipe.fast_bias_correction,
                **kwargs,
            )
    except (UsageError, ModelError):
        raise
    except Exception as exc:  # NNCF's own errors name its internals: say what the user can do
        text = str(exc).strip()
        first = (text.splitlines()[0] if text else type(exc).__name__)[:200]
        raise ModelError(
            f"NNCF's quantizer failed on this model ({type(exc).__name__}: {first}); re-export the model at "
            "opset 13 or newer with static input sizes, or compile with --precision fp16 or fp32"
        ) from exc
    return quantized, {
        "recipe": recipe.name,
        "tool": f"nncf.quantize (nncf {nncf.__version__})",
        "format": "OpenVINO IR with FakeQuantize",
        "activations": f"int8 per-tensor {'symmetric' if recipe.preset == 'performance' else 'asymmetric'} "
        f"(NNCF {recipe.preset.upper()} preset)",
        "weights": "int8 per-channel symmetric",
        "calibration_method": method,
        "calibration_batch": batch,
        "range_estimator": RANGE_ESTIMATORS[method],
        **({"percentile": percentile} if method == "percentile" else {}),
        "layers_kept_in_higher_precision": sorted(ignored_names),
        **({"output_tail_in_float": tail} if tail else {}),
    }


WEIGHTED_OPS = ("Convolution", "GroupConvolution", "MatMul", "ConvolutionBackpropData")
_NOT_OPS = ("Constant", "Parameter", "Result")


def output_tail(ov_model: Any) -> list[str]:
    """Friendly names of the ops after the last weighted layers (see ``onnxruntime_qdq.output_tail``), in order."""
    ops = [op for op in ov_model.get_ordered_ops() if op.get_type_name() not in _NOT_OPS]
    reaches: dict[str, bool] = {}
    for op in reversed(ops):
        consumers = [t.get_node() for out in op.outputs() for t in out.get_target_inputs()]
        reaches[op.get_friendly_name()] = any(
            c.get_type_name() in WEIGHTED_OPS or reaches.get(c.get_friendly_name(), False) for c in consumers
        )
    fed: set[str] = set()
    tail = []
    for op in ops:
        name = op.get_friendly_name()
        producers = [i.get_source_output().get_node().get_friendly_name() for i in op.inputs()]
        from_weighted = any(p in fed for p in producers)
        if op.get_type_name() in WEIGHTED_OPS or from_weighted:
            fed.add(name)
        if op.get_type_name() not in WEIGHTED_OPS and from_weighted and not reaches[name]:
            tail.append(name)
    return tail


class _Batches:
    """The calibration images in whole batches of ``batch`` (a last, smaller one is dropped), read again from
    disk on each pass NNCF makes: an iterable it can go over more than once, holding one batch at a time."""

    def __init__(self, images: Images, batch: int) -> None:
        self.images, self.batch = images, batch

    def __len__(self) -> int:
        return len(self.images) // self.batch

    def __iter__(self) -> Iterator[np.ndarray]:
        for x in iter_batches(self.images, self.batch):
            if len(x) == self.batch:
                yield x


BUDGET_OPS = ("Convolution", "GroupConvolution", "MatMul", "Add")


def layer_blocks(ov_model: Any) -> list[tuple[str, ...]]:
    """``quantizable_layers`` grouped into blocks, each ending at a residual Add (see
    ``onnxruntime_qdq.split_at_joins``)."""
    from edgekit.quantize.onnxruntime_qdq import split_at_joins

    names = quantizable_layers(ov_model)
    kinds = {op.get_friendly_name(): op.get_type_name() for op in ov_model.get_ordered_ops()}
    return split_at_joins([(name, kinds.get(name) == "Add") for name in names])


def quantizable_layers(ov_model: Any) -> list[str]:
    """Friendly names of the weighted ops and Adds NNCF quantizes, in graph order: what ``IgnoredScope`` names.

    Adds that only add a bias (a Convolution's or MatMul's output plus a constant) are not layers of their own.
    """
    layers = []
    for op in ov_model.get_ordered_ops():
        kind = op.get_type_name()
        if kind == "Add" and any(i.get_node().get_type_name() == "Constant" for i in op.input_values()):
            continue
        if kind in BUDGET_OPS:
            layers.append(op.get_friendly_name())
    return layers
