"""What a request asks for, as one short digest: the same request always has the same
fingerprint, a changed one (prompt, model, any field, an image's content) a new one.

It names a task for good: an attempt's external id is derived from the batch, the item and this
fingerprint (see :mod:`orchestrator.identity`), so that a batch whose state file is lost sends
the same ids again, finds the tasks they created, and pays for none twice. It also tells which
items changed since their result was made.

A local image counts by its content (sha256), not by its path or time: a file copied elsewhere
is the same request, one edited in place is not. Hashing is paid once per file content:
:class:`FileHashes` remembers each file's digest by size and modification time (like make or
rsync) for the run, and callers may keep what it learnt between runs (the ledger does).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from orchestrator.providers.base import ImageSource, TaskRequest

#: Hex digits kept: 128 bits, far beyond any batch's collision risk.
FINGERPRINT_CHARS = 32
_CHUNK = 1024 * 1024

#: A file's stamp: (size, modification time in ns); its digest is trusted while it holds.
Stamp = tuple[int, int]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class FileHashes:
    """File digests by path, trusted while the file's size and modification time are those it
    had when hashed. ``known`` seeds it (what an earlier run learnt); ``learnt`` is what this
    one hashed, for the caller to keep."""

    def __init__(self, known: Mapping[str, tuple[Stamp, str]] | None = None) -> None:
        self._known: dict[str, tuple[Stamp, str]] = dict(known or {})
        self.learnt: dict[str, tuple[Stamp, str]] = {}

    def sha256(self, path: Path) -> str:
        """The file's digest (OSError when it cannot be read). Blocking: it may hash the file."""
        info = os.stat(path)
        stamp = (info.st_size, info.st_mtime_ns)
        key = str(path)
        found = self._known.get(key)
        if found is not None and found[0] == stamp:
            return found[1]
        digest = file_sha256(path)
        self._known[key] = self.learnt[key] = (stamp, digest)
        return digest


def _canonical(value: Any, file_hash: Callable[[Path], str]) -> Any:
    if isinstance(value, ImageSource):
        if value.path is not None:
            return {"image_sha256": file_hash(value.path)}
        return {"image_url": value.url}
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, file_hash) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_canonical(v, file_hash) for v in value]
    return value


def fingerprint(request: TaskRequest, file_hash: Callable[[Path], str]) -> str:
    """The request's digest: its kind and fields (images by content), in a canonical form.

    ``file_hash`` gives a local image's sha256 (:meth:`FileHashes.sha256`); it raises OSError
    when the image cannot be read, which the caller reports as the item's problem.
    """
    canonical = {"kind": str(request.kind), "fields": _canonical(request.fields, file_hash)}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:FINGERPRINT_CHARS]


def needs_files(request: TaskRequest) -> bool:
    """Whether the fingerprint reads local files (else it is pure and cheap)."""

    def walk(value: Any) -> bool:
        if isinstance(value, ImageSource):
            return value.path is not None
        if isinstance(value, Mapping):
            return any(walk(v) for v in value.values())
        if isinstance(value, list | tuple):
            return any(walk(v) for v in value)
        return False

    return walk(request.fields)
