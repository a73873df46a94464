"""Durable batch state: the only writer of item state.

SQLite in WAL mode with ``synchronous=FULL``: a COMMIT that returned is on disk. Writes are
group-committed: each write method runs in a SAVEPOINT of one open transaction (so a write that
raises undoes only itself), and that transaction is committed by ``commit()``, by ``await
durable()``, by ``sync_items`` and ``reopen`` (run start), by ``close()``, and by the first write
made once it is ``max_delay`` seconds old (a write, not a timer: the engine also calls
``commit()`` every second, so ``status`` never lags far behind a quiet run). A write method
returning therefore does NOT mean it is on disk; reads through this ledger see it at once,
``read_only`` (``status``) once it is committed.

Durability contract: a crash loses exactly the writes made since the last commit, a suffix of the
write sequence (one connection, one transaction stream: a durable write implies every earlier one
is). That is harmless for every write except the submit intent, because the next run reconciles
from an older state (a lost ``record_submitted`` leaves the row ``submitting`` and the task is
looked up by external id; a lost ``finish`` leaves it ``running`` and it is polled again). The
intent is the one write that must be on disk before its side effect: the engine calls
``record_intent`` and then ``await ledger.durable()`` BEFORE it sends a create, and
``record_submitted`` right after the answer; a row left in ``submitting`` therefore means "a
create may have been sent": the next run looks the task up by its external id instead of sending
another. Should SQLite ever discard uncommitted writes itself (I/O error, disk full), the ledger
refuses all further use (``LedgerError``) rather than report a lost intent as durable.

Item states::

    pending --record_intent--> submitting --record_submitted--> running --finish--> succeeded
       ^                          |                                |                 partial
       |                          +--(rejected, nothing created)---+                 failed
       +---- record_retry (retryable failure; next attempt gets a new external id) --+

A second process opening the same ledger is refused (an exclusive ``flock`` on a lock file
beside it), so two cron runs of one batch cannot both submit.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio.lowlevel

from orchestrator import ledger_file
from orchestrator.errors import ErrorInfo
from orchestrator.identity import external_task_id
from orchestrator.layout import LOCK_SUFFIX, owner_only
from orchestrator.ledger_api import (
    RUN_COLUMNS,
    AssetRecord,
    ItemRecord,
    ItemState,
    RunRecord,
    Verdicts,
    assets_from_text,
    run_record,
    to_text,
)
from orchestrator.ledger_schema import (
    IDENTITY_KEYS,
    OWN_OBJECTS,
    OWN_TABLES,
    SCHEMA,
    SCHEMA_VERSION,
    migrate,
)
from orchestrator.locks import Held, RunLock

__all__ = [
    "SCHEMA_VERSION",
    "AssetRecord",
    "ItemRecord",
    "ItemState",
    "Ledger",
    "LedgerError",
    "LedgerLocked",
    "LedgerNotStarted",
    "LedgerTakenOver",
    "LedgerUnavailable",
    "LedgerUnreadable",
    "RunRecord",
]

class LedgerError(Exception):
    """The state file cannot be used (locked by another run, or belongs to another batch)."""


class LedgerLocked(LedgerError):
    pass


class LedgerTakenOver(LedgerError):
    """Another run took the batch over while this one worked (its lock was lost): this run
    writes nothing more."""


class LedgerUnavailable(LedgerError):
    """The ledger's database cannot be reached now (down, unreachable, refusing): nothing was
    sent; a run once it is back resumes."""


class LedgerNotStarted(LedgerError):
    """The state file was only partly created (a run killed, or out of space, while creating
    it): it holds nothing, no run is recorded in it yet."""


class LedgerUnreadable(LedgerError):
    """The state file is not a ledger, nor a partly created one: it was left as it is."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(
            f"state file {path} cannot be read as a ledger ({why}); it was left as it is. Keep "
            "it: it may be another program's file, or a damaged ledger whose external ids "
            "still name paid tasks. Nothing was sent."
        )
        self.path = path


class Ledger(Verdicts):
    def __init__(
        self,
        path: Path,
        batch: str,
        *,
        clock: Callable[[], float] = time.time,
        max_delay: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
        scrub: Callable[[Any], Any] | None = None,
    ) -> None:
        """``clock`` is the wall time written into rows; ``monotonic`` only ages the open
        transaction: a write made once it is ``max_delay`` seconds old commits it (0: every
        write commits, the old one-transaction-per-write behaviour). ``scrub`` cleans what
        the provider sent (asset URLs, error texts) of credentials before it is stored: a
        proxy that echoes the API key in a URL must not put it in the state file."""
        self.path = path
        self._scrub: Callable[[Any], Any] = scrub if scrub is not None else (lambda v: v)
        self.batch = batch
        self._clock = clock
        self._max_delay = max_delay
        self._monotonic = monotonic
        #: COMMITs that ran (transactions made durable); for tests and benchmarks
        self.commits = 0
        self._write_gen = 0  # writes completed (inside the open transaction or committed)
        self._committed_gen = 0  # of those, the ones a COMMIT has made durable
        self._tx_started = 0.0  # monotonic time the open transaction began
        self._broken: str | None = None  # why uncommitted writes were lost, if they were
        path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = path.with_name(path.name + LOCK_SUFFIX)
        try:
            self._lock = RunLock(lock_path)
        except Held as exc:
            raise LedgerLocked(
                f"another run of this batch is in progress{exc.who}: it holds {lock_path}. "
                "Wait for it to finish; two runs of one batch at once are refused so that "
                "nothing is submitted twice."
            ) from None
        try:
            self._db = self._connect(path)
        except BaseException:
            self._release_lock()
            raise
        try:
            #: True when this run created the ledger (it knew nothing before)
            self.created = False
            #: a random id naming this ledger (the output folder's identity names it)
            self.ledger_id = self._init_meta()
        except BaseException:
            self.close()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _release_lock(self) -> None:
        self._lock.release()

    #: What losing the run lock means, for the log and the console.
    lock_lost_reason = "the run lock's file was removed and another run of this batch took it"

    def lock_still_held(self) -> bool:
        """Whether the run lock beside the state file is still this run's (see RunLock)."""
        return self._lock.still_held()

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # Owner-only, created so or tightened (a file from an older version, a copy, a loose
        # umask): the ledger names tasks of a paid account. Created before connecting, since
        # SQLite gives the -wal and -shm files it creates the database file's permissions.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            # Read before anything is written: a file that is not our ledger is left as it is.
            stale = Ledger._examine(db, path)
            for own in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
                owner_only(own)  # -wal, -shm: left by a run that did not close, maybe loose
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA busy_timeout=5000")
            # Partly created (killed or out of space while creating it): it holds nothing, so
            # it is made again from scratch. One transaction: the tables appear all or none.
            drops = "".join(f"DROP TABLE IF EXISTS {table};\n" for table in stale or ())
            db.executescript(f"BEGIN IMMEDIATE;\n{drops}{SCHEMA}COMMIT;")
        except BaseException:
            db.close()
            raise
        return db

    @staticmethod
    def _examine(db: sqlite3.Connection, path: Path) -> list[str] | None:
        """None for a ledger; the tables to drop for a partly created one (ledger_file.py);
        LedgerError, with how to recover, for a file that must not be replaced silently."""
        try:
            return ledger_file.examine(
                db, tables=OWN_TABLES, objects=OWN_OBJECTS, identity=IDENTITY_KEYS
            )
        except ledger_file.NotALedger as exc:
            raise LedgerUnreadable(path, str(exc)) from None

    def _init_meta(self) -> str:
        with self._write() as db:
            rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if not rows:
                rows = {
                    "schema_version": str(SCHEMA_VERSION),
                    "batch": self.batch,
                    "ledger_id": secrets.token_hex(8),
                    "created_at": str(self._clock()),
                }
                db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows.items())
                self.created = True
            elif rows.get("batch") == self.batch:
                migrate(db, rows)
                if "ledger_id" not in rows:  # written by an older version
                    rows["ledger_id"] = secrets.token_hex(8)
                    db.execute("INSERT INTO meta (key, value) VALUES ('ledger_id', ?)",
                               (rows["ledger_id"],))
        self.commit()
        if rows.get("batch") != self.batch:
            raise LedgerError(
                f"state file {self.path} belongs to batch '{rows.get('batch')}', not "
                f"'{self.batch}': use another output.dir or --state for this manifest."
            )
        if int(rows.get("schema_version", "0")) != SCHEMA_VERSION:
            raise LedgerError(
                f"state file {self.path} has schema version {rows.get('schema_version')}; "
                f"this version of the orchestrator reads version {SCHEMA_VERSION}."
            )
        return str(rows["ledger_id"])

    def close(self) -> None:
        """Commit what is pending (every write leaves a valid state, so this holds when the
        run ends by an exception too), then close and release the run lock."""
        try:
            if self._broken is None:
                self.commit()
        finally:
            try:
                self._db.close()
            finally:
                self._release_lock()

    def __enter__(self) -> Ledger:
        return self

    @asynccontextmanager
    async def attached(self) -> AsyncIterator[Ledger]:
        """Nothing to open for the event loop: SQLite is in this process."""
        yield self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- group commit -----------------------------------------------------------------------

    @property
    def uncommitted(self) -> int:
        """Writes made and not yet committed (lost by a crash now)."""
        return self._write_gen - self._committed_gen

    def commit(self) -> None:
        """Commit the open transaction, if any: every write made so far is on disk."""
        self._check_usable()
        if not self._db.in_transaction:
            return
        done = self._write_gen
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self._note_if_lost("COMMIT failed")
            raise
        self.commits += 1
        self._committed_gen = done

    async def durable(self) -> None:
        """Return once every write made before the call is committed (on disk).

        Await it after ``record_intent`` and before sending the create. Calls made in the same
        event-loop turn share one COMMIT: the call yields once, and only the first caller to
        resume still finds its writes uncommitted. It is a checkpoint: when it raises
        (cancellation), the writes may not be durable, so nothing may be sent.
        """
        target = self._write_gen
        await anyio.lowlevel.checkpoint()
        if self._committed_gen < target:
            self.commit()
        self._check_usable()

    def _check_usable(self) -> None:
        if self._broken is not None:
            raise LedgerError(
                f"the state file {self.path} lost writes that were not committed yet "
                f"({self._broken}); stop this run: a new run reconciles from what is on disk."
            )

    def _note_if_lost(self, why: str) -> None:
        """After a failed statement: SQLite may have rolled the whole transaction back."""
        if not self._db.in_transaction and self._write_gen > self._committed_gen:
            self._broken = why

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write: a SAVEPOINT in the open transaction (begun here when there is none).

        A write that raises is rolled back alone; the writes before it stay pending. A write
        that finds the transaction ``max_delay`` old when it is done commits it.
        """
        self._check_usable()
        db = self._db
        if not db.in_transaction:
            db.execute("BEGIN IMMEDIATE")
            self._tx_started = self._monotonic()
        db.execute("SAVEPOINT write")
        try:
            yield db
        except BaseException:
            try:
                if db.in_transaction:
                    db.execute("ROLLBACK TO write")
                    db.execute("RELEASE write")
            finally:
                self._note_if_lost("a failed write rolled the transaction back")
            raise
        db.execute("RELEASE write")
        self._write_gen += 1
        if self._monotonic() - self._tx_started >= self._max_delay:
            self.commit()

    # -- reading without the lock (status) -------------------------------------------------

    @classmethod
    def read_only(cls, path: Path) -> tuple[str, list[ItemRecord]]:
        """(batch name, every item record) without taking the run lock: ``status`` works
        while a run is in progress. Raises LedgerError when there is no usable state file."""
        if not path.is_file():
            raise LedgerError(f"no state file at {path}: the batch has not been run yet")
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                db.execute("PRAGMA busy_timeout=5000")
                if cls._examine(db, path) is not None:
                    raise LedgerNotStarted(
                        f"state file {path} was only partly created (a run was killed or ran "
                        "out of space while creating it): no runs recorded yet"
                    )
                meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
                columns = cls._ITEM_COLUMNS
                version = meta.get("schema_version")
                if version in ("1", "2"):  # not migrated yet: what it did not record is NULL
                    columns = columns.replace(", fingerprint", ", NULL")
                if version == "1":
                    columns = columns.replace(cls._CHARGED, "NULL")
                rows = db.execute(f"SELECT {columns} FROM items ORDER BY id").fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read the state file {path}: {exc}") from None
        return str(meta.get("batch", "")), [cls._record(r) for r in rows]

    # -- identity ---------------------------------------------------------------------------

    def external_task_id(self, item_id: str, seq: int, fingerprint: str = "") -> str:
        """The external id of attempt ``seq`` of the request with this fingerprint: the same in
        every ledger (see :func:`orchestrator.identity.external_task_id`), so that a lost state
        file never leads to a second paid task for a request whose task exists."""
        return external_task_id(self.batch, item_id, fingerprint, seq)

    def next_seq(self, item_id: str, fingerprint: str) -> int:
        """The number the next attempt of this request gets: one more than the attempts of the
        same fingerprint this ledger knows (1 in a ledger that knows none)."""
        row = self._db.execute(
            "SELECT COALESCE(MAX(seq), 0) FROM attempts WHERE item_id = ? AND fingerprint = ?",
            (item_id, fingerprint),
        ).fetchone()
        return int(row[0]) + 1

    def paid_for(self, item_id: str, fingerprint: str | None) -> int:
        """Attempts of this request that created a task (what retry.max_attempts bounds: a
        changed request starts again)."""
        if fingerprint is None:
            row = self._db.execute(
                "SELECT COUNT(*) FROM attempts WHERE item_id = ? AND task_id IS NOT NULL",
                (item_id,),
            ).fetchone()
        else:
            row = self._db.execute(
                "SELECT COUNT(*) FROM attempts WHERE item_id = ? AND task_id IS NOT NULL AND "
                "(fingerprint = ? OR fingerprint IS NULL)",
                (item_id, fingerprint),
            ).fetchone()
        return int(row[0])

    # -- file digests (what fingerprints read, kept between runs) -----------------------------

    def file_hashes(self) -> dict[str, tuple[tuple[int, int], str]]:
        rows = self._db.execute("SELECT path, size, mtime_ns, sha256 FROM file_hashes")
        return {str(p): ((int(size), int(mtime)), str(sha)) for p, size, mtime, sha in rows}

    def remember_file_hashes(self, learnt: dict[str, tuple[tuple[int, int], str]]) -> None:
        if not learnt:
            return
        with self._write() as db:
            db.executemany(
                "INSERT OR REPLACE INTO file_hashes (path, size, mtime_ns, sha256) "
                "VALUES (?, ?, ?, ?)",
                [(p, size, mtime, sha) for p, ((size, mtime), sha) in learnt.items()],
            )

    # -- reads ----------------------------------------------------------------------------

    _CHARGED = "(SELECT SUM(a.charged_units) FROM attempts a WHERE a.item_id = items.id)"
    _ITEM_COLUMNS = (
        "id, kind, state, attempt, external_task_id, task_id, expected_assets, assets, error, "
        "submitted_at, finished_at, "
        "(SELECT COUNT(*) FROM attempts a WHERE a.item_id = items.id AND a.task_id IS NOT NULL), "
        f"download_error, {_CHARGED}, fingerprint"
    )

    @staticmethod
    def _record(row: tuple[Any, ...]) -> ItemRecord:
        return ItemRecord(
            id=row[0],
            kind=row[1],
            state=ItemState(row[2]),
            attempt=row[3],
            external_task_id=row[4],
            task_id=row[5],
            expected_assets=row[6],
            assets=assets_from_text(row[7]),
            error=ErrorInfo.from_dict(json.loads(row[8])) if row[8] else None,
            submitted_at=row[9],
            finished_at=row[10],
            tasks_created=row[11],
            download_error=ErrorInfo.from_dict(json.loads(row[12])) if row[12] else None,
            charged_units=row[13],
            fingerprint=row[14],
        )

    def get(self, item_id: str) -> ItemRecord:
        row = self._db.execute(
            f"SELECT {self._ITEM_COLUMNS} FROM items WHERE id = ?", (item_id,)
        ).fetchone()
        if row is None:
            raise KeyError(item_id)
        return self._record(row)

    def all(self) -> list[ItemRecord]:
        rows = self._db.execute(f"SELECT {self._ITEM_COLUMNS} FROM items ORDER BY id").fetchall()
        return [self._record(r) for r in rows]

    def iter_items(
        self, ids: Iterable[str] | None = None, *, chunk: int = 500
    ) -> Iterator[ItemRecord]:
        """Item records one at a time, without holding them all (the end-of-run report).

        Without ``ids``: every item, in id order, streamed from one cursor. With ``ids``: the
        records of those ids in the order given (manifest order), skipping ids the ledger does
        not know; looked up ``chunk`` ids per query. Sees this ledger's uncommitted writes.
        Do not write to the ledger while iterating.
        """
        if ids is None:
            cursor = self._db.execute(f"SELECT {self._ITEM_COLUMNS} FROM items ORDER BY id")
            try:
                for row in cursor:
                    yield self._record(row)
            finally:
                cursor.close()
            return
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        wanted: list[str] = []
        it = iter(ids)
        while True:
            wanted.clear()
            for item_id in it:
                wanted.append(item_id)
                if len(wanted) >= chunk:
                    break
            if not wanted:
                return
            marks = ", ".join("?" * len(wanted))
            rows = self._db.execute(
                f"SELECT {self._ITEM_COLUMNS} FROM items WHERE id IN ({marks})", wanted
            ).fetchall()
            by_id = {row[0]: row for row in rows}
            del rows
            for item_id in wanted:
                row = by_id.get(item_id)
                if row is not None:
                    yield self._record(row)

    def paid_attempts(self) -> dict[str, int]:
        """Per item, the attempts that created a task or may have (sent, outcome unknown)."""
        rows = self._db.execute(
            "SELECT item_id, COUNT(*) FROM attempts "
            "WHERE task_id IS NOT NULL OR state = 'submitting' GROUP BY item_id"
        ).fetchall()
        return {str(item_id): int(n) for item_id, n in rows}

    def attempts(self, item_id: str) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT attempt, external_task_id, task_id, state, error FROM attempts "
            "WHERE item_id = ? ORDER BY attempt",
            (item_id,),
        ).fetchall()
        return [
            {
                "attempt": r[0],
                "external_task_id": r[1],
                "task_id": r[2],
                "state": r[3],
                "error": json.loads(r[4]) if r[4] else None,
            }
            for r in rows
        ]

    # -- writes --------------------------------------------------------------------------------
    # Each write is atomic (a SAVEPOINT) but NOT durable when it returns: it is committed with
    # the writes around it (see the module docstring). Callers that need a write on disk before
    # a side effect (the submit intent) must ``await ledger.durable()`` first. sync_items and
    # reopen (run start) commit at once.

    def sync_items(self, items: Iterable[tuple[str, str, int]]) -> None:
        """Add (id, kind, expected_assets) rows for items the ledger has not seen yet."""
        now = self._clock()
        with self._write() as db:
            db.executemany(
                "INSERT OR IGNORE INTO items (id, kind, state, expected_assets, updated_at) "
                "VALUES (?, ?, 'pending', ?, ?)",
                [(i, k, n, now) for i, k, n in items],
            )
        self.commit()

    def record_intent(
        self,
        item_id: str,
        attempt: int,
        external_task_id: str,
        fingerprint: str | None = None,
        seq: int | None = None,
    ) -> None:
        """Written BEFORE the create is sent; ``await durable()`` before sending it.
        ``fingerprint`` and ``seq``: the request and its attempt number (the external id is
        derived from them)."""
        now = self._clock()
        with self._write() as db:
            db.execute(
                "INSERT INTO attempts (item_id, attempt, external_task_id, state, created_at, "
                "updated_at, fingerprint, seq) VALUES (?, ?, ?, 'submitting', ?, ?, ?, ?) "
                "ON CONFLICT (item_id, attempt) DO UPDATE SET updated_at = excluded.updated_at",
                (item_id, attempt, external_task_id, now, now, fingerprint, seq),
            )
            db.execute(
                "UPDATE items SET state = 'submitting', attempt = ?, external_task_id = ?, "
                "task_id = NULL, assets = NULL, error = NULL, submitted_at = ?, "
                "finished_at = NULL, updated_at = ?, fingerprint = COALESCE(?, fingerprint) "
                "WHERE id = ?",
                (attempt, external_task_id, now, now, fingerprint, item_id),
            )

    def intent_time(self, external_task_id: str) -> float | None:
        """When a create with ``external_task_id`` was first recorded as about to be sent (a
        resend of the same attempt keeps the first time): no task with this id can be older."""
        row = self._db.execute(
            "SELECT created_at FROM attempts WHERE external_task_id = ?", (external_task_id,)
        ).fetchone()
        return float(row[0]) if row is not None else None

    def record_submitted(self, item_id: str, task_id: str) -> None:
        """Written right after the provider answered with a task id (or a lookup found it)."""
        now = self._clock()
        with self._write() as db:
            row = db.execute("SELECT attempt FROM items WHERE id = ?", (item_id,)).fetchone()
            db.execute(
                "UPDATE attempts SET task_id = ?, state = 'running', updated_at = ? "
                "WHERE item_id = ? AND attempt = ?",
                (task_id, now, item_id, row[0]),
            )
            db.execute(
                "UPDATE items SET state = 'running', task_id = ?, error = NULL, updated_at = ? "
                "WHERE id = ?",
                (task_id, now, item_id),
            )

    def record_not_created(self, item_id: str, error: ErrorInfo | None) -> None:
        """The create was answered with a definite rejection: no task exists for the attempt.

        The item goes back to pending; the attempt's external id is retired (never reused).
        """
        now = self._clock()
        err = self._json(error.to_dict()) if error else None
        with self._write() as db:
            row = db.execute("SELECT attempt FROM items WHERE id = ?", (item_id,)).fetchone()
            db.execute(
                "UPDATE attempts SET state = 'not_created', error = ?, updated_at = ? "
                "WHERE item_id = ? AND attempt = ?",
                (err, now, item_id, row[0]),
            )
            db.execute(
                "UPDATE items SET state = 'pending', error = ?, updated_at = ? WHERE id = ?",
                (err, now, item_id),
            )

    def record_unresolved(self, item_id: str, error: ErrorInfo) -> None:
        """A create's outcome could not be established: stays ``submitting`` for the next run."""
        now = self._clock()
        with self._write() as db:
            db.execute(
                "UPDATE items SET error = ?, updated_at = ? WHERE id = ?",
                (self._json(error.to_dict()), now, item_id),
            )

    def _json(self, value: Any) -> str:
        return to_text(self._scrub(value))

    def record_charge(self, item_id: str, units: float) -> None:
        """The units the provider says it charged for the current attempt's task."""
        now = self._clock()
        with self._write() as db:
            db.execute(
                "UPDATE attempts SET charged_units = ?, updated_at = ? WHERE item_id = ? AND "
                "attempt = (SELECT attempt FROM items WHERE id = ?)",
                (units, now, item_id, item_id),
            )

    def _end_attempt(
        self,
        item_id: str,
        state: ItemState,
        error: ErrorInfo | None,
        assets: list[AssetRecord] | None,
        download_error: ErrorInfo | None = None,
    ) -> None:
        now = self._clock()
        err = self._json(error.to_dict()) if error else None
        download_err = self._json(download_error.to_dict()) if download_error else None
        with self._write() as db:
            row = db.execute("SELECT attempt FROM items WHERE id = ?", (item_id,)).fetchone()
            db.execute(
                "UPDATE attempts SET state = ?, error = ?, updated_at = ? "
                "WHERE item_id = ? AND attempt = ?",
                (str(state), err, now, item_id, row[0]),
            )
            db.execute(
                "UPDATE items SET state = ?, error = ?, assets = ?, download_error = ?, "
                "finished_at = ?, updated_at = ? WHERE id = ?",
                (
                    str(state),
                    err,
                    self._json([a.to_json() for a in assets]) if assets is not None else None,
                    download_err,
                    now if state.terminal else None,
                    now,
                    item_id,
                ),
            )

    def record_assets(
        self, item_id: str, assets: list[AssetRecord], download_error: ErrorInfo | None
    ) -> None:
        """Asset records (with path, bytes, sha256 once a file is safely on disk) of a finished
        item, and why some are not on disk yet (None when all are)."""
        now = self._clock()
        err = self._json(download_error.to_dict()) if download_error else None
        with self._write() as db:
            db.execute(
                "UPDATE items SET assets = ?, download_error = ?, updated_at = ? WHERE id = ?",
                (self._json([a.to_json() for a in assets]), err, now, item_id),
            )

    def reopen(self, item_id: str, state: ItemState) -> None:
        """Put a finished item back in play (rerun of a retryable failure or a poll timeout)."""
        now = self._clock()
        with self._write() as db:
            db.execute(
                "UPDATE items SET state = ?, finished_at = NULL, updated_at = ? WHERE id = ?",
                (str(state), now, item_id),
            )
        self.commit()

    # -- runs -------------------------------------------------------------------------------
    # One row per run, so that the report can describe the batch over all of them. Written
    # by the CLI (the engine knows one run only), and committed at a run's start and end.

    def start_run(self, started_at: float) -> int:
        """Record that a run starts (committed at once); its number."""
        with self._write() as db:
            cursor = db.execute("INSERT INTO runs (started_at) VALUES (?)", (started_at,))
        self.commit()
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def record_run(
        self,
        run: int,
        *,
        requests: dict[str, int],
        retries: int,
        finished_at: float | None = None,
        exit_code: int | None = None,
        exit_reason: str | None = None,
    ) -> None:
        """What the run has sent so far (committed with the writes around it), or, with
        ``finished_at``, how it ended (committed at once)."""
        with self._write() as db:
            db.execute(
                "UPDATE runs SET requests = ?, retries = ?, finished_at = ?, exit_code = ?, "
                "exit_reason = ? WHERE run = ?",
                (to_text(requests), retries, finished_at, exit_code, exit_reason, run),
            )
        if finished_at is not None:
            self.commit()

    def runs(self) -> list[RunRecord]:
        """Every run of the batch, oldest first."""
        rows = self._db.execute(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY run").fetchall()
        return [run_record(row) for row in rows]

    @staticmethod
    def read_runs(path: Path) -> list[RunRecord]:
        """Every run recorded in the state file at ``path``, read-only and without the run
        lock (``report`` works while a run is in progress)."""
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                db.execute("PRAGMA busy_timeout=5000")
                rows = db.execute(f"SELECT {RUN_COLUMNS} FROM runs ORDER BY run").fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read the state file {path}: {exc}") from None
        return [run_record(row) for row in rows]
