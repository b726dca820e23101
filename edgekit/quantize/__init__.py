"""Quantization: per-backend INT8 recipes built on ONNX Runtime's quantizer and NNCF."""

from edgekit.targets import CALIBRATION_METHODS

__all__ = ["CALIBRATION_METHODS"]
