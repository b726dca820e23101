"""TensorRT backend (NVIDIA Jetson): the bundle carries ONNX and a build plan; the device builds the engine."""
