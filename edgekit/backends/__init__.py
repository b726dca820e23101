"""Backends: one folder each, with backend.py (the ``Backend`` class), compiler.py (build time), runtime.py
(run time) and options.py; ``edgekit.registry`` finds them by id."""

from edgekit.backends.base import Backend, CompileInput, CompileResult, MeasureSite, NoOptions, Runtime

__all__ = ["Backend", "CompileInput", "CompileResult", "MeasureSite", "NoOptions", "Runtime"]
