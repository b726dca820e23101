"""Errors a user can fix. The CLI prints them as one line, with no traceback.

Any other exception is a bug in edgekit and keeps its traceback.
"""

from __future__ import annotations


class EdgekitError(Exception):
    """A failure the user can act on: the message says what failed, why, and how to fix it."""

    exit_code = 1


class UsageError(EdgekitError):
    """The command was asked for something invalid (unknown target, bad flag value, missing path)."""

    exit_code = 2


class ModelError(EdgekitError):
    """The model file is missing, corrupt, or uses something a backend cannot run."""


class DataError(EdgekitError):
    """Calibration or validation images are missing, unreadable or inconsistent with the labels."""


class BundleError(EdgekitError):
    """A bundle failed verification: schema, checksums or self-test."""


class DependencyError(EdgekitError):
    """An optional package (a backend runtime, torch) is needed but not installed."""


def require(module: str, *, extra: str, purpose: str):
    """Import an optional dependency, or raise a DependencyError naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DependencyError(
            f"{purpose} needs the Python package '{module.split('.')[0]}', which is not installed "
            f"({exc}); install it with: pip install 'edgekit[{extra}]'"
        ) from None
