"""The ledger's PostgreSQL schema and connections: one database holds any number of batches
(every row names its batch), created on first use, at a version this orchestrator reads and an
older one it brings up to date; a newer one is refused (a newer orchestrator wrote it).

The tables mirror the SQLite ledger's (ledger_schema.py) column for column, so that a ledger
moves between the two without a field lost; ``batches`` adds who may write the batch now (see
ledger_pg.py).
"""

from __future__ import annotations

from typing import Any

import psycopg

from orchestrator.ledger import LedgerError, LedgerUnavailable
from orchestrator.ledger_pg_leases import LEASE_SCHEMA

#: Seconds a connection may take to open.
CONNECT_TIMEOUT = 10

#: The version of the tables below; kept in ``orchestrator_schema``.
PG_SCHEMA_VERSION = 2

#: Every schema statement; each is idempotent, run under a transaction-scoped advisory lock so
#: that workers starting at once create it once.
PG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS orchestrator_schema (
        version integer NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS batches (
        batch text PRIMARY KEY,
        ledger_id text NOT NULL,
        created_at double precision NOT NULL,
        -- the token of the worker allowed to write the batch: every flush checks it
        owner_token bigint NOT NULL DEFAULT 0,
        owner text
    )""",
    """CREATE TABLE IF NOT EXISTS items (
        batch text NOT NULL REFERENCES batches (batch) ON DELETE CASCADE,
        id text NOT NULL,
        kind text NOT NULL,
        state text NOT NULL,
        attempt integer NOT NULL DEFAULT 0,
        external_task_id text,
        task_id text,
        expected_assets integer NOT NULL,
        assets text,
        error text,
        download_error text,
        submitted_at double precision,
        finished_at double precision,
        updated_at double precision NOT NULL,
        fingerprint text,
        PRIMARY KEY (batch, id)
    )""",
    """CREATE TABLE IF NOT EXISTS attempts (
        batch text NOT NULL REFERENCES batches (batch) ON DELETE CASCADE,
        item_id text NOT NULL,
        attempt integer NOT NULL,
        external_task_id text NOT NULL,
        task_id text,
        state text NOT NULL,
        error text,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        charged_units double precision,
        fingerprint text,
        seq integer,
        PRIMARY KEY (batch, item_id, attempt),
        UNIQUE (batch, external_task_id)
    )""",
    """CREATE TABLE IF NOT EXISTS file_hashes (
        batch text NOT NULL REFERENCES batches (batch) ON DELETE CASCADE,
        path text NOT NULL,
        size bigint NOT NULL,
        mtime_ns bigint NOT NULL,
        sha256 text NOT NULL,
        PRIMARY KEY (batch, path)
    )""",
    """CREATE TABLE IF NOT EXISTS runs (
        batch text NOT NULL REFERENCES batches (batch) ON DELETE CASCADE,
        run integer NOT NULL,
        started_at double precision NOT NULL,
        finished_at double precision,
        exit_code integer,
        exit_reason text,
        requests text NOT NULL DEFAULT '{}',
        retries integer NOT NULL DEFAULT 0,
        PRIMARY KEY (batch, run)
    )""",
    *LEASE_SCHEMA,
)

#: What brings a database of an older schema version to this one, step by step (the statements
#: are idempotent and also part of PG_SCHEMA). 1 -> 2: item leases, the account's slots and rate.
PG_MIGRATIONS: dict[int, tuple[str, ...]] = {1: LEASE_SCHEMA}

#: Serialises schema creation between processes (any constant: ours).
SCHEMA_LOCK = 0x6B6C696E67  # "kling"


def is_postgres_url(value: object) -> bool:
    text = str(value)
    return text.startswith(("postgresql://", "postgres://"))


def redact_dsn(url: str) -> str:
    """``url`` without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://<unparseable URL>"
    user = info.get("user")
    host = info.get("host") or "localhost"
    if isinstance(host, str) and host.startswith("/"):
        host = f"(socket {host})"
    port = f":{info['port']}" if info.get("port") else ""
    who = f"{user}@" if user else ""
    return f"postgresql://{who}{host}{port}/{info.get('dbname') or ''}"


def connect(url: str) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT)
    except psycopg.Error as exc:
        raise LedgerUnavailable(
            f"cannot reach the state database {redact_dsn(url)}: {reason(exc)}; check --state "
            "(or ORCHESTRATOR_STATE) and that the server is up. Nothing was sent."
        ) from None


def reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def ensure_schema(conn: psycopg.Connection[Any], where: str) -> None:
    """The tables at this version: created on first use, an older version brought up to date
    (both under a transaction-scoped lock, so workers starting at once do it once); a newer
    one refused before anything is changed. A database already at this version is only read
    (no DDL, no table lock)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        exists = conn.execute("SELECT to_regclass('orchestrator_schema') IS NOT NULL").fetchone()
        row = None
        if exists is not None and exists[0]:
            row = conn.execute("SELECT version FROM orchestrator_schema").fetchone()
        version = int(row[0]) if row is not None else None
        if version is not None and version > PG_SCHEMA_VERSION:
            raise LedgerError(
                f"the state database {where} has ledger schema version {version}, newer than "
                f"this orchestrator's ({PG_SCHEMA_VERSION}): a newer version wrote it. Upgrade "
                "the orchestrator on this host; nothing was changed or sent."
            )
        if version == PG_SCHEMA_VERSION:
            return
        for statement in PG_SCHEMA:
            conn.execute(statement)
        if version is None:
            conn.execute("INSERT INTO orchestrator_schema (version) VALUES (%s)",
                         (PG_SCHEMA_VERSION,))
            return
        while version in PG_MIGRATIONS:
            for statement in PG_MIGRATIONS[version]:
                conn.execute(statement)
            version += 1
            conn.execute("UPDATE orchestrator_schema SET version = %s", (version,))


