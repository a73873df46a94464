"""The PostgreSQL ledger's rows as it keeps them in memory, and the statements that write them
back: every flush upserts whole rows (the row's state when the flush starts), so sending one
again is harmless."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from typing import Any

from orchestrator.errors import ErrorInfo
from orchestrator.ledger_api import ItemRecord, ItemState, assets_from_text

__all__ = [
    "ATTEMPT_COLUMNS",
    "FENCE",
    "INSERT_RUN",
    "ITEM_COLUMNS",
    "UPDATE_RUN",
    "UPSERT_ATTEMPT",
    "UPSERT_HASH",
    "UPSERT_ITEM",
    "AttemptRow",
    "Flush",
    "ItemRow",
    "record_of",
]


@dataclass
class ItemRow:
    id: str
    kind: str
    state: str
    attempt: int
    external_task_id: str | None
    task_id: str | None
    expected_assets: int
    assets: str | None
    error: str | None
    download_error: str | None
    submitted_at: float | None
    finished_at: float | None
    updated_at: float
    fingerprint: str | None


@dataclass
class AttemptRow:
    item_id: str
    attempt: int
    external_task_id: str
    task_id: str | None
    state: str
    error: str | None
    created_at: float
    updated_at: float
    charged_units: float | None
    fingerprint: str | None
    seq: int | None


def upsert(table: str, columns: list[str], key: tuple[str, ...]) -> str:
    names = ", ".join(["batch", *columns])
    marks = ", ".join(["%s"] * (len(columns) + 1))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in columns if c not in key)
    conflict = ", ".join(["batch", *key])
    return (f"INSERT INTO {table} ({names}) VALUES ({marks}) "
            f"ON CONFLICT ({conflict}) DO UPDATE SET {updates}")


ITEM_COLUMNS = [f.name for f in fields(ItemRow)]
ATTEMPT_COLUMNS = [f.name for f in fields(AttemptRow)]
UPSERT_ITEM = upsert("items", ITEM_COLUMNS, ("id",))
UPSERT_ATTEMPT = upsert("attempts", ATTEMPT_COLUMNS, ("item_id", "attempt"))
UPSERT_HASH = upsert("file_hashes", ["path", "size", "mtime_ns", "sha256"], ("path",))
UPDATE_RUN = (
    "UPDATE runs SET requests = %s, retries = %s, finished_at = %s, exit_code = %s, "
    "exit_reason = %s WHERE batch = %s AND run = %s"
)
INSERT_RUN = (
    "INSERT INTO runs (batch, run, started_at, finished_at, exit_code, exit_reason, requests, "
    "retries) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
)
FENCE = "SELECT owner_token FROM batches WHERE batch = %s FOR SHARE"


class Flush:
    """What one flush sends: the statements and their rows, taken when it starts."""

    def __init__(self, groups: list[tuple[str, list[tuple[Any, ...]]]], gen: int,
                 items: set[str], attempts: set[tuple[str, int]]) -> None:
        self.groups = groups
        self.gen = gen
        self.items = items
        self.attempts = attempts


def record_of(row: ItemRow, attempts: list[AttemptRow]) -> ItemRecord:
    charges = [a.charged_units for a in attempts if a.charged_units is not None]
    return ItemRecord(
        id=row.id,
        kind=row.kind,
        state=ItemState(row.state),
        attempt=row.attempt,
        external_task_id=row.external_task_id,
        task_id=row.task_id,
        expected_assets=row.expected_assets,
        assets=assets_from_text(row.assets),
        error=ErrorInfo.from_dict(json.loads(row.error)) if row.error else None,
        submitted_at=row.submitted_at,
        finished_at=row.finished_at,
        tasks_created=sum(1 for a in attempts if a.task_id is not None),
        download_error=(
            ErrorInfo.from_dict(json.loads(row.download_error)) if row.download_error else None
        ),
        charged_units=sum(charges) if charges else None,
        fingerprint=row.fingerprint,
    )


