"""``state migrate``: a batch's SQLite ledger moved into a PostgreSQL database, whole: every item,
every attempt (with its external id, fingerprint and charge: what proves a task was paid for),
the files' digests, the runs, and the ledger's id (the output folder's identity names it, so the
batch stays the same batch). A batch stopped mid-way moves with its intents: a create that was
in flight is looked up by its external id on the next run, as it would have been from the file.

The file is locked while it is read (no run of the batch can write it meanwhile) and renamed
aside afterwards (``<file>.migrated-<time>``, kept), so that a run that forgets ``--state`` cannot
go on from a stale copy. The database must not know the batch yet: nothing is merged.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.layout import LOCK_SUFFIX
from orchestrator.ledger import Ledger, LedgerError
from orchestrator.locks import RunLock

__all__ = ["Exported", "export_sqlite", "migrate"]

_ITEMS = (
    "id, kind, state, attempt, external_task_id, task_id, expected_assets, assets, error, "
    "download_error, submitted_at, finished_at, updated_at, fingerprint"
)
_ATTEMPTS = (
    "item_id, attempt, external_task_id, task_id, state, error, created_at, updated_at, "
    "charged_units, fingerprint, seq"
)


@dataclass(frozen=True)
class Exported:
    """A whole ledger, as rows (columns in the order both schemas declare them)."""

    batch: str
    ledger_id: str
    created_at: float
    items: list[tuple[Any, ...]]
    attempts: list[tuple[Any, ...]]
    file_hashes: list[tuple[Any, ...]]
    runs: list[tuple[Any, ...]]


@dataclass(frozen=True)
class Migrated:
    batch: str
    items: int
    attempts: int
    runs: int
    moved_to: Path


def export_sqlite(path: Path) -> tuple[Ledger, Exported]:
    """The ledger at ``path``, opened (its lock held: close the Ledger returned when done) and
    read whole."""
    batch, _ = Ledger.read_only(path)
    held = Ledger(path, batch)  # the lock, and an older schema brought up to date
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
            exported = Exported(
                batch=batch,
                ledger_id=held.ledger_id,
                created_at=float(meta.get("created_at") or time.time()),
                items=db.execute(f"SELECT {_ITEMS} FROM items ORDER BY id").fetchall(),
                attempts=db.execute(
                    f"SELECT {_ATTEMPTS} FROM attempts ORDER BY item_id, attempt").fetchall(),
                file_hashes=db.execute(
                    "SELECT path, size, mtime_ns, sha256 FROM file_hashes ORDER BY path"
                ).fetchall(),
                runs=db.execute(
                    "SELECT run, started_at, finished_at, exit_code, exit_reason, requests, "
                    "retries FROM runs ORDER BY run"
                ).fetchall(),
            )
        finally:
            db.close()
    except BaseException:
        held.close()
        raise
    return held, exported


def migrate(source: Path, url: str, *, clock: Any = time.time) -> Migrated:
    """Move the SQLite ledger at ``source`` into the database at ``url``; LedgerError (with
    what to do) when it cannot: another run holds either, or the database has the batch."""
    from orchestrator.ledger_pg import PgLedger

    if not source.is_file():
        raise LedgerError(f"no state file at {source}: nothing to migrate")
    held, exported = export_sqlite(source)
    try:
        with PgLedger(url, exported.batch) as target:
            target.import_whole(exported)
    finally:
        held.close()  # its last writes checkpointed into the file: one file to move
    # Locked again while it is renamed: a run starting now finds no file, not half of one.
    lock = RunLock(source.with_name(source.name + LOCK_SUFFIX))
    try:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(clock()))
        moved = source.with_name(f"{source.name}.migrated-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            companion = source.with_name(source.name + suffix)
            if companion.exists():
                companion.rename(moved.with_name(moved.name + suffix))
    finally:
        lock.release()
    return Migrated(exported.batch, len(exported.items), len(exported.attempts),
                    len(exported.runs), moved)
