"""status: what the ledger knows, line by line, without the network and without the run lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestrator.errors import Category, ErrorInfo
from orchestrator.ledger import AssetRecord, ItemState, Ledger, LedgerError
from orchestrator.report import STATUSES, error_entry
from orchestrator.status import (
    MAX_ERROR,
    STATES,
    load_records,
    render_status_json,
    render_status_text,
    status_rows,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

POLICY = ErrorInfo(
    category=Category.POLICY,
    message="prompt flagged\nby the safety filter",
    retryable=False,
    hint="Reword the prompt; rerun with a new item id.",
    code=1301,
    http_status=400,
)
RATE = ErrorInfo(
    category=Category.RATE_LIMIT, message="slow down", retryable=True, hint="wait", code=1302
)
TIMEOUT = ErrorInfo(
    category=Category.TIMEOUT, message="x" * 300, retryable=True, hint="looked up next run"
)

DOWNLOAD = ErrorInfo(
    category=Category.NETWORK, message="item fetch asset 0: HTTP 500 (gave up after 8 attempts)",
    retryable=True, hint="rerun to download the missing files",
)

MANIFEST_IDS = ["ok", "few", "bad", "fetch", "busy", "unsure", "again", "never"]


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def build_ledger(path: Path) -> Ledger:
    """One item in each interesting state; 'fetch' succeeded but its file could not be
    downloaded, 'never' is unknown to the ledger, 'gone' left the manifest."""
    clock = Clock(T0)
    ledger = Ledger(path, "demo", clock=clock)
    known = [i for i in MANIFEST_IDS if i != "never"] + ["gone"]
    ledger.sync_items(
        [(i, "image" if i == "few" else "text2video", 4 if i == "few" else 1) for i in known]
    )
    for item_id in ("ok", "few", "bad", "fetch", "busy", "unsure", "again", "gone"):
        ledger.record_intent(item_id, 1, ledger.external_task_id(item_id, 1))
    for item_id in ("ok", "few", "bad", "fetch", "busy", "again", "gone"):
        ledger.record_submitted(item_id, f"T-{item_id}")
    clock.now = T0 + 30
    ledger.finish("ok", ItemState.SUCCEEDED, assets=[AssetRecord(0, "u")])
    ledger.finish("few", ItemState.PARTIAL, assets=[AssetRecord(i, "") for i in range(3)])
    ledger.finish("bad", ItemState.FAILED, error=POLICY)
    ledger.finish("fetch", ItemState.SUCCEEDED, assets=[AssetRecord(0, "u")])
    ledger.record_assets("fetch", [AssetRecord(0, "u")], DOWNLOAD)
    ledger.finish("gone", ItemState.SUCCEEDED, assets=[AssetRecord(0, "")])
    ledger.record_unresolved("unsure", TIMEOUT)
    ledger.record_retry("again", RATE)
    return ledger


@pytest.fixture
def ledger_path(tmp_path: Path) -> Path:
    path = tmp_path / "state.sqlite3"
    build_ledger(path).close()
    return path


def test_rows_follow_the_manifest(ledger_path: Path) -> None:
    rows = status_rows(load_records(ledger_path, "demo"), MANIFEST_IDS)
    assert [r["id"] for r in rows] == [*MANIFEST_IDS, "gone"]
    by_id = {r["id"]: r for r in rows}
    assert {i: (r["state"], r["status"]) for i, r in by_id.items()} == {
        "ok": ("succeeded", "succeeded"),
        "few": ("partial", "partial"),
        "bad": ("failed", "failed"),
        "fetch": ("succeeded", "failed"),  # as report.json says: the file is not on disk
        "busy": ("running", "running"),
        "unsure": ("submitting", "unresolved"),
        "again": ("pending", "not_run"),
        "never": ("pending", "not_run"),
        "gone": ("succeeded", "succeeded"),
    }
    ok = by_id["ok"]
    assert ok["task_id"] == "T-ok"
    assert ok["external_task_id"].startswith("orc-")
    assert (ok["attempts"], ok["asset_count"], ok["error"]) == (1, 1, None)
    assert (ok["submitted_at"], ok["finished_at"], ok["task_seconds"]) == (
        "2026-01-01T00:00:00+00:00",
        "2026-01-01T00:00:30+00:00",
        30.0,
    )
    assert (by_id["few"]["asset_count"], by_id["few"]["expected_assets"]) == (3, 4)
    bad = by_id["bad"]["error"]
    assert (bad["category"], bad["code"], bad["hint"]) == ("policy", 1301, POLICY.hint)
    assert by_id["fetch"]["error"] == error_entry(DOWNLOAD)
    assert by_id["again"]["error"]["category"] == "rate_limit"
    assert by_id["again"]["attempts"] == 1  # one task was created and failed
    assert by_id["unsure"]["attempts"] == 0  # no task id yet: the rerun looks it up
    never = by_id["never"]
    assert (never["in_ledger"], never["attempts"], never["task_id"]) == (False, 0, None)
    assert by_id["gone"]["in_manifest"] is False
    assert all(r["in_manifest"] for r in rows if r["id"] != "gone")
    json.dumps(rows)


def test_rows_without_a_manifest_are_the_ledger(ledger_path: Path) -> None:
    records = load_records(ledger_path, "demo")
    rows = status_rows(records, None)
    assert [r["id"] for r in rows] == [r.id for r in records]
    assert all(r["in_ledger"] and r["in_manifest"] for r in rows)


def test_load_records_does_not_need_the_run_lock(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    ledger = build_ledger(path)  # still open: a run in progress holds the lock
    ledger.commit()  # what a run has committed is what status sees
    try:
        ids = {r.id: str(r.state) for r in load_records(path, "demo")}
        assert ids["busy"] == "running"
        ledger.finish("busy", ItemState.SUCCEEDED, assets=[AssetRecord(0, "")])
        ledger.commit()
        assert {r.id: str(r.state) for r in load_records(path, "demo")}["busy"] == "succeeded"
    finally:
        ledger.close()
    # and the ledger opens normally afterwards
    with Ledger(path, "demo") as again:
        assert again.get("busy").state is ItemState.SUCCEEDED


def test_load_records_errors(tmp_path: Path, ledger_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_records(tmp_path / "missing.sqlite3", "demo")
    with pytest.raises(LedgerError, match="belongs to batch 'demo'"):
        load_records(ledger_path, "other")
    junk = tmp_path / "junk.sqlite3"
    junk.write_bytes(b"not a database at all" * 100)
    with pytest.raises(LedgerError, match="cannot be read as a ledger"):
        load_records(junk, "demo")


def test_text_rendering(ledger_path: Path) -> None:
    rows = status_rows(load_records(ledger_path, "demo"), MANIFEST_IDS)
    text = render_status_text(rows, batch="demo", state_path=ledger_path)
    lines = text.splitlines()
    assert "\x1b" not in text
    assert lines[0] == f"Batch 'demo': 9 items (state: {ledger_path})"
    # The totals first: by report status, as report.json counts them; then the ledger's
    # finer states.
    assert lines[1] == (
        "Totals: 2 succeeded, 1 partial, 2 failed, 2 not_run, 1 running, 1 unresolved (9 items)"
    )
    assert lines[2] == (
        "Ledger states: 2 pending, 1 submitting, 1 running, 3 succeeded, 1 partial, 1 failed"
    )
    header = lines[3]
    assert header.split() == ["ID", "STATUS", "STATE", "TASKS", "TASK", "ID", "LAST", "ERROR"]
    table = lines[4:13]
    assert [line.split()[0] for line in table] == [*MANIFEST_IDS, "gone"]
    # columns are aligned: every row's state starts under STATE, task id under TASK ID
    for column in ("STATUS", "STATE", "TASK ID", "LAST ERROR"):
        start = header.index(column)
        for line in table:
            if len(line) > start:
                assert line[start - 1] == " " and line[start] != " ", (column, line)
    bad = next(line for line in table if line.startswith("bad "))
    assert "T-bad" in bad
    assert bad.endswith("policy 1301: prompt flagged by the safety filter")
    fetch = next(line for line in table if line.startswith("fetch "))
    assert fetch.split()[1:3] == ["failed", "succeeded"]
    assert fetch.endswith("network: item fetch asset 0: HTTP 500 (gave up after 8 attempts)")
    unsure = next(line for line in table if line.startswith("unsure "))
    error = unsure[header.index("LAST ERROR") :]
    assert error.startswith("timeout: xxx") and error.endswith("...")
    assert len(error) == MAX_ERROR
    never = next(line for line in table if line.startswith("never "))
    assert never.split() == ["never", "not_run", "pending", "0", "-"]
    assert table[-1].startswith("gone *")
    assert lines[-1] == "* 1 item(s) in the ledger are no longer in the manifest."
    assert len(lines) == 14


def test_text_rendering_of_the_statuses_asked_for(ledger_path: Path) -> None:
    rows = status_rows(load_records(ledger_path, "demo"), MANIFEST_IDS)
    text = render_status_text(rows, batch="demo", state_path=ledger_path,
                              statuses={"failed", "partial", "unresolved"})
    lines = text.splitlines()
    assert lines[1].startswith("Totals: 2 succeeded, 1 partial, 2 failed")  # every item
    assert lines[3] == "Showing 4 of 9 items (partial, failed, unresolved):"
    assert sorted(line.split()[0] for line in lines[5:]) == ["bad", "fetch", "few", "unsure"]
    nothing = render_status_text(rows, batch="demo", state_path=ledger_path,
                                 statuses={"not_run"}).splitlines()
    assert nothing[3] == "Showing 2 of 9 items (not_run):" and len(nothing) == 7


def test_json_lists_the_statuses_asked_for(ledger_path: Path) -> None:
    rows = status_rows(load_records(ledger_path, "demo"), MANIFEST_IDS)
    data = json.loads(render_status_json(rows, batch="demo", state_path=ledger_path,
                                         statuses={"running"}))
    assert data["showing"] == ["running"]
    assert [item["status"] for item in data["items"]] == ["running"]
    assert sum(data["totals"].values()) == 9


def test_text_rendering_of_nothing(tmp_path: Path) -> None:
    text = render_status_text([], batch="empty", state_path=tmp_path / "s")
    assert text.splitlines() == [
        f"Batch 'empty': 0 items (state: {tmp_path / 's'})",
        "Totals: no items (0 items)",
    ]


def test_json_rendering(ledger_path: Path) -> None:
    rows = status_rows(load_records(ledger_path, "demo"), MANIFEST_IDS)
    data = json.loads(render_status_json(rows, batch="demo", state_path=ledger_path))
    assert data["batch"] == "demo"
    assert data["state"] == str(ledger_path)
    # totals: report.json's counts (the keys it always has); states: the ledger's
    assert list(data["totals"]) == list(STATUSES)
    assert data["totals"] == {
        "succeeded": 2,
        "partial": 1,
        "failed": 2,
        "not_run": 2,
        "running": 1,
        "unresolved": 1,
    }
    assert list(data["states"]) == list(STATES)
    assert data["states"] == {
        "pending": 2,
        "submitting": 1,
        "running": 1,
        "succeeded": 3,
        "partial": 1,
        "failed": 1,
    }
    assert data["items"] == rows
