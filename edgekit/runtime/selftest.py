"""The bundle's self-test: stored inputs, expected outputs and a tolerance, checked at load time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SELFTEST_FILE = "selftest.npz"


@dataclass(frozen=True)
class SelfTestResult:
    passed: bool
    inputs: int
    max_error: float
    tolerance: float
    top1_mismatches: int

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        return (
            f"self-test {verdict}: {self.inputs} inputs, max normalised error {self.max_error:.4g} "
            f"(tolerance {self.tolerance:g}), {self.top1_mismatches} top-1 mismatches"
        )


def normalised_error(outputs: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Per-sample max |out - expected|, divided by the expected output's range."""
    spread = np.maximum(expected.max(axis=1) - expected.min(axis=1), 1e-6)
    return np.abs(outputs - expected).max(axis=1) / spread


def save(path: Path, inputs: np.ndarray, expected: np.ndarray) -> None:
    np.savez(path, inputs=inputs, expected=expected)


def run(infer, bundle_dir: Path, entry: dict[str, Any]) -> SelfTestResult:
    """Run the stored inputs through ``infer`` one at a time and compare with the expected outputs."""
    with np.load(bundle_dir / entry["file"], allow_pickle=False) as data:
        inputs, expected = data["inputs"], data["expected"]
    outputs = np.concatenate([infer(inputs[i : i + 1]) for i in range(len(inputs))]).astype(np.float32)
    if outputs.shape != expected.shape:
        return SelfTestResult(False, len(inputs), float("inf"), entry["tolerance"], len(inputs))
    errors = normalised_error(outputs, expected)
    mismatches = int((outputs.argmax(1) != expected.argmax(1)).sum())
    tol = float(entry["tolerance"])
    passed = bool(np.all(np.isfinite(outputs)) and errors.max() <= tol and mismatches == 0)
    return SelfTestResult(passed, len(inputs), float(errors.max()), tol, mismatches)
