"""Read an input image's format and pixel size from its header, offline and with the stdlib only.

Kling rejects inputs that are not JPEG/PNG, larger than 10 MB, smaller than 300 px on a side or
too elongated, and it does so only after the request is sent (a failed task, or code 1201). Reading
the header lets ``validate`` catch all of that before anything is paid for, without an imaging
library: PNG keeps its size in the IHDR chunk right after the signature, JPEG in the first
start-of-frame (SOFn) segment, which may come after any number of APPn/DQT/DHT segments.

A valid header is not a valid image: the data behind it is checked too, within a bound. A PNG's
chunks must be whole with their checksums right, and the start of its compressed image data
(zlib, the stdlib's) must decompress into scanlines; a JPEG's header must lead to its image data.
A size no image could have (a header claiming 2147483647 x 2147483647) is refused outright.
"""

from __future__ import annotations

import os
import struct
import zlib
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


#: The largest side an input may claim: far beyond what Kling takes, short of absurd headers.
MAX_SIDE = 16384
#: How much compressed PNG image data is decompressed to check it (a bounded part of it).
_PNG_CHECK_BYTES = 256 * 1024
#: PNG filter types a scanline may start with.
_PNG_FILTERS = frozenset(range(5))
#: Bits per pixel of each PNG colour type, per bit of depth.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


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
            if 0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE:
                _check_png_data(stream, width)
            fmt = "png"
        elif head.startswith(JPEG_SOI):
            stream.seek(2)
            width, height = _jpeg_size(stream)
            fmt = "jpeg"
        else:
            raise ImageError(_not_jpeg_or_png(head, stream))
    if width <= 0 or height <= 0:
        raise ImageError(f"the image header gives an empty size ({width}x{height})")
    if width > MAX_SIDE or height > MAX_SIDE:
        raise ImageError(
            f"the image header claims {width}x{height} pixels, more than any input image can "
            f"be (at most {MAX_SIDE} px a side): the file is damaged, or resize it"
        )
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


def _check_png_data(stream: BinaryIO, width: int) -> None:
    """The chunks from IHDR to IEND are whole with right checksums, and the first part of the
    image data decompresses into scanlines that start with a valid filter byte."""
    stream.seek(8)
    compressed = bytearray()
    row_bytes = 0
    while True:
        header = stream.read(8)
        if len(header) < 8:
            raise ImageError("PNG file is truncated: it ends before its IEND chunk")
        length, kind = struct.unpack(">I4s", header)
        if length > 0x7FFFFFFF:
            raise ImageError("PNG file is damaged: a chunk has an impossible length")
        wanted = kind in (b"IHDR", b"IDAT") and len(compressed) < _PNG_CHECK_BYTES
        if wanted:
            data = stream.read(length)
            crc = stream.read(4)
            if len(data) < length or len(crc) < 4:
                raise ImageError("PNG file is truncated (in its image data)")
            if zlib.crc32(kind + data) & 0xFFFFFFFF != struct.unpack(">I", crc)[0]:
                raise ImageError(f"PNG file is damaged: its {kind.decode()} chunk fails its "
                                 "checksum")
            if kind == b"IHDR":
                depth, colour = data[8], data[9]
                bits = depth * _PNG_CHANNELS.get(colour, 4)
                row_bytes = 1 + (width * bits + 7) // 8
            else:
                compressed += data
        else:
            position = stream.tell()
            stream.seek(length + 4, os.SEEK_CUR)
            if stream.tell() - position < length + 4 or stream.tell() > _size_of(stream):
                raise ImageError("PNG file is truncated: a chunk runs past the end of the file")
        if kind == b"IEND":
            break
    if not compressed:
        raise ImageError("PNG file has no image data (no IDAT chunk)")
    decompressor = zlib.decompressobj()
    try:
        rows = decompressor.decompress(bytes(compressed[:_PNG_CHECK_BYTES]), 4 * row_bytes)
    except zlib.error:
        raise ImageError("PNG file is damaged: its image data cannot be decompressed") from None
    if not rows or rows[0] not in _PNG_FILTERS:
        raise ImageError("PNG file is damaged: its image data is not PNG scanlines")


def _size_of(stream: BinaryIO) -> int:
    return os.fstat(stream.fileno()).st_size


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
            stream.seek(seg_len - 2 - 5, os.SEEK_CUR)
            _check_jpeg_data(stream)
            return width, height
        stream.seek(seg_len - 2, os.SEEK_CUR)


def _check_jpeg_data(stream: BinaryIO) -> None:
    """The segments after the frame header lead to the image data (a start-of-scan with data
    after it), as a decoder would find them."""
    while True:
        marker = _next_marker(stream)
        if marker in _STANDALONE_MARKERS:
            continue
        if marker == _EOI:
            raise ImageError("JPEG file is damaged: it ends before its image data")
        (seg_len,) = struct.unpack(">H", _read_exact(stream, 2, "segment length"))
        if seg_len < 2:
            raise ImageError("JPEG file is damaged: invalid segment length")
        if marker == _SOS:
            stream.seek(seg_len - 2, os.SEEK_CUR)
            if not stream.read(2):
                raise ImageError("JPEG file is truncated: it ends where its image data starts")
            return
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
