"""Failures of this machine's files: a full disk, an I/O error, a read-only or over-quota file
system, a permission lost mid-run; and the one line a run ends with when one happens.

They are neither bugs nor the provider's doing, and nothing is lost to them: the ledger keeps
what it committed (a crash may lose the last second of transitions, which the rerun
re-establishes from the provider), and the rerun downloads what is missing. So a run ends on
one cleanly: exit 3 (resumable, like an account stop) and one line naming the cause, the path
and what to do, never a traceback::

    disk full writing out/state.sqlite3: free space, then rerun: nothing is lost

Where they come from, and how each is read (:func:`classify` is the one place)::

    OSError (errno)                 logs, downloads, the report; their writers name the file
                                    in ``filename``
    sqlite3.OperationalError        the ledger: SQLite's primary result code (SQLITE_FULL,
                                    SQLITE_IOERR...) read as the cause it stands for; the path
                                    is the ledger's, which the caller knows
    LedgerError                     the ledger refusing use after a failed commit: the cause
                                    is the error it chains, else "a write failed"

anyio's task groups wrap what their tasks raise in ExceptionGroups, and a failure raised while
another is handled chains it: :func:`find` looks through both.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from orchestrator.ledger import LedgerError, LedgerTakenOver, LedgerUnavailable

__all__ = ["CAUGHT", "Cause", "LocalFailure", "classify", "find", "is_local_failure"]


@dataclass(frozen=True)
class Cause:
    """What went wrong, in words that read after ``<what> writing <path>``."""

    what: str
    #: what the user does about it before rerunning
    action: str
    #: every further write to that file system fails the same way (a full, read-only or
    #: failing disk), as opposed to one file or folder's permissions
    everywhere: bool


#: The causes by errno: the ones the issue names, then a few neighbours. Others are read from
#: the error's own text (see :func:`_cause_of_errno`).
CAUSES = MappingProxyType(
    {
        errno.ENOSPC: Cause("disk full", "free space", everywhere=True),
        errno.EDQUOT: Cause(
            "disk quota exceeded", "free space or raise the quota", everywhere=True
        ),
        errno.EROFS: Cause(
            "read-only file system", "make it writable again (remount)", everywhere=True
        ),
        errno.EIO: Cause("I/O error", "check the disk (dmesg, SMART)", everywhere=True),
        errno.EFBIG: Cause("file too large", "free space or raise the file size limit", True),
        errno.EACCES: Cause("permission denied", "restore write permission", everywhere=False),
        errno.EPERM: Cause("operation not permitted", "restore write permission", False),
    }
)

#: SQLite's primary result codes for failures of the file under it (the ledger's).
_SQLITE_CAUSES = MappingProxyType(
    {
        sqlite3.SQLITE_FULL: CAUSES[errno.ENOSPC],
        sqlite3.SQLITE_IOERR: CAUSES[errno.EIO],
        sqlite3.SQLITE_READONLY: Cause(
            "no write access", "make the file, its folder and its file system writable again",
            everywhere=True,
        ),
        sqlite3.SQLITE_CANTOPEN: Cause(
            "cannot open a file", "check that its folder exists and is writable", True
        ),
        sqlite3.SQLITE_PERM: CAUSES[errno.EACCES],
    }
)

#: The ledger's database stopped answering (PostgreSQL down, the network to it cut).
_DATABASE_DOWN = Cause(
    "the state database stopped answering", "check the database server and the network to it",
    everywhere=True,
)
#: Another run took the batch over in the ledger's database while this one worked.
_TAKEN_OVER = Cause("another run took the batch over", "let that run finish", everywhere=True)
#: A ledger that lost uncommitted writes, with no error left to say why.
_LOST_WRITES = Cause("a failed write", "check the disk and its free space", everywhere=True)

#: What the CLI catches around the engine (``except*``); :func:`find` decides which are ours.
CAUGHT = (OSError, sqlite3.Error, LedgerError)


@dataclass(frozen=True)
class LocalFailure:
    cause: Cause
    #: the file (or folder) being written, as the user named it
    path: str

    def line(self, *, report: LocalFailure | None = None) -> str:
        """The one line a run ends with; ``report``: the report could not be written either."""
        text = (
            f"{self.cause.what} writing {self.path}: {self.cause.action}, then rerun: "
            "nothing is lost"
        )
        if report is not None:
            text += (
                f" (the report could not be written either: {report.cause.what} writing "
                f"{report.path})"
            )
        return text


def _cause_of_errno(exc: OSError) -> Cause:
    known = CAUSES.get(exc.errno) if exc.errno is not None else None
    if known is not None:
        return known
    what = (exc.strerror or type(exc).__name__).lower()
    return Cause(what, "fix the cause", everywhere=False)


def classify(
    exc: BaseException, *, ledger_path: Path | str | None = None, path: Path | str | None = None
) -> LocalFailure | None:
    """``exc`` as a failure of this machine's files, or None when it is not one.

    ``path``: the file being written, for an OSError that does not name it; ``ledger_path``:
    the ledger's file, for SQLite's errors (which never name one).
    """
    if isinstance(exc, BrokenPipeError):
        return None  # the console's reader went away (``| head``): not a disk
    if isinstance(exc, OSError):
        where = exc.filename if isinstance(exc.filename, str | Path) else path
        return LocalFailure(_cause_of_errno(exc), str(where or "a file in output.dir"))
    ledger = str(ledger_path or "the state file")
    if isinstance(exc, sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        cause = _SQLITE_CAUSES.get(code & 0xFF) if isinstance(code, int) else None
        return LocalFailure(cause, ledger) if cause is not None else None
    if isinstance(exc, LedgerTakenOver):
        return LocalFailure(_TAKEN_OVER, ledger)
    if isinstance(exc, LedgerUnavailable):
        return LocalFailure(_DATABASE_DOWN, ledger)
    if isinstance(exc, LedgerError):
        return LocalFailure(_LOST_WRITES, ledger)
    return None


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    """Every exception in ``exc``: groups flattened, chains (cause, context) followed."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, BaseExceptionGroup):
            todo[:0] = list(current.exceptions)
            continue
        yield current
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def find(
    exc: BaseException, *, ledger_path: Path | str | None = None, path: Path | str | None = None
) -> LocalFailure | None:
    """The failure of this machine's files behind ``exc`` (an ExceptionGroup, or an error that
    chains one), or None. An error that names its cause wins over a ledger that only says it
    lost writes: the first is why, the second what followed."""
    fallback: LocalFailure | None = None
    for leaf in _leaves(exc):
        failure = classify(leaf, ledger_path=ledger_path, path=path)
        if failure is None:
            continue
        if failure.cause is not _LOST_WRITES:
            return failure
        fallback = fallback or failure
    return fallback


def is_local_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure of this machine's files (not a bug: no traceback)."""
    return classify(exc) is not None
