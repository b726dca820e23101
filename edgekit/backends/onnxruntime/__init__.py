"""ONNX Runtime backend (CPU execution provider; x86-64 and ARM64)."""
