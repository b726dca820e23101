"""Image decoding and preprocessing: numpy and OpenCV only.

The same functions prepare calibration images at compile time and camera frames on the device, so a
bundle is calibrated on exactly what it will see.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgekit.errors import DataError, UsageError
from edgekit.spec import InputSpec, PreprocessSpec

_INTERP = {
    "bilinear": cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
    "bicubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
}


def decode_image(data: bytes, *, name: str = "image") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, WebP) to HWC uint8 BGR, or raise DataError."""
    if not data:
        raise DataError(f"{name}: empty file; pass a JPEG, PNG, BMP or WebP image")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{name}: not a decodable image; pass a JPEG, PNG, BMP or WebP image")
    return image


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file to HWC uint8 BGR."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise UsageError(f"image '{path}' does not exist") from exc
    except OSError as exc:
        raise DataError(f"image '{path}' cannot be read ({exc.strerror})") from exc
    return decode_image(data, name=str(path))


def _resize(image: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    if spec.resize is None:
        return image
    h, w = image.shape[:2]
    if isinstance(spec.resize, int):
        short = min(h, w)
        size = (round(w * spec.resize / short), round(h * spec.resize / short))
    else:
        size = (spec.resize[1], spec.resize[0])
    if size == (w, h):
        return image
    return cv2.resize(image, size, interpolation=_INTERP[spec.resize_mode])


def _center_crop(image: np.ndarray, crop: tuple[int, int] | None) -> np.ndarray:
    if crop is None:
        return image
    h, w = image.shape[:2]
    ch, cw = crop
    if ch > h or cw > w:
        raise DataError(f"crop {ch}x{cw} is larger than the resized image {h}x{w}; fix resize or crop")
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top : top + ch, left : left + cw]


def letterbox(image: np.ndarray, input_hw: tuple[int, int], spec: PreprocessSpec) -> np.ndarray:
    """Resize keeping the aspect ratio to fit ``input_hw``, then pad with ``spec.pad_value`` (the geometry is
    ``fit_image``'s, which a detector's decoding inverts)."""
    from edgekit.tasks.detection.geometry import fit_image

    fit = fit_image(image.shape[:2], input_hw, "letterbox")
    h, w = fit.resized_hw
    if (h, w) != image.shape[:2]:
        image = cv2.resize(image, (w, h), interpolation=_INTERP[spec.resize_mode])
    top, bottom, left, right = fit.padding
    if top or bottom or left or right:
        value = (spec.pad_value,) * 3
        image = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=value)
    return image


def prepare_frame(
    image: np.ndarray, spec: PreprocessSpec, inp: InputSpec, *, color_order: str = "BGR"
) -> tuple[np.ndarray, str]:
    """The host half of ``preprocess``: an HWC uint8 image (``color_order`` BGR or RGB; grey and BGRA/RGBA are
    taken too) -> (an HxWx3 uint8 frame at the model's size, its colour order), by the resize and centre crop,
    or the letterbox. An image already at the model's size is returned as it is (no copy)."""
    if not isinstance(image, np.ndarray):
        raise UsageError(f"expected an HxWx3 uint8 image array, got {type(image).__name__}; pass a NumPy "
                         "array (e.g. from cv2.imread) or an image path")  # fmt: skip
    if image.ndim == 2 and image.dtype == np.uint8:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        color_order = "BGR"
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
        raise UsageError(
            f"expected an HxWx3 uint8 image, got shape {image.shape} dtype {image.dtype}; pass the frame as "
            "uint8 pixels (a preprocessed float tensor goes to Bundle.infer)"
        )
    if image.shape[2] == 4:
        image = image[:, :, :3]
    order = color_order.upper() if isinstance(color_order, str) else color_order
    if order not in ("BGR", "RGB"):
        raise UsageError(f"color_order must be 'BGR' or 'RGB', not {color_order!r}")
    if spec.fit == "letterbox":
        image = letterbox(image, inp.hw, spec)
    else:
        image = _center_crop(_resize(image, spec), spec.crop)
    if image.shape[:2] != inp.hw:
        raise DataError(
            f"preprocessed image is {image.shape[0]}x{image.shape[1]} but the model takes "
            f"{inp.hw[0]}x{inp.hw[1]}; fix the resize/crop settings"
        )
    return image, order


def to_tensor(frame: np.ndarray, spec: PreprocessSpec, inp: InputSpec, *, color_order: str) -> np.ndarray:
    """The pixel half of ``preprocess`` (what a bundle's graph does itself, edgekit.runtime.graph_front): a
    frame at the model's size -> one input tensor: colour order, ``* scale``, ``- mean``, ``/ std``, layout."""
    if color_order != spec.color_order:
        frame = frame[:, :, ::-1]
    x = frame.astype(np.float32) * np.float32(spec.scale)
    x = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if inp.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x, dtype=np.dtype(inp.dtype))


def preprocess(image: np.ndarray, spec: PreprocessSpec, inp: InputSpec, *, color_order: str = "BGR") -> np.ndarray:
    """HWC uint8 image (``color_order`` BGR or RGB) -> one input tensor without the batch dimension."""
    frame, order = prepare_frame(image, spec, inp, color_order=color_order)
    return to_tensor(frame, spec, inp, color_order=order)
