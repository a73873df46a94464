"""Failures of this machine's files, read the one way: the cause, the path, what to do."""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import pytest

from orchestrator.ledger import LedgerError
from orchestrator.local_failures import CAUSES, classify, find, is_local_failure


def sqlite_full(tmp_path: Path) -> sqlite3.OperationalError:
    """A real SQLITE_FULL, from SQLite itself (its page limit stands in for the disk)."""
    db = sqlite3.connect(tmp_path / "full.db", isolation_level=None)
    db.execute("CREATE TABLE t (v TEXT)")
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages}")
    try:
        db.execute("INSERT INTO t VALUES (?)", ("x" * 10_000,))
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        db.close()
    raise AssertionError("SQLite took a row bigger than its page limit")


@pytest.mark.parametrize(
    ("code", "what", "everywhere"),
    [
        (errno.ENOSPC, "disk full", True),
        (errno.EDQUOT, "disk quota exceeded", True),
        (errno.EROFS, "read-only file system", True),
        (errno.EIO, "I/O error", True),
        (errno.EACCES, "permission denied", False),
    ],
)
def test_each_errno_has_its_cause(code: int, what: str, everywhere: bool) -> None:
    failure = classify(OSError(code, "text the OS gives", "/out/report.json"))
    assert failure is not None
    assert (failure.cause.what, failure.cause.everywhere, failure.path) == (
        what, everywhere, "/out/report.json"
    )
    assert CAUSES[code] is failure.cause


def test_the_line_says_cause_path_and_what_to_do() -> None:
    failure = classify(OSError(errno.ENOSPC, "No space left on device", "out/state.sqlite3"))
    assert failure is not None
    assert failure.line() == (
        "disk full writing out/state.sqlite3: free space, then rerun: nothing is lost"
    )
    report = classify(OSError(errno.ENOSPC, "No space left on device", "out/report.json"))
    assert failure.line(report=report) == (
        "disk full writing out/state.sqlite3: free space, then rerun: nothing is lost (the "
        "report could not be written either: disk full writing out/report.json)"
    )


def test_an_oserror_without_a_file_name_takes_the_path_the_caller_knows() -> None:
    failure = classify(OSError(errno.EIO, "Input/output error"), path=Path("out/clip"))
    assert failure is not None and failure.path == "out/clip"
    assert failure.line().startswith("I/O error writing out/clip: check the disk")


def test_an_unknown_errno_is_read_from_its_text() -> None:
    failure = classify(OSError(errno.EMFILE, "Too many open files", "out/x"))
    assert failure is not None
    assert failure.cause.what == "too many open files" and not failure.cause.everywhere


def test_sqlite_errors_name_the_ledger(tmp_path: Path) -> None:
    failure = classify(sqlite_full(tmp_path), ledger_path=tmp_path / "state.sqlite3")
    assert failure is not None
    assert failure.line() == (
        f"disk full writing {tmp_path / 'state.sqlite3'}: free space, then rerun: nothing is lost"
    )


def test_what_is_not_a_failure_of_the_disk_is_not_ours() -> None:
    assert classify(ValueError("a bug")) is None
    assert classify(BrokenPipeError(errno.EPIPE, "Broken pipe")) is None  # `| head`
    assert classify(sqlite3.ProgrammingError("Cannot operate on a closed database.")) is None
    assert classify(sqlite3.IntegrityError("UNIQUE constraint failed")) is None
    assert not is_local_failure(KeyError("x"))
    assert is_local_failure(OSError(errno.ENOSPC, "full"))


def test_find_looks_through_groups_and_chains(tmp_path: Path) -> None:
    ledger = tmp_path / "state.sqlite3"
    full = sqlite_full(tmp_path)
    # What anyio raises: a group of groups, in which the ledger refusing use after the failed
    # commit (LedgerError) chains the commit's own error.
    try:
        try:
            raise full
        except sqlite3.OperationalError:
            raise LedgerError("lost writes")  # noqa: B904 - as the ledger does: chained
    except LedgerError as exc:
        lost = exc
    group = ExceptionGroup("tasks", [ExceptionGroup("items", [LedgerError("lost writes"), lost])])
    failure = find(group, ledger_path=ledger)
    assert failure is not None and failure.cause.what == "disk full"
    # A ledger that only says it lost writes still ends the run cleanly, naming the ledger.
    alone = find(ExceptionGroup("tasks", [LedgerError("lost writes")]), ledger_path=ledger)
    assert alone is not None and alone.path == str(ledger)
    assert alone.line().endswith("then rerun: nothing is lost")
    assert find(ExceptionGroup("tasks", [ValueError("a bug")])) is None
