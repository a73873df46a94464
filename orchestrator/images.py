"""Read an input image's format and pixel size from its header, offline and with the stdlib only.

Kling rejects inputs that are not JPEG/PNG, larger than 10 MB, smaller than 300 px on a side or
too elongated, and it does so only after the request is sent (a failed task, or code 1201). Reading
the header lets ``validate`` catch all of that before anything is paid for, without an imaging
library: PNG keeps its size in the IHDR chunk right after the signature, JPEG in the first
start-of-frame (SOFn) segment, which may come after any number of APPn/DQT/DHT segments.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"

# SOF0..SOF15 carry the frame size, except the markers that share the range: DHT (C4),
# JPG (C8, reserved) and DAC (CC). Progressive (C2) and lossless/arithmetic variants count too.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers that stand alone, without a length field: TEM and RST0..RST7.
_STANDALONE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})
_SOS = 0xDA
_EOI = 0xD9

# Recognised only to say what the file is instead of "not an image".
_OTHER_FORMATS: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "a GIF"),
    (b"GIF89a", "a GIF"),
    (b"BM", "a BMP"),
    (b"II*\x00", "a TIFF"),
    (b"MM\x00*", "a TIFF"),
)


class ImageError(ValueError):
    """The file cannot be used as an input image; the message says why, for a user."""


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "png" | "jpeg"
    width: int
    height: int
    size_bytes: int


def read_image_info(path: Path) -> ImageInfo:
    """Format (by magic bytes, never by extension), pixel size and file size of a JPEG or PNG.

    Raises :class:`ImageError` with a message of the form ``"<path>: <what is wrong>"``.
    """
    try:
        return _read(path)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None
    # Paths come from users: too long, with a NUL byte, unreadable, a broken symlink...
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ImageError(f"{path}: cannot read the file ({reason})") from exc


def _read(path: Path) -> ImageInfo:
    if not path.exists():
        raise ImageError("file not found")
    if not path.is_file():
        raise ImageError("not a regular file")
    size = path.stat().st_size
    with path.open("rb") as stream:
        head = stream.read(8)
        if head.startswith(PNG_SIGNATURE):
            width, height = _png_size(stream)
            fmt = "png"
        elif head.startswith(JPEG_SOI):
            stream.seek(2)
            width, height = _jpeg_size(stream)
            fmt = "jpeg"
        else:
            raise ImageError(_not_jpeg_or_png(head, stream))
    if width <= 0 or height <= 0:
        raise ImageError(f"the image header gives an empty size ({width}x{height})")
    return ImageInfo(format=fmt, width=width, height=height, size_bytes=size)


def _png_size(stream: BinaryIO) -> tuple[int, int]:
    chunk = stream.read(16)
    # The PNG spec requires IHDR first and exactly 13 bytes long.
    if len(chunk) < 16 or chunk[4:8] != b"IHDR":
        raise ImageError("PNG file is truncated or damaged: no IHDR header")
    length, _, width, height = struct.unpack(">I4sII", chunk)
    if length != 13:
        raise ImageError("PNG file is damaged: malformed IHDR header")
    return width, height


def _jpeg_size(stream: BinaryIO) -> tuple[int, int]:
    while True:
        marker = _next_marker(stream)
        if marker in _STANDALONE_MARKERS:
            continue
        if marker == _EOI:
            raise ImageError("JPEG file ends before its frame header: no image size")
        if marker == _SOS:
            # Entropy-coded data follows; a frame header can no longer appear before it.
            raise ImageError("JPEG file is damaged: image data starts before the frame header")
        length = _read_exact(stream, 2, "segment length")
        (seg_len,) = struct.unpack(">H", length)
        if seg_len < 2:
            raise ImageError("JPEG file is damaged: invalid segment length")
        if marker in _SOF_MARKERS:
            body = _read_exact(stream, 5, "frame header")
            _precision, height, width = struct.unpack(">BHH", body)
            if height == 0:
                # Height 0 defers it to a DNL marker after the scan: legal, but nobody sends it
                # and Kling's own check would need the whole file.
                raise ImageError("JPEG frame header gives no height (DNL-style JPEG)")
            return width, height
        stream.seek(seg_len - 2, os.SEEK_CUR)


def _next_marker(stream: BinaryIO) -> int:
    byte = _read_exact(stream, 1, "marker")
    if byte != b"\xff":
        raise ImageError("JPEG file is damaged: expected a segment marker")
    # Any number of 0xFF fill bytes may precede the marker code.
    while byte == b"\xff":
        byte = _read_exact(stream, 1, "marker")
    if byte == b"\x00":
        raise ImageError("JPEG file is damaged: stray data between segments")
    return byte[0]


def _read_exact(stream: BinaryIO, count: int, what: str) -> bytes:
    data = stream.read(count)
    if len(data) < count:
        raise ImageError(f"JPEG file is truncated (in the {what})")
    return data


def _not_jpeg_or_png(head: bytes, stream: BinaryIO) -> str:
    if not head:
        return "the file is empty, not a JPEG or PNG image"
    for magic, name in _OTHER_FORMATS:
        if head.startswith(magic):
            return f"the file is {name} image; only JPEG and PNG are accepted"
    head += stream.read(8)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "the file is a WebP image; only JPEG and PNG are accepted"
    if head[4:8] == b"ftyp":
        return "the file is a HEIC/AVIF image; only JPEG and PNG are accepted"
    return "the file is not a JPEG or PNG image (checked by content, not by extension)"
