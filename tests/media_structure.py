"""Readers that take a PNG or an MP4 apart, for tests that check a file is real media and not just
one with the right first bytes: every PNG chunk and checksum, every scanline decoded; every
top-level MP4 box, and the sample table against the media data it points into. Then the checks
a simulator's image and video pass."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from orchestrator.simulator.media import IMAGE_SIZE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Bytes per pixel of 8-bit PNGs, by colour type.
_PNG_PIXEL_BYTES = {0: 1, 2: 3, 4: 2, 6: 4}
#: Boxes whose payload is made of boxes, on the path from moov to the sample tables.
_CONTAINERS = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl"})


@dataclass(frozen=True)
class Picture:
    width: int
    height: int
    #: one bytes object per row, the filters undone
    rows: list[bytes]
    chunks: list[bytes]
    text: bytes


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _unfilter(kind: int, line: bytes, prior: bytes, bpp: int) -> bytes:
    if kind == 0:
        return line
    out = bytearray(line)
    for i in range(len(out)):
        a = out[i - bpp] if i >= bpp else 0
        b = prior[i]
        c = prior[i - bpp] if i >= bpp else 0
        predictor = (a, b, (a + b) // 2, _paeth(a, b, c))[kind - 1]
        out[i] = (out[i] + predictor) & 0xFF
    return bytes(out)


def read_png(data: bytes) -> Picture:
    """Decode an 8-bit, non-interlaced PNG; AssertionError on anything the spec forbids."""
    assert data.startswith(PNG_SIGNATURE), "no PNG signature"
    at, chunks, idat, text = len(PNG_SIGNATURE), [], b"", b""
    header = b""
    while at < len(data):
        assert at + 12 <= len(data), "a chunk runs past the end"
        (length,) = struct.unpack(">I", data[at : at + 4])
        kind, payload = data[at + 4 : at + 8], data[at + 8 : at + 8 + length]
        assert len(payload) == length, f"{kind!r} is cut short"
        (crc,) = struct.unpack(">I", data[at + 8 + length : at + 12 + length])
        assert zlib.crc32(kind + payload) & 0xFFFFFFFF == crc, f"{kind!r} fails its CRC"
        chunks.append(kind)
        if kind == b"IHDR":
            header = payload
        elif kind == b"IDAT":
            idat += payload
        elif kind in (b"tEXt", b"iTXt"):
            text += payload
        at += 12 + length
    assert at == len(data), "bytes after the last chunk"
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and chunks.count(b"IEND") == 1
    assert len(header) == 13
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(
        ">IIBBBBB", header
    )
    assert width > 0 and height > 0
    assert (depth, compression, filtering, interlace) == (8, 0, 0, 0)
    bpp = _PNG_PIXEL_BYTES[colour]
    raw = zlib.decompress(idat)
    stride = 1 + width * bpp
    assert len(raw) == height * stride, "the image data is not height whole scanlines"
    rows: list[bytes] = []
    prior = bytes(width * bpp)
    for y in range(height):
        kind = raw[y * stride]
        assert kind <= 4, f"scanline {y} has filter type {kind}"
        prior = _unfilter(kind, raw[y * stride + 1 : (y + 1) * stride], prior, bpp)
        rows.append(prior)
    return Picture(width, height, rows, chunks, text)


@dataclass(frozen=True)
class Box:
    kind: bytes
    start: int
    size: int
    payload: bytes


def read_boxes(data: bytes, base: int = 0) -> list[Box]:
    """The boxes that exactly fill ``data`` (an AssertionError if they do not); ``base`` is where
    ``data`` starts in the file, so each box's ``start`` is a file offset."""
    boxes, at = [], 0
    while at < len(data):
        assert at + 8 <= len(data), "a box header runs past the end"
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        header = 8
        if size == 1:
            (size,) = struct.unpack(">Q", data[at + 8 : at + 16])
            header = 16
        assert size >= header, f"box {kind!r} has size {size}"
        assert at + size <= len(data), f"box {kind!r} runs past the end"
        boxes.append(Box(kind, base + at, size, data[at + header : at + size]))
        at += size
    return boxes


@dataclass(frozen=True)
class Movie:
    top: list[Box]
    #: seconds, from the movie header
    duration: float
    #: sample entry formats (avc1, av01, ...)
    codecs: list[bytes]
    #: file offsets of every chunk, from stco/co64
    chunk_offsets: list[int]
    #: bytes of every sample, from stsz
    sample_sizes: list[int]


def _find(boxes: list[Box], path: list[bytes]) -> list[Box]:
    found = [box for box in boxes if box.kind == path[0]]
    if len(path) == 1:
        return found
    return [
        inner
        for box in found
        if box.kind in _CONTAINERS
        for inner in _find(read_boxes(box.payload, box.start + 8), path[1:])
    ]


def read_mp4(data: bytes) -> Movie:
    """The top-level boxes and the sample tables of an ISO-BMFF file."""
    top = read_boxes(data)
    assert top[0].kind == b"ftyp", "the file does not open with ftyp"
    moovs = [box for box in top if box.kind == b"moov"]
    assert len(moovs) == 1, f"{len(moovs)} moov boxes"
    moov = moovs[0]
    (mvhd,) = _find([moov], [b"moov", b"mvhd"])
    if mvhd.payload[0] == 1:
        timescale, duration = struct.unpack(">IQ", mvhd.payload[20:32])
    else:
        timescale, duration = struct.unpack(">II", mvhd.payload[12:20])
    stbl = [b"moov", b"trak", b"mdia", b"minf", b"stbl"]
    codecs = [read_boxes(box.payload[8:])[0].kind for box in _find([moov], [*stbl, b"stsd"])]
    offsets: list[int] = []
    for box in _find([moov], [*stbl, b"stco"]):
        (count,) = struct.unpack(">I", box.payload[4:8])
        offsets += struct.unpack(f">{count}I", box.payload[8 : 8 + 4 * count])
    for box in _find([moov], [*stbl, b"co64"]):
        (count,) = struct.unpack(">I", box.payload[4:8])
        offsets += struct.unpack(f">{count}Q", box.payload[8 : 8 + 8 * count])
    sizes: list[int] = []
    for box in _find([moov], [*stbl, b"stsz"]):
        uniform, count = struct.unpack(">II", box.payload[4:12])
        sizes += [uniform] * count if uniform else struct.unpack(
            f">{count}I", box.payload[12 : 12 + 4 * count]
        )
    return Movie(top, duration / timescale, codecs, offsets, sizes)


def check_image(data: bytes) -> None:
    """A simulator's image: a PNG of its stated size that decodes to a picture."""
    picture = read_png(data)
    assert (picture.width, picture.height) == IMAGE_SIZE
    assert len(picture.rows) == picture.height
    assert {len(row) for row in picture.rows} == {3 * picture.width}
    pixels = {row[x : x + 3] for row in picture.rows for x in range(0, len(row), 3)}
    assert len(pixels) > 100  # a picture, not a flat fill


def check_video(data: bytes) -> None:
    """A simulator's video: an H.264 MP4 whose sample tables point into its media data, a
    ``free`` box last."""
    movie = read_mp4(data)  # the top-level boxes fill the file exactly
    kinds = [box.kind for box in movie.top]
    assert kinds[0] == b"ftyp"
    assert kinds.index(b"moov") < kinds.index(b"mdat")  # a browser can start before the end
    assert kinds[-1] == b"free"
    assert sum(box.size for box in movie.top) == len(data)
    (mdat,) = (box for box in movie.top if box.kind == b"mdat")
    start, end = mdat.start + 8, mdat.start + mdat.size
    assert movie.chunk_offsets and all(start <= at < end for at in movie.chunk_offsets)
    assert sum(movie.sample_sizes) == end - start  # the samples are exactly the media data
    assert movie.codecs == [b"avc1"]
    assert 1.0 <= movie.duration <= 2.5


def check_asset_file(path: Path) -> None:
    """A file the orchestrator downloaded from a simulator is the real media its name says."""
    data = path.read_bytes()
    if path.suffix == ".png":
        check_image(data)
    else:
        assert path.suffix == ".mp4", path
        check_video(data)
