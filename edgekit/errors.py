"""Errors a user can fix. The CLI prints them as one line, with no traceback.

The message says what failed, why and how to fix it, on its own: it never needs the exception underneath.
That cause is still kept (``raise ModelError(...) from exc`` inside ``except ... as exc:``, never
``from None``), so ``edgekit --debug`` or ``EDGEKIT_DEBUG=1`` can show what really failed (a protobuf
parse error, an OSError's errno, a backend's own exception) with the full traceback. ``exit_code`` is the
CLI's exit status: 2 for a usage error, 1 for any other failure.

Any other exception is a bug in edgekit: the CLI prints its traceback and an "internal error" line asking
for a report, and exits 3 (``edgekit.cli.INTERNAL_ERROR``).
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
        ) from exc
