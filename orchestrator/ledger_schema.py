"""The ledger's SQLite schema, the version it is at, and the migrations that bring a ledger an
older version wrote up to it."""

from __future__ import annotations

import re
import sqlite3

SCHEMA_VERSION = 3
#: What brings a ledger of an older version to the current one, step by step (each runs in the
#: transaction that also records the new version). 1 -> 2: the units a task was charged.
#: 2 -> 3: each attempt's request fingerprint and its number among that request's attempts
#: (external ids are derived from both), and the item's current fingerprint.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("ALTER TABLE attempts ADD COLUMN charged_units REAL",),
    2: (
        "ALTER TABLE attempts ADD COLUMN fingerprint TEXT",
        "ALTER TABLE attempts ADD COLUMN seq INTEGER",
        "ALTER TABLE items ADD COLUMN fingerprint TEXT",
    ),
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    external_task_id TEXT,
    task_id TEXT,
    expected_assets INTEGER NOT NULL,
    assets TEXT,
    error TEXT,
    download_error TEXT,
    submitted_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL,
    fingerprint TEXT
);
CREATE TABLE IF NOT EXISTS attempts (
    item_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    external_task_id TEXT NOT NULL UNIQUE,
    task_id TEXT,
    state TEXT NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    charged_units REAL,
    fingerprint TEXT,
    seq INTEGER,
    PRIMARY KEY (item_id, attempt)
);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    exit_code INTEGER,
    exit_reason TEXT,
    requests TEXT NOT NULL DEFAULT '{}',
    retries INTEGER NOT NULL DEFAULT 0
);
"""
#: Our schema objects, read from SCHEMA (a table added there is known at once); anything else
#: in a file, but SQLite's own ``sqlite_*``, means it is not a ledger.
OWN_TABLES = tuple(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", SCHEMA))
OWN_OBJECTS = frozenset(
    re.findall(r"CREATE (?:UNIQUE )?(?:TABLE|INDEX|VIEW|TRIGGER) IF NOT EXISTS (\w+)", SCHEMA)
)
#: The meta rows that say whose ledger it is; written in one transaction when it is created.
#: Meta keys a ledger has: its batch, and its id (salt: what versions before schema 3 wrote).
IDENTITY_KEYS = (("batch",), ("ledger_id", "salt"))


def migrate(db: sqlite3.Connection, rows: dict[str, str]) -> None:
    """Bring a ledger an older version wrote up to this one (in the open transaction)."""
    try:
        version = int(rows.get("schema_version", "0"))
    except ValueError:
        return  # refused below, with the version it claims
    while version in MIGRATIONS:
        for statement in MIGRATIONS[version]:
            db.execute(statement)
        version += 1
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
        rows["schema_version"] = str(version)
