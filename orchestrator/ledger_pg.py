"""The ledger in PostgreSQL: the same records, states and durability contract as the SQLite
ledger (ledger.py), kept in a database that several hosts reach.

How it writes. The engine reads and writes its items synchronously, many times a second; a round
trip to a database for each would hold up the event loop. So this ledger keeps the batch's rows
in memory (loaded when it opens) and writes them back in groups: each write changes the rows in
memory at once and marks them changed; a *flush* sends every changed row (its whole state, an
upsert) in one transaction. Flushes happen where the SQLite ledger commits: ``await durable()``
(before a create is sent: the intent is in the database before the request leaves; intents of
one event-loop turn share a flush), ``commit()`` (run start and end), and the engine's periodic
``durable()``. A crash therefore loses the writes since the last flush, a suffix, exactly as with
SQLite. Inside the event loop (``async with ledger.attached():``) flushes go through psycopg's
async driver and a connection pool, so the loop never waits on the network; outside it (the CLI
before and after the run, ``status``) through one plain connection.

Who writes. One process writes a batch at a time: it holds a session advisory lock on the batch
while the ledger is open (a second run is refused, as the SQLite ledger's file lock refuses it),
and takes the batch's ``owner_token`` when it opens; every flush checks that the token is still
its own, in the flush's transaction (``FOR SHARE``), so a process that lost the batch (its lock's
connection dropped and another run took over) writes nothing more: the flush raises and the run
stops. Should a flush fail for good (the database unreachable past a few tries), the ledger
refuses all further use (``LedgerError``) rather than report a lost intent as durable.

Nothing here logs or prints the connection URL: it may hold a password (see :func:`redact_dsn`).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import astuple
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import psycopg
import psycopg_pool

from orchestrator.errors import ErrorInfo
from orchestrator.identity import external_task_id
from orchestrator.ledger import (
    LedgerError,
    LedgerLocked,
    LedgerNotStarted,
    LedgerTakenOver,
    LedgerUnavailable,
)
from orchestrator.ledger_api import (
    RUN_COLUMNS,
    AssetRecord,
    ItemRecord,
    ItemState,
    RunRecord,
    Verdicts,
    run_record,
    to_text,
)
from orchestrator.ledger_pg_rows import (
    ATTEMPT_COLUMNS,
    FENCE,
    INSERT_RUN,
    ITEM_COLUMNS,
    UPDATE_RUN,
    UPSERT_ATTEMPT,
    UPSERT_HASH,
    UPSERT_ITEM,
    AttemptRow,
    Flush,
    ItemRow,
    record_of,
)
from orchestrator.ledger_pg_schema import (
    CONNECT_TIMEOUT,
    connect,
    ensure_schema,
    is_postgres_url,
    reason,
    redact_dsn,
)

if TYPE_CHECKING:
    from orchestrator.state_migrate import Exported

__all__ = ["PgLedger", "is_postgres_url", "redact_dsn"]

#: Why a ledger is broken when another run took its batch over.
_TAKEN_OVER = "another run took the batch over"

#: Tries of a flush before the ledger gives up (the database restarting, a dropped connection);
#: a flush only upserts whole rows, so sending one again is harmless.
FLUSH_TRIES = 3
_FLUSH_BACKOFF = (0.2, 1.0)
#: The server's TCP keepalives on the connection that holds the batch (idle, interval, count:
#: a silent peer is dropped after about 30 + 3 x 10 seconds).
KEEPALIVES = (("tcp_keepalives_idle", 30), ("tcp_keepalives_interval", 10),
              ("tcp_keepalives_count", 3))


class PgLedger(Verdicts):
    """The batch ``batch``'s ledger in the PostgreSQL database at ``url`` (created on first
    use). Same methods and contract as :class:`orchestrator.ledger.Ledger`."""

    def __init__(
        self,
        url: str,
        batch: str,
        *,
        clock: Callable[[], float] = time.time,
        scrub: Callable[[Any], Any] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url
        #: how messages name this ledger (never with the password)
        self.path = redact_dsn(url)
        self.batch = batch
        self._clock = clock
        self._scrub: Callable[[Any], Any] = scrub if scrub is not None else (lambda v: v)
        self._sleep = sleep
        #: flushes that ran (transactions committed); for tests and benchmarks
        self.commits = 0
        self._write_gen = 0
        self._committed_gen = 0
        self._broken: str | None = None
        self._items: dict[str, ItemRow] = {}
        self._attempts: dict[str, list[AttemptRow]] = {}
        self._by_external: dict[str, AttemptRow] = {}
        self._dirty_items: set[str] = set()
        self._dirty_attempts: set[tuple[str, int]] = set()
        self._other: list[tuple[str, tuple[Any, ...]]] = []
        self._hashes: dict[str, tuple[tuple[int, int], str]] | None = None
        self._pool: psycopg_pool.AsyncConnectionPool | None = None
        self._flush_lock: anyio.Lock | None = None
        self._flushing = False
        self._conn = connect(url)
        try:
            self._open()
        except BaseException:
            self._conn.close()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _open(self) -> None:
        conn = self._conn
        try:
            # This connection holds the batch: a host that vanishes without closing it (power
            # lost, network cut) must free the batch in about a minute, not after the server's
            # default two hours of TCP silence.
            for setting, seconds in KEEPALIVES:
                conn.execute(f"SET {setting} = {seconds}")
            ensure_schema(conn, self.path)
            row = conn.execute(
                "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
                ("orchestrator-batch:" + self.batch,),
            ).fetchone()
            if row is None or not row[0]:
                raise LedgerLocked(
                    f"another run of batch '{self.batch}' is in progress: it holds the batch in "
                    f"the state database {self.path}. Wait for it to finish; two runs of one "
                    "batch at once are refused so that nothing is submitted twice."
                )
            with conn.transaction():
                inserted = conn.execute(
                    "INSERT INTO batches (batch, ledger_id, created_at) VALUES (%s, %s, %s) "
                    "ON CONFLICT (batch) DO NOTHING RETURNING ledger_id",
                    (self.batch, secrets.token_hex(8), self._clock()),
                ).fetchone()
                #: True when this run created the ledger (it knew nothing before)
                self.created = inserted is not None
                owner = f"{socket.gethostname()}:{os.getpid()}"
                got = conn.execute(
                    "UPDATE batches SET owner_token = owner_token + 1, owner = %s "
                    "WHERE batch = %s RETURNING owner_token, ledger_id",
                    (owner, self.batch),
                ).fetchone()
            assert got is not None
            self._token = int(got[0])
            #: a random id naming this ledger (the output folder's identity names it)
            self.ledger_id = str(got[1])
            self._load()
        except psycopg.Error as exc:
            raise LedgerError(
                f"cannot use the state database {self.path}: {reason(exc)}. Nothing was sent."
            ) from None

    def _load(self) -> None:
        items = self._conn.execute(
            f"SELECT {', '.join(ITEM_COLUMNS)} FROM items WHERE batch = %s", (self.batch,)
        )
        self._items = {row[0]: ItemRow(*row) for row in items}
        attempts = self._conn.execute(
            f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM attempts WHERE batch = %s "
            "ORDER BY item_id, attempt",
            (self.batch,),
        )
        self._attempts = {}
        self._by_external = {}
        for row in attempts:
            attempt = AttemptRow(*row)
            self._attempts.setdefault(attempt.item_id, []).append(attempt)
            self._by_external[attempt.external_task_id] = attempt

    #: What losing the batch means, for the log and the console.
    lock_lost_reason = (
        "the connection holding the batch in the state database dropped, so another run may "
        "take it over"
    )

    def _connection(self) -> psycopg.Connection[Any]:
        """The plain connection, opened again if the server dropped it: the batch's lock went
        with it (``lock_still_held`` says so and the run stops), but what the run did is still
        flushed and reported, each flush fenced by the owner token (another run that took the
        batch over has replaced it: then nothing is written)."""
        if self._conn.closed or self._conn.broken:
            self._conn = connect(self.url)
        return self._conn

    def lock_still_held(self) -> bool:
        """Whether the batch's lock is still this process's (its connection is alive)."""
        if self._conn.closed or self._conn.broken:
            return False
        try:
            self._conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def close(self) -> None:
        """Flush what is pending, then close (which releases the batch's lock)."""
        try:
            if self._broken is None:
                self.commit()
        finally:
            self._conn.close()

    def __enter__(self) -> PgLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @asynccontextmanager
    async def attached(self) -> AsyncIterator[PgLedger]:
        """Flush through an async connection pool while the event loop runs; what is pending
        is flushed when it ends."""
        pool = psycopg_pool.AsyncConnectionPool(
            self.url, min_size=1, max_size=2, open=False,
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT},
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except psycopg_pool.PoolTimeout:
            raise LedgerError(
                f"cannot reach the state database {self.path} from the run; nothing was sent."
            ) from None
        self._pool, self._flush_lock = pool, anyio.Lock()
        try:
            yield self
            if self._broken is None:
                await self.durable()
        finally:
            self._pool = self._flush_lock = None
            with anyio.CancelScope(shield=True):
                await pool.close()

    # -- flushing --------------------------------------------------------------------------

    @property
    def uncommitted(self) -> int:
        """Writes made and not yet flushed (lost by a crash now)."""
        return self._write_gen - self._committed_gen

    def _wrote(self, item_id: str | None = None, attempt: AttemptRow | None = None) -> None:
        self._check_usable()
        if item_id is not None:
            self._dirty_items.add(item_id)
        if attempt is not None:
            self._dirty_attempts.add((attempt.item_id, attempt.attempt))
        self._write_gen += 1

    def _take(self) -> Flush | None:
        """The pending writes as statements, the changed rows as they are now."""
        if self._committed_gen == self._write_gen:
            return None
        b = self.batch
        groups: list[tuple[str, list[tuple[Any, ...]]]] = []
        if self._dirty_items:
            rows = [(b, *astuple(self._items[i])) for i in sorted(self._dirty_items)]
            groups.append((UPSERT_ITEM, rows))
        if self._dirty_attempts:
            attempts = []
            for item_id, number in sorted(self._dirty_attempts):
                found = next(a for a in self._attempts[item_id] if a.attempt == number)
                attempts.append((b, *astuple(found)))
            groups.append((UPSERT_ATTEMPT, attempts))
        for sql, params in self._other:
            if groups and groups[-1][0] == sql:
                groups[-1][1].append(params)
            else:
                groups.append((sql, [params]))
        taken = Flush(groups, self._write_gen, self._dirty_items, self._dirty_attempts)
        self._dirty_items, self._dirty_attempts, self._other = set(), set(), []
        return taken

    def _restore(self, taken: Flush) -> None:
        """A flush failed: its rows are pending again (their state now, which is newer)."""
        self._dirty_items |= taken.items
        self._dirty_attempts |= taken.attempts
        others = [(sql, p) for sql, rows in taken.groups
                  if sql not in (UPSERT_ITEM, UPSERT_ATTEMPT) for p in rows]
        self._other = others + self._other

    def _fenced(self, token: int | None) -> None:
        if token != self._token:
            self._broken = _TAKEN_OVER
            raise LedgerTakenOver(
                f"batch '{self.batch}' was taken over by another run in the state database "
                f"{self.path} (this run's lock was lost): this run stops and writes nothing "
                "more; the other run carries on from what is in the database."
            )

    def commit(self) -> None:
        """Flush every pending write now, through the plain connection (outside the event
        loop, or at run start before anything else writes)."""
        self._check_usable()
        if self._flushing:
            raise RuntimeError("commit() while a flush is in flight: await durable() instead")
        taken = self._take()
        if taken is None:
            return
        for tries in range(1, FLUSH_TRIES + 1):
            try:
                conn = self._connection()
                with conn.transaction():
                    row = conn.execute(FENCE, (self.batch,)).fetchone()
                    self._fenced(None if row is None else int(row[0]))
                    with conn.cursor() as cursor:
                        for sql, rows in taken.groups:
                            cursor.executemany(sql, rows)
                break
            except (psycopg.Error, LedgerUnavailable) as exc:
                if tries == FLUSH_TRIES:
                    self._restore(taken)
                    self._broken = f"flush failed: {reason(exc)}"
                    self._check_usable()
                self._sleep(_FLUSH_BACKOFF[min(tries, len(_FLUSH_BACKOFF)) - 1])
        self.commits += 1
        self._committed_gen = max(self._committed_gen, taken.gen)

    async def durable(self) -> None:
        """Return once every write made before the call is in the database. Calls made in the
        same event-loop turn share one flush (see the SQLite ledger's)."""
        target = self._write_gen
        await anyio.lowlevel.checkpoint()
        if self._pool is None or self._flush_lock is None:
            if self._committed_gen < target:
                self.commit()
            self._check_usable()
            return
        async with self._flush_lock:
            if self._committed_gen < target:
                await self._aflush(self._pool)
        self._check_usable()

    async def _aflush(self, pool: psycopg_pool.AsyncConnectionPool) -> None:
        self._check_usable()
        taken = self._take()
        if taken is None:
            return
        self._flushing = True
        try:
            for tries in range(1, FLUSH_TRIES + 1):
                try:
                    # Shielded: a flush cut off half-way leaves its outcome unknown.
                    with anyio.CancelScope(shield=True):
                        await self._send(pool, taken)
                    break
                except (psycopg.Error, psycopg_pool.PoolTimeout) as exc:
                    if tries == FLUSH_TRIES:
                        self._restore(taken)
                        self._broken = f"flush failed: {reason(exc)}"
                        self._check_usable()
                    await anyio.sleep(_FLUSH_BACKOFF[min(tries, len(_FLUSH_BACKOFF)) - 1])
        finally:
            self._flushing = False
        self.commits += 1
        self._committed_gen = max(self._committed_gen, taken.gen)

    async def _send(self, pool: psycopg_pool.AsyncConnectionPool, taken: Flush) -> None:
        async with pool.connection(timeout=CONNECT_TIMEOUT) as conn, conn.transaction():
            cursor = await conn.execute(FENCE, (self.batch,))
            row = await cursor.fetchone()
            self._fenced(None if row is None else int(row[0]))
            async with conn.cursor() as many:
                for sql, rows in taken.groups:
                    await many.executemany(sql, rows)

    def _check_usable(self) -> None:
        if self._broken is not None:
            error = LedgerTakenOver if self._broken == _TAKEN_OVER else LedgerUnavailable
            raise error(
                f"the state database {self.path} did not take writes that were not flushed yet "
                f"({self._broken}); stop this run: a new run reconciles from what is in the "
                "database."
            )

    # -- reading without taking the batch (status) -------------------------------------------

    @classmethod
    def read_only(cls, url: str, batch: str) -> tuple[str, list[ItemRecord]]:
        """(batch name, every item record) without taking the batch: ``status`` works from
        any host while runs are in progress. LedgerError when the batch is not there."""
        conn = connect(url)
        try:
            try:
                exists = conn.execute(
                    "SELECT to_regclass('batches') IS NOT NULL").fetchone()
                known = exists is not None and exists[0] and conn.execute(
                    "SELECT 1 FROM batches WHERE batch = %s", (batch,)).fetchone()
                if not known:
                    raise LedgerNotStarted(
                        f"no batch '{batch}' in the state database {redact_dsn(url)}: the batch "
                        "has not been run with this --state yet"
                    )
                items = conn.execute(
                    f"SELECT {', '.join(ITEM_COLUMNS)} FROM items WHERE batch = %s "
                    "ORDER BY id", (batch,)).fetchall()
                attempts: dict[str, list[AttemptRow]] = {}
                for row in conn.execute(
                    f"SELECT {', '.join(ATTEMPT_COLUMNS)} FROM attempts WHERE batch = %s",
                    (batch,),
                ):
                    attempt = AttemptRow(*row)
                    attempts.setdefault(attempt.item_id, []).append(attempt)
            except psycopg.Error as exc:
                raise LedgerError(
                    f"cannot read the state database {redact_dsn(url)}: {reason(exc)}"
                ) from None
        finally:
            conn.close()
        return batch, [record_of(ItemRow(*row), attempts.get(row[0], [])) for row in items]

    # -- identity ---------------------------------------------------------------------------

    def external_task_id(self, item_id: str, seq: int, fingerprint: str = "") -> str:
        return external_task_id(self.batch, item_id, fingerprint, seq)

    def next_seq(self, item_id: str, fingerprint: str) -> int:
        seqs = [a.seq or 0 for a in self._attempts.get(item_id, ())
                if a.fingerprint == fingerprint]
        return max(seqs, default=0) + 1

    def paid_for(self, item_id: str, fingerprint: str | None) -> int:
        return sum(
            1 for a in self._attempts.get(item_id, ())
            if a.task_id is not None
            and (fingerprint is None or a.fingerprint in (fingerprint, None))
        )

    def file_hashes(self) -> dict[str, tuple[tuple[int, int], str]]:
        if self._hashes is None:
            rows = self._connection().execute(
                "SELECT path, size, mtime_ns, sha256 FROM file_hashes WHERE batch = %s",
                (self.batch,),
            )
            self._hashes = {
                str(p): ((int(size), int(mtime)), str(sha)) for p, size, mtime, sha in rows
            }
        return dict(self._hashes)

    def remember_file_hashes(self, learnt: dict[str, tuple[tuple[int, int], str]]) -> None:
        if not learnt:
            return
        known = self.file_hashes()
        for path, ((size, mtime), sha) in learnt.items():
            known[path] = ((size, mtime), sha)
            self._other.append((UPSERT_HASH, (self.batch, path, size, mtime, sha)))
        self._hashes = known
        self._wrote()

    # -- reads ----------------------------------------------------------------------------

    def get(self, item_id: str) -> ItemRecord:
        row = self._items.get(item_id)
        if row is None:
            raise KeyError(item_id)
        return record_of(row, self._attempts.get(item_id, []))

    def all(self) -> list[ItemRecord]:
        return [self.get(i) for i in sorted(self._items)]

    def iter_items(
        self, ids: Iterable[str] | None = None, *, chunk: int = 500
    ) -> Iterator[ItemRecord]:
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        for item_id in sorted(self._items) if ids is None else ids:
            if item_id in self._items:
                yield self.get(item_id)

    def paid_attempts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for item_id, attempts in self._attempts.items():
            n = sum(1 for a in attempts if a.task_id is not None or a.state == "submitting")
            if n:
                found[item_id] = n
        return found

    def attempts(self, item_id: str) -> list[dict[str, Any]]:
        return [
            {
                "attempt": a.attempt,
                "external_task_id": a.external_task_id,
                "task_id": a.task_id,
                "state": a.state,
                "error": json.loads(a.error) if a.error else None,
            }
            for a in sorted(self._attempts.get(item_id, ()), key=lambda a: a.attempt)
        ]

    def intent_time(self, external_task_id: str) -> float | None:
        found = self._by_external.get(external_task_id)
        return found.created_at if found is not None else None

    # -- writes -----------------------------------------------------------------------------

    def _json(self, value: Any) -> str:
        return to_text(self._scrub(value))

    def _row(self, item_id: str) -> ItemRow:
        self._check_usable()
        return self._items[item_id]

    def _current(self, row: ItemRow) -> AttemptRow:
        return next(a for a in self._attempts[row.id] if a.attempt == row.attempt)

    def sync_items(self, items: Iterable[tuple[str, str, int]]) -> None:
        now = self._clock()
        for item_id, kind, expected in items:
            if item_id not in self._items:
                self._items[item_id] = ItemRow(item_id, kind, "pending", 0, None, None, expected,
                                             None, None, None, None, None, now, None)
                self._wrote(item_id)
        self.commit()

    def record_intent(
        self,
        item_id: str,
        attempt: int,
        external_task_id: str,
        fingerprint: str | None = None,
        seq: int | None = None,
    ) -> None:
        now = self._clock()
        row = self._row(item_id)
        attempts = self._attempts.setdefault(item_id, [])
        found = next((a for a in attempts if a.attempt == attempt), None)
        if found is None:
            other = self._by_external.get(external_task_id)
            if other is not None:
                raise LedgerError(f"external task id {external_task_id} is already used by "
                                  f"item {other.item_id} attempt {other.attempt}")
            found = AttemptRow(item_id, attempt, external_task_id, None, "submitting", None,
                             now, now, None, fingerprint, seq)
            attempts.append(found)
            self._by_external[external_task_id] = found
        else:
            found.updated_at = now
        row.state, row.attempt, row.external_task_id = "submitting", attempt, external_task_id
        row.task_id = row.assets = row.error = None
        row.submitted_at, row.finished_at, row.updated_at = now, None, now
        if fingerprint is not None:
            row.fingerprint = fingerprint
        self._wrote(item_id, found)

    def record_submitted(self, item_id: str, task_id: str) -> None:
        now = self._clock()
        row = self._row(item_id)
        attempt = self._current(row)
        attempt.task_id, attempt.state, attempt.updated_at = task_id, "running", now
        row.state, row.task_id, row.error, row.updated_at = "running", task_id, None, now
        self._wrote(item_id, attempt)

    def record_not_created(self, item_id: str, error: ErrorInfo | None) -> None:
        now = self._clock()
        err = self._json(error.to_dict()) if error else None
        row = self._row(item_id)
        attempt = self._current(row)
        attempt.state, attempt.error, attempt.updated_at = "not_created", err, now
        row.state, row.error, row.updated_at = "pending", err, now
        self._wrote(item_id, attempt)

    def record_unresolved(self, item_id: str, error: ErrorInfo) -> None:
        row = self._row(item_id)
        row.error, row.updated_at = self._json(error.to_dict()), self._clock()
        self._wrote(item_id)

    def record_charge(self, item_id: str, units: float) -> None:
        row = self._row(item_id)
        found = next((a for a in self._attempts.get(item_id, ()) if a.attempt == row.attempt),
                     None)
        if found is None:
            return  # as the SQLite UPDATE: no attempt, nothing charged to record
        found.charged_units, found.updated_at = units, self._clock()
        self._wrote(None, found)

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
        row = self._row(item_id)
        attempt = next((a for a in self._attempts.get(item_id, ()) if a.attempt == row.attempt),
                       None)
        if attempt is not None:
            attempt.state, attempt.error, attempt.updated_at = str(state), err, now
        row.state, row.error = str(state), err
        row.assets = self._json([a.to_json() for a in assets]) if assets is not None else None
        row.download_error = self._json(download_error.to_dict()) if download_error else None
        row.finished_at = now if state.terminal else None
        row.updated_at = now
        self._wrote(item_id, attempt)

    def record_assets(
        self, item_id: str, assets: list[AssetRecord], download_error: ErrorInfo | None
    ) -> None:
        row = self._row(item_id)
        row.assets = self._json([a.to_json() for a in assets])
        row.download_error = self._json(download_error.to_dict()) if download_error else None
        row.updated_at = self._clock()
        self._wrote(item_id)

    def reopen(self, item_id: str, state: ItemState) -> None:
        row = self._row(item_id)
        row.state, row.finished_at, row.updated_at = str(state), None, self._clock()
        self._wrote(item_id)
        self.commit()

    # -- a whole ledger moved in (state migrate) ------------------------------------------------

    def import_whole(self, exported: Exported) -> None:
        """Take over a whole ledger of this batch (its rows and its id) in one transaction;
        refused when this database already knows the batch's items or runs."""
        if exported.batch != self.batch:
            raise ValueError(f"a ledger of batch {exported.batch!r}, not {self.batch!r}")
        self.commit()
        b = self.batch
        try:
            conn = self._connection()
            with conn.transaction():
                row = conn.execute(FENCE, (b,)).fetchone()
                self._fenced(None if row is None else int(row[0]))
                used = conn.execute(
                    "SELECT (SELECT COUNT(*) FROM items WHERE batch = %s) + "
                    "(SELECT COUNT(*) FROM runs WHERE batch = %s)", (b, b)).fetchone()
                if used is not None and used[0]:
                    raise LedgerError(
                        f"the state database {self.path} already has a ledger of batch "
                        f"'{b}': nothing was moved (the two are never merged)"
                    )
                conn.execute(
                    "UPDATE batches SET ledger_id = %s, created_at = %s WHERE batch = %s",
                    (exported.ledger_id, exported.created_at, b))
                with conn.cursor() as cursor:
                    for sql, rows in (
                        (UPSERT_ITEM, exported.items),
                        (UPSERT_ATTEMPT, exported.attempts),
                        (UPSERT_HASH, exported.file_hashes),
                        (INSERT_RUN, exported.runs),
                    ):
                        if rows:
                            cursor.executemany(sql, [(b, *r) for r in rows])
        except psycopg.Error as exc:
            raise LedgerError(
                f"cannot move the ledger into the state database {self.path}: {reason(exc)}; "
                "nothing was moved"
            ) from None
        self.ledger_id = exported.ledger_id
        self.created = False
        self._hashes = None
        self._load()

    # -- runs -------------------------------------------------------------------------------

    def start_run(self, started_at: float) -> int:
        """Record that a run starts (in the database at once); its number."""
        self.commit()
        try:
            conn = self._connection()
            with conn.transaction():
                row = conn.execute(FENCE, (self.batch,)).fetchone()
                self._fenced(None if row is None else int(row[0]))
                got = conn.execute(
                    "INSERT INTO runs (batch, run, started_at) SELECT %s, "
                    "COALESCE(MAX(run), 0) + 1, %s FROM runs WHERE batch = %s RETURNING run",
                    (self.batch, started_at, self.batch),
                ).fetchone()
        except psycopg.Error as exc:
            raise LedgerError(
                f"cannot record the run in the state database {self.path}: {reason(exc)}"
            ) from None
        assert got is not None
        return int(got[0])

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
        self._other.append((UPDATE_RUN, (to_text(requests), retries, finished_at, exit_code,
                                          exit_reason, self.batch, run)))
        self._wrote()
        if finished_at is not None and not self._flushing and self._pool is None:
            self.commit()

    def runs(self) -> list[RunRecord]:
        if not self._flushing and self._pool is None:
            self.commit()
        rows = self._connection().execute(
            f"SELECT {RUN_COLUMNS} FROM runs WHERE batch = %s ORDER BY run", (self.batch,)
        ).fetchall()
        return [run_record(row) for row in rows]

    @staticmethod
    def read_runs(url: str, batch: str) -> list[RunRecord]:
        """Every run of ``batch`` in the database, without taking the batch."""
        conn = connect(url)
        try:
            rows = conn.execute(
                f"SELECT {RUN_COLUMNS} FROM runs WHERE batch = %s ORDER BY run", (batch,)
            ).fetchall()
        except psycopg.Error as exc:
            raise LedgerError(
                f"cannot read the state database {redact_dsn(url)}: {reason(exc)}"
            ) from None
        finally:
            conn.close()
        return [run_record(row) for row in rows]
