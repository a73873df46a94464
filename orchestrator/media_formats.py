"""What a downloaded file is, from its first bytes: the checks that decide whether a body is the
video or image it should be, and which extension it gets.

Magic bytes decide when they are recognised; otherwise the declared Content-Type does, unless
the body plainly starts like a web page or JSON (hotlink-protection and error pages often come
labelled as the media they replace).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["MediaFormat", "by_extension", "identify", "sniff"]


@dataclass(frozen=True)
class MediaFormat:
    media: str
    content_type: str
    ext: str


_MP4 = MediaFormat("video", "video/mp4", "mp4")
_MOV = MediaFormat("video", "video/quicktime", "mov")
_WEBM = MediaFormat("video", "video/webm", "webm")
_PNG = MediaFormat("image", "image/png", "png")
_JPEG = MediaFormat("image", "image/jpeg", "jpg")
_WEBP = MediaFormat("image", "image/webp", "webp")
_GIF = MediaFormat("image", "image/gif", "gif")
#: Recognised but not kept: still images in an ISO-BMFF container (its Content-Type must not
#: pass it off as an MP4).
_HEIF = MediaFormat("heif", "image/heif", "heif")
_DECLARED = {
    "video/mp4": _MP4,
    "video/quicktime": _MOV,
    "video/webm": _WEBM,
    "image/png": _PNG,
    "image/jpeg": _JPEG,
    "image/jpg": _JPEG,
    "image/webp": _WEBP,
    "image/gif": _GIF,
}
#: The formats files are kept in, by the extension the downloader names them with.
_BY_EXT = {f.ext: f for f in (_MP4, _MOV, _WEBM, _PNG, _JPEG, _WEBP, _GIF)} | {"jpeg": _JPEG}
#: ISO-BMFF brands of still images (HEIF/AVIF): an ``ftyp`` box does not always mean video.
_IMAGE_BRANDS = frozenset({b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1"})


def sniff(head: bytes) -> MediaFormat | None:
    """The format the first bytes of a file announce, if recognised."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in _IMAGE_BRANDS:
            return _HEIF
        return _MOV if brand == b"qt  " else _MP4
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return _WEBM
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return _PNG
    if head.startswith(b"\xff\xd8\xff"):
        return _JPEG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _WEBP
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _GIF
    return None


def _looks_like_text(head: bytes) -> bool:
    """A web page, XML error document or JSON error body, whatever its Content-Type says."""
    stripped = head.removeprefix(b"\xef\xbb\xbf").lstrip()
    return stripped[:1] in (b"<", b"{", b"[")


def identify(media: str, content_type: str, head: bytes) -> MediaFormat | None:
    """The verified format of a body of ``media`` ("video" | "image"), or None.

    Magic bytes decide when they are recognised (a PNG labelled image/jpeg is kept as .png);
    otherwise the declared Content-Type does, unless the body is plainly text.
    """
    found = sniff(head)
    if found is None and not _looks_like_text(head):
        found = _DECLARED.get(content_type.split(";", 1)[0].strip().lower())
    return found if found is not None and found.media == media else None


def by_extension(name: str) -> MediaFormat | None:
    """The format of a downloaded file, from its name (the downloader gives each file the
    extension of its verified format); None for any other name."""
    _, dot, ext = name.rpartition(".")
    return _BY_EXT.get(ext.lower()) if dot else None
