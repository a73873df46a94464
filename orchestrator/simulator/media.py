"""Tiny asset files that pass a format sniff: an MP4 starting with a real ``ftyp`` box, a valid
1x1 PNG. Each embeds its task id and index, so two assets never share a checksum."""

from __future__ import annotations

import struct
import zlib


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def fake_mp4(task_id: str, index: int) -> bytes:
    ftyp = _box(b"ftyp", b"isom" + struct.pack(">I", 0x200) + b"isomiso2avc1mp41")
    tag = _box(b"free", f"kling-simulator {task_id} {index}".encode())
    return ftyp + tag + _box(b"mdat", b"")


def _chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def fake_png(task_id: str, index: int) -> bytes:
    # 1x1, 8-bit RGB; one scanline: filter byte 0 and a grey pixel.
    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    text = b"Comment\x00" + f"kling-simulator {task_id} {index}".encode()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"tEXt", text)
        + _chunk(b"IDAT", zlib.compress(b"\x00\x80\x80\x80"))
        + _chunk(b"IEND", b"")
    )


MEDIA_TYPES = {"mp4": "video/mp4", "png": "image/png"}
BUILDERS = {"mp4": fake_mp4, "png": fake_png}
