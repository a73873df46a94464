"""The files the simulators serve are real media: a PNG that decodes to a picture of its stated
size, an MP4 whose boxes and sample tables hold together (the clips were checked to play in
Chromium when they were made); each asset's bytes are its own, and the same on every request."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from orchestrator.images import read_image_info
from orchestrator.media_formats import identify
from orchestrator.simulator.media import (
    BUILDERS,
    CLIPS,
    CLIPS_DIR,
    IMAGE_SIZE,
    MEDIA_TYPES,
    image_png,
    video_mp4,
)
from tests.media_structure import check_image, check_video, read_mp4, read_png


def test_an_image_is_a_png_of_the_stated_size_that_decodes() -> None:
    data = image_png("task-1", 0)
    check_image(data)
    picture = read_png(data)
    assert picture.chunks == [b"IHDR", b"iTXt", b"IDAT", b"IEND"]
    assert b"task-1 0" in picture.text
    assert 1_000 < len(data) < 8_000


def test_an_image_passes_as_an_input_image(tmp_path: Path) -> None:
    path = tmp_path / "still.png"
    path.write_bytes(image_png("task-1", 3))
    info = read_image_info(path)
    assert (info.format, info.width, info.height) == ("png", *IMAGE_SIZE)


def test_a_task_id_outside_latin1_still_makes_a_valid_png() -> None:
    assert "タスク" in read_png(image_png("タスク", 0)).text.decode()


@pytest.mark.parametrize("clip", CLIPS)
def test_each_bundled_clip_is_a_sound_h264_mp4(clip: str) -> None:
    data = (CLIPS_DIR / clip).read_bytes()
    assert len(data) < 10_000
    check_video(data + b"\x00\x00\x00\x08free")  # as served: with a last free box


def test_the_checks_catch_a_damaged_file() -> None:
    png = bytearray(image_png("t", 0))
    png[-20] ^= 1  # in the IDAT chunk
    with pytest.raises(AssertionError, match="CRC"):
        read_png(bytes(png))
    mp4 = video_mp4("t", 0)
    with pytest.raises(AssertionError, match="past the end"):
        read_mp4(mp4[:-1])
    with pytest.raises(AssertionError, match="0 moov"):  # a bare ftyp + mdat: no movie
        read_mp4(mp4[:32] + b"\x00\x00\x00\x08mdat")


def test_a_video_is_a_clip_with_its_label_appended_in_a_last_box() -> None:
    data = video_mp4("task-1", 2)
    check_video(data)
    last = read_mp4(data).top[-1]
    assert last.payload == b"orchestrator simulator task-1 2"
    assert data[: last.start] in {(CLIPS_DIR / clip).read_bytes() for clip in CLIPS}


def test_videos_use_every_bundled_clip() -> None:
    made = [video_mp4(f"task-{n}", 0) for n in range(40)]
    bodies = {data[: read_mp4(data).top[-1].start] for data in made}
    assert len(bodies) == len(CLIPS)


@pytest.mark.parametrize("suffix", sorted(BUILDERS))
def test_each_asset_has_bytes_of_its_own_the_same_on_every_request(suffix: str) -> None:
    build = BUILDERS[suffix]
    made = [build(task, index) for task in ("a", "b", "a watermarked") for index in (0, 1)]
    assert len({hashlib.sha256(data).digest() for data in made}) == len(made)
    assert build("a", 1) == build("a", 1)


@pytest.mark.parametrize(("suffix", "media"), [("mp4", "video"), ("png", "image")])
def test_the_orchestrator_recognises_what_it_downloads(suffix: str, media: str) -> None:
    data = BUILDERS[suffix]("t", 0)
    found = identify(media, MEDIA_TYPES[suffix], data[:64])
    assert found is not None and found.ext == suffix
    assert identify(media, "application/octet-stream", data[:64]) == found
