"""Load a bundle and run it: preprocess, infer, postprocess. numpy, OpenCV and one vendor runtime only."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import registry
from edgekit.bundle.reader import OpenBundle, open_bundle
from edgekit.bundle.types import Manifest
from edgekit.errors import BundleError, EdgekitError, UsageError
from edgekit.runtime import selftest
from edgekit.runtime.preprocess import preprocess, read_image
from edgekit.spec import InputSpec, PreprocessSpec
from edgekit.tasks import get_task, unsupported
from edgekit.tasks.base import Task, TaskResult
from edgekit.tasks.classification import Prediction, probabilities

ImageLike = str | Path | np.ndarray
PREPROCESS_FIELDS = tuple(f.name for f in dataclasses.fields(PreprocessSpec))

__all__ = ["Bundle", "ImageLike", "Prediction", "load_bundle"]


class Bundle:
    """A verified, loaded bundle. Use ``load_bundle(path)``; close it (or use ``with``) when done.

    ``info`` is the typed manifest (``edgekit.bundle.Manifest``), which the bundle reads: ``b.info.model.task``,
    ``b.info.input.shape``. ``manifest`` is the same manifest as its JSON object (``info.to_dict()``), kept for
    compatibility with code that reads it by key; the backend runtime is given it too (see ``Runtime``).
    """

    def __init__(self, opened: OpenBundle, *, device: str | None = None, run_selftest: bool = True) -> None:
        self._opened = opened
        self.path = opened.path
        self.info: Manifest = opened.typed_manifest
        self.manifest: dict[str, Any] = opened.manifest
        self.hash = opened.hash
        m = self.info
        why = unsupported(m.model.task)
        if why is not None:
            raise BundleError(
                f"{self.path}: manifest field 'model.task': {why}; this edgekit cannot run the bundle "
                "(recompile it, or run it with the edgekit that built it)"
            )
        self.input = InputSpec(name=m.input.name, shape=tuple(m.input.shape), layout=m.input.layout,
                               dtype=m.input.dtype)  # fmt: skip
        pre = m.preprocess
        given = {f: getattr(pre, f) for f in PREPROCESS_FIELDS if getattr(pre, f) is not None}
        self.preprocess_spec = PreprocessSpec(**given)
        self.labels: list[str] = list(m.labels)
        self.output_kind: str = m.postprocess.output or "logits"
        self._postprocess: dict[str, Any] = m.postprocess.to_dict()  # what the task's decode reads
        try:
            self.task: Task = get_task(m.model.task).bind(self._postprocess)
        except ValueError as exc:  # the task refused the bundle's postprocess record
            reason = str(exc).encode("ascii", "backslashreplace").decode()[:300]
            raise BundleError(
                f"{self.path}: manifest field 'postprocess': {reason}; the bundle is damaged or was tampered with, "
                "recompile it"
            ) from exc
        if not registry.is_registered(m.backend.name):  # the name is the bundle's: shown escaped, with the path
            raise BundleError(
                f"{self.path}: manifest field 'backend.name' is {m.backend.name!r}, which is not a backend registered "
                f"here (registered: {', '.join(registry.backend_ids())}); install the backend's package, or "
                "recompile the bundle for one of these"
            )
        runtime_cls = registry.backend(m.backend.name).runtime_class()
        try:
            self.runtime = runtime_cls(opened.root, self.manifest, device=device)
        except EdgekitError:
            raise
        except Exception as exc:  # the vendor runtime refused the bundle's (checksummed) model file
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise BundleError(
                f"{self.path}: the {m.backend.name} runtime cannot load '{m.backend.model_file}' "
                f"({reason}); the bundle is damaged or was tampered with, recompile it"
            ) from exc
        self.selftest_result: selftest.SelfTestResult | None = None
        if run_selftest:
            self.selftest_result = self.self_test()
            if not self.selftest_result.passed:
                self.close()
                raise BundleError(
                    f"{self.path}: {self.selftest_result.describe()}; this runtime does not reproduce the "
                    "compiled model, so the bundle is refused (recompile it for this target)"
                )

    # -- lifecycle
    def close(self) -> None:
        self.runtime.close()
        self._opened.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- running
    def self_test(self) -> selftest.SelfTestResult:
        return selftest.run(self.infer, self._opened.root, self.info.selftest, self.input.shape,
                            source=str(self.path), task=self.task)  # fmt: skip

    @property
    def static_batch(self) -> int | None:
        return None if self.input.dynamic_batch else self.input.shape[0]

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run preprocessed input (N, ...) and return raw outputs (N, classes)."""
        expected = tuple(self.input.shape[1:])
        if batch.ndim != len(self.input.shape) or tuple(batch.shape[1:]) != expected:
            raise UsageError(
                f"input batch has shape {batch.shape}; the model takes (N, {', '.join(map(str, expected))})"
            )
        batch = np.ascontiguousarray(batch, dtype=np.dtype(self.input.dtype))
        step = self.static_batch
        if step is None or len(batch) == step:
            return self.runtime.infer(batch)
        if step != 1:
            raise UsageError(f"this bundle takes batches of exactly {step}")
        return np.concatenate([self.runtime.infer(batch[i : i + 1]) for i in range(len(batch))])

    def preprocess(self, image: ImageLike, *, color_order: str = "RGB") -> np.ndarray:
        """An image path, or an HWC uint8 array in ``color_order`` -> one input tensor (no batch dim)."""
        if isinstance(image, (str, Path)):
            image, color_order = read_image(image), "BGR"
        return preprocess(image, self.preprocess_spec, self.input, color_order=color_order)

    def probabilities(self, outputs: np.ndarray) -> np.ndarray:
        """A classifier's class probabilities of raw outputs (softmax of logits, unless it gives probabilities)."""
        return probabilities(outputs, self._postprocess)

    def predict(self, image: ImageLike, *, top_k: int = 5, color_order: str = "RGB") -> TaskResult:
        """The result of one image (a path, or an HWC uint8 array in ``color_order``); for a classifier, a
        ``Prediction`` of its top-k labels."""
        return self.predict_batch([image], top_k=top_k, color_order=color_order)[0]

    def predict_batch(
        self, images: Sequence[ImageLike], *, top_k: int = 5, color_order: str = "RGB"
    ) -> list[TaskResult]:
        """Results of several images, in one batch; a detector's boxes are in each image's own pixels."""
        decoded = [(read_image(im), "BGR") if isinstance(im, (str, Path)) else (im, color_order) for im in images]
        batch = np.stack([preprocess(im, self.preprocess_spec, self.input, color_order=order) for im, order in decoded])
        return self.postprocess(self.infer(batch), top_k=top_k, sizes=[im.shape[:2] for im, _ in decoded])

    def postprocess(
        self, outputs: np.ndarray, *, top_k: int = 5, sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[TaskResult]:
        """Raw outputs of a batch -> one result per input, decoded by the bundle's task; ``sizes`` (each source
        image's height and width) put a detector's boxes in the source images' pixels."""
        return self.task.decode(outputs, self._postprocess, self.labels, top_k=top_k, sizes=sizes)

    def describe(self) -> dict[str, Any]:
        return self.runtime.describe()


def load_bundle(path: str | Path, *, device: str | None = None, self_test: bool = True) -> Bundle:
    """Open, verify (schema, checksums) and load a bundle, then run its self-test unless told not to.

    ``device`` overrides the target's device (OpenVINO: e.g. load an NPU bundle on "CPU" to check it).
    """
    opened = open_bundle(path)
    try:
        return Bundle(opened, device=device, run_selftest=self_test)
    except BaseException:
        opened.close()
        raise
