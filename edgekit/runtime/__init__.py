"""The torch-free runtime: load a bundle, preprocess images, infer, postprocess."""

from edgekit.runtime.session import Bundle, Prediction, load_bundle

__all__ = ["Bundle", "Prediction", "load_bundle"]
