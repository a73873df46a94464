"""``state check`` says what a state file is and what the next run does with it; ``state
recover`` moves an unreadable one aside (kept) and the next run adopts every existing task
instead of paying for it again.

The simulator accepts a reused external id (``reject_duplicate_external_ids=False``), so a
resend would show as a second task in its count: the orchestrator alone must prevent it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.ledger import Ledger
from orchestrator.locks import RunLock, holder
from orchestrator.simulator import SimConfig, Simulator
from orchestrator.state_check import Condition, diagnose, recover
from tests.conftest import cli_env, run_cli, write_manifest

GARBAGE = b"GIF89a not a database at all, but a file someone put here" * 50


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimConfig(task_duration=(0.05, 0.1), reject_duplicate_external_ids=False)
    with Simulator(config) as simulator:
        yield simulator


def items(n: int) -> list[dict[str, Any]]:
    return [{"id": f"it-{i:02d}", "prompt": f"recover prompt {i}"} for i in range(n)]


def state_of(directory: Path) -> Path:
    return directory / "out" / "state.sqlite3"


def damage_pages(path: Path, first: int, count: int) -> None:
    """Overwrite ``count`` database pages from page ``first`` (1-based) with garbage: the file
    still opens as SQLite, its tables no longer read whole."""
    db = sqlite3.connect(path)
    page = int(db.execute("PRAGMA page_size").fetchone()[0])
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    with path.open("r+b") as fh:
        fh.seek((first - 1) * page)
        fh.write(b"\xa5" * page * count)


def test_an_unreadable_ledger_is_refused_checked_recovered_and_nothing_paid_twice(
    tmp_path: Path, sim: Simulator
) -> None:
    batch = items(6)
    manifest = write_manifest(tmp_path, sim, batch)
    env = cli_env(sim)
    first = run_cli(["run", str(manifest)], env)
    assert first.code == 0, first.stderr
    state = state_of(tmp_path)
    for suffix in ("-wal", "-shm"):
        state.with_name(state.name + suffix).unlink(missing_ok=True)
    state.write_bytes(GARBAGE)

    refused = run_cli(["run", str(manifest)], env)
    assert refused.code == 2 and "Traceback" not in refused.stderr
    assert f"state check {manifest}" in refused.stderr
    assert f"state recover {manifest}" in refused.stderr
    assert state.read_bytes() == GARBAGE

    check = run_cli(["state", "check", str(manifest)], env)
    assert check.code == 1, check.stderr
    assert check.stdout.startswith("unreadable: ")
    assert "state recover" in check.stdout and "adopts them" in check.stdout
    assert state.read_bytes() == GARBAGE  # check reads only

    done = run_cli(["state", "recover", str(manifest)], env)
    assert done.code == 0, done.stderr
    assert "Moved aside" in done.stdout
    aside = [p for p in state.parent.iterdir() if p.name.startswith("state.sqlite3.unreadable-")]
    assert len(aside) == 1 and aside[0].read_bytes() == GARBAGE
    assert not state.exists()

    after = run_cli(["state", "check", str(manifest)], env)
    assert after.code == 0 and after.stdout.startswith("missing: ")
    assert "adopting those that exist" in after.stdout

    again = run_cli(["run", str(manifest)], env)
    assert again.code == 0, again.stderr
    stats = sim.stats()
    assert stats.tasks_created == len(batch)  # 0 paid twice
    assert all(stats.by_prompt[i["prompt"]] == 1 for i in batch)
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["counts"]["succeeded"] == len(batch) and data["adopted"] == len(batch)


def test_a_damaged_ledger_is_found_by_sqlites_check_and_moved_with_its_companions(
    tmp_path: Path,
) -> None:
    state = tmp_path / "state.sqlite3"
    with Ledger(state, "b") as ledger:
        ledger.sync_items([(f"i{n:04d}", "text2video", 1) for n in range(400)])
    damage_pages(state, 3, 2)
    state.with_name(state.name + "-shm").write_bytes(b"left by a killed run")
    found = diagnose(state, "b", tmp_path, [])
    assert found.condition is Condition.UNREADABLE and not found.usable
    assert "damaged" in found.summary or "malformed" in found.summary
    damaged = state.read_bytes()

    done = recover(state, "b", tmp_path, [], clock=lambda: 1_800_000_000.0)
    names = sorted(target.name for _, target in done.moved)
    assert names == [
        "state.sqlite3.unreadable-20270115T080000Z",
        "state.sqlite3.unreadable-20270115T080000Z-shm",
        "state.sqlite3.unreadable-20270115T080000Z-wal",  # SQLite's, made by the check
    ]
    assert (tmp_path / names[0]).read_bytes() == damaged
    assert not any(p.name.startswith("state.sqlite3-") for p in tmp_path.iterdir())
    assert not state.exists()
    # A second recovery in the same second keeps both copies.
    state.write_bytes(GARBAGE)
    again = recover(state, "b", tmp_path, [], clock=lambda: 1_800_000_000.0)
    assert [t.name for _, t in again.moved] == ["state.sqlite3.unreadable-20270115T080000Z.2"]


def test_a_healthy_ledger_is_described_and_left_alone(tmp_path: Path, sim: Simulator) -> None:
    batch = items(3)
    manifest = write_manifest(tmp_path, sim, batch)
    env = cli_env(sim)
    assert run_cli(["run", str(manifest)], env).code == 0
    more = write_manifest(tmp_path, sim, [*batch, {"id": "new", "prompt": "one more"}])
    check = run_cli(["state", "check", str(more), "--json"], env)
    assert check.code == 0, check.stderr
    data = json.loads(check.stdout)
    assert data["condition"] == "healthy" and data["usable"] is True
    assert data["items"] == {"succeeded": 3}
    assert any("1 item(s) of the manifest not started yet" in d for d in data["details"])
    assert data["next_run"] == "the next run resumes from it"
    before = state_of(tmp_path).read_bytes()
    done = run_cli(["state", "recover", str(more)], env)
    assert done.code == 0 and "Nothing to recover" in done.stdout
    assert state_of(tmp_path).read_bytes() == before


def test_another_batchs_ledger_is_refused_by_check_and_recover(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite3"
    with Ledger(state, "other"):
        pass
    found = diagnose(state, "mine", tmp_path, [])
    assert found.condition is Condition.OTHER_BATCH and "'other'" in found.summary
    with pytest.raises(Exception, match="batch 'other'"):
        recover(state, "mine", tmp_path, [])
    assert state.exists()


def test_recover_waits_for_a_run_in_progress(tmp_path: Path, sim: Simulator) -> None:
    manifest = write_manifest(tmp_path, sim, items(1))
    state = state_of(tmp_path)
    state.parent.mkdir()
    state.write_bytes(GARBAGE)
    lock = RunLock(tmp_path / "out" / "batch.lock")
    try:
        check = run_cli(["state", "check", str(manifest)], cli_env(sim))
        assert check.code == 1 and f"in progress (pid {os.getpid()})" in check.stdout
        done = run_cli(["state", "recover", str(manifest)], cli_env(sim))
        assert done.code == 4 and "in progress" in done.stderr
        assert state.read_bytes() == GARBAGE
    finally:
        lock.release()
    assert run_cli(["state", "recover", str(manifest)], cli_env(sim)).code == 0
    assert not state.exists()


def test_a_partly_created_ledger_needs_no_recovery(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite3"
    db = sqlite3.connect(state)
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.close()
    found = diagnose(state, "b", tmp_path, [])
    assert found.condition is Condition.PARTLY_CREATED and found.usable
    assert found.next_run.startswith("the next run makes it again")
    assert recover(state, "b", tmp_path, []).moved == ()


def test_holder_looks_without_taking_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    assert holder(path) is None and not path.exists()
    lock = RunLock(path)
    try:
        held = holder(path)
        assert held is not None and held.holder == str(os.getpid())
    finally:
        lock.release()
    assert holder(path) is None
    RunLock(path).release()  # still free to take
