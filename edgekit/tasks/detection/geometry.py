"""How a source image is fitted into the model's input, and how boxes map back to the source image.

``fit_image`` gives the forward parameters (the resized size, the padding, the scale) that preprocessing applies;
``to_source`` inverts them for boxes, so a detector's boxes come back in the original image's pixels, clipped to
it. Coordinates are continuous pixel edges (a box covering the whole W x H image is ``[0, 0, W, H]``), the
convention in which a resize is a pure scale: ``x_input = x_source * scale_x + pad_x``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgekit.errors import UsageError

FITS = ("letterbox", "stretch")


@dataclass(frozen=True)
class Fit:
    """One source image fitted into the input.

    ``letterbox`` resizes keeping the aspect ratio so that the image fits, then pads both sides equally (an odd
    pixel goes to the right or bottom, as Ultralytics' letterbox does); ``stretch`` resizes to the input
    exactly. ``scale_x``/``scale_y`` are input pixels per source pixel, taken from the resized size itself
    (``resized_w / source_w``), so rounding the resized size to whole pixels costs no accuracy on the way back.
    """

    mode: str
    source_hw: tuple[int, int]
    input_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    pad_top: int
    pad_left: int
    scale_x: float
    scale_y: float

    @property
    def pad_bottom(self) -> int:
        return self.input_hw[0] - self.resized_hw[0] - self.pad_top

    @property
    def pad_right(self) -> int:
        return self.input_hw[1] - self.resized_hw[1] - self.pad_left

    @property
    def padding(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right), as ``cv2.copyMakeBorder`` takes them."""
        return (self.pad_top, self.pad_bottom, self.pad_left, self.pad_right)


def fit_image(source_hw: tuple[int, int], input_hw: tuple[int, int], mode: str = "letterbox") -> Fit:
    """The fit of a ``source_hw`` (height, width) image into an ``input_hw`` input by ``mode`` (see ``Fit``)."""
    (sh, sw), (ih, iw) = _size(source_hw, "source image size"), _size(input_hw, "input size")
    if mode == "stretch":
        return Fit(mode, (sh, sw), (ih, iw), (ih, iw), 0, 0, iw / sw, ih / sh)
    if mode != "letterbox":
        raise UsageError(f"fit '{mode}' is not one of {', '.join(FITS)}")
    r = min(ih / sh, iw / sw)
    rh, rw = min(ih, max(1, round(sh * r))), min(iw, max(1, round(sw * r)))
    top, left = round((ih - rh) / 2 - 0.1), round((iw - rw) / 2 - 0.1)
    return Fit(mode, (sh, sw), (ih, iw), (rh, rw), int(top), int(left), rw / sw, rh / sh)


def to_source(boxes: np.ndarray, fit: Fit, *, clip: bool = True) -> np.ndarray:
    """Boxes (N, 4) x1, y1, x2, y2 in input pixels -> in the source image's pixels (float32), clipped to it
    unless ``clip`` is false. A box wholly inside the padding collapses to zero area on the image's edge."""
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    out[:, 0::2] -= fit.pad_left
    out[:, 1::2] -= fit.pad_top
    out[:, 0::2] /= fit.scale_x
    out[:, 1::2] /= fit.scale_y
    if clip:
        np.clip(out[:, 0::2], 0.0, fit.source_hw[1], out=out[:, 0::2])
        np.clip(out[:, 1::2], 0.0, fit.source_hw[0], out=out[:, 1::2])
    return out


def to_input(boxes: np.ndarray, fit: Fit) -> np.ndarray:
    """Boxes (N, 4) in the source image's pixels -> in input pixels (float32): the forward mapping."""
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    out[:, 0::2] = out[:, 0::2] * fit.scale_x + fit.pad_left
    out[:, 1::2] = out[:, 1::2] * fit.scale_y + fit.pad_top
    return out


def _size(hw: tuple[int, int], what: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in hw)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{what} {hw!r} is not (height, width); give two positive integers") from exc
    if h <= 0 or w <= 0:
        raise UsageError(f"{what} {[h, w]} is not positive; give (height, width) in pixels")
    return h, w
