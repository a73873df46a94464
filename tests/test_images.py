"""Image header reading: sizes from PNG IHDR and JPEG SOFn, clear errors for everything else."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.images import ImageError, ImageInfo, read_image_info


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bytes(width: int, height: int) -> bytes:
    """A complete, decodable PNG (one black RGB image); only the header matters to the reader."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = (b"\x00" + b"\x00" * 3 * width) * height
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def jpeg_bytes(
    width: int,
    height: int,
    *,
    sof: int = 0xC0,
    extra_app: tuple[bytes, ...] = (),
    fill_bytes: int = 0,
) -> bytes:
    """A real, decodable grayscale baseline JPEG of the given size (uniform mid-gray).

    Both Huffman tables hold one 1-bit code, for DC category 0 and for end-of-block, so every
    8x8 block is the two bits "00": the scan is a run of zero bytes, padded with 1-bits.
    ``sof`` swaps the frame marker (0xC2: progressive); the scan then only looks the part, which
    is all a header reader can see.
    """
    jfif = _segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
    apps = b"".join(_segment(0xE1, payload) for payload in extra_app)
    dqt = _segment(0xDB, b"\x00" + b"\x01" * 64)
    frame = _segment(sof, struct.pack(">BHHB", 8, height, width, 1) + b"\x01\x11\x00")
    one_code = bytes([1] + [0] * 15) + b"\x00"
    dht = _segment(0xC4, b"\x00" + one_code + b"\x10" + one_code)
    sos = _segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
    blocks = -(-width // 8) * -(-height // 8)
    bits = 2 * blocks
    scan = b"\x00" * (bits // 8) + (bytes([0xFF >> (bits % 8)]) if bits % 8 else b"")
    scan = scan.replace(b"\xff", b"\xff\x00")  # byte stuffing
    fill = b"\xff" * fill_bytes
    return b"\xff\xd8" + jfif + apps + dqt + fill + frame + dht + sos + scan + b"\xff\xd9"


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_png_size_and_bytes(tmp_path: Path) -> None:
    data = png_bytes(512, 384)
    path = write(tmp_path, "a.png", data)
    assert read_image_info(path) == ImageInfo("png", 512, 384, len(data))


def test_baseline_jpeg(tmp_path: Path) -> None:
    data = jpeg_bytes(640, 480)
    path = write(tmp_path, "a.jpg", data)
    assert read_image_info(path) == ImageInfo("jpeg", 640, 480, len(data))


def test_progressive_jpeg_after_app_segments_and_fill_bytes(tmp_path: Path) -> None:
    exif = b"Exif\x00\x00" + b"\xff\xd8\xff\xc0" * 5000  # a thumbnail-like payload with markers
    data = jpeg_bytes(300, 750, sof=0xC2, extra_app=(exif, b"x" * 60000), fill_bytes=3)
    path = write(tmp_path, "p.jpeg", data)
    assert read_image_info(path) == ImageInfo("jpeg", 300, 750, len(data))


def test_format_is_read_from_content_not_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "really-a-jpeg.png", jpeg_bytes(400, 400))
    assert read_image_info(path).format == "jpeg"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"GIF89a" + b"\x00" * 20, "GIF image; only JPEG and PNG"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 20, "WebP image"),
        (b"\x00\x00\x00\x18ftypheic" + b"\x00" * 20, "HEIC/AVIF"),
        (b"hello, this is text", "not a JPEG or PNG image"),
        (png_bytes(10, 10)[:20], "PNG file is truncated"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIDAT" + b"\x00" * 20, "no IHDR"),
        (png_bytes(0, 10), "empty size (0x10)"),
        (jpeg_bytes(10, 10)[:30], "JPEG file is truncated"),
        (jpeg_bytes(10, 10)[:200].split(b"\xff\xc0")[0], "JPEG file is truncated"),
        (b"\xff\xd8\xff\xd9", "ends before its frame header"),
        (b"\xff\xd8" + _segment(0xDA, b"\x00" * 6) + b"\xff\xd9", "image data starts before"),
        (b"\xff\xd8garbage", "expected a segment marker"),
        (b"\xff\xd8\xff\x00\x00", "stray data"),
        (b"\xff\xd8\xff\xe0\x00\x01", "invalid segment length"),
        (jpeg_bytes(10, 0), "gives no height"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_rejected_with_a_clear_message(tmp_path: Path, data: bytes, message: str) -> None:
    path = write(tmp_path, "bad.img", data)
    with pytest.raises(ImageError, match=re.escape(message)) as caught:
        read_image_info(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="file not found"):
        read_image_info(tmp_path / "nope.png")
    with pytest.raises(ImageError, match="not a regular file"):
        read_image_info(tmp_path)


def test_unusable_paths_are_image_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageError):
        read_image_info(tmp_path / ("x" * 5000))
    with pytest.raises(ImageError):
        read_image_info(Path("bad\x00name.png"))


def test_image_error_is_a_value_error() -> None:
    assert issubclass(ImageError, ValueError)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    prefix=st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8", b"\xff\xd8\xff"]),
    body=st.binary(max_size=64),
)
def test_arbitrary_bytes_never_crash(tmp_path: Path, prefix: bytes, body: bytes) -> None:
    path = write(tmp_path, "fuzz.bin", prefix + body)
    try:
        info = read_image_info(path)
    except ImageError:
        return
    assert info.width > 0 and info.height > 0


# --- the data behind a valid header ----------------------------------------------------------


def _png(ihdr: bytes, idat: bytes, *, crc_ok: bool = True, iend: bool = True) -> bytes:
    chunk = _png_chunk(b"IDAT", idat)
    if not crc_ok:
        chunk = chunk[:-4] + bytes(4)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + chunk
            + (_png_chunk(b"IEND", b"") if iend else b""))


RGB_400 = struct.pack(">IIBBBBB", 400, 400, 8, 2, 0, 0, 0)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # A valid header over garbage data (its checksum right): the data cannot be inflated.
        (_png(RGB_400, b"\x13\x37" * 500), "its image data cannot be decompressed"),
        # Inflatable, but not scanlines: a filter byte must be 0-4.
        (_png(RGB_400, zlib.compress(b"\x09" * 5000)), "its image data is not PNG scanlines"),
        (_png(RGB_400, zlib.compress(b"\x00" * 5000), crc_ok=False),
         "its IDAT chunk fails its checksum"),
        (_png(RGB_400, zlib.compress(b"\x00" * 5000), iend=False),
         "it ends before its IEND chunk"),
        # A header claiming an absurd size is refused before anything else is read.
        (_png(struct.pack(">IIBBBBB", 2147483647, 2147483647, 8, 2, 0, 0, 0), b""),
         "claims 2147483647x2147483647 pixels"),
        (jpeg_bytes(400, 400).split(b"\xff\xda")[0] + b"\xff\xd9",
         "it ends before its image data"),
    ],
)
def test_a_valid_header_over_bad_data_is_refused(
    tmp_path: Path, data: bytes, message: str
) -> None:
    with pytest.raises(ImageError, match=re.escape(message)):
        read_image_info(write(tmp_path, "x.png", data))


def test_only_a_bounded_part_of_the_data_is_read(tmp_path: Path) -> None:
    # A large, valid PNG with its last rows garbage: only the start of the data is checked,
    # so it passes (Kling judges the rest), and the check stays cheap for big files.
    rows = (b"\x00" + b"\x00" * 3 * 4000) * 4000
    good = zlib.compress(rows, 1)
    ihdr = struct.pack(">IIBBBBB", 4000, 4000, 8, 2, 0, 0, 0)
    data = _png(ihdr, good[:-64] + b"\x00" * 64)
    assert read_image_info(write(tmp_path, "big.png", data)).width == 4000
