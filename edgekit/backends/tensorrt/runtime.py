"""Run a TensorRT bundle on an NVIDIA GPU (a Jetson). Imports numpy, TensorRT and cuda-python only.

Loading builds the engine from the bundle's ONNX and build plan on first start (minutes on a Jetson, with
progress on stderr) and caches it on disk, keyed by GPU name, compute capability, TensorRT version and
bundle hash (engine_cache.py); the next load reuses it. The bundle's self-test then runs before anything
is served (edgekit.runtime.Bundle does that for every backend). Device memory and the stream go through
NVIDIA's cuda-python bindings, as TensorRT's own samples do; inference uses the tensor-address API
(``set_input_shape``, ``set_tensor_address``, ``execute_async_v3``) that TensorRT 8.5 introduced and
10.x keeps.

Written against NVIDIA's documented Python API; not yet run on a Jetson (see docs/tensorrt.md).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.backends.base import Runtime
from edgekit.backends.tensorrt.build_plan import BuildPlan
from edgekit.backends.tensorrt.engine_builder import build_engine
from edgekit.backends.tensorrt.engine_cache import EngineCache, EngineKey, plan_hash
from edgekit.bundle.manifest import MANIFEST, bundle_hash
from edgekit.errors import BundleError, DependencyError

MIN_TENSORRT = (8, 5)  # the tensor-address API (set_tensor_address, execute_async_v3)
Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(f"edgekit: {msg}", file=sys.stderr, flush=True)


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python 12.6 and newer
    except ImportError:
        from cuda import cudart  # older cuda-python, as TensorRT 8.6/10.x samples import it
    return cudart


def load_stack(target: str = "") -> tuple[Any, Any]:
    """(tensorrt, cudart) or a one-line DependencyError saying TensorRT and an NVIDIA GPU are required."""
    what = f"this bundle (target {target})" if target else "a TensorRT bundle"
    try:
        import tensorrt as trt

        if not hasattr(trt, "Builder"):  # e.g. a folder named tensorrt on sys.path, not NVIDIA's package
            raise ImportError("not NVIDIA's TensorRT")
    except (ImportError, OSError) as exc:
        raise DependencyError(
            f"{what} runs only on an NVIDIA GPU with TensorRT, and TensorRT is not installed here: load it on "
            "the device (JetPack provides TensorRT; add NVIDIA's cuda-python with: pip install cuda-python), "
            "or look at it with 'edgekit inspect'"
        ) from exc
    try:
        cudart = _import_cudart()
    except (ImportError, OSError) as exc:
        raise DependencyError(
            f"{what} needs NVIDIA's cuda-python next to TensorRT for device memory; install the release "
            "that matches JetPack's CUDA, e.g.: pip install 'cuda-python>=12,<13'"
        ) from exc
    version = tuple(int(p) for p in str(trt.__version__).split(".")[:2])
    if version < MIN_TENSORRT:
        raise DependencyError(
            f"TensorRT {trt.__version__} is too old: edgekit needs TensorRT 8.5 or newer (JetPack 5.1+); build "
            "with the bundle's trtexec line instead ('edgekit inspect' shows it)"
        )
    return trt, cudart


def _check(result: Any) -> Any:
    """cuda-python returns (error, value...): raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if getattr(err, "value", err) != 0:  # cudaError_t.cudaSuccess is 0
        raise BundleError(f"CUDA call failed: {err}; check that the NVIDIA GPU and its driver work (e.g. tegrastats)")
    return values[0] if len(values) == 1 else tuple(values)


@dataclass(frozen=True)
class GPU:
    name: str
    compute_capability: str


def gpu_info(cudart: Any) -> GPU:
    """The first CUDA device, or a BundleError saying an NVIDIA GPU is required."""
    result = cudart.cudaGetDeviceCount()
    count = result[1] if getattr(result[0], "value", result[0]) == 0 else 0
    if count < 1:
        raise BundleError(
            f"no NVIDIA GPU is usable here ({result[0]}); a TensorRT bundle runs only on an NVIDIA GPU with TensorRT"
        )
    props = _check(cudart.cudaGetDeviceProperties(0))
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GPU(name.strip("\x00 "), f"{props.major}.{props.minor}")


def gpu_available() -> bool:
    """True when TensorRT, cuda-python and an NVIDIA GPU are all usable here."""
    try:
        _, cudart = load_stack()
        gpu_info(cudart)
    except Exception:
        return False
    return True


def timing_cache_path(cache: EngineCache, key: EngineKey) -> Path:
    return (
        cache.root / f"timing-{key.filename().split('-', 1)[1].removesuffix('.engine')}-trt{key.tensorrt_version}.cache"
    )


class TensorRTRuntime(Runtime):
    backend = "tensorrt"

    def __init__(
        self,
        bundle_dir: Path,
        manifest: dict[str, Any],
        *,
        device: str | None = None,
        cache_dir: str | Path | None = None,
        rebuild: bool = False,
        log: Log | None = None,
    ) -> None:
        super().__init__(bundle_dir, manifest, device=device)
        self.log = log or _stderr
        self.trt, self.cudart = load_stack(manifest["target"]["name"])
        self.gpu = gpu_info(self.cudart)
        plan_data = manifest["backend"].get("build_plan") or {}
        self.plan = BuildPlan.from_dict(plan_data, source=str(bundle_dir))
        self._trt_runtime = self.trt.Runtime(self.trt.Logger(self.trt.Logger.WARNING))
        self.engine, self.cache_status, self.engine_path = self._load_engine(plan_data, cache_dir, rebuild)
        self.context = self.engine.create_execution_context()
        self.stream = _check(self.cudart.cudaStreamCreate())
        self._buffers: dict[str, tuple[int, int]] = {}  # tensor name -> (device pointer, bytes)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT]
        self.input_name = inputs[0]
        self.outputs = [n for n in names if n not in inputs]
        wanted = manifest.get("output", {}).get("name")
        self.output_name = wanted if wanted in self.outputs else self.outputs[0]

    def _load_engine(self, plan_data: dict[str, Any], cache_dir: Any, rebuild: bool) -> tuple[Any, str, Path | None]:
        manifest_file = self.bundle_dir / MANIFEST
        deserialize = self._trt_runtime.deserialize_cuda_engine
        if not manifest_file.is_file():  # compiling on the device: the bundle is not written yet, nothing to key
            self.log(f"building the TensorRT engine on {self.gpu.name} to measure the bundle")
            engine = deserialize(build_engine(self.trt, self.plan, self.bundle_dir, timing_cache=None, log=self.log))
            return engine, "built (not cached: the bundle is still being compiled)", None
        key = EngineKey(
            gpu_name=self.gpu.name,
            compute_capability=self.gpu.compute_capability,
            tensorrt_version=str(self.trt.__version__),
            bundle_hash=bundle_hash(manifest_file.read_text(encoding="utf-8")),
            plan_hash=plan_hash(plan_data),
        )
        cache = EngineCache(cache_dir)
        timing = timing_cache_path(cache, key)
        loaded = cache.load_or_build(
            key,
            build=lambda: build_engine(self.trt, self.plan, self.bundle_dir, timing_cache=timing, log=self.log),
            deserialize=deserialize,
            rebuild=rebuild,
            log=self.log,
        )
        return loaded.engine, loaded.status, loaded.path

    def _buffer(self, name: str, nbytes: int) -> int:
        """A device buffer of at least ``nbytes`` for tensor ``name``, grown when a larger batch comes."""
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _check(self.cudart.cudaFree(ptr))
            ptr = int(_check(self.cudart.cudaMalloc(nbytes)))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _run(self, x: np.ndarray) -> np.ndarray:
        trt, cudart, ctx = self.trt, self.cudart, self.context
        ctx.set_input_shape(self.input_name, x.shape)
        outputs = {}
        for name in self.outputs:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            outputs[name] = np.empty(tuple(ctx.get_tensor_shape(name)), dtype)
            ctx.set_tensor_address(name, self._buffer(name, max(outputs[name].nbytes, 1)))
        src = self._buffer(self.input_name, x.nbytes)
        ctx.set_tensor_address(self.input_name, src)
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(src, x.ctypes.data, x.nbytes, h2d, self.stream))
        if not ctx.execute_async_v3(self.stream):
            raise BundleError("TensorRT failed to run the engine; the TensorRT log above says why")
        out = outputs[self.output_name]
        dst = self._buffers[self.output_name][0]
        _check(cudart.cudaMemcpyAsync(out.ctypes.data, dst, out.nbytes, d2h, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return out

    def infer(self, batch: np.ndarray) -> np.ndarray:
        lo, hi = self.plan.min_shape[0], self.plan.max_shape[0]
        n = len(batch)
        if n > hi:  # beyond the optimization profile: run it in profile-sized pieces
            return np.concatenate([self.infer(batch[i : i + hi]) for i in range(0, n, hi)])
        dtype = np.dtype(self.trt.nptype(self.engine.get_tensor_dtype(self.input_name)))
        x = np.ascontiguousarray(batch, dtype=dtype)
        if n < lo:  # a static-batch engine (e.g. on the DLA): pad, run, and drop the padding
            x = np.concatenate([x, np.zeros((lo - n, *x.shape[1:]), dtype)])
        return self._run(x)[:n]

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "backend_version": str(self.trt.__version__),
            "device": f"{self.gpu.name} (compute capability {self.gpu.compute_capability})",
            "engine": self.cache_status,
            "engine_file": str(self.engine_path) if self.engine_path else None,
            "precision": self.plan.precision,
            "dla_core": self.plan.dla_core,
        }

    def close(self) -> None:
        for ptr, _ in self._buffers.values():
            self.cudart.cudaFree(ptr)
        self._buffers.clear()
        if getattr(self, "stream", None) is not None:
            self.cudart.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = None
        self.engine = None


__all__ = ["TensorRTRuntime", "gpu_available", "gpu_info", "load_stack"]
