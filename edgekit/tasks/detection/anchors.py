"""SSD anchors: the grid of prior boxes an SSD-style detector's box deltas are relative to.

``ssd_anchors`` follows MediaPipe's ``SsdAnchorsCalculator`` (itself TensorFlow Object Detection API's
``create_ssd_anchors`` with a fixed grid), so a MediaPipe or TF detector's anchors come from the same
parameters as in its graph config: strides, aspect ratios, a linear min/max scale per layer, the interpolated
extra anchor, the reduced lowest layer and the anchor offsets. Layers with equal strides share one grid, their
anchors interleaved per cell, as MediaPipe merges them. Anchors are (x_centre, y_centre, width, height),
normalised to the input (0-1), in the order the model's outputs list them: layer, then row, then column, then
the anchors of a cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edgekit.errors import UsageError


@dataclass(frozen=True, kw_only=True)
class AnchorGenerator:
    """The SSD anchor generator's parameters (MediaPipe's ``SsdAnchorsCalculatorOptions`` names).

    ``strides`` gives one entry a layer (its grid is ``ceil(input / stride)`` cells a side unless
    ``feature_map_sizes`` lists (height, width) a layer); layer ``i`` of ``n`` has the scale
    ``min_scale + (max_scale - min_scale) * i / (n - 1)``. ``input_size`` (height, width) is the size the anchors
    were made for, when it is not the model's input size.
    """

    strides: tuple[int, ...]
    min_scale: float
    max_scale: float
    aspect_ratios: tuple[float, ...] = (1.0,)
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    interpolated_scale_aspect_ratio: float = 1.0
    reduce_boxes_in_lowest_layer: bool = False
    fixed_anchor_size: bool = False
    feature_map_sizes: tuple[tuple[int, int], ...] | None = None
    input_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        where = "[detection.anchor_generator]"
        if not self.strides or any(s <= 0 for s in self.strides):
            raise UsageError(f"{where} strides {list(self.strides)} must list one positive stride a layer")
        if not 0 < self.min_scale <= self.max_scale:
            raise UsageError(
                f"{where} min_scale {self.min_scale} and max_scale {self.max_scale} must satisfy "
                "0 < min_scale <= max_scale (e.g. 0.2 and 0.95)"
            )
        if not self.aspect_ratios or any(a <= 0 for a in self.aspect_ratios):
            raise UsageError(f"{where} aspect_ratios {list(self.aspect_ratios)} must list positive ratios")
        if self.feature_map_sizes is not None and (
            len(self.feature_map_sizes) != len(self.strides)
            or any(len(s) != 2 or min(s) <= 0 for s in self.feature_map_sizes)
        ):
            raise UsageError(
                f"{where} feature_map_sizes must give one positive [height, width] a layer "
                f"({len(self.strides)} layers, as strides lists)"
            )
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) <= 0):
            raise UsageError(f"{where} input_size {list(self.input_size)} must be [height, width] in pixels")


def _layer_scale(gen: AnchorGenerator, index: int) -> float:
    n = len(gen.strides)
    if n == 1:
        return (gen.min_scale + gen.max_scale) * 0.5
    return gen.min_scale + (gen.max_scale - gen.min_scale) * index / (n - 1.0)


def ssd_anchors(gen: AnchorGenerator, input_hw: tuple[int, int]) -> np.ndarray:
    """The anchors (N, 4) float32 (x_centre, y_centre, width, height) normalised, for an input of ``input_hw``
    (``gen.input_size`` wins when given)."""
    ih, iw = gen.input_size or input_hw
    strides, layers = gen.strides, []
    layer = 0
    while layer < len(strides):
        ratios: list[float] = []
        scales: list[float] = []
        last = layer
        while last < len(strides) and strides[last] == strides[layer]:
            scale = _layer_scale(gen, last)
            if last == 0 and gen.reduce_boxes_in_lowest_layer:
                ratios += [1.0, 2.0, 0.5]
                scales += [0.1, scale, scale]
            else:
                ratios += list(gen.aspect_ratios)
                scales += [scale] * len(gen.aspect_ratios)
                if gen.interpolated_scale_aspect_ratio > 0:
                    nxt = 1.0 if last == len(strides) - 1 else _layer_scale(gen, last + 1)
                    scales.append(math.sqrt(scale * nxt))
                    ratios.append(gen.interpolated_scale_aspect_ratio)
            last += 1
        if gen.feature_map_sizes is not None:
            fh, fw = gen.feature_map_sizes[layer]
        else:
            fh, fw = math.ceil(ih / strides[layer]), math.ceil(iw / strides[layer])
        root = np.sqrt(np.asarray(ratios, np.float64))
        sizes = np.asarray(scales, np.float64)
        w, h = (np.ones_like(sizes), np.ones_like(sizes)) if gen.fixed_anchor_size else (sizes * root, sizes / root)
        k = len(sizes)
        cy = (np.arange(fh) + gen.anchor_offset_y) / fh
        cx = (np.arange(fw) + gen.anchor_offset_x) / fw
        grid = np.empty((fh, fw, k, 4), np.float64)
        grid[..., 0] = cx[None, :, None]
        grid[..., 1] = cy[:, None, None]
        grid[..., 2] = w
        grid[..., 3] = h
        layers.append(grid.reshape(-1, 4))
        layer = last
    return np.concatenate(layers).astype(np.float32)
