"""The files the simulators serve as generated assets: real media a gallery shows and a browser
plays, a few KB each.

An image is a PNG drawn here: a mosaic of tiles shading between four colours taken from the task
id and index, 640x360 (16:9, and at least 300 px a side, so it passes as an image2video input).
Flat tiles repeat whole rows, which zlib squeezes to a few KB.

A video is one of the clips bundled in ``clips/`` (H.264 Constrained Baseline, 320x180, 2 s, no
audio, ``moov`` before ``mdat``; ``clips/make_clips.sh`` remakes them with ffmpeg, which nothing
needs at run time), picked by the task id and index, with a top-level ``free`` box appended.
Players skip ``free`` boxes, and one at the end of the file moves no sample offset.

Both kinds carry their task id and index (a ``free`` box, a PNG text chunk), so two assets never
share a checksum.
"""

from __future__ import annotations

import colorsys
import functools
import hashlib
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Final

__all__ = ["BUILDERS", "CLIPS", "CLIPS_DIR", "IMAGE_SIZE", "MEDIA_TYPES", "image_png", "video_mp4"]

#: Width and height of every image, in pixels.
IMAGE_SIZE: Final = (640, 360)
#: The side of a mosaic tile, its one-pixel grid line included: 16 x 9 tiles.
_TILE: Final = 40
CLIPS_DIR: Final = Path(__file__).with_name("clips")
#: The bundled videos, one picked per asset.
CLIPS: Final = ("dawn.mp4", "sea.mp4", "dusk.mp4")
PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


def _label(task_id: str, index: int) -> bytes:
    return f"orchestrator simulator {task_id} {index}".encode()


def _digest(task_id: str, index: int) -> bytes:
    return hashlib.sha256(f"{task_id}\x00{index}".encode()).digest()


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


@functools.cache
def _clip(name: str) -> bytes:
    return (CLIPS_DIR / name).read_bytes()


def video_mp4(task_id: str, index: int) -> bytes:
    """A playable MP4 (about 6-8 KB), the same clip as others but for its last box."""
    clip = _clip(CLIPS[_digest(task_id, index)[0] % len(CLIPS)])
    return clip + _box(b"free", _label(task_id, index))


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def _rgb(hue: float, saturation: float, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(hue % 1.0, saturation, value)
    return round(r * 255), round(g * 255), round(b * 255)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def _scanlines(digest: bytes) -> bytes:
    """The image's filtered scanlines (filter type 0 throughout), 8-bit RGB."""
    width, height = IMAGE_SIZE
    columns, rows = width // _TILE, height // _TILE
    # Hues a little apart around one taken from the digest keep the corners in one family of
    # colours; saturation and brightness stay high enough never to come out grey or black.
    hue, spread = digest[0] / 256, 0.08 + digest[1] / 256 * 0.25
    top_left, top_right, bottom_left, bottom_right = (
        _rgb(hue + k * spread, 0.45 + digest[2 + k] / 256 * 0.45, 0.7 + digest[6 + k] / 256 * 0.3)
        for k in range(4)
    )
    line = bytes(c // 4 for c in top_left)
    grid_row = b"\x00" + line * width
    out = bytearray()
    for row in range(rows):
        v = row / (rows - 1)
        left, right = _mix(top_left, bottom_left, v), _mix(top_right, bottom_right, v)
        pixels = b"".join(
            line + bytes(_mix(left, right, column / (columns - 1))) * (_TILE - 1)
            for column in range(columns)
        )
        out += grid_row + (b"\x00" + pixels) * (_TILE - 1)
    return bytes(out)


def image_png(task_id: str, index: int) -> bytes:
    """A valid 640x360 RGB PNG (about 4-5 KB) whose colours depend on the task id and index."""
    width, height = IMAGE_SIZE
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # iTXt, not tEXt: a task id may hold characters Latin-1 lacks.
    comment = b"Comment\x00\x00\x00\x00\x00" + _label(task_id, index)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"iTXt", comment)
        + _chunk(b"IDAT", zlib.compress(_scanlines(_digest(task_id, index)), 9))
        + _chunk(b"IEND", b"")
    )


MEDIA_TYPES: Final = {"mp4": "video/mp4", "png": "image/png"}
BUILDERS: Final[dict[str, Callable[[str, int], bytes]]] = {"mp4": video_mp4, "png": image_png}
