"""Decoding at the size the model needs, and choosing a GStreamer hardware decoder.

A classifier with a 32x32 input fed from a 640x480 MJPEG camera throws away 99.7% of every decoded
frame's pixels. A JPEG can be decoded at 1/2, 1/4 or 1/8 of its size in the DCT domain (libjpeg's scaled
IDCT: each 8x8 block becomes 4x4, 2x2 or 1 pixel), which skips most of the inverse transform, the colour
upsampling and conversion of the discarded pixels. ``needed_size`` says which size the preprocessing
actually uses from a frame, ``reduction`` the largest scale that still covers it, ``decode_jpeg`` decodes one
JPEG at that scale (bounded and strict), and ``MjpegReader`` reads the compressed frames of an MJPEG video
file or stream (OpenCV's FFmpeg backend with ``CAP_PROP_FORMAT = -1`` hands over the packets undecoded)
and decodes each one that way.

JPEGs go through libjpeg-turbo by simplejpeg (the same scaled IDCT that OpenCV's ``IMREAD_REDUCED_COLOR_N``
uses), with ``strict=True``: OpenCV's imdecode turns a truncated or corrupt frame into grey rows with only
a warning on stderr, simplejpeg raises, and the frame is skipped and reported instead.

For H.264/H.265/JPEG streams opened through GStreamer, ``choose_decoder`` picks a hardware decoder element
when the platform has one (Jetson's nvv4l2decoder/nvjpegdec, VA-API's vah264dec/vaapih264dec on Intel,
a V4L2 stateful decoder), else the software one, from the elements the GStreamer registry lists.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import cv2
import numpy as np
import simplejpeg

from edgekit.serve.images import MAX_PIXELS, jpeg_size
from edgekit.serve.sources import CaptureReader, SkipHandler, SourceError, SourceSpec
from edgekit.spec import PreprocessSpec

log = logging.getLogger("edgekit.serve")

REDUCTIONS = (8, 4, 2, 1)
# The decoded frame must be at least MARGIN times the size the preprocessing resizes to, in both sides.
# 1.0 is enough: libjpeg's scaled IDCT averages each block (an anti-aliased downscale), so the reduced frame
# is no worse a source for the final resize than the full one. Measured (bench/bench_jpeg_decode.py,
# tests/serve/test_decode.py): on CIFAR-10 photographs upscaled to 640x480, the 32x32 input of a 1/8 decode
# is 1.6 grey levels (mean) from a full decode's and the reference ResNet agrees on 96 of 100 frames (81 vs
# 80 right); on tiled frames it is the closest of all decodes to an area-averaged 32x32 (4.3 against 11.5).
MARGIN = 1.0
MAX_PACKET_BYTES = 64 * 1024 * 1024  # a compressed frame larger than this is skipped undecoded
MAX_BAD_IN_A_ROW = 30  # this many undecodable packets in a row: the stream is not MJPEG, give up (SourceError)
_CMYK = ("CMYK", "YCCK")
_CV2_REDUCED = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                8: cv2.IMREAD_REDUCED_COLOR_8}  # fmt: skip

Need = tuple[int, int] | Callable[[tuple[int, int]], tuple[int, int]]


class BadFrame(SourceError):
    """One compressed frame or image that cannot be decoded; readers skip it and report why."""


def needed_size(preprocess: PreprocessSpec, input_hw: tuple[int, int], frame_hw: tuple[int, int]) -> tuple[int, int]:
    """The (height, width) the preprocessing resizes a ``frame_hw`` frame to before it crops or pads: a frame
    decoded at least this large loses nothing the model's input keeps. With no resize the frame is used
    at its own size (nothing can be reduced)."""
    fh, fw = int(frame_hw[0]), int(frame_hw[1])
    if preprocess.fit == "letterbox":
        from edgekit.tasks.detection.geometry import fit_image

        return fit_image((fh, fw), tuple(input_hw), "letterbox").resized_hw
    if preprocess.resize is None:
        return fh, fw
    if isinstance(preprocess.resize, int):  # the shorter side to this size, as runtime.preprocess._resize does
        short = min(fh, fw)
        return round(fh * preprocess.resize / short), round(fw * preprocess.resize / short)
    return int(preprocess.resize[0]), int(preprocess.resize[1])


def need_for(preprocess: PreprocessSpec, input_hw: tuple[int, int]) -> Callable[[tuple[int, int]], tuple[int, int]]:
    """``needed_size`` for one model, as a function of the frame size: what ``open_reader(need=...)`` takes
    when frames may differ in size (an image folder, a shorter-side resize, a letterbox)."""
    return functools.partial(needed_size, preprocess, tuple(input_hw))


def reduced_size(frame_hw: tuple[int, int], reduction: int) -> tuple[int, int]:
    """The size libjpeg decodes a ``frame_hw`` JPEG to at 1/``reduction`` (it rounds up)."""
    return math.ceil(frame_hw[0] / reduction), math.ceil(frame_hw[1] / reduction)


def reduction(frame_hw: tuple[int, int], needed_hw: tuple[int, int], *, margin: float = MARGIN) -> int:
    """1, 2, 4 or 8: the largest scale down whose decoded frame still covers ``margin`` x ``needed_hw`` in
    both sides."""
    nh, nw = needed_hw
    for r in REDUCTIONS:
        h, w = reduced_size(frame_hw, r)
        if h >= margin * nh and w >= margin * nw:
            return r
    return 1


def describe(r: int) -> str:
    """The decode path's name for logs and /v1/info."""
    return f"jpeg 1/{r} (libjpeg DCT scaling)" if r > 1 else "jpeg 1/1 (libjpeg, full size)"


def jpeg_frame_size(data: bytes, *, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """(height, width) a JPEG's header declares, checked: BadFrame if it is not a JPEG, has no frame header,
    or declares more than ``max_pixels`` pixels (checked before anything is allocated)."""
    if not data.startswith(b"\xff\xd8\xff"):
        raise BadFrame(f"is not a JPEG (it starts {data[:4].hex() or 'empty'}, not ffd8ff)")
    size = jpeg_size(data)
    if size is None:
        raise BadFrame("is a JPEG with no readable frame (SOF) header")
    width, height = size
    if width < 1 or height < 1 or width * height > max_pixels:
        raise BadFrame(f"declares {width}x{height} pixels; at most {max_pixels:,} pixels are decoded")
    return height, width


def decode_jpeg(data: bytes, reduction: int = 1, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """One JPEG -> HxWx3 uint8 BGR at 1/``reduction`` (1, 2, 4 or 8) of its size, decoded in the DCT domain.

    The header's size is checked first (``jpeg_frame_size``); any decoder warning (truncated or corrupt
    data) is an error. Raises BadFrame (a SourceError) naming what is wrong."""
    if reduction not in _CV2_REDUCED:
        raise ValueError(f"reduction {reduction} is not one of 1, 2, 4, 8")
    if len(data) > MAX_PACKET_BYTES:
        raise BadFrame(f"is {len(data):,} bytes, over the {MAX_PACKET_BYTES:,}-byte limit")
    data = bytes(data)
    full = jpeg_frame_size(data, max_pixels=max_pixels)
    h, w = reduced_size(full, reduction)
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
        if colorspace in _CMYK:  # libjpeg-turbo's TurboJPEG API cannot make BGR of CMYK; OpenCV's path can
            image = cv2.imdecode(np.frombuffer(data, np.uint8), _CV2_REDUCED[reduction])
        else:
            image = simplejpeg.decode_jpeg(data, "BGR", min_height=h, min_width=w, strict=True)
    except (ValueError, cv2.error) as exc:
        raise BadFrame(f"could not be decoded ({str(exc).strip() or type(exc).__name__})") from exc
    if image is None or image.shape[:2] != (h, w):
        got = "nothing" if image is None else f"{image.shape[1]}x{image.shape[0]}"
        raise BadFrame(f"decoded to {got}, not the {w}x{h} its header declares at 1/{reduction}")
    return image


class Reductions:
    """The reduction for each frame size met (a frame size is computed once), and the last one used."""

    def __init__(self, need: Need, margin: float = MARGIN) -> None:
        self.need = need
        self.margin = margin
        self.last: int | None = None
        self.full_hw: tuple[int, int] | None = None
        self._jpeg = True
        self._cache: dict[tuple[int, int], int] = {}

    def __call__(self, frame_hw: tuple[int, int]) -> int:
        r = self._cache.get(frame_hw)
        if r is None:
            needed = self.need(frame_hw) if callable(self.need) else self.need
            r = self._cache[frame_hw] = reduction(frame_hw, needed, margin=self.margin)
            if len(self._cache) > 64:  # a folder of many sizes: the cache stays small
                self._cache.clear()
        self.last, self.full_hw, self._jpeg = r, frame_hw, True
        return r

    def unreduced(self, frame_hw: tuple[int, int]) -> None:
        """Record a frame decoded at full size by OpenCV (a PNG, BMP or WebP in an image folder)."""
        self.last, self.full_hw, self._jpeg = 1, frame_hw, False

    @property
    def scale(self) -> float | None:
        """The last frame's full width over its decoded width (boxes found on it times this are in the
        source's pixels), or None before the first frame."""
        if self.last is None or self.full_hw is None:
            return None
        return self.full_hw[1] / reduced_size(self.full_hw, self.last)[1]

    @property
    def decode(self) -> str:
        if self.last is None:
            return "jpeg (libjpeg DCT scaling, reduction not known yet)"
        return describe(self.last) if self._jpeg else "opencv"


def is_mjpeg(cap: cv2.VideoCapture) -> bool:
    """True if an open VideoCapture's stream is Motion JPEG (FourCC MJPG, or FFmpeg's mjpeg codec name)."""
    code = int(cap.get(cv2.CAP_PROP_FOURCC) or 0)
    fourcc = code.to_bytes(4, "little").decode("latin-1").upper() if code > 0 else ""
    return fourcc in ("MJPG", "AVRN", "LJPG", "JPGL", "DMB1")


class MjpegReader:
    """An MJPEG video file or stream: the compressed frames read undecoded (OpenCV FFmpeg backend,
    ``CAP_PROP_FORMAT = -1``) and each decoded by ``decode_jpeg`` at the reduction its size calls for.

    A packet that is not a decodable JPEG (truncated, corrupt, a huge declared size, not a JPEG at all) is
    skipped, counted in ``skipped`` and reported to ``on_skip(where, why)``; ``MAX_BAD_IN_A_ROW`` of them in
    a row raise SourceError (the capture loop retries). Built from an open CaptureReader whose stream is
    MJPEG (``wrap``)."""

    def __init__(self, capture: CaptureReader, need: Need, on_skip: SkipHandler | None = None) -> None:
        self.capture = capture
        self.spec: SourceSpec = capture.spec
        self.cap = capture.cap
        self.live = capture.live
        self.nominal_fps = capture.nominal_fps
        self.reductions = Reductions(need)
        self.on_skip = on_skip
        self.packets = 0
        self.skipped = 0
        self._bad_in_a_row = 0
        width, height = (
            int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH) or 0),
            int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0),
        )
        if width > 0 and height > 0 and width * height <= MAX_PIXELS:
            self.reductions((height, width))  # known at open: /v1/info can say the path before the first frame

    @classmethod
    def wrap(cls, capture: CaptureReader, need: Need, on_skip: SkipHandler | None = None) -> MjpegReader | None:
        """An MjpegReader over ``capture`` if its stream is MJPEG and the backend hands over raw packets,
        else None (the caller keeps ``capture`` as it is)."""
        if not is_mjpeg(capture.cap) or not capture.cap.set(cv2.CAP_PROP_FORMAT, -1):
            return None
        return cls(capture, need, on_skip)

    @property
    def decode(self) -> str:
        return self.reductions.decode

    def read(self) -> np.ndarray | None:
        """The next decodable frame (HWC uint8 BGR, reduced), or None when the source ended or failed."""
        while True:
            ok, packet = self.cap.read()
            if not ok or packet is None or not packet.size:
                return None
            self.packets += 1
            try:
                data = packet.tobytes()
                r = self.reductions(jpeg_frame_size(data))
                image = decode_jpeg(data, r)
            except BadFrame as exc:
                self.skipped += 1
                self._bad_in_a_row += 1
                if self.on_skip is not None:
                    self.on_skip(f"{self.spec.shown} frame {self.packets}", str(exc))
                if self._bad_in_a_row >= MAX_BAD_IN_A_ROW:
                    raise SourceError(f"source '{self.spec.shown}': {self._bad_in_a_row} frames in a row are not "
                                      f"decodable JPEGs (the last {exc})") from exc  # fmt: skip
                continue
            self._bad_in_a_row = 0
            return image

    def close(self) -> None:
        self.capture.close()


# -- GStreamer decoders ---------------------------------------------------------------------------------

# Per codec, the hardware decoder elements in order of preference, with the platform each means.
HARDWARE_DECODERS: dict[str, tuple[tuple[str, str], ...]] = {
    "h264": (("nvv4l2decoder", "NVIDIA Jetson"), ("vah264dec", "VA-API"), ("vaapih264dec", "VA-API (gstreamer-vaapi)"),
             ("v4l2h264dec", "V4L2 stateful")),
    "h265": (("nvv4l2decoder", "NVIDIA Jetson"), ("vah265dec", "VA-API"), ("vaapih265dec", "VA-API (gstreamer-vaapi)"),
             ("v4l2h265dec", "V4L2 stateful")),
    "jpeg": (("nvjpegdec", "NVIDIA Jetson"), ("vajpegdec", "VA-API"), ("vaapijpegdec", "VA-API (gstreamer-vaapi)"),
             ("v4l2jpegdec", "V4L2 stateful")),
}  # fmt: skip
SOFTWARE_DECODERS: dict[str, tuple[str, ...]] = {
    "h264": ("avdec_h264", "openh264dec"),
    "h265": ("avdec_h265", "libde265dec"),
    "jpeg": ("jpegdec", "avdec_mjpeg"),
}
_DEPAY = {"h264": "rtph264depay ! h264parse", "h265": "rtph265depay ! h265parse", "jpeg": "rtpjpegdepay"}
_APPSINK = "videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false"


@dataclass(frozen=True)
class DecoderChoice:
    """The GStreamer decoder element chosen for a codec; ``element`` None if the registry has none."""

    codec: str
    element: str | None
    hardware: bool
    platform: str  # "NVIDIA Jetson", "VA-API", ..., "software"
    looked_for: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        if self.element is None:
            return f"no GStreamer {self.codec} decoder (looked for {', '.join(self.looked_for)})"
        kind = f"hardware, {self.platform}" if self.hardware else "software"
        return f"gstreamer {self.element} ({kind})"


_ELEMENT_LINE = re.compile(r"^\S+:\s+([A-Za-z0-9_-]+):\s", re.MULTILINE)


@functools.lru_cache(maxsize=1)
def gst_elements() -> frozenset[str]:
    """The element names the GStreamer registry lists (``gst-inspect-1.0``), or none if it is not installed."""
    tool = shutil.which("gst-inspect-1.0")
    if tool is None:
        return frozenset()
    try:
        out = subprocess.run([tool], capture_output=True, text=True, timeout=60, check=False).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("gst-inspect-1.0 failed: %s", exc)
        return frozenset()
    return frozenset(_ELEMENT_LINE.findall(out))


def choose_decoder(codec: str = "h264", elements: Iterable[str] | None = None) -> DecoderChoice:
    """The best GStreamer decoder for ``codec`` (h264, h265 or jpeg) among ``elements`` (default: this
    machine's registry): the first hardware one of HARDWARE_DECODERS, else the first software one."""
    if codec not in HARDWARE_DECODERS:
        raise ValueError(f"codec '{codec}' is not one of {', '.join(HARDWARE_DECODERS)}")
    present = gst_elements() if elements is None else frozenset(elements)
    looked = tuple(e for e, _ in HARDWARE_DECODERS[codec]) + SOFTWARE_DECODERS[codec]
    for element, platform in HARDWARE_DECODERS[codec]:
        if element in present:
            return DecoderChoice(codec, element, True, platform, looked)
    for element in SOFTWARE_DECODERS[codec]:
        if element in present:
            return DecoderChoice(codec, element, False, "software", looked)
    return DecoderChoice(codec, None, False, "software", looked)


def gst_rtsp_pipeline(uri: str, choice: DecoderChoice, *, transport: str = "tcp", latency_ms: int = 200,
                      timeout: float = 10.0) -> str:  # fmt: skip
    """A GStreamer pipeline reading an RTSP stream with ``choice``'s decoder into a BGR appsink."""
    if choice.element is None:
        raise ValueError(choice.shown)
    if any(c in uri for c in '"\\\n\r'):
        raise ValueError("the RTSP URL has a quote, backslash or line break; GStreamer's pipeline text cannot hold it")
    decode = choice.element
    if choice.element in ("nvv4l2decoder", "nvjpegdec"):  # NVMM buffers: nvvidconv copies them to system memory
        decode += " ! nvvidconv ! video/x-raw, format=BGRx"
    protocols = "tcp" if transport == "tcp" else "udp"
    source = (
        f'rtspsrc location="{uri}" protocols={protocols} latency={int(latency_ms)} tcp-timeout={int(timeout * 1e6)}'
    )
    return f"{source} ! {_DEPAY[choice.codec]} ! {decode} ! {_APPSINK}"
