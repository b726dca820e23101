"""Checking uploaded images before they reach the decoder: size, type, completeness, pixel count.

OpenCV decodes a truncated JPEG without complaint (the missing rows come out grey) and will allocate
gigabytes for a small file that declares a huge image, so the daemon checks the bytes itself first.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

MAX_PIXELS = 50_000_000  # a 50-megapixel image decodes to 150 MB of BGR; refuse anything larger
DRAIN_LIMIT = 64 * 1024 * 1024  # read (and discard) at most this much of an over-size body
JPEG_TYPES = ("image/jpeg", "image/jpg", "image/pjpeg")
PNG_TYPES = ("image/png",)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


class ImageRejected(Exception):
    """The request's image is unusable; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class BodyTooLarge(Exception):
    pass


async def _drain(request, already: int) -> None:
    """Read and discard the rest of a body (up to DRAIN_LIMIT), so the client can read our 413."""
    async for chunk in request.stream():
        already += len(chunk)
        if already > DRAIN_LIMIT:
            return


async def read_body(request, *, limit: int) -> bytes:
    """The request body, or BodyTooLarge if it exceeds ``limit`` bytes (checked before and while reading)."""
    declared = request.headers.get("content-length")
    if declared is not None and not declared.isdigit():
        raise ImageRejected(400, f"bad Content-Length header {declared!r}")
    too_big = f"body exceeds the {limit}-byte limit (--max-body)"
    if declared is not None and int(declared) > limit:
        if request.headers.get("expect", "").lower() != "100-continue":
            await _drain(request, 0)
        raise BodyTooLarge(too_big)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            await _drain(request, size)
            raise BodyTooLarge(too_big)
        chunks.append(chunk)
    return b"".join(chunks)


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's start-of-frame marker, or None if there is none."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker in _SOF:
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + length
    return None


def _check_jpeg(body: bytes) -> tuple[int, int]:
    if not body.startswith(b"\xff\xd8\xff"):
        raise ImageRejected(400, "body is not a JPEG (no JPEG start marker); send the image's bytes as they are")
    if not body.rstrip(b"\x00\r\n \t").endswith(b"\xff\xd9"):
        raise ImageRejected(400, "JPEG is truncated (no end-of-image marker); send the whole file")
    size = jpeg_size(body)
    if size is None:
        raise ImageRejected(400, "JPEG has no frame header; send a baseline or progressive JPEG image")
    return size


def _check_png(body: bytes) -> tuple[int, int]:
    if not body.startswith(PNG_SIGNATURE) or body[12:16] != b"IHDR" or len(body) < 33:
        raise ImageRejected(400, "body is not a PNG (no PNG signature); send the image's bytes as they are")
    if b"IEND" not in body[-12:]:
        raise ImageRejected(400, "PNG is truncated (no IEND chunk); send the whole file")
    return struct.unpack(">II", body[16:24])


def decode_upload(body: bytes, content_type: str) -> np.ndarray:
    """A JPEG or PNG request body -> HWC uint8 BGR, or ImageRejected with a 4xx status and a reason."""
    kind = content_type.split(";")[0].strip().lower()
    if kind not in JPEG_TYPES + PNG_TYPES:
        shown = f"'{kind}'" if kind else "missing"
        raise ImageRejected(415, f"content type {shown} is not supported: send image/jpeg or image/png")
    if not body:
        raise ImageRejected(400, "empty body: send a JPEG or PNG image")
    width, height = _check_jpeg(body) if kind in JPEG_TYPES else _check_png(body)
    if width < 1 or height < 1 or width * height > MAX_PIXELS:
        raise ImageRejected(413, f"image is {width}x{height}; the daemon accepts 1 to {MAX_PIXELS:,} pixels")
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageRejected(400, "image could not be decoded (corrupt data); send a valid JPEG or PNG")
    return image
