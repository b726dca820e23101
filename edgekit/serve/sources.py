"""Frame sources: cameras (V4L2), GStreamer pipelines (CSI), RTSP/HTTP streams, video files, image folders.

``parse_source`` turns the user's text into a ``SourceSpec`` once, at start, and refuses text that can
never work (a missing file, a pipeline when OpenCV has no GStreamer). ``open_reader`` opens it, and may
fail at any time (a camera unplugged, a stream down): the capture loop then retries with backoff.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from edgekit.errors import UsageError
from edgekit.serve.images import MAX_PIXELS, PNG_SIGNATURE, jpeg_size

if TYPE_CHECKING:
    from edgekit.serve.decode import MjpegReader, Need, Reductions

log = logging.getLogger("edgekit.serve")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MAX_IMAGE_FILE_BYTES = 64 * 1024 * 1024  # a folder's image file larger than this is skipped unread
NETWORK_SCHEMES = ("rtsp://", "rtsps://", "http://", "https://")
FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


class SourceError(Exception):
    """The source cannot be opened or read right now; the capture loop retries."""


@dataclass(frozen=True)
class SourceSpec:
    """What to open. ``kind``: camera, gstreamer, network, video or images. ``live`` sources drop extra
    frames (they cannot be slowed down); files and folders are read at the pace the daemon asks."""

    kind: str
    uri: str
    target: str | int
    live: bool
    files: tuple[str, ...] = ()

    @property
    def shown(self) -> str:
        """The URI with any password masked, for logs and HTTP answers."""
        return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", self.uri)


def opencv_has_gstreamer() -> bool:
    info = cv2.getBuildInformation()
    return bool(re.search(r"GStreamer:\s*YES", info))


def argus_pipeline(sensor: int, resolution: tuple[int, int] | None, fps: float | None) -> str:
    """The Jetson CSI camera pipeline (nvarguscamerasrc) that ``csi://N`` expands to."""
    width, height = resolution or (1280, 720)
    rate = max(1, round(fps or 30))
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! video/x-raw(memory:NVMM), width={width}, height={height}, "
        f"framerate={rate}/1, format=NV12 ! nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! "
        "video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false"
    )


def _gstreamer(uri: str, pipeline: str) -> SourceSpec:
    if not opencv_has_gstreamer():
        raise UsageError(
            f"source '{uri}' is a GStreamer pipeline, but this OpenCV was built without GStreamer (pip's "
            "opencv-python is); use the system's OpenCV (JetPack's has GStreamer), or a camera index/RTSP URL"
        )
    if "appsink" not in pipeline:
        pipeline += " ! videoconvert ! video/x-raw, format=BGR ! appsink drop=true max-buffers=1 sync=false"
    return SourceSpec("gstreamer", uri, pipeline, live=True)


def _image_files(pattern_or_dir: str) -> tuple[str, ...]:
    if os.path.isdir(pattern_or_dir):
        found = (str(p) for p in Path(pattern_or_dir).iterdir())
    else:
        found = glob.glob(os.path.expanduser(pattern_or_dir), recursive=True)
    return tuple(sorted(f for f in found if Path(f).suffix.lower() in IMAGE_SUFFIXES and os.path.isfile(f)))


def parse_source(text: str | int, *, resolution: tuple[int, int] | None = None, fps: float | None = None) -> SourceSpec:
    """The user's source text -> a SourceSpec, or a UsageError saying what was expected."""
    uri = str(text).strip()
    if re.fullmatch(r"\d+", uri):
        return SourceSpec("camera", uri, int(uri), live=True)
    if re.fullmatch(r"/dev/video\d+", uri) or uri.startswith("/dev/v4l/"):
        return SourceSpec("camera", uri, uri, live=True)
    if match := re.fullmatch(r"csi://(\d+)", uri):
        return _gstreamer(uri, argus_pipeline(int(match.group(1)), resolution, fps))
    if uri.lower().startswith(NETWORK_SCHEMES):
        return SourceSpec("network", uri, uri, live=True)
    if " ! " in uri:
        return _gstreamer(uri, uri)
    if os.path.isdir(uri) or any(c in uri for c in "*?["):
        files = _image_files(uri)
        if not files:
            raise UsageError(f"source '{uri}' holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return SourceSpec("images", uri, uri, live=False, files=files)
    if os.path.isfile(uri):
        if Path(uri).suffix.lower() in IMAGE_SUFFIXES:
            return SourceSpec("images", uri, uri, live=False, files=(uri,))
        return SourceSpec("video", uri, uri, live=False)
    raise UsageError(
        f"source '{uri}' is not a camera (0, /dev/video0), csi://N, a GStreamer pipeline, an rtsp:// or "
        "http(s):// URL, nor an existing video file, image folder or pattern"
    )


_decoder_logged: set[str] = set()


def _hardware_rtsp(spec: SourceSpec, timeout: float, rtsp_transport: str) -> tuple[cv2.VideoCapture, str] | None:
    """An RTSP stream opened through GStreamer with a hardware H.264 decoder, if this OpenCV has GStreamer and
    the registry lists one (``decode.choose_decoder``) and the pipeline opens; else None (FFmpeg decodes it)."""
    from edgekit.serve.decode import choose_decoder, gst_rtsp_pipeline

    choice = choose_decoder("h264") if opencv_has_gstreamer() else None
    if choice is None or not choice.hardware:
        if "software" not in _decoder_logged:
            _decoder_logged.add("software")
            why = "this OpenCV has no GStreamer" if choice is None else f"GStreamer has {choice.shown}"
            log.info("RTSP sources are decoded in software by OpenCV's FFmpeg (%s)", why)
        return None
    try:
        cap = cv2.VideoCapture(gst_rtsp_pipeline(spec.uri, choice, transport=rtsp_transport, timeout=timeout),
                               cv2.CAP_GSTREAMER)  # fmt: skip
    except (ValueError, cv2.error) as exc:
        log.warning(
            "source '%s': the %s pipeline cannot be made (%s); FFmpeg decodes it", spec.shown, choice.shown, exc
        )
        return None
    if not cap.isOpened():
        cap.release()
        log.warning("source '%s' did not open with %s (not H.264?); FFmpeg decodes it", spec.shown, choice.shown)
        return None
    if choice.element not in _decoder_logged:
        _decoder_logged.add(str(choice.element))
        log.info("RTSP sources are decoded by %s", choice.shown)
    return cap, choice.shown


class CaptureReader:
    """An OpenCV VideoCapture: camera, pipeline, network stream or video file. ``decode`` names the decode
    path: "opencv", or the GStreamer hardware decoder an RTSP stream was opened with."""

    def __init__(self, spec: SourceSpec, *, resolution: tuple[int, int] | None, fps: float | None,
                 timeout: float, rtsp_transport: str) -> None:  # fmt: skip
        self.spec = spec
        self.live = spec.live
        self.decode = "opencv"
        hardware = None
        if spec.kind == "network" and spec.uri.lower().startswith(("rtsp://", "rtsps://")):
            hardware = _hardware_rtsp(spec, timeout, rtsp_transport)
        if hardware is not None:
            self.cap, self.decode = hardware
        else:
            self.cap = self._open(spec, resolution, fps, timeout, rtsp_transport)
        if not self.cap.isOpened():
            self.cap.release()
            raise SourceError(f"cannot open {spec.kind} source '{spec.shown}'")
        self.nominal_fps = float(self.cap.get(cv2.CAP_PROP_FPS) or 0) or None

    @staticmethod
    def _open(spec: SourceSpec, resolution, fps, timeout: float, rtsp_transport: str) -> cv2.VideoCapture:
        if spec.kind == "camera":
            if isinstance(spec.target, str) and not os.path.exists(spec.target):
                raise SourceError(f"camera '{spec.target}' does not exist (is it plugged in?)")
            if isinstance(spec.target, int) and not os.path.exists(f"/dev/video{spec.target}"):
                raise SourceError(f"camera {spec.target} (/dev/video{spec.target}) does not exist (is it plugged in?)")
            cap = cv2.VideoCapture(spec.target, cv2.CAP_V4L2)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if resolution:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, resolution[0])
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, resolution[1])
            if fps:
                cap.set(cv2.CAP_PROP_FPS, fps)
            return cap
        if spec.kind == "gstreamer":
            return cv2.VideoCapture(str(spec.target), cv2.CAP_GSTREAMER)
        if spec.kind == "network":
            if spec.uri.lower().startswith(("rtsp://", "rtsps://")) and FFMPEG_OPTIONS_ENV not in os.environ:
                os.environ[FFMPEG_OPTIONS_ENV] = f"rtsp_transport;{rtsp_transport}"
            ms = int(timeout * 1000)
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            return cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG, params)
        if not os.path.isfile(str(spec.target)):
            raise SourceError(f"video file '{spec.target}' is gone")
        return cv2.VideoCapture(str(spec.target), cv2.CAP_FFMPEG)

    def read(self) -> np.ndarray | None:
        """The next frame (HWC uint8 BGR), or None when the source ended or failed."""
        ok, frame = self.cap.read()
        return frame if ok and frame is not None and frame.size else None

    def close(self) -> None:
        self.cap.release()


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 26 or not data.startswith(b"BM"):
        return None
    header = struct.unpack("<I", data[14:18])[0]
    if header == 12:  # BITMAPCOREHEADER
        return struct.unpack("<HH", data[18:22])
    if header >= 40:  # BITMAPINFOHEADER and later; a negative height is a top-down bitmap
        width, height = struct.unpack("<ii", data[18:26])
        return abs(width), abs(height)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    kind = data[12:16]
    if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: a key frame's start code, then 14-bit sizes
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L" and data[20] == 0x2F:  # lossless: 14-bit width-1 and height-1, packed
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":  # extended: a 24-bit canvas width-1 and height-1
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a JPEG (SOF), PNG (IHDR), BMP or WebP header, or None if unreadable."""
    if data.startswith(b"\xff\xd8\xff"):
        return jpeg_size(data)
    if data.startswith(PNG_SIGNATURE):
        return struct.unpack(">II", data[16:24]) if len(data) >= 24 and data[12:16] == b"IHDR" else None
    if data.startswith(b"BM"):
        return _bmp_size(data)
    if data.startswith(b"RIFF"):
        return _webp_size(data)
    return None


def read_image_file(path: str, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_IMAGE_FILE_BYTES,
                    reductions: Reductions | None = None) -> np.ndarray:  # fmt: skip
    """Decode one image file, checking its size on disk and the pixel count its header declares first.

    Raises ValueError naming why the file is skipped. The file is opened non-blocking and must be a regular
    file (a FIFO put in the folder cannot hang the reader), and it is decoded from memory (OpenCV's imread
    crashes on a file name that is not valid UTF-8). With ``reductions`` (``decode.Reductions``), a JPEG is
    decoded at the reduction its size calls for (``decode.decode_jpeg``: DCT scaling, strict).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise ValueError(f"cannot be opened ({exc.strerror})") from exc
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("is not a regular file")
        if info.st_size > max_bytes:
            raise ValueError(f"is {info.st_size:,} bytes, over the {max_bytes:,}-byte limit")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"grew over the {max_bytes:,}-byte limit while read")
    size = image_size(data)
    if size is None:
        raise ValueError("has no readable JPEG, PNG, BMP or WebP header")
    width, height = size
    if width < 1 or height < 1 or width * height > max_pixels:
        raise ValueError(f"declares {width}x{height} pixels; at most {max_pixels:,} pixels are decoded")
    if reductions is not None and data.startswith(b"\xff\xd8\xff"):
        from edgekit.serve.decode import BadFrame, decode_jpeg

        try:
            return decode_jpeg(data, reductions((height, width)), max_pixels=max_pixels)
        except BadFrame as exc:
            raise ValueError(str(exc)) from exc
    if reductions is not None:
        reductions.unreduced((height, width))
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or not image.size:
        raise ValueError("could not be decoded (corrupt data)")
    return image


SkipHandler = Callable[[str, str], None]


class ImageReader:
    """Image files in sorted order; a file that is too large, unreadable or corrupt is skipped (reported).
    With ``need`` (see ``open_reader``), JPEGs are decoded at the reduction their size calls for."""

    live = False
    nominal_fps = None

    def __init__(self, spec: SourceSpec, on_skip: SkipHandler | None = None, *, need: Need | None = None) -> None:
        from edgekit.serve.decode import Reductions

        self.spec = spec
        self.reductions = Reductions(need) if need is not None else None
        self.files = _image_files(spec.uri) if spec.uri != spec.files[0] else spec.files
        if not self.files:
            raise SourceError(f"source '{spec.shown}' holds no images now")
        self.index = 0
        self.skipped = 0
        self.on_skip = on_skip

    def read(self) -> np.ndarray | None:
        while self.index < len(self.files):
            path = self.files[self.index]
            self.index += 1
            try:
                return read_image_file(path, reductions=self.reductions)
            except ValueError as exc:
                self.skipped += 1
                if self.on_skip is not None:
                    self.on_skip(path, str(exc))
        return None

    @property
    def decode(self) -> str:
        """The decode path: "opencv", or the JPEG reduction last used (PNG, BMP and WebP files still go
        through OpenCV at full size)."""
        return "opencv" if self.reductions is None else self.reductions.decode

    def close(self) -> None:
        self.index = len(self.files)


Reader = CaptureReader | ImageReader  # or decode.MjpegReader, which has the same read/close/live/nominal_fps/decode


def open_reader(spec: SourceSpec, *, resolution: tuple[int, int] | None = None, fps: float | None = None,
                timeout: float = 10.0, rtsp_transport: str = "tcp", on_skip: SkipHandler | None = None,
                need: Need | None = None) -> Reader | MjpegReader:  # fmt: skip
    """Open a source now, or raise SourceError (the caller retries). ``on_skip(path, why)`` hears of every
    image-folder file (or MJPEG frame) skipped.

    ``need``: the (height, width) the model's preprocessing resizes a frame to, or a function of the frame's
    (height, width) giving it (``decode.need_for(preprocess, input_hw)``). When given, an MJPEG video file
    or stream, and the JPEGs of an image folder or pattern, are decoded at 1/2, 1/4 or 1/8 in the DCT
    domain when that still covers it (``decode.reduction``): frames then come smaller than the source's.
    Other sources, and every source without ``need``, are read as before. ``reader.decode`` names the path.
    """
    if spec.kind == "images":
        return ImageReader(spec, on_skip, need=need)
    try:
        reader = CaptureReader(spec, resolution=resolution, fps=fps, timeout=timeout, rtsp_transport=rtsp_transport)
    except cv2.error as exc:
        raise SourceError(f"cannot open {spec.kind} source '{spec.shown}': {exc}") from exc
    if need is None or spec.kind not in ("video", "network") or reader.decode != "opencv":
        return reader
    from edgekit.serve.decode import MjpegReader

    try:
        mjpeg = MjpegReader.wrap(reader, need, on_skip)
    except (cv2.error, SourceError) as exc:
        reader.close()
        raise SourceError(f"cannot read the MJPEG frames of source '{spec.shown}': {exc}") from exc
    return reader if mjpeg is None else mjpeg


_ROTATIONS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}


def shape_frame(frame: np.ndarray, *, rotate: int = 0, resolution: tuple[int, int] | None = None) -> np.ndarray:
    """Resize a frame to ``resolution`` (width, height) if it differs, then rotate it clockwise."""
    if resolution and (frame.shape[1], frame.shape[0]) != tuple(resolution):
        frame = cv2.resize(frame, tuple(resolution), interpolation=cv2.INTER_AREA)
    if rotate:
        frame = cv2.rotate(frame, _ROTATIONS[rotate])
    return frame
