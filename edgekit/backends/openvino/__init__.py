"""OpenVINO backend (CPU, GPU and NPU plugins)."""
