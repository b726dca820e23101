"""TensorRT's INT8 calibration cache, in TensorRT's own text format, for the implicit path and the DLA.

The format, as TensorRT's calibrators write it (and NVIDIA's TAO exporter writes it from QAT scales):

    TRT-<version>-EntropyCalibration2
    <tensor name>: <the float32 scale, as 8 hex digits of its big-endian bits>

where <version> is TensorRT's NV_TENSORRT_VERSION number (8601 for 8.6.1, 100300 for 10.3.0) and the scale
is amax / 127. edgekit fills it from the per-tensor activation scales of the bundle's Q/DQ graph, so the
implicit path (``trtexec --int8 --calib=calibration.cache`` on the FP32 ONNX, as the DLA needs) runs with
the same scales the explicit path uses. Standard library and numpy only; ``scales_from_qdq`` takes an
already loaded ONNX model.
"""

from __future__ import annotations

import re
import struct
from typing import Any

CACHE_FILE = "calibration.cache"
ALGORITHM = "EntropyCalibration2"
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")


def version_number(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION for a version string: '8.6.1' -> 8601, '10.3.0' -> 100300."""
    parts = [int(p) for p in re.findall(r"\d+", version)[:3]]
    major, minor, patch = [*parts, 0, 0, 0][:3]
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def encode_scale(scale: float) -> str:
    return struct.pack(">f", float(scale)).hex()


def decode_scale(text: str) -> float:
    return struct.unpack(">f", bytes.fromhex(text.strip().rjust(8, "0")))[0]


def format_cache(scales: dict[str, float], *, tensorrt_version: str, algorithm: str = ALGORITHM) -> str:
    """The cache text for ``scales`` (tensor name -> scale), sorted by name."""
    lines = [f"TRT-{version_number(tensorrt_version)}-{algorithm}"]
    lines += [f"{name}: {encode_scale(scales[name])}" for name in sorted(scales)]
    return "\n".join(lines) + "\n"


def parse_cache(text: str) -> tuple[int, str, dict[str, float]]:
    """(version number, algorithm, scales) of a cache; ValueError if it is not one."""
    lines = [line for line in text.splitlines() if line.strip()]
    match = _HEADER.match(lines[0].strip()) if lines else None
    if match is None:
        raise ValueError("not a TensorRT calibration cache: the first line is not 'TRT-<version>-<algorithm>'")
    scales = {}
    for line in lines[1:]:
        name, sep, value = line.rpartition(": ")
        if not sep or not re.fullmatch(r"[0-9a-fA-F]{1,8}", value.strip()):
            raise ValueError(f"not a calibration cache line: {line!r}")
        scales[name] = decode_scale(value)
    return int(match.group(1)), match.group(2), scales


def retarget(text: str, tensorrt_version: str) -> str:
    """The same cache with its header naming ``tensorrt_version``: the scales do not depend on it."""
    _, algorithm, _ = parse_cache(text)
    rest = text.partition("\n")[2]
    return f"TRT-{version_number(tensorrt_version)}-{algorithm}\n{rest}"


def scales_from_qdq(model: Any) -> dict[str, float]:
    """Per-tensor activation scales of a Q/DQ ``onnx.ModelProto``: the input of every QuantizeLinear."""
    from onnx import numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    scales: dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] in consts:
            continue  # weights are quantized in the engine from the FP32 ONNX's own values
        scale = consts.get(node.input[1])
        if scale is not None and scale.size == 1:
            scales[node.input[0]] = float(scale.reshape(()))
    return scales


__all__ = ["ALGORITHM", "CACHE_FILE", "decode_scale", "encode_scale", "format_cache", "parse_cache", "retarget",
           "scales_from_qdq", "version_number"]  # fmt: skip
