"""Load a bundle and run it: preprocess, infer, postprocess. numpy, OpenCV and one vendor runtime only."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgekit import registry
from edgekit.bundle.reader import OpenBundle, open_bundle
from edgekit.bundle.types import Manifest
from edgekit.errors import BundleError, EdgekitError, UsageError
from edgekit.runtime import selftest
from edgekit.runtime import settings as runtime_settings
from edgekit.runtime.graph_front import FrameRunner, Front
from edgekit.runtime.preprocess import prepare_frame, preprocess, read_image, to_tensor
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

    def __init__(
        self,
        opened: OpenBundle,
        *,
        device: str | None = None,
        run_selftest: bool = True,
        settings: Mapping[str, Any] | str | None = None,
        graph_preprocess: bool = True,
    ) -> None:
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
        self.runtime_settings = _resolve_settings(runtime_cls, self.manifest, settings, str(self.path))
        try:
            self.runtime = _make_runtime(runtime_cls, opened.root, self.manifest, device, self.runtime_settings)
        except EdgekitError:
            raise
        except Exception as exc:  # the vendor runtime refused the bundle's (checksummed) model file
            reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
            raise BundleError(
                f"{self.path}: the {m.backend.name} runtime cannot load '{m.backend.model_file}' "
                f"({reason}); the bundle is damaged or was tampered with, recompile it"
            ) from exc
        # Frames through the graph (edgekit.runtime.graph_front): a second graph with the preprocessing in it
        self._front: Front | None = None
        self._run_frames: FrameRunner | None = None
        self.preprocessing = "host: graph_preprocess=False"
        self._frame_shape = _identity_shape(self.preprocess_spec, self.input)
        if graph_preprocess:
            self._load_front()
        self.selftest_result: selftest.SelfTestResult | None = None
        if run_selftest:
            self.selftest_result = self.self_test()
            if not self.selftest_result.passed:
                self.close()
                raise BundleError(
                    f"{self.path}: {self.selftest_result.describe()}; this runtime does not reproduce the "
                    "compiled model, so the bundle is refused (recompile it for this target)"
                )
            self._check_front()

    # -- lifecycle
    def close(self) -> None:
        self._run_frames = None
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
        """Results of several images (paths, or HWC uint8 arrays of any sizes in ``color_order``), in one batch;
        a detector's boxes are in each image's own pixels.

        The host resizes (or letterboxes) each image to the model's size in uint8; the graph does the rest
        where the backend can (``preprocessing`` says which), else NumPy does (``preprocess``)."""
        spec, inp = self.preprocess_spec, self.input
        order = _color_order(color_order)
        at_size = self._frame_shape  # a frame of this shape needs no geometry (None: every frame does)
        frames, orders, sizes = [], [], []
        for image in images:
            if type(image) is np.ndarray and image.shape == at_size and image.dtype == np.uint8:
                frame, frame_order = image, order
            else:
                if isinstance(image, (str, Path)):
                    image, frame_order = read_image(image), "BGR"
                else:
                    frame_order = order
                frame, frame_order = prepare_frame(image, spec, inp, color_order=frame_order)
            frames.append(frame)
            orders.append(frame_order)
            sizes.append(image.shape[:2])
        if not frames:
            raise UsageError("predict_batch was given no images; pass at least one")
        if self._run_frames is None:
            outputs = self.infer(
                np.stack([to_tensor(f, spec, inp, color_order=o) for f, o in zip(frames, orders, strict=True)])
            )
        elif len(frames) == 1:
            outputs = self._infer_frames(np.ascontiguousarray(frames[0][None]), orders[0])
        else:
            batch = np.empty((len(frames), *frames[0].shape), np.uint8)
            for i, (frame, order) in enumerate(zip(frames, orders, strict=True)):
                batch[i] = frame if order == orders[0] else frame[:, :, ::-1]
            outputs = self._infer_frames(batch, orders[0])
        return self.postprocess(outputs, top_k=top_k, sizes=sizes)

    def infer_frames(self, frames: np.ndarray, *, color_order: str = "RGB") -> np.ndarray:
        """Raw outputs of frames already at the model's size, (N, H, W, 3) uint8 in ``color_order``: through
        the graph's own preprocessing where the backend has it, else preprocessed in NumPy first."""
        h, w = self.input.hw
        if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.shape[1:] == (h, w, 3)):
            raise UsageError(
                f"frames of shape {getattr(frames, 'shape', '?')} dtype {getattr(frames, 'dtype', type(frames).__name__)}"
                f"; infer_frames takes (N, {h}, {w}, 3) uint8 (predict_batch takes images of any size)"
            )
        order = _color_order(color_order)
        if self._run_frames is None:
            spec, inp = self.preprocess_spec, self.input
            return self.infer(np.stack([to_tensor(f, spec, inp, color_order=order) for f in frames]))
        return self._infer_frames(np.ascontiguousarray(frames), order)

    def _infer_frames(self, batch: np.ndarray, color_order: str) -> np.ndarray:
        """(N, H, W, 3) contiguous uint8 frames at the model's size -> raw outputs, through the graph's front."""
        assert self._run_frames is not None
        step = self.static_batch
        if step is None or len(batch) == step:
            return self._run_frames(batch, color_order)
        if step != 1:
            raise UsageError(f"this bundle takes batches of exactly {step}")
        return np.concatenate([self._run_frames(batch[i : i + 1], color_order) for i in range(len(batch))])

    def _load_front(self) -> None:
        """Build the graph that takes frames, where the backend can; else frames are preprocessed on the host."""
        front = Front.of(self.preprocess_spec, self.input)
        make = getattr(self.runtime, "frame_runner", None)
        if front is None or make is None:
            why = (
                "the model does not take three-channel float input"
                if front is None
                else "the backend has no graph front"
            )
            self.preprocessing = f"host: {why}"
            return
        try:
            self._run_frames = make(front)
        except Exception as exc:  # an optimisation only: the float path stays, and says why
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            self.preprocessing = f"host: the graph front did not build ({reason})"
            return
        self._front, self.preprocessing = front, "graph"

    def _check_front(self) -> None:
        """The self-test of the frame graph: the stored inputs as uint8 frames (every other one in the other
        colour order) must give the expected outputs (the float path's, when the stored inputs are not images)
        within the self-test's tolerance; if not, frames are preprocessed on the host, and ``preprocessing``
        says why."""
        if self._run_frames is None or self._front is None:
            return
        front, entry = self._front, self.info.selftest
        inputs, expected = selftest.load(self._opened.root, entry, self.input.shape, source=str(self.path))
        frames, exact = front.frames_of(inputs)
        if not exact:
            tensors = front.tensors(frames, front.color_order)
            expected = np.concatenate([self.infer(tensors[i : i + 1]) for i in range(len(tensors))])
        other = "BGR" if front.color_order == "RGB" else "RGB"
        try:
            outputs = np.concatenate([
                self._infer_frames(np.ascontiguousarray(frames[i : i + 1, :, :, ::-1]), other) if i % 2
                else self._infer_frames(frames[i : i + 1], front.color_order) for i in range(len(frames))
            ]).astype(np.float32)  # fmt: skip
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            self._run_frames, self.preprocessing = None, f"host: the graph front did not run ({reason})"
            return
        expected = np.asarray(expected, np.float32)
        error = float(selftest.normalised_error(outputs, expected).max()) if outputs.shape == expected.shape else np.inf
        if not (np.isfinite(error) and np.all(np.isfinite(outputs)) and error <= float(entry.tolerance)
                and self.task.selftest_mismatches(outputs, expected) == 0):  # fmt: skip
            self._run_frames = None
            self.preprocessing = (f"host: the graph front's self-test failed (max normalised error {error:.4g}, "
                                  f"tolerance {float(entry.tolerance):g})")  # fmt: skip

    def postprocess(
        self, outputs: np.ndarray, *, top_k: int = 5, sizes: Sequence[tuple[int, int]] | None = None
    ) -> list[TaskResult]:
        """Raw outputs of a batch -> one result per input, decoded by the bundle's task; ``sizes`` (each source
        image's height and width) put a detector's boxes in the source images' pixels."""
        return self.task.decode(outputs, self._postprocess, self.labels, top_k=top_k, sizes=sizes)

    def describe(self) -> dict[str, Any]:
        return {**self.runtime.describe(), "preprocessing": self.preprocessing}

    # -- runtime settings
    @property
    def settings(self) -> dict[str, Any]:
        """The runtime settings it runs with (knobs and the daemon's ``batch``; absent: the backend's default)."""
        return self.runtime_settings.to_dict()

    @property
    def batch_size(self) -> int | None:
        """The batch size the bundle's record (or an override) gives the daemon; None: not tuned."""
        return self.runtime_settings.batch


def _identity_shape(spec: PreprocessSpec, inp: InputSpec) -> tuple[int, int, int] | None:
    """The HxWx3 shape of a frame the bundle's geometry (resize, crop, letterbox) leaves as it is, found by
    running it on one; None if it changes every frame (e.g. resize 256 then crop 224)."""
    probe = np.zeros((*inp.hw, 3), np.uint8)
    try:
        frame, _ = prepare_frame(probe, spec, inp, color_order=spec.color_order)
    except EdgekitError:
        return None
    return probe.shape if frame is probe else None


def _color_order(color_order: str) -> str:
    order = color_order.upper() if isinstance(color_order, str) else color_order
    if order not in ("BGR", "RGB"):
        raise UsageError(f"color_order must be 'BGR' or 'RGB', not {color_order!r}")
    return order


def _resolve_settings(
    runtime_cls: type, manifest: dict[str, Any], settings: Mapping[str, Any] | str | None, source: str
) -> runtime_settings.Settings:
    """The runtime settings the bundle runs with: ``settings``, then $EDGEKIT_RUNTIME_SETTINGS, then the record."""
    backend = manifest["backend"]["name"]
    keys = tuple(getattr(runtime_cls, "settings_keys", ()))
    return runtime_settings.resolve(manifest, keys, override=settings, backend=backend, source=source)


def _make_runtime(runtime_cls: type, root: Path, manifest: dict[str, Any], device: str | None,
                  settings: runtime_settings.Settings):  # fmt: skip
    """The backend runtime, given the resolved knobs when it takes runtime settings."""
    if getattr(runtime_cls, "settings_keys", ()):
        return runtime_cls(root, manifest, device=device, settings=settings.knobs)
    return runtime_cls(root, manifest, device=device)


def load_bundle(
    path: str | Path,
    *,
    device: str | None = None,
    self_test: bool = True,
    settings: Mapping[str, Any] | str | None = None,
    graph_preprocess: bool = True,
) -> Bundle:
    """Open, verify (schema, checksums) and load a bundle, then run its self-test unless told not to.

    ``device`` overrides the target's device (OpenVINO: e.g. load an NPU bundle on "CPU" to check it).
    ``settings`` overrides the runtime settings the bundle records (tuned on its device) key by key, e.g.
    ``{"threads": 2}`` (a key set to None: the backend's default), or "default" for the backend's defaults;
    so does ``$EDGEKIT_RUNTIME_SETTINGS`` (``threads=2,batch=4``), below the keyword (edgekit.runtime.settings).
    ``Bundle.settings`` is what it runs with.
    ``graph_preprocess`` (default True): where the backend can, ``predict``/``predict_batch`` feed uint8 frames
    to a second graph of the model with the preprocessing in front of it (``Bundle.preprocessing`` says if);
    False keeps one graph and preprocesses in NumPy (less memory; see docs/design.md).
    """
    opened = open_bundle(path)
    try:
        return Bundle(opened, device=device, run_selftest=self_test, settings=settings,
                      graph_preprocess=graph_preprocess)  # fmt: skip
    except BaseException:
        opened.close()
        raise
