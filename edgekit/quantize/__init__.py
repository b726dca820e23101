"""Quantization: per-backend INT8 recipes built on ONNX Runtime's quantizer and NNCF."""

CALIBRATION_METHODS = ("minmax", "entropy", "percentile", "mse", "mean-minmax")
