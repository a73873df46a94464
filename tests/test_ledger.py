"""The ledger is durable, locked, and records intent before side effects."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from orchestrator.errors import Category, ErrorInfo
from orchestrator.ledger import ItemState, Ledger, LedgerError, LedgerLocked

RATE = ErrorInfo(category=Category.RATE_LIMIT, message="slow down", retryable=True, hint="wait")


def test_lifecycle_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with Ledger(path, "b") as ledger:
        ledger.sync_items([("a", "text2video", 1), ("b", "image", 4)])
        ext = ledger.external_task_id("a", 1)
        ledger.record_intent("a", 1, ext)
        assert ledger.get("a").state is ItemState.SUBMITTING
        ledger.record_submitted("a", "T1")
        ledger.finish("a", ItemState.SUCCEEDED, assets=[{"index": 0, "url": "u"}])
    with Ledger(path, "b") as ledger:
        a = ledger.get("a")
        assert a.state is ItemState.SUCCEEDED
        assert (a.task_id, a.external_task_id, a.tasks_created) == ("T1", ext, 1)
        assert a.assets == [{"index": 0, "url": "u"}]
        assert ledger.get("b").state is ItemState.PENDING
        assert ledger.get("b").expected_assets == 4


def test_external_ids_are_deterministic_and_unique(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s", "batch") as ledger:
        assert ledger.external_task_id("x", 1) == ledger.external_task_id("x", 1)
        ids = {ledger.external_task_id(i, a) for i in ("x", "y") for a in (1, 2)}
        assert len(ids) == 4
        first_salt_id = ledger.external_task_id("x", 1)
    # A fresh state file for the same batch name never reuses an external id.
    with Ledger(tmp_path / "other", "batch") as ledger:
        assert ledger.external_task_id("x", 1) != first_salt_id


def test_retry_and_not_created_keep_history(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s", "b") as ledger:
        ledger.sync_items([("a", "text2video", 1)])
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        ledger.record_not_created("a", RATE)
        rec = ledger.get("a")
        assert rec.state is ItemState.PENDING
        assert rec.error == RATE
        ledger.record_intent("a", 2, ledger.external_task_id("a", 2))
        ledger.record_submitted("a", "T2")
        ledger.record_retry("a", RATE)
        assert ledger.get("a").state is ItemState.PENDING
        assert ledger.get("a").tasks_created == 1
        states = [(a["attempt"], a["state"], a["task_id"]) for a in ledger.attempts("a")]
        assert states == [(1, "not_created", None), (2, "pending", "T2")]


def test_second_opener_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Ledger(path, "b"), pytest.raises(LedgerLocked, match="another run"):
        Ledger(path, "b")
    Ledger(path, "b").close()  # released on close


def test_other_batch_refused(tmp_path: Path) -> None:
    Ledger(tmp_path / "s", "one").close()
    with pytest.raises(LedgerError, match="belongs to batch 'one'"):
        Ledger(tmp_path / "s", "two")
    Ledger(tmp_path / "s", "one").close()  # the refused open released its lock


def test_files_are_owner_only(tmp_path: Path) -> None:
    Ledger(tmp_path / "s", "b").close()
    for name in ("s", "s.lock"):
        mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert mode & 0o077 == 0, (name, oct(mode))


def test_finish_requires_terminal_state(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s", "b") as ledger:
        ledger.sync_items([("a", "text2video", 1)])
        with pytest.raises(ValueError, match="terminal"):
            ledger.finish("a", ItemState.RUNNING)


def test_read_only_works_while_a_run_holds_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Ledger(path, "b") as ledger:
        ledger.sync_items([("a", "text2video", 1), ("b", "image", 2)])
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        ledger.record_submitted("a", "T1")
        batch, records = Ledger.read_only(path)
        assert batch == "b"
        assert [(r.id, r.state, r.task_id) for r in records] == [
            ("a", ItemState.RUNNING, "T1"),
            ("b", ItemState.PENDING, None),
        ]


def test_read_only_without_state_file(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="has not been run yet"):
        Ledger.read_only(tmp_path / "missing")
    (tmp_path / "garbage").write_text("not a database")
    with pytest.raises(LedgerError, match="cannot read"):
        Ledger.read_only(tmp_path / "garbage")
