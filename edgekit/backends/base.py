"""The backend contract: one ``Backend`` class a backend, found through ``edgekit.registry``.

A backend is a subclass of ``Backend`` with a stable string ``id``; it is never instantiated (its methods
are class methods, like ExecuTorch's ``BackendDetails``). It answers everything the rest of edgekit asks
of a backend, so no code outside ``edgekit/backends/`` branches on a backend id:

- build time: ``compile(job) -> CompileResult`` writes the model files into ``job.staging``;
  ``quantizable_layers`` lists the layers an accuracy budget may keep in higher precision (the names
  ``compile`` takes in ``keep_in_higher_precision``), and ``higher_precision`` says what that precision is;
  ``measure_here`` says where this machine can run the bundle, and ``simulator()`` what stands in for an
  absent device;
- run time: ``runtime_class()`` is the ``Runtime`` that loads a bundle (numpy and the vendor's runtime,
  never torch); ``options_type`` types the target's ``[backend_options]``; ``named_files`` lists the
  backend's own files a manifest names, so the bundle reader checks them.

Each built-in backend folder has ``backend.py`` (this class, light to import), ``compiler.py`` (build
time), ``runtime.py`` (run time) and ``options.py``; ``backend.py`` imports the other two only inside the
methods that need them, and vendor packages are imported only where they are used.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgekit.errors import UsageError
from edgekit.imagesets import ImageSet
from edgekit.spec import ModelSpec
from edgekit.targets import PRECISIONS, Target

Log = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class CompileInput:
    """What one backend compile takes: the loaded ONNX ``model`` and its ``spec``, the ``target`` and
    ``precision``, the ``staging`` folder to write into; for int8, the ``calibration`` images with the
    ``calibration_method`` and ``calibration_percentile`` (from the ``CompileRequest``), and the layers
    an accuracy budget keeps in higher precision (names from ``Backend.quantizable_layers``)."""

    model: Any  # onnx.ModelProto
    spec: ModelSpec
    target: Target
    precision: str
    staging: Path
    calibration: ImageSet | None = None
    calibration_method: str | None = None
    calibration_percentile: float | None = None
    keep_in_higher_precision: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        calibration = (self.calibration, self.calibration_method, self.calibration_percentile)
        if self.precision == "int8" and any(value is None for value in calibration):
            raise ValueError("an int8 CompileInput needs calibration, calibration_method and calibration_percentile")


@dataclass(kw_only=True)
class CompileResult:
    """What a backend's compiler produced: its files (relative to the staging folder) and provenance."""

    files: list[str]
    model_file: str
    backend_version: str
    inference_precision: str
    precision_hint: str | None = None
    quantization: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    build_plan: dict[str, Any] | None = None  # how the device builds its engine (TensorRT), stored in the manifest


@dataclass(frozen=True, kw_only=True)
class MeasureSite:
    """Where this machine runs a bundle for a target: ``device`` overrides the target's device (None keeps
    it), ``on_target`` is true when that is the target's own hardware (latency is then measured), and
    ``description`` says what runs, as the manifest's ``measured_with`` records it."""

    device: str | None
    on_target: bool
    description: str


@dataclass(frozen=True, kw_only=True)
class NoOptions:
    """The options of a backend that takes none: any key in [backend_options] is an error."""


class Runtime(ABC):
    """A loaded model, ready to run batches of preprocessed input.

    ``manifest`` is the manifest's JSON object, not the typed ``edgekit.bundle.Manifest``: the pipeline also
    builds runtimes at compile time (accuracy, latency, self-test outputs) from the manifest it is still
    writing, before ``selftest`` and ``files`` exist, so it cannot be a complete, validated ``Manifest`` yet.
    A loaded bundle passes ``OpenBundle.manifest`` (``typed_manifest.to_dict()``).
    """

    backend: str = ""
    # The runtime settings (edgekit.runtime.settings.KNOBS) this runtime applies; none by default. A runtime
    # that takes some accepts ``settings=`` (the knobs to apply; None: the manifest's ``runtime_settings``).
    settings_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        bundle_dir: Path,
        manifest: dict[str, Any],
        *,
        device: str | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        from edgekit.runtime.settings import recorded

        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        self.device = device or manifest["target"]["device"]
        self.settings: dict[str, Any] = dict(recorded(manifest) if settings is None else settings)

    @classmethod
    def settings_candidates(cls, cores: int) -> list[dict[str, Any]]:
        """The settings worth timing on a machine with ``cores`` usable cores (edgekit.measure.tune), the
        default ({}) first; none for a runtime without ``settings_keys``."""
        return []

    def applied_settings(self) -> dict[str, Any]:
        """What the backend reports it runs with, for the knobs of ``settings_keys`` (read back, not assumed)."""
        return {}

    @abstractmethod
    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (N, ...) of the model's input; return the first output, (N, classes)."""

    def describe(self) -> dict[str, Any]:
        """What actually runs: backend version, device, the precision the backend reports."""
        return {"backend": self.backend, "device": self.device}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the backend's resources."""


class Backend(ABC):
    """One backend: everything edgekit asks of it, as class attributes and class methods.

    Subclasses set ``id`` and implement ``compile``, ``runtime_class`` and ``measure_here``; the rest have
    defaults a simple backend keeps. Register a subclass in ``edgekit.registry.BUILTINS`` (built-in) or in
    the ``edgekit.backends`` entry-point group (third party)."""

    # The stable id: a target file's ``backend`` and a bundle manifest's ``backend.name``.
    id: ClassVar[str]
    # The frozen dataclass a target's [backend_options] load into (the runtime's and the manifest's check).
    options_type: ClassVar[type] = NoOptions
    # What an accuracy budget returns layers to: FP16 where the target runs it fast, else FP32.
    higher_precision: ClassVar[str] = "fp32"
    # Distribution names whose installed versions a report records (read from metadata, never imported).
    packages: ClassVar[tuple[str, ...]] = ()
    # Whether the device builds an engine from the bundle, so that `edgekit build-engine` applies.
    builds_engines: ClassVar[bool] = False
    # The INT8 recipe (calibration/recipes/<name>.toml) for a target file that names none; a target may name
    # another recipe of the same quantizer. None: the backend quantizes without a shipped recipe.
    calibration_recipe: ClassVar[str | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        abstract = any(getattr(getattr(cls, name, None), "__isabstractmethod__", False) for name in dir(cls))
        if not abstract and not (isinstance(getattr(cls, "id", None), str) and cls.id):
            raise TypeError(f"{cls.__qualname__} must set the class attribute id (its backend id, a string)")

    def __init__(self) -> None:
        raise TypeError(f"{type(self).__qualname__} is used as a class, never instantiated")

    @classmethod
    @abstractmethod
    def compile(cls, job: CompileInput) -> CompileResult:
        """Compile ``job.model`` at ``job.precision`` into ``job.staging``; return the files and provenance."""

    @classmethod
    @abstractmethod
    def runtime_class(cls) -> type[Runtime]:
        """The ``Runtime`` subclass that loads this backend's bundles (imported on this call)."""

    @classmethod
    @abstractmethod
    def measure_here(cls, target: Target, host: str, log: Log) -> MeasureSite:
        """Where this machine (described by ``host``) runs a bundle for ``target``; ``log`` says why a
        stand-in is used, if one is."""

    @classmethod
    def simulator(cls) -> type[Runtime] | None:
        """The ``Runtime`` that stands in for an absent device at compile time, or None (then the
        backend's own runtime runs here, on ``measure_here``'s device)."""
        return None

    @classmethod
    def quantizable_layers(cls, model: Any, *, spec: ModelSpec, target: Target) -> list[str]:
        """The layers an accuracy budget may keep in ``higher_precision``, by the names ``compile`` takes
        in ``keep_in_higher_precision``; empty for a backend that does not quantize."""
        return []

    @classmethod
    def layer_blocks(cls, model: Any, *, spec: ModelSpec, target: Target) -> list[tuple[str, ...]]:
        """``quantizable_layers`` in graph order, grouped into blocks an accuracy budget may keep whole (a
        block in higher precision pays for one FP32 island, not one a layer). By default each layer is
        its own block; the built-in backends end a block at each residual Add."""
        return [(name,) for name in cls.quantizable_layers(model, spec=spec, target=target)]

    @classmethod
    def named_files(cls, manifest: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(manifest field, file name) for the backend's own files a (validated) manifest names, beyond
        ``backend.model_file`` and the self-test (which every bundle has)."""
        return []

    @classmethod
    def parse_options(cls, options: Mapping[str, Any], *, source: str) -> Any:
        """A target's [backend_options] table as ``options_type``; a UsageError naming ``source`` if not."""
        return parse_options(cls.options_type, dict(options), backend=cls.id, source=source)

    @classmethod
    def simulation_note(cls, precision: str) -> str:
        """Appended to a report's account of simulated accuracy (what the simulator ran), or empty."""
        return ""

    @classmethod
    def build_engine(
        cls, bundle_dir: Path, manifest: dict[str, Any], *, cache_dir: str | Path | None, rebuild: bool
    ) -> Runtime:
        """``edgekit build-engine`` (where ``builds_engines``): build the device engine of a bundle, or reuse
        the cached one (``rebuild`` forces a build), and return the runtime holding it."""
        raise UsageError(f"backend {cls.id} builds no engine ahead of time; build-engine does not apply to it")


def parse_options(cls: type, options: dict[str, Any], *, backend: str, source: str) -> Any:
    """Build a backend's frozen options dataclass from a target's [backend_options] table."""
    allowed = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise UsageError(
            f"{source}: unknown key 'backend_options.{unknown[0]}' for backend {backend}; "
            f"allowed: {', '.join(sorted(allowed)) or 'none'}"
        )
    try:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in options.items()})
    except TypeError as exc:
        raise UsageError(f"{source}: backend_options: {exc}") from exc
