"""Files that appear whole or not at all, and what a killed writer leaves behind.

:func:`atomic_file` writes a temporary file beside the target (``.<name>.<8 characters>``),
flushes and fsyncs it, renames it over the target and fsyncs the folder: a reader sees the old
file or the new one, never half of one (the downloads' part files, written as they stream and
hashed on the way, end the same way: part_files.py). When the writer raises, the temporary
file is removed; when it is killed (SIGKILL, power loss, the OOM killer) nothing can remove it
then, so
:func:`remove_leftovers` does on the next run: it matches exactly the names this module makes
for the given targets, and touches nothing else.

The names have the shape ``tempfile.mkstemp`` gave them before this module made its own (eight
of ``[a-z0-9_]``), so the leftovers of earlier versions are recognised too.

An error writing the file names it: an OSError without a file name (a ``write`` or ``fsync``
that found the disk full) is raised again with the target's path, so the message can say
which file.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from orchestrator.part_files import fsync_dir

__all__ = ["atomic_file", "is_temp_name", "remove_leftovers", "temp_name"]

_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_"
_TOKEN_LENGTH = 8
_TOKEN = f"[{re.escape(_ALPHABET)}]{{{_TOKEN_LENGTH}}}"
#: Names tried before giving up (each collision is a 1 in 37**8 chance).
_ATTEMPTS = 100


def temp_name(name: str) -> str:
    """A fresh temporary name for a file called ``name`` (in the same folder)."""
    token = "".join(secrets.choice(_ALPHABET) for _ in range(_TOKEN_LENGTH))
    return f".{name}.{token}"


def is_temp_name(candidate: str, name: str) -> bool:
    """Whether ``candidate`` is a temporary name :func:`temp_name` makes for ``name``."""
    return re.fullmatch(rf"\.{re.escape(name)}\.{_TOKEN}", candidate) is not None


def _create_temp(path: Path) -> tuple[int, Path]:
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_ATTEMPTS):
        tmp = path.with_name(temp_name(path.name))
        try:
            # Owner-only, as mkstemp made them: the report names tasks of a paid account.
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


@contextmanager
def atomic_file(path: Path) -> Iterator[IO[str]]:
    """A text file that appears at ``path`` whole or not at all (see the module docstring)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename itself survives a power loss
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename is None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def remove_leftovers(directory: Path, names: Iterable[str]) -> list[Path]:
    """Remove the temporary files that killed writers of ``names`` left in ``directory``; the
    paths removed. Only regular files named exactly like ours go. Best effort: a leftover
    costs disk space, not correctness. Call it when no writer of those names is running."""
    wanted = list(names)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed  # no folder yet: nothing left over
    for entry in entries:
        if not any(is_temp_name(entry.name, name) for name in wanted):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            continue
    return removed
