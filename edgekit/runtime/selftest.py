"""The bundle's self-test: stored inputs, expected outputs and a tolerance, checked at load time."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.bundle.types import Selftest
from edgekit.tasks.base import Task

SELFTEST_FILE = "selftest.npz"


@dataclass(frozen=True)
class SelfTestResult:
    passed: bool
    inputs: int
    max_error: float
    tolerance: float
    top1_mismatches: int  # the task's mismatches (for a classifier, of top-1)
    mismatch_name: str = "top-1 mismatches"  # what they count, from the task

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"self-test {verdict}: {self.inputs} inputs, max normalised error {self.max_error:.4g} "
            f"(tolerance {self.tolerance:g}), {self.top1_mismatches} {self.mismatch_name}"
        )


def normalised_error(outputs: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per-sample max |out - expected|, divided by the expected output's range (over all of a sample's values:
    a detector's boxes and scores together; its task's check compares the decoded detections)."""
    outputs, expected = outputs.reshape(len(outputs), -1), expected.reshape(len(expected), -1)
    spread = np.maximum(expected.max(axis=1) - expected.min(axis=1), 1e-6)
    return np.abs(outputs - expected).max(axis=1) / spread


def save(path: Path, inputs: np.ndarray, expected: np.ndarray) -> None:
    np.savez(path, inputs=inputs, expected=expected)


MAX_SELFTEST_BYTES = 256 << 20  # the stored inputs and outputs of a handful of images


def _typed(entry: Selftest | Mapping[str, Any]) -> Selftest:
    """The manifest's ``selftest`` record, typed: a ``Selftest`` as is, or the JSON object of a validated manifest."""
    return entry if isinstance(entry, Selftest) else Selftest.CHECK.build(dict(entry))


def load(
    bundle_dir: Path,
    entry: Selftest | Mapping[str, Any],
    input_shape: tuple[int, ...] | None = None,
    *,
    source: str = "bundle",
):
    """The stored (inputs, expected), checked: numeric arrays, one expected row per input, the model's input.

    ``entry`` is the manifest's ``selftest`` record (a ``Selftest``, or its JSON object).

    The file is an .npz (a zip): its members' declared sizes are checked before numpy reads them, and
    pickled objects are refused. Anything wrong is a BundleError naming ``selftest.file``.
    """
    import zipfile

    from edgekit.errors import BundleError

    entry = _typed(entry)
    name = entry.file

    def bad(why: str) -> BundleError:
        return BundleError(
            f"{source}: the self-test data '{name}' (manifest field 'selftest.file') {why}; the bundle is "
            "damaged or was tampered with, recompile it"
        )

    path = bundle_dir / name
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > 8 or sum(i.file_size for i in infos) > MAX_SELFTEST_BYTES:
                raise bad(f"unpacks to more than {MAX_SELFTEST_BYTES >> 20} MiB or has too many arrays")
        with np.load(path, allow_pickle=False) as data:
            if set(data.files) != {"inputs", "expected"}:
                raise bad("does not hold exactly the arrays 'inputs' and 'expected'")
            inputs, expected = data["inputs"], data["expected"]
    except BundleError:
        raise
    except Exception as exc:  # a damaged .npz: zipfile, numpy's format and pickle refusals all end here
        raise bad(f"cannot be read ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    if not all(a.dtype.kind in "fiu" for a in (inputs, expected)):
        raise bad("holds non-numeric arrays")
    if expected.ndim < 2 or inputs.ndim < 1 or len(inputs) != len(expected) or len(inputs) < 1:
        raise bad(f"has inputs {inputs.shape} and expected outputs {expected.shape}, not one output row per input")
    if len(inputs) != entry.inputs:
        raise bad(f"holds {len(inputs)} inputs, but manifest field 'selftest.inputs' says {entry.inputs}")
    if input_shape is not None and tuple(inputs.shape[1:]) != tuple(input_shape[1:]):
        raise bad(f"has inputs of shape {tuple(inputs.shape[1:])}, but the model takes {tuple(input_shape[1:])}")
    return inputs, expected


def run(infer, bundle_dir: Path, entry: Selftest | Mapping[str, Any], input_shape: tuple[int, ...] | None = None, *,
        source: str = "bundle", task: Task | None = None) -> SelfTestResult:  # fmt: skip
    """Run the stored inputs through ``infer`` one at a time and compare with the expected outputs: the
    normalised error, and ``task``'s own check (a classifier's top-1; classification when not given).

    A model that cannot even run the stored inputs (an error from the backend) is refused as a BundleError.
    """
    from edgekit.errors import BundleError, DependencyError
    from edgekit.tasks import get_task

    task = task or get_task("classification")
    entry = _typed(entry)
    inputs, expected = load(bundle_dir, entry, input_shape, source=source)
    try:
        outputs = np.concatenate([np.asarray(infer(inputs[i : i + 1])) for i in range(len(inputs))])
        outputs = outputs.astype(np.float32)
    except DependencyError:
        raise
    except Exception as exc:  # the backend's own error types: the bundle's model does not run its own self-test
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise BundleError(
            f"{source}: the self-test could not run the bundle's model ({reason}); the bundle is damaged or was "
            "tampered with, recompile it"
        ) from exc
    tol = float(entry.tolerance)
    if outputs.shape != expected.shape:
        return SelfTestResult(False, len(inputs), float("inf"), tol, len(inputs), task.mismatch_name)
    errors = normalised_error(outputs, expected.astype(np.float32))
    mismatches = task.selftest_mismatches(outputs, expected)
    passed = bool(np.all(np.isfinite(outputs)) and errors.max() <= tol and mismatches == 0)
    return SelfTestResult(passed, len(inputs), float(errors.max()), tol, mismatches, task.mismatch_name)
