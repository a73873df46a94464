"""``status``: what the ledger knows about each item, without a single network call.

:func:`load_records` reads a state file without taking the run lock (read-only SQLite), so
``status`` works while a run of the batch is in progress. :func:`status_rows` lines the records up
with the manifest; :func:`render_status_text` prints them for people and
:func:`render_status_json` for scripts. Each item's ``status``, its error and the totals are
what report.json says (or will say) for it; the ledger ``state`` is shown beside them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from orchestrator.ledger import ItemRecord, ItemState, LedgerError, LedgerNotStarted
from orchestrator.report import (
    STATUSES,
    counts_text,
    error_entry,
    iso_utc,
    item_error,
    item_status,
    task_seconds,
)
from orchestrator.state_location import StateLocation

#: Ledger states, in the order an item goes through them (the order of the totals).
STATES = tuple(str(s) for s in ItemState)

#: Column caps of the text table (characters); longer values are cut with "...".
MAX_ID = 40
MAX_TASK_ID = 36
MAX_ERROR = 100


def load_records(state: StateLocation | Path, batch: str) -> list[ItemRecord]:
    """Every item record of the batch's ledger, read-only and without taking the batch.

    Raises FileNotFoundError when there is no ledger yet, or only a partly created one (a run
    killed or out of space while creating it): nothing has run; and LedgerError when the file
    belongs to another batch or cannot be read as a ledger.
    """
    location = state if isinstance(state, StateLocation) else StateLocation(path=state)
    if location.path is not None and not location.path.is_file():
        raise FileNotFoundError(f"no state file at {location.path}: nothing has run yet")
    try:
        owner, records = location.read_only(batch)
    except LedgerNotStarted as exc:
        raise FileNotFoundError(str(exc)) from None
    if owner != batch:
        raise LedgerError(
            f"state file {location.describe()} belongs to batch '{owner}', not '{batch}'"
        )
    return records


def _row(rec: ItemRecord, *, in_manifest: bool) -> dict[str, Any]:
    return {
        "id": rec.id,
        "state": str(rec.state),
        "status": item_status(rec),
        "kind": rec.kind,
        "attempts": rec.tasks_created,
        "task_id": rec.task_id,
        "external_task_id": rec.external_task_id,
        "expected_assets": rec.expected_assets,
        "asset_count": len(rec.assets),
        "submitted_at": iso_utc(rec.submitted_at),
        "finished_at": iso_utc(rec.finished_at),
        "task_seconds": task_seconds(rec),
        "error": error_entry(item_error(rec)),
        "in_ledger": True,
        "in_manifest": in_manifest,
    }


def _unknown_row(item_id: str) -> dict[str, Any]:
    """A manifest item the ledger has not seen: no run reached it, never attempted."""
    return {
        "id": item_id,
        "state": str(ItemState.PENDING),
        "status": "not_run",
        "kind": None,
        "attempts": 0,
        "task_id": None,
        "external_task_id": None,
        "expected_assets": None,
        "asset_count": 0,
        "submitted_at": None,
        "finished_at": None,
        "task_seconds": None,
        "error": None,
        "in_ledger": False,
        "in_manifest": True,
    }


def status_rows(
    records: Iterable[ItemRecord], item_ids: Sequence[str] | None
) -> list[dict[str, Any]]:
    """One row per item.

    With ``item_ids`` (the manifest's ids): in manifest order, items the ledger does not know
    yet as ``pending``, then the ledger's items that are no longer in the manifest
    (``in_manifest: false``). Without: the records in the order given.
    """
    recs = list(records)
    if item_ids is None:
        return [_row(r, in_manifest=True) for r in recs]
    by_id = {r.id: r for r in recs}
    wanted = set(item_ids)
    rows = [_row(by_id[i], in_manifest=True) if i in by_id else _unknown_row(i) for i in item_ids]
    rows.extend(_row(r, in_manifest=False) for r in recs if r.id not in wanted)
    return rows


def totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Items per report status, as report.json's ``counts`` would say now (an item whose task
    succeeded but whose files are not on disk is ``failed``); every status is a key."""
    counts = Counter(str(r["status"]) for r in rows)
    return {status: counts.get(status, 0) for status in STATUSES}


def state_totals(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Items per ledger state (finer while a run is going: submitting vs running); every state
    is a key (0 when none)."""
    counts = Counter(str(r["state"]) for r in rows)
    return {state: counts.get(state, 0) for state in STATES}


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())  # one line: newlines and runs of blanks become one space
    return text if len(text) <= limit else text[: limit - 3] + "..."


def error_text(err: Mapping[str, Any] | None) -> str:
    """``category code: message`` (the code only when there is one); empty when no error."""
    if not err:
        return ""
    code = f" {err['code']}" if err.get("code") is not None else ""
    return f"{err.get('category', '?')}{code}: {err.get('message', '')}"


def shown_rows(
    rows: Sequence[Mapping[str, Any]], statuses: Collection[str] | None
) -> list[Mapping[str, Any]]:
    """The rows of the report statuses asked for (every row when None)."""
    return [r for r in rows if statuses is None or str(r["status"]) in statuses]


def render_status_text(
    rows: Sequence[Mapping[str, Any]],
    *,
    batch: str,
    state_path: Path | str,
    statuses: Collection[str] | None = None,
) -> str:
    """The totals first, by report status (what report.json would count now) and by ledger
    state; then an aligned table (plain text, no colours) of the items, or of those whose
    report status is in ``statuses``."""
    lines = [f"Batch '{batch}': {len(rows)} items (state: {state_path})"]
    lines.append(f"Totals: {counts_text(totals(rows)) or 'no items'} ({len(rows)} items)")
    if rows:
        lines.append(f"Ledger states: {counts_text(state_totals(rows))}")
    if rows and not any(r.get("in_ledger") for r in rows):
        lines.append("No runs recorded yet: every item is not_run.")
    table_rows = shown_rows(rows, statuses)
    if statuses is not None:
        asked = ", ".join(s for s in STATUSES if s in statuses)
        lines.append(f"Showing {len(table_rows)} of {len(rows)} items ({asked}):")
    if table_rows:
        header = ("ID", "STATUS", "STATE", "TASKS", "TASK ID", "LAST ERROR")
        table = [
            (
                _cut(str(r["id"]), MAX_ID) + ("" if r.get("in_manifest", True) else " *"),
                str(r["status"]),
                str(r["state"]),
                str(r.get("attempts", 0)),
                _cut(str(r.get("task_id") or "-"), MAX_TASK_ID),
                _cut(error_text(r.get("error")), MAX_ERROR),
            )
            for r in table_rows
        ]
        widths = [max(len(h), *(len(row[c]) for row in table)) for c, h in enumerate(header)]
        for row in (header, *table):
            lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    gone = sum(1 for r in table_rows if not r.get("in_manifest", True))
    if gone:
        lines.append(f"* {gone} item(s) in the ledger are no longer in the manifest.")
    return "\n".join(lines)


def render_status_json(
    rows: Sequence[Mapping[str, Any]],
    *,
    batch: str,
    state_path: Path | str,
    statuses: Collection[str] | None = None,
) -> str:
    """``totals`` and ``states`` count every item; ``items`` are those of ``statuses``
    (``showing``: those statuses, or null for every item)."""
    return json.dumps(
        {
            "batch": batch,
            "state": str(state_path),
            "totals": totals(rows),
            "states": state_totals(rows),
            "showing": None if statuses is None else [s for s in STATUSES if s in statuses],
            "items": shown_rows(rows, statuses),
        },
        indent=2,
        ensure_ascii=False,
    )
