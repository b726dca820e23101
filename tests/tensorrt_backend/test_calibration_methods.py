"""The calibration methods TensorRT users expect (entropy, percentile) really change the ranges."""

from __future__ import annotations

import contextlib
import io

import pytest

from edgekit.backends.tensorrt import calibration_cache as cc
from edgekit.quantize import onnxruntime_qdq


@pytest.fixture(scope="module")
def scales_by_method(tiny_onnx, calib_tensors, tmp_path_factory, quantize):
    import dataclasses

    found, stdout = {}, io.StringIO()
    for method in ("minmax", "entropy", "percentile", "mse"):
        recipe = dataclasses.replace(onnxruntime_qdq.SYMMETRIC_RECIPE, method=method, percentile=99.9)
        with contextlib.redirect_stdout(stdout):
            model, provenance, _ = quantize(tiny_onnx, calib_tensors, tmp_path_factory.mktemp(method), recipe)
        found[method] = (cc.scales_from_qdq(model), provenance)
    return found, stdout.getvalue()


@pytest.mark.slow  # more than 15 s on 2 cores
def test_entropy_and_percentile_clip_below_minmax(scales_by_method):
    found, _ = scales_by_method
    minmax = found["minmax"][0]
    for method in ("entropy", "percentile", "mse"):
        scales = found[method][0]
        assert set(scales) == set(minmax)
        assert all(scales[t] <= minmax[t] * (1 + 1e-6) for t in scales), method
        assert any(scales[t] < minmax[t] * 0.99 for t in scales), f"{method} gave the minmax ranges"


@pytest.mark.slow  # more than 15 s on 2 cores
def test_provenance_records_the_method_and_its_parameters(scales_by_method):
    found, _ = scales_by_method
    assert found["entropy"][1]["calibration_method"] == "entropy"
    assert found["entropy"][1]["entropy_histogram_bins"] == onnxruntime_qdq.ENTROPY_BINS
    assert found["percentile"][1]["percentile"] == 99.9


@pytest.mark.slow  # more than 15 s on 2 cores
def test_onnx_runtime_progress_stays_off_stdout(scales_by_method):
    _, stdout = scales_by_method
    assert stdout == ""  # `edgekit compile --json` prints the manifest there and nothing else


def test_mse_range_clips_a_long_tail_and_keeps_a_uniform_range():
    import numpy as np

    rng = np.random.default_rng(0)
    tail = rng.laplace(0, 1, 200_000)  # a long tail: the few largest values cost less clipped than the rest rounded
    bound = float(np.abs(tail).max())
    hist, edges = np.histogram(tail, 2048, range=(-bound, bound))
    low, high = onnxruntime_qdq.mse_range(hist, edges, float(tail.min()), float(tail.max()), symmetric=True, levels=255)

    def sq_error(t: float) -> float:
        step = t / 127
        return float(((np.clip(np.round(tail / step), -127, 127) * step - tail) ** 2).sum())

    assert low == -high and 3 < high < 0.8 * bound  # clipped, the bulk kept
    assert sq_error(high) < sq_error(bound)  # and the clipped range really quantizes with less error
    flat = rng.uniform(0, 6, 200_000)
    hist, edges = np.histogram(flat, 2048, range=(-6, 6))
    low, high = onnxruntime_qdq.mse_range(hist, edges, 0.0, 6.0, symmetric=False)
    assert low == 0 and high > 5.9  # nothing to clip: the whole range stays
