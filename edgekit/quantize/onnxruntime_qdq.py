"""INT8 Q/DQ graphs with ONNX Runtime's own quantizer (``quantize_static``).

edgekit chooses the settings, ONNX Runtime does the work. The settings are recipes, data in the project's
calibration/recipes/ (``edgekit.calibration.QDQRecipe``); two ship:

- ``ort-qdq-u8s8-per-channel`` (``CPU_RECIPE``): unsigned (asymmetric) 8-bit activations, signed symmetric per-channel 8-bit weights. Measured
  here, this is the layout ONNX Runtime's MLAS kernels fuse best (see docs/design.md); its defaults
  (signed activations) leave residual Adds unfused and run slower than FP32.
- ``ort-qdq-s8s8-symmetric`` (``SYMMETRIC_RECIPE``, for TensorRT): signed symmetric activations and weights, zero points of 0, as TensorRT requires; biases
  stay float (TensorRT dequantizes INT8 only, not ONNX Runtime's int32 biases), and Q/DQ go on the inputs
  of Conv, Gemm, MatMul and Add only, not on their outputs (NVIDIA's placement: quantize the inputs of
  weighted layers and both inputs of a residual Add; let TensorRT fuse Conv+BN+ReLU(+Add) itself).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.calibration import QDQRecipe, qdq_recipe
from edgekit.errors import ModelError, UsageError, require
from edgekit.imagesets import Images, iter_batches

ENTROPY_BINS = 2048  # histogram bins for entropy calibration (TensorRT's entropy calibrator uses 2048 too)

# The two recipes are data: calibration/recipes/<name>.toml, loaded by edgekit.calibration (a target file names
# its own with calibration_recipe). The names below stay for the compilers and tests that use them.
CPU_RECIPE = qdq_recipe("ort-qdq-u8s8-per-channel")
SYMMETRIC_RECIPE = qdq_recipe("ort-qdq-s8s8-symmetric")
OPS_TO_QUANTIZE = CPU_RECIPE.op_types  # the CPU recipe's op types: provenance lists a recipe's own when they differ


class _Reader:
    """ONNX Runtime's one-method calibration reader protocol over preprocessed batches, read on demand."""

    def __init__(self, name: str, tensors: Images, batch: int) -> None:
        self._batches = iter_batches(tensors, batch)
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


# Calibration ranges by (model, calibration images, recipe): an accuracy budget's search quantizes the same model
# on the same images dozens of times, excluding different layers; the ranges do not change, so they are computed
# once per process (ONNX Runtime's calibration cache file) and reused. Removed at exit.
_RANGES_DIR: Path | None = None


def _ranges_path(model: Any, tensors: Images, recipe: QDQRecipe, batch: int) -> Path | None:
    """Where this calibration's ranges are (or will be) cached; None on a release without the cache."""
    import atexit
    import hashlib
    import inspect

    from onnxruntime.quantization import quantize_static

    global _RANGES_DIR
    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        if recipe.method == "mse":
            raise UsageError("--calib-method mse needs onnxruntime 1.17 or newer (quantize_static's calibration cache)")
        return None
    if _RANGES_DIR is None:
        _RANGES_DIR = Path(tempfile.mkdtemp(prefix="edgekit-ranges-"))
        atexit.register(shutil.rmtree, _RANGES_DIR, True)
    h = hashlib.sha256(model.SerializeToString())
    for x in iter_batches(tensors, 256):  # the same bytes as the whole array's, one batch at a time
        h.update(np.ascontiguousarray(x).tobytes())
    h.update(repr((recipe.method, recipe.percentile, recipe.symmetric_activations, recipe.op_types, batch)).encode())
    return _RANGES_DIR / f"{h.hexdigest()[:32]}.json"


def _histogram_ranges(prepped: Path, reader: _Reader, recipe: QDQRecipe, tmp: Path, path: Path) -> None:
    """Entropy or MSE ranges from ONNX Runtime's own histogram calibrator, with ENTROPY_BINS bins, into ``path``.

    Entropy: measured with onnxruntime 1.32, quantize_static forwards no bin count to its entropy calibrator,
    whose default (128 bins, 128 quantized bins) leaves one candidate threshold, so "entropy" returned exactly
    the minmax ranges. Calibrating with ``create_calibrator`` and handing quantize_static the ranges through
    its calibration cache gives the KL search its 2048 bins.

    MSE: ONNX Runtime has no MSE calibrator, so edgekit picks each tensor's range from the same histograms
    (``mse_range``) and hands them over the same way.
    """
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    from onnxruntime.quantization.calibrate import TensorsData, save_tensors_data

    calibrator = create_calibrator(
        prepped,
        list(recipe.op_types),
        augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=CalibrationMethod.Entropy,
        extra_options={"num_bins": ENTROPY_BINS, "num_quantized_bins": 128},
    )
    calibrator.collect_data(reader)
    if recipe.method == "entropy":
        data = calibrator.compute_data()
    else:
        ranges = {}
        for name, (hist, edges, lo, hi, *_rest) in calibrator.collector.histogram_dict.items():
            low, high = mse_range(np.asarray(hist), np.asarray(edges), float(lo), float(hi),
                                  symmetric=recipe.symmetric_activations, levels=255 if recipe.symmetric_activations else 256)  # fmt: skip
            ranges[name] = (np.array(low, np.float32), np.array(high, np.float32))
        data = TensorsData(CalibrationMethod.MinMax, ranges)
    save_tensors_data(data, path)


def mse_range(
    hist: np.ndarray, edges: np.ndarray, lo: float, hi: float, *, symmetric: bool, levels: int = 256
) -> tuple[float, float]:
    """The clipping range that minimises the mean squared quantization error over a value histogram.

    Candidates shrink the observed range [min(lo, 0), max(hi, 0)] (or +-max|.| when ``symmetric``) by a
    factor from 1 down to 0.05; each bin's centre is quantized to ``levels`` steps over the candidate range,
    clipped, and the squared errors weighted by the bin counts. The same search TensorRT's
    pytorch-quantization ("mse") and NNCF's histogram range estimator make, on ONNX Runtime's histograms.
    """
    centres = ((edges[:-1] + edges[1:]) / 2).astype(np.float64)
    counts = hist.astype(np.float64)
    keep = counts > 0
    centres, counts = centres[keep], counts[keep]
    if counts.size == 0:
        return lo, hi
    low, high = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        bound = max(abs(low), abs(high))
        low, high = -bound, bound
    if high - low <= 0:
        return low, high
    factors = np.linspace(1.0, 0.05, 96)[:, None]
    cand_lo, cand_hi = low * factors, high * factors
    scale = (cand_hi - cand_lo) / (levels - 1)
    q = np.clip(np.round((centres[None, :] - cand_lo) / scale), 0, levels - 1)
    err = ((q * scale + cand_lo - centres[None, :]) ** 2 * counts[None, :]).sum(axis=1)
    best = int(np.argmin(err))
    return float(cand_lo[best, 0]), float(cand_hi[best, 0])


def _calibrate_method(recipe: QDQRecipe):
    from onnxruntime.quantization import CalibrationMethod

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile, "mse": CalibrationMethod.MinMax}  # fmt: skip
    if recipe.method not in methods:
        raise UsageError(
            f"calibration method '{recipe.method}' is not offered with ONNX Runtime's quantizer (cpu and Jetson "
            f"targets); choose one of: {', '.join(methods)}"
        )
    return methods[recipe.method]


# The opset a recipe's Q/DQ graph needs: QuantizeLinear/DequantizeLinear exist from opset 10, their ``axis``
# attribute (per-channel scales, and ONNX Runtime's per-channel int32 biases) from opset 13. A model below it is
# upgraded with ONNX's version converter before it is quantized; one at or above it is quantized as it is.
QDQ_OPSET = 10
PER_CHANNEL_OPSET = 13
CONVERTER = "onnx.version_converter.convert_version"
# What to do when ONNX Runtime's quantizer, or the Q/DQ graph it wrote, fails: known messages and their fixes.
KNOWN_FAILURES = (
    ("Unrecognized attribute: axis for operator DequantizeLinear",
     "per-channel INT8 Q/DQ needs opset 13 or newer: re-export the model at opset 13 or newer "
     "(torch.onnx.export(..., opset_version=17))"),
    ("Unrecognized attribute: axis for operator QuantizeLinear",
     "per-channel INT8 Q/DQ needs opset 13 or newer: re-export the model at opset 13 or newer "
     "(torch.onnx.export(..., opset_version=17))"),
    ("ShapeInferenceError", "give the model static shapes (--input-shape, or re-export with fixed sizes)"),
)  # fmt: skip
GENERIC_FIX = (
    "re-export the model at opset 13 or newer with static input sizes, or compile with --precision fp16 or fp32"
)


def required_opset(recipe: QDQRecipe) -> int:
    """The lowest default-domain opset ``recipe``'s Q/DQ graph is valid at."""
    return PER_CHANNEL_OPSET if recipe.per_channel else QDQ_OPSET


def model_opset(model: Any) -> int:
    """The model's default-domain ("" or "ai.onnx") opset; 1 when it imports none (ONNX's rule)."""
    return next((imp.version for imp in model.opset_import if imp.domain in ("", "ai.onnx")), 1)


def upgrade_opset(model: Any, opset: int) -> Any:
    """``model`` converted to ``opset`` with ONNX's version converter and checked; raise
    ModelError naming the source opset and the fix when the converter cannot (its adapters cover the standard
    ops, not every attribute combination older exporters wrote)."""
    onnx = require("onnx", extra="compile", purpose="INT8 quantization")
    from onnx import version_converter

    source = model_opset(model)
    try:
        converted = version_converter.convert_version(model, opset)
        onnx.checker.check_model(converted)  # not full_check: shapes are left to the tolerant pre-processing
    except Exception as exc:
        raise ModelError(
            f"the model is at opset {source} and ONNX's version converter cannot upgrade it to opset {opset}, "
            f"which INT8 Q/DQ needs ({_first_line(exc)}); re-export the model at opset {opset} or newer, or "
            "compile with --precision fp16 or fp32"
        ) from exc
    return converted


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def explain(exc: BaseException) -> str:
    """What to do about a failure of ONNX Runtime's quantizer or of the Q/DQ graph it wrote: the fix for a
    known message, else the general one."""
    text = str(exc)
    return next((fix for needle, fix in KNOWN_FAILURES if needle in text), GENERIC_FIX)


# ONNX Runtime's pre-processing (quant_pre_process), tried in order: the first that succeeds is used. The first
# is what edgekit always ran (ONNX shape inference and ONNX Runtime's graph optimisation, no symbolic shape
# inference); the others drop the steps that fail on shapes older exporters leave unresolved.
PRE_PROCESS_STEPS = (
    ("graph optimisation and ONNX shape inference", {"skip_symbolic_shape": True}),
    ("ONNX shape inference only (ONNX Runtime's graph optimisation failed)",
     {"skip_symbolic_shape": True, "skip_optimization": True}),
    ("none (ONNX Runtime's graph optimisation and ONNX shape inference both failed)",
     {"skip_symbolic_shape": True, "skip_optimization": True, "skip_onnx_shape": True}),
)  # fmt: skip


def prepare(model: Any, recipe: QDQRecipe, folder: Path) -> tuple[Any, Path, dict[str, Any]]:
    """The graph ``quantize_static`` takes: ``model`` upgraded to the opset ``recipe`` needs (only when it is
    below it), then pre-processed by ONNX Runtime's ``quant_pre_process``, written into ``folder``.

    Returns the (possibly upgraded) model, the pre-processed file and a record for the provenance: empty when
    nothing was upgraded and the usual pre-processing ran, so the provenance of such a model is unchanged.
    When a pre-processing step fails, the next, lighter one is tried and the record says which ran and why.
    """
    onnx = require("onnx", extra="compile", purpose="INT8 quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    record: dict[str, Any] = {}
    source, needed = model_opset(model), required_opset(recipe)
    if source < needed:
        model = upgrade_opset(model, needed)
        record["opset_upgrade"] = {
            "from": source, "to": needed, "tool": CONVERTER,
            "why": f"{'per-channel ' if recipe.per_channel else ''}Q/DQ needs opset {needed}",
        }  # fmt: skip
    src, prepped = folder / "fp32.onnx", folder / "prepped.onnx"
    onnx.save(model, str(src))
    failures = []
    for i, (what, kwargs) in enumerate(PRE_PROCESS_STEPS):
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                quant_pre_process(str(src), str(prepped), **kwargs)
        except Exception as exc:
            failures.append(f"{type(exc).__name__}: {_first_line(exc)}")
            continue
        if i:
            record["pre_processing"] = {"ran": what, "failed": failures}
        _name_nodes(prepped)
        return model, prepped, record
    shutil.copyfile(src, prepped)  # unreachable in practice: the last step only re-saves the model
    record["pre_processing"] = {"ran": "none", "failed": failures}
    _name_nodes(prepped)
    return model, prepped, record


def _name_nodes(path: Path) -> None:
    """Give every unnamed node of the graph at ``path`` a unique name (``<op>_edgekit_<n>``), in place.

    ONNX allows unnamed nodes and some exporters write them (NMS tails, hand-built graphs), but the
    quantizer's ``nodes_to_exclude``, the output tail and the budget's layers all name nodes: an unnamed
    node could be neither kept in float nor reverted."""
    onnx = require("onnx", extra="compile", purpose="INT8 quantization")
    model = onnx.load(str(path))
    taken = {n.name for n in model.graph.node if n.name}
    if len(taken) == len(model.graph.node):
        return
    count = 0
    for node in model.graph.node:
        if not node.name:
            while f"{node.op_type}_edgekit_{count}" in taken:
                count += 1
            node.name = f"{node.op_type}_edgekit_{count}"
            taken.add(node.name)
    onnx.save(model, str(path))


def _quantize_static(quantize_static: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    """``quantize_static`` with its failure as one line naming the cause and the fix (ModelError)."""
    try:
        quantize_static(*args, **kwargs)
    except (UsageError, ModelError):
        raise
    except Exception as exc:
        raise ModelError(
            f"ONNX Runtime's quantizer failed on this model ({type(exc).__name__}: {_first_line(exc)}); {explain(exc)}"
        ) from exc


def preparation_notes(quantization: dict[str, Any] | None) -> list[str]:
    """The manifest notes (and compile warnings) for what ``prepare`` changed: the opset upgrade and a
    pre-processing fallback."""
    if not quantization:
        return []
    notes = []
    if upgrade := quantization.get("opset_upgrade"):
        notes.append(
            f"the model is at opset {upgrade['from']}; edgekit upgraded it to opset {upgrade['to']} with ONNX's "
            f"version converter before quantizing ({upgrade['why']}); the FP32 reference is the original model"
        )
    if pre := quantization.get("pre_processing"):
        notes.append(
            f"ONNX Runtime's pre-processing failed on this model ({pre['failed'][0]}); edgekit fell back to "
            f"{pre['ran']} before quantizing: check the INT8 agreement with FP32 (--val)"
        )
    return notes


def quantize(
    model: Any,
    tensors: Images,
    out: Path,
    *,
    recipe: QDQRecipe,
    input_name: str,
    static_batch: int | None = None,
    nodes_to_exclude: tuple[str, ...] = (),
    prepared_out: Path | None = None,
    keep_output_tail: bool = False,
) -> dict[str, Any]:
    """Write a Q/DQ INT8 copy of ``model`` (an onnx.ModelProto) to ``out``; return its provenance.

    ``prepared_out``, if given, receives the pre-processed FP32 graph that was quantized: its tensor
    names are the ones the Q/DQ graph's scales belong to. ``keep_output_tail`` keeps the ops after the last
    weighted layers in float (``output_tail``: a detector's box decoding, sigmoid and concatenation).
    """
    ort = require("onnxruntime", extra="compile", purpose="INT8 quantization")
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    with tempfile.TemporaryDirectory(prefix="edgekit-quant-") as tmp:
        model, prepped, preparation = prepare(model, recipe, Path(tmp))
        tail = output_tail(prepped) if keep_output_tail else []
        nodes_to_exclude = tuple(nodes_to_exclude) + tuple(n for n in tail if n not in nodes_to_exclude)
        act = QuantType.QUInt8 if recipe.activations == "uint8" else QuantType.QInt8
        batch = static_batch or _dynamic_batch(len(tensors), recipe.method)
        reader = _Reader(input_name, tensors, batch)
        ranges = _ranges_path(model, tensors, recipe, batch)
        excluded = list(nodes_to_exclude) + _activation_chains(prepped, nodes_to_exclude, recipe)
        # ONNX Runtime's histogram calibrators print progress on stdout: drop it (stdout is the command's output,
        # and a budget search would print it for every trial)
        with contextlib.redirect_stdout(io.StringIO()):
            if ranges is not None and not ranges.exists() and recipe.method in ("entropy", "mse"):
                _histogram_ranges(prepped, reader, recipe, Path(tmp), ranges)
            _quantize_static(
                quantize_static,
                str(prepped),
                str(out),
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=act,
                weight_type=QuantType.QInt8,
                per_channel=recipe.per_channel,
                calibrate_method=_calibrate_method(recipe),
                op_types_to_quantize=list(recipe.op_types),
                nodes_to_exclude=excluded,
                extra_options=_extra_options(recipe),
                **({"calibration_cache_path": str(ranges)} if ranges else {}),
            )
        if nodes_to_exclude:
            keep_fp32_inputs(out, prepped, tuple(excluded))
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
        **(
            {"mse": f"edgekit's range search on ONNX Runtime's {ENTROPY_BINS}-bin histograms"}
            if recipe.method == "mse"
            else {}
        ),
        "layers_kept_in_higher_precision": sorted(n for n in nodes_to_exclude if n not in tail),
        **preparation,
    }
    if tail:
        provenance["output_tail_in_float"] = tail
    if not recipe.quantize_bias:
        provenance["bias"] = "float (not quantized)"
    if recipe.op_types != OPS_TO_QUANTIZE:
        provenance["quantized_op_types"] = list(recipe.op_types)
    return provenance


WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def output_tail(prepped: Path | Any) -> list[str]:
    """The ops after the model's last weighted layers (those from which no Conv, Gemm or MatMul is reached
    on the way to an output, and that a weighted layer feeds), in graph order: a detector's box decoding,
    score activations and box/score concatenation, which INT8 rounds badly (pixel coordinates and 0-1
    scores in one quantized tensor round the scores to zero), so the detection recipes keep them in float."""
    onnx = require("onnx", extra="compile", purpose="INT8 quantization")
    graph = (onnx.load(str(prepped)) if isinstance(prepped, (str, Path)) else prepped).graph
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    reaches_weighted: dict[str, bool] = {}
    for node in reversed(graph.node):  # graph order is topological: consumers come later
        reaches_weighted[node.name] = any(
            c.op_type in WEIGHTED_OPS or reaches_weighted.get(c.name, False)
            for t in node.output
            for c in consumers.get(t, [])
        )
    fed: set[str] = set()
    tail = []
    for node in graph.node:
        producers_fed = any(t in fed for t in node.input)
        after_weighted = node.op_type in WEIGHTED_OPS or producers_fed
        if after_weighted:
            fed.update(node.output)
        if node.op_type not in WEIGHTED_OPS and producers_fed and not reaches_weighted[node.name] and node.name:
            tail.append(node.name)
    return tail


# What an accuracy budget may return to higher precision: the weighted layers and the residual Adds (whose
# Q/DQ would otherwise stay, so that even "every layer reverted" could not reach FP32's agreement).
BUDGET_OPS = ("Conv", "Gemm", "MatMul", "Add")


def quantizable_layers(model: Any, recipe: QDQRecipe = CPU_RECIPE) -> list[str]:
    """Names of the layers (Conv, Gemm, MatMul, Add) the quantizer sees, in graph order.

    ``quantize`` pre-processes the graph first (``prepare``: the opset upgrade ``recipe`` needs, then ONNX
    Runtime's pre-processing), so the names are read from the pre-processed graph: they are the names
    ``nodes_to_exclude`` takes.
    """
    onnx = require("onnx", extra="compile", purpose="INT8 quantization")

    with tempfile.TemporaryDirectory(prefix="edgekit-layers-") as tmp:
        _model, prepped, _record = prepare(model, recipe, Path(tmp))
        graph = onnx.load(str(prepped)).graph
    return [n.name for n in graph.node if n.op_type in BUDGET_OPS and n.name]


def layer_blocks(model: Any, recipe: QDQRecipe = CPU_RECIPE) -> list[tuple[str, ...]]:
    """``quantizable_layers`` grouped into blocks: a block ends at each residual Add (a ResNet block, a
    MobileNetV2 inverted residual, with the non-residual blocks before it; the head after the last Add)."""
    onnx = require("onnx", extra="compile", purpose="INT8 quantization")

    with tempfile.TemporaryDirectory(prefix="edgekit-layers-") as tmp:
        _model, prepped, _record = prepare(model, recipe, Path(tmp))
        graph = onnx.load(str(prepped)).graph
    return split_at_joins([(n.name, n.op_type == "Add") for n in graph.node if n.op_type in BUDGET_OPS and n.name])


def split_at_joins(layers: list[tuple[str, bool]]) -> list[tuple[str, ...]]:
    """(name, is a residual join) in graph order -> blocks, each ending at a join (the last may not)."""
    blocks: list[tuple[str, ...]] = []
    current: list[str] = []
    for name, join in layers:
        current.append(name)
        if join:
            blocks.append(tuple(current))
            current = []
    if current:
        blocks.append(tuple(current))
    return blocks


# Ops that only move or clip activations: a layer kept in higher precision reads its input through them in
# FP32 too, so they are kept with it (ONNX Runtime's CPU recipe quantizes their outputs).
ACTIVATION_OPS = ("Relu", "Clip", "MaxPool", "AveragePool", "GlobalAveragePool", "Flatten", "Reshape", "Concat")


def _activation_chains(prepped: Path, layers: tuple[str, ...], recipe: QDQRecipe) -> list[str]:
    """The activation-only ops (of those the recipe quantizes) between each kept layer and the ops that feed it."""
    onnx = require("onnx", extra="compile", purpose="INT8 quantization")
    if not layers:
        return []
    graph = onnx.load(str(prepped)).graph
    producer = {o: n for n in graph.node for o in n.output}
    by_name = {n.name: n for n in graph.node}
    found: list[str] = []
    todo = [by_name[name] for name in layers if name in by_name]
    while todo:
        node = todo.pop()
        for tensor in node.input:
            src = producer.get(tensor)
            if src is None or src.op_type not in ACTIVATION_OPS or src.op_type not in recipe.op_types:
                continue
            if src.name not in found and src.name not in layers:
                found.append(src.name)
                todo.append(src)
    return found


def keep_fp32_inputs(qdq_path: Path, prepped: Path, keep: tuple[str, ...]) -> None:
    """Make each kept node (the layers and the activation ops feeding them, ``_activation_chains``) read FP32
    activations, weights and biases.

    ``quantize_static``'s ``nodes_to_exclude`` keeps a node's own arithmetic in FP32, but where a tensor is
    shared with a quantized consumer (or the producer's output is quantized, as in the CPU recipe) the excluded
    node still reads it through the shared QuantizeLinear/DequantizeLinear pair, and its weights stay
    rounded to INT8: measured on the reference ResNet (961 search images), 25 of 31 layers reverted that way
    still agreed with FP32 on only 99.58%, no better than one layer. This rewires each kept node's inputs to the FP32 tensors the
    pre-processed graph gives it (the Q/DQ pairs stay for the quantized consumers) and drops Q/DQ nodes and
    initializers nothing reads any more.
    """
    onnx = require("onnx", extra="compile", purpose="INT8 quantization")
    model = onnx.load(str(qdq_path))
    fp32 = onnx.load(str(prepped)).graph
    fp32_nodes = {n.name: n for n in fp32.node}
    fp32_inits = {i.name: i for i in fp32.initializer}
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    have = {i.name for i in graph.initializer}
    keep = set(keep)
    for node in graph.node:
        if node.name not in keep or node.name not in fp32_nodes:
            continue
        want = fp32_nodes[node.name].input
        for i, tensor in enumerate(node.input):
            if i >= len(want) or tensor == want[i]:
                continue
            dq = producer.get(tensor)
            if want[i] in fp32_inits:  # a weight or bias: the FP32 initializer itself
                if want[i] not in have:
                    graph.initializer.append(fp32_inits[want[i]])
                    have.add(want[i])
                node.input[i] = want[i]
            elif dq is not None and dq.op_type == "DequantizeLinear":
                q = producer.get(dq.input[0])
                source = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else None
                if source != want[i]:
                    raise RuntimeError(
                        f"edgekit: cannot keep {node.name} in higher precision: its input {want[i]} is not in the "
                        "quantized graph (please report this with the model)"
                    )
                node.input[i] = source
    _drop_unused(graph)
    onnx.save(model, str(qdq_path))


def _drop_unused(graph: Any) -> None:
    """Remove nodes whose outputs nothing reads (Q/DQ left behind), then initializers nothing reads."""
    outputs = {o.name for o in graph.output}
    while True:
        used = outputs | {t for n in graph.node for t in n.input}
        dead = [
            n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not (set(n.output) & used)
        ]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {t for n in graph.node for t in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
