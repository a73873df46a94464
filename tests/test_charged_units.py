"""The units the provider says it charged (Kling: final_unit_deduction, API 2.0: billing), kept
per task in the ledger and shown in the report beside the price table's estimate."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from orchestrator import report
from orchestrator.ledger import SCHEMA_VERSION, ItemState, Ledger
from orchestrator.providers.base import Asset, Task, TaskStatus
from tests.test_engine import FakeClock, FakeProvider, manifest, run

#: The schema a ledger of the previous version has (no charged_units column).
V1_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0, external_task_id TEXT, task_id TEXT,
    expected_assets INTEGER NOT NULL, assets TEXT, error TEXT, download_error TEXT,
    submitted_at REAL, finished_at REAL, updated_at REAL NOT NULL);
CREATE TABLE attempts (item_id TEXT NOT NULL, attempt INTEGER NOT NULL,
    external_task_id TEXT NOT NULL UNIQUE, task_id TEXT, state TEXT NOT NULL, error TEXT,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (item_id, attempt));
INSERT INTO meta VALUES ('schema_version', '1'), ('batch', 'b'), ('salt', 'abcd1234'),
    ('created_at', '1');
INSERT INTO items VALUES ('a', 'text2video', 'succeeded', 1, 'orc-x-1', 'T1', 1, '[]', NULL,
    NULL, 1.0, 2.0, 2.0);
INSERT INTO attempts VALUES ('a', 1, 'orc-x-1', 'T1', 'succeeded', NULL, 1.0, 2.0);
"""


def test_charges_add_up_over_an_items_attempts(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s", "b") as ledger:
        ledger.sync_items([("a", "text2video", 1), ("b", "text2video", 1)])
        assert ledger.get("a").charged_units is None
        for attempt, units in ((1, 0.0), (2, 2.5)):
            ext = ledger.external_task_id("a", attempt)
            ledger.record_intent("a", attempt, ext)
            ledger.record_submitted("a", f"T{attempt}")
            ledger.record_charge("a", units)
        assert ledger.get("a").charged_units == 2.5
        assert ledger.get("b").charged_units is None
    _, records = Ledger.read_only(tmp_path / "s")
    assert {r.id: r.charged_units for r in records} == {"a": 2.5, "b": None}


def test_a_ledger_of_the_previous_version_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.close()
    # status reads it as it is, before any run migrated it.
    batch, records = Ledger.read_only(path)
    assert batch == "b" and records[0].charged_units is None
    with Ledger(path, "b") as ledger:
        rec = ledger.get("a")
        assert (rec.state, rec.task_id, rec.charged_units) == (ItemState.SUCCEEDED, "T1", None)
        ledger.record_charge("a", 1.5)
        assert ledger.get("a").charged_units == 1.5
    version = sqlite3.connect(path).execute(
        "SELECT value FROM meta WHERE key = 'schema_version'"
    ).fetchone()
    assert version == (str(SCHEMA_VERSION),)


def test_a_ledger_of_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA.replace("('schema_version', '1')", "('schema_version', '9')"))
    db.close()
    with pytest.raises(Exception, match="schema version 9"):
        Ledger(path, "b")


@pytest.mark.anyio
async def test_the_engine_records_what_the_provider_charged(tmp_path: Path) -> None:
    clock = FakeClock()
    provider = FakeProvider(clock)
    provider.status = lambda t: Task(
        t.task_id, TaskStatus.SUCCEEDED, assets=(Asset(0, "https://x/0.mp4", "video"),),
        charged_units=3.5,
    )
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        await run(manifest(tmp_path, ["a", "b"]), provider, clock, ledger)
        assert [ledger.get(i).charged_units for i in ("a", "b")] == [3.5, 3.5]


def test_the_report_shows_charged_beside_estimated(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s", "b") as ledger:
        ledger.sync_items([("a", "text2video", 1), ("b", "text2video", 1)])
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        ledger.record_submitted("a", "T1")
        ledger.record_charge("a", 2.5)
        written = report.write_report(
            tmp_path / "report.json",
            batch="b",
            manifest=tmp_path / "m.yaml",
            records=ledger.iter_items(["a", "b"]),
            started_at="2026-12-01T00:00:00+00:00",
            finished_at="2026-12-01T00:01:00+00:00",
            extra={"units": {"estimated": 3.0, "indicative": True, "unpriced_tasks": 0}},
        )
        in_memory = report.build_report(
            batch="b", manifest=tmp_path / "m.yaml", item_ids=["a", "b"],
            records=ledger.all(), started_at="2026-12-01T00:00:00+00:00",
            finished_at="2026-12-01T00:01:00+00:00",
            extra={"units": {"estimated": 3.0, "indicative": True, "unpriced_tasks": 0}},
        )
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert data == in_memory
    assert data["units"] == {"estimated": 3.0, "indicative": True, "unpriced_tasks": 0,
                             "charged": 2.5, "items_charged": 1}
    assert written.head["units"]["charged"] == 2.5
    assert [i["charged_units"] for i in data["items"]] == [2.5, None]
    md = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| estimated, for the tasks created | 3 (from the built-in INDICATIVE prices) |" in md
    assert "| charged, as the provider reports it | 2.5 (for 1 items) |" in md
