"""The build plan: how the device turns the bundle's ONNX into a TensorRT engine, and the same as trtexec.

Engines are specific to the GPU, the TensorRT version and the JetPack release, so a bundle carries the
ONNX and this plan, and the device builds (and caches) the engine on first start. The plan is data, used
by the runtime's builder; ``trtexec()`` gives the equivalent command line for NVIDIA's own tool. Imports
nothing heavy: both build time and run time use it.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from dataclasses import dataclass
from typing import Any

from edgekit.errors import BundleError, UsageError

PLAN_FILE = "build_plan.json"
ENGINE_FILE = "model.engine"
TIMING_CACHE_FILE = "timing.cache"


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    precision: str
    onnx: str  # the file TensorRT parses
    quantization: str  # "explicit (Q/DQ in the ONNX)", "implicit (calibration cache)" or "none"
    flags: tuple[str, ...]  # builder precision flags: "fp16", "int8"
    tf32: bool  # TensorRT computes FP32 layers as TF32 on Ampere unless told not to; fp32 bundles say no
    calibration_cache: str | None
    workspace_mib: int
    dla_core: int | None
    gpu_fallback: bool
    input_name: str
    input_shape: tuple[int, ...]  # as the ONNX declares it, -1 for a dynamic dimension
    min_shape: tuple[int, ...]
    opt_shape: tuple[int, ...]
    max_shape: tuple[int, ...]
    timing_cache: bool
    builder_optimization_level: int
    tensorrt: str  # the newest TensorRT of the target's JetPack range: the trtexec line is written for it

    @property
    def dynamic(self) -> bool:
        return self.min_shape != self.max_shape

    def trtexec(self, *, engine: str = ENGINE_FILE, timing_cache_file: str = TIMING_CACHE_FILE) -> str:
        """The trtexec command line that builds the same engine, in the flags of ``self.tensorrt``."""
        version = _version(self.tensorrt)
        args = ["trtexec", f"--onnx={self.onnx}", f"--saveEngine={engine}"]
        args.append("--skipInference" if version >= (8, 6) else "--buildOnly")
        args += [f"--{flag}" for flag in self.flags]
        if not self.tf32:
            args.append("--noTF32")
        pool = "--memPoolSize=workspace:{}" if version >= (8, 4) else "--workspace={}"
        args.append(pool.format(self.workspace_mib))
        if -1 in self.input_shape:
            for kind, shape in (("min", self.min_shape), ("opt", self.opt_shape), ("max", self.max_shape)):
                args.append(f"--{kind}Shapes={self.input_name}:{'x'.join(map(str, shape))}")
        if self.dla_core is not None:
            args.append(f"--useDLACore={self.dla_core}")
            if self.gpu_fallback:
                args.append("--allowGPUFallback")
        if self.calibration_cache:
            args.append(f"--calib={self.calibration_cache}")
        if self.timing_cache:
            args.append(f"--timingCacheFile={timing_cache_file}")
        if version >= (8, 6):
            args.append(f"--builderOptimizationLevel={self.builder_optimization_level}")
        return shlex.join(args)

    def to_dict(self) -> dict[str, Any]:
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
        data["trtexec"] = self.trtexec()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "build plan") -> BuildPlan:
        fields = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(fields - set(data))
        if missing:
            raise BundleError(f"{source}: the TensorRT build plan lacks '{missing[0]}'; recompile the bundle")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields}
        return cls(**values)

    def describe(self) -> list[str]:
        """Two human lines: the settings, and how quantization reaches TensorRT."""
        where = "GPU" if self.dla_core is None else f"DLA core {self.dla_core}"
        if self.dla_core is not None:
            where += " with GPU fallback" if self.gpu_fallback else " only"
        batch = (
            f"batch profile {self.min_shape[0]}/{self.opt_shape[0]}/{self.max_shape[0]} (min/opt/max)"
            if self.dynamic
            else f"static shape {'x'.join(map(str, self.opt_shape))}"
        )
        flags = " + ".join(self.flags or ("fp32",)) + ("" if self.tf32 else " (TF32 off)")
        return [
            f"{self.onnx} -> engine built on the device: {flags}, workspace {self.workspace_mib} MiB, {where}, "
            f"{batch}, timing cache {'on' if self.timing_cache else 'off'}"
            + (f", optimization level {self.builder_optimization_level}" if _version(self.tensorrt) >= (8, 6) else ""),
            f"quantization {self.quantization}"
            + (f"; calibration cache {self.calibration_cache}" if self.calibration_cache else ""),
        ]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2]) or (8, 6)


def _profile(shape: tuple[int, ...], opt_batch: int, max_batch: int) -> tuple[tuple[int, ...], ...]:
    """min/opt/max shapes: a dynamic batch gets 1/opt/max, a fixed one stays as it is."""
    if shape[0] > 0:
        return shape, shape, shape
    rest = tuple(shape[1:])
    return (1, *rest), (opt_batch, *rest), (max_batch, *rest)


def make_plan(
    *,
    precision: str,
    input_name: str,
    input_shape: tuple[int, ...],
    options: Any,
    onnx: str,
    tensorrt: str,
    fp32_onnx: str | None = None,
    calibration_cache: str | None = None,
) -> BuildPlan:
    """The plan for one bundle. ``input_shape`` has -1 for a dynamic batch."""
    if options.uses_dla and precision == "fp32":
        raise UsageError("the DLA runs fp16 and int8 only; compile with --precision fp16 or int8, or set dla_core = -1")
    flags: tuple[str, ...] = {"fp32": (), "fp16": ("fp16",), "int8": ("int8",)}[precision]
    if precision == "int8" and options.int8_fp16_fallback:
        flags = ("int8", "fp16")
    quantization, source, cache = "none", onnx, None
    if precision == "int8":
        quantization = "explicit (Q/DQ in the ONNX)"
        if options.uses_dla:  # the DLA takes INT8 scales, not Q/DQ layers: TensorRT's implicit path
            quantization, source, cache = "implicit (calibration cache)", fp32_onnx or onnx, calibration_cache
    lo, opt, hi = _profile(tuple(input_shape), options.opt_batch, options.max_batch)
    if options.uses_dla and lo != hi:  # the DLA builds static shapes: fix the batch at opt_batch
        lo = hi = opt
    return BuildPlan(
        precision=precision,
        onnx=source,
        quantization=quantization,
        flags=flags,
        tf32=precision != "fp32",
        calibration_cache=cache,
        workspace_mib=options.workspace_mib,
        dla_core=options.dla_core if options.uses_dla else None,
        gpu_fallback=options.gpu_fallback,
        input_name=input_name,
        input_shape=tuple(input_shape),
        min_shape=lo,
        opt_shape=opt,
        max_shape=hi,
        timing_cache=options.timing_cache,
        builder_optimization_level=options.builder_optimization_level,
        tensorrt=tensorrt,
    )


def implicit_variant(plan: BuildPlan, *, fp32_onnx: str, calibration_cache: str) -> BuildPlan:
    """The same engine through TensorRT's implicit INT8 path (the FP32 ONNX plus the calibration cache)."""
    return dataclasses.replace(
        plan, onnx=fp32_onnx, quantization="implicit (calibration cache)", calibration_cache=calibration_cache
    )


__all__ = ["ENGINE_FILE", "PLAN_FILE", "BuildPlan", "implicit_variant", "make_plan"]
