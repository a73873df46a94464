"""One item as every report file shows it: its status, its error and its report.json entry.

report.json, results.jsonl, report.md, report.html and ``status`` all read an item through
:func:`item_entry` (or the functions it is made of), so an item has one status everywhere.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from orchestrator.errors import ErrorInfo, is_downloads_pending
from orchestrator.ledger import ItemRecord, ItemState

#: Report statuses. "running" appears only when a batch was interrupted or stopped while tasks
#: were in flight: a rerun collects them. "unresolved": a create whose outcome this run could
#: not establish; it is never resent blindly (the rerun looks it up again).
STATUSES = ("succeeded", "partial", "failed", "not_run", "running", "unresolved")
#: Statuses that need a person's attention: listed with their hints.
PROBLEM_STATUSES = ("failed", "partial", "unresolved")


def item_status(rec: ItemRecord) -> str:
    if rec.download_error is not None and rec.state in (ItemState.SUCCEEDED, ItemState.PARTIAL):
        if is_downloads_pending(rec.download_error):
            # Generated, its files not fetched yet (the run was interrupted or killed before):
            # not done, and nothing failed; the rerun downloads them.
            return "running"
        return "failed"  # generated, but its files could not be downloaded; a rerun tries
    if rec.state is ItemState.SUCCEEDED:
        return "succeeded"
    if rec.state is ItemState.PARTIAL:
        return "partial"
    if rec.state is ItemState.FAILED:
        return "failed"
    if rec.state is ItemState.PENDING:
        return "not_run"
    if rec.state in (ItemState.SUBMITTING, ItemState.RUNNING) and rec.error is not None:
        # Its create's outcome, or its task's answers, could not be established this run: the
        # rerun looks it up or polls it again, never resends it.
        return "unresolved"
    return "running"


def item_error(rec: ItemRecord) -> ErrorInfo | None:
    """The error the report shows: why the files are not on disk outranks the task's verdict
    (a partial item's asset_mismatch comes back once its files are)."""
    return rec.download_error or rec.error


def iso_utc(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC (seconds, the same form as the report's started_at)."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def task_seconds(rec: ItemRecord) -> float | None:
    """Seconds from the current attempt's submit intent to the end of its task at the provider
    (generation: ``finished_at`` is the verdict, written before the files are downloaded).

    None while the item has no finished attempt (never submitted, running, or pending a retry).
    """
    if rec.submitted_at is None or rec.finished_at is None:
        return None
    return round(max(0.0, rec.finished_at - rec.submitted_at), 3)


def item_entry(rec: ItemRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "status": item_status(rec),
        "kind": rec.kind,
        "attempts": rec.tasks_created,
        "task_id": rec.task_id,
        "external_task_id": rec.external_task_id,
        "expected_assets": rec.expected_assets,
        "assets": [
            {"index": a.index, "url": a.url, "path": a.path, "bytes": a.bytes, "sha256": a.sha256}
            for a in rec.assets
        ],
        "error": error_entry(item_error(rec)),
        "submitted_at": iso_utc(rec.submitted_at),
        "finished_at": iso_utc(rec.finished_at),
        "task_seconds": task_seconds(rec),
        "charged_units": rec.charged_units,
    }


def error_entry(info: ErrorInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    data = info.to_dict()
    data.pop("scope", None)
    return data
