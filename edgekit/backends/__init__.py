"""Backends: one folder each, with compiler.py (build time) and runtime.py (run time)."""

from edgekit.backends.base import BACKENDS, CompileResult, Runtime, compiler_for, runtime_for

__all__ = ["BACKENDS", "CompileResult", "Runtime", "compiler_for", "runtime_for"]
