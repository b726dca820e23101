"""Typed options of the TensorRT backend, from a target file's [backend_options]."""

from __future__ import annotations

from dataclasses import dataclass

from edgekit.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class TensorRTOptions:
    # Builder workspace (scratch memory for tactics), MiB. Jetsons share it with the CPU: keep it modest.
    workspace_mib: int = 1024
    # DLA core to build for (Orin NX, AGX Orin, Xavier NX have two), or -1 for the GPU.
    dla_core: int = -1
    # With a DLA core: let layers the DLA cannot run fall back to the GPU.
    gpu_fallback: bool = True
    # Optimization profile for a dynamic batch: TensorRT tunes for opt_batch and accepts 1..max_batch.
    opt_batch: int = 1
    max_batch: int = 8
    # Keep TensorRT's timing cache beside the engine cache, so rebuilds (new bundle, same GPU) are faster.
    timing_cache: bool = True
    # TensorRT's builder optimization level, 0..5 (3 is TensorRT's default; needs TensorRT 8.6 or newer).
    builder_optimization_level: int = 3
    # INT8 bundles also enable FP16, so layers left unquantized may run in FP16 (NVIDIA's usual --int8 --fp16).
    int8_fp16_fallback: bool = True

    def __post_init__(self) -> None:
        if self.workspace_mib < 16:
            raise UsageError(f"workspace_mib must be at least 16, not {self.workspace_mib}")
        if self.dla_core < -1:
            raise UsageError(f"dla_core must be -1 (GPU) or a DLA core index, not {self.dla_core}")
        if not 1 <= self.opt_batch <= self.max_batch:
            raise UsageError(
                f"the batch profile needs 1 <= opt_batch <= max_batch (got {self.opt_batch}, {self.max_batch})"
            )
        if not 0 <= self.builder_optimization_level <= 5:
            raise UsageError(f"builder_optimization_level must be 0..5, not {self.builder_optimization_level}")

    @property
    def uses_dla(self) -> bool:
        return self.dla_core >= 0
