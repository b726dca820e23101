"""The TensorRT calibration cache: TensorRT's text format, filled with the Q/DQ graph's own scales."""

from __future__ import annotations

import struct

import numpy as np
import onnx
import pytest

from edgekit.backends.tensorrt import calibration_cache as cc


@pytest.mark.parametrize(
    ("version", "number"),
    [("8.6.1", 8601), ("8.5.2.2", 8502), ("8.2.1", 8201), ("10.3.0", 100300), ("10.9", 100900), ("8.4", 8400)],
)
def test_version_number_is_nv_tensorrt_version(version, number):
    assert cc.version_number(version) == number


def test_scale_is_the_big_endian_bits_of_the_float32_in_hex():
    assert cc.encode_scale(0.125) == "3e000000"
    assert cc.encode_scale(1 / 127) == struct.pack(">f", np.float32(1 / 127)).hex() == "3c010204"
    assert cc.decode_scale("3c010204") == float(np.float32(1 / 127))
    assert cc.decode_scale("1a2b3c") == struct.unpack(">f", bytes.fromhex("001a2b3c"))[0]  # leading zeros dropped


def test_format_is_header_then_sorted_name_colon_hex_lines():
    text = cc.format_cache({"b/out": 0.5, "a:in": 0.125}, tensorrt_version="10.3.0")
    assert text == "TRT-100300-EntropyCalibration2\na:in: 3e000000\nb/out: 3f000000\n"
    assert cc.parse_cache(text) == (100300, "EntropyCalibration2", {"a:in": 0.125, "b/out": 0.5})


def test_retarget_rewrites_only_the_header():
    text = cc.format_cache({"x": 0.25}, tensorrt_version="10.3.0")
    assert cc.retarget(text, "8.6.2") == "TRT-8602-EntropyCalibration2\nx: 3e800000\n"


@pytest.mark.parametrize("text", ["", "hello\nx: 3e000000\n", "TRT-8601-EntropyCalibration2\nx 3e000000\n",
                                  "TRT-8601-EntropyCalibration2\nx: nothex!\n"])  # fmt: skip
def test_parse_rejects_what_is_not_a_cache(text):
    with pytest.raises(ValueError):
        cc.parse_cache(text)


def test_cache_holds_the_qdq_graphs_activation_scales_for_the_fp32_graphs_tensors(trt_resnet, calib_tensors):
    model, provenance, fp32_path = trt_resnet
    scales = cc.scales_from_qdq(model)
    text = cc.format_cache(scales, tensorrt_version="10.3.0")
    _, _, parsed = cc.parse_cache(text)
    assert parsed == {k: float(np.float32(v)) for k, v in scales.items()}
    # every scale names a tensor of the FP32 graph that the implicit path builds from
    fp32 = onnx.load(str(fp32_path))
    names = {o for n in fp32.graph.node for o in n.output} | {i.name for i in fp32.graph.input}
    assert set(parsed) <= names and "input" in parsed
    # TensorRT's convention: scale = amax / 127. minmax calibration on these images: amax = max |input|.
    assert provenance["calibration_method"] == "minmax"
    assert parsed["input"] == pytest.approx(float(np.abs(calib_tensors).max()) / 127, rel=1e-6)
    # no weights in the cache: TensorRT computes weight scales from the FP32 ONNX itself
    weights = {t.name for t in fp32.graph.initializer}
    assert not set(parsed) & weights
