"""Build a TensorRT engine from a bundle's build plan, with TensorRT's documented Python API (8.6 to 10.x).

The steps are NVIDIA's: ``Builder`` -> ``create_network`` -> ``OnnxParser.parse_from_file`` ->
``IBuilderConfig`` (``set_memory_pool_limit``, precision flags, DLA, an ``IOptimizationProfile`` for a
dynamic batch, the timing cache) -> ``build_serialized_network``. Progress is reported through
``IProgressMonitor`` where TensorRT has it (10.x), else by a heartbeat, since a build takes minutes on a
Jetson. TensorRT 11, which dropped weak typing and implicit INT8, builds the fp32 and int8 (Q/DQ) plans
as strongly typed networks. The ``tensorrt`` module is passed in: this module imports nothing heavy itself. Not run on
hardware yet: no machine this project is tested on has TensorRT (see docs/tensorrt.md).
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgekit.backends.tensorrt import calibration_cache
from edgekit.backends.tensorrt.build_plan import BuildPlan
from edgekit.errors import BundleError

Log = Callable[[str], None]
HEARTBEAT_SECONDS = 30.0


def tensorrt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def strongly_typed_only(trt: Any) -> bool:
    """TensorRT 11 dropped weak typing (the FP16/INT8 builder flags): precision follows the ONNX's types."""
    return not hasattr(trt.BuilderFlag, "FP16")


def _network(trt: Any, builder: Any) -> Any:
    if strongly_typed_only(trt):
        return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    # TensorRT 10 networks are explicit-batch only and the flag is deprecated; 8.x needs it for ONNX.
    if tensorrt_major(trt) >= 10:
        return builder.create_network(0)
    return builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))


def _check_supported(trt: Any, plan: BuildPlan) -> None:
    """Refuse, in one line, a plan this TensorRT cannot build."""
    version = trt.__version__
    if strongly_typed_only(trt) and plan.precision == "fp16":
        raise BundleError(
            f"TensorRT {version} builds strongly typed networks only, so it cannot turn this bundle's FP32 ONNX "
            "into FP16; use an fp32 or int8 bundle on this device"
        )
    if plan.calibration_cache and not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise BundleError(
            f"TensorRT {version} has no implicit INT8 calibration, which this DLA build plan uses; recompile "
            "with backend_options.dla_core = -1 (explicit Q/DQ on the GPU)"
        )


def _parse(trt: Any, network: Any, logger: Any, onnx_path: Path) -> Any:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise BundleError(
            f"TensorRT's ONNX parser rejected {onnx_path.name}: {'; '.join(errors[:3]) or 'no detail'}; "
            "this TensorRT cannot run the bundle (check the target's JetPack range in 'edgekit inspect')"
        )
    return parser


def _cache_calibrator(trt: Any, cache: bytes) -> Any:
    """An entropy calibrator that only hands TensorRT the bundle's calibration cache (no data)."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> None:
            return None

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, data: Any) -> None:
            return None

    return CacheCalibrator()


def _configure(trt: Any, builder: Any, network: Any, config: Any, plan: BuildPlan, bundle_dir: Path) -> list[Any]:
    """Apply the plan to the builder config; return objects that must outlive the build."""
    keep: list[Any] = []
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_mib << 20)
    for flag in () if strongly_typed_only(trt) else plan.flags:  # strongly typed: the Q/DQ graph decides
        config.set_flag(getattr(trt.BuilderFlag, flag.upper()))
    if not plan.tf32:
        config.clear_flag(trt.BuilderFlag.TF32)
    if plan.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = plan.dla_core
        if plan.gpu_fallback:
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if hasattr(config, "builder_optimization_level"):  # TensorRT 8.6+
        config.builder_optimization_level = plan.builder_optimization_level
    tensor = network.get_input(0)
    profile = None
    if any(d < 0 for d in tuple(tensor.shape)):
        profile = builder.create_optimization_profile()
        profile.set_shape(tensor.name, plan.min_shape, plan.opt_shape, plan.max_shape)
        config.add_optimization_profile(profile)
    if plan.calibration_cache:
        text = (bundle_dir / plan.calibration_cache).read_text(encoding="utf-8")
        calibrator = _cache_calibrator(trt, calibration_cache.retarget(text, str(trt.__version__)).encode())
        config.int8_calibrator = calibrator
        if profile is not None and hasattr(config, "set_calibration_profile"):
            config.set_calibration_profile(profile)
        keep.append(calibrator)
    return keep


def _timing_cache(config: Any, path: Path | None) -> None:
    """Load the timing cache from ``path`` if it is sound, else start an empty one."""
    data = b""
    if path is not None and path.is_file():
        data = path.read_bytes()
    try:
        cache = config.create_timing_cache(data)
        if config.set_timing_cache(cache, ignore_mismatch=False):
            return
    except Exception:  # a damaged or foreign timing cache: TensorRT raises; start afresh
        pass
    config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)


def _save_timing_cache(config: Any, path: Path) -> None:
    data = bytes(memoryview(config.get_timing_cache().serialize()))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _progress_monitor(trt: Any, log: Log) -> Any | None:
    """TensorRT 10's IProgressMonitor, reporting top-level phases and, every 10 s, the current step."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}
            self.last = time.monotonic()

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.steps[phase_name] = num_steps
            if parent_phase is None:
                log(f"  {phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: int) -> bool:
            if time.monotonic() - self.last > 10.0:
                self.last = time.monotonic()
                log(f"  {phase_name}: step {step + 1} of {self.steps.get(phase_name, '?')}")
            return True

        def phase_finish(self, phase_name: str) -> None:
            self.steps.pop(phase_name, None)

    return Monitor()


def _heartbeat(log: Log) -> Callable[[], None]:
    """Log the elapsed time every HEARTBEAT_SECONDS until the returned stop function is called."""
    done = threading.Event()
    start = time.monotonic()

    def beat() -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            log(f"  still building ({time.monotonic() - start:.0f} s)")

    threading.Thread(target=beat, name="edgekit-trt-heartbeat", daemon=True).start()
    return done.set


def build_engine(trt: Any, plan: BuildPlan, bundle_dir: Path, *, timing_cache: Path | None, log: Log) -> bytes:
    """Build the plan's engine and return it serialized; save the timing cache if one is kept."""
    _check_supported(trt, plan)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = _network(trt, builder)
    parser = _parse(trt, network, logger, bundle_dir / plan.onnx)
    config = builder.create_builder_config()
    keep = [parser, *_configure(trt, builder, network, config, plan, bundle_dir)]
    if plan.timing_cache:
        _timing_cache(config, timing_cache)
    monitor = _progress_monitor(trt, log)
    stop = (lambda: None) if monitor is not None else _heartbeat(log)
    if monitor is not None:
        config.progress_monitor = monitor
    started = time.monotonic()
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        stop()
    del keep
    if serialized is None:
        raise BundleError("TensorRT could not build the engine; the TensorRT log above says why")
    log(f"built the TensorRT engine in {time.monotonic() - started:.0f} s")
    if plan.timing_cache and timing_cache is not None:
        _save_timing_cache(config, timing_cache)
    return bytes(memoryview(serialized))


__all__ = ["build_engine", "tensorrt_major"]
