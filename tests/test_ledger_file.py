"""A ledger a run could not finish creating is made again; a file that is not a ledger is
refused, with how to recover, and left exactly as it was."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from orchestrator.ledger import (
    ItemState,
    Ledger,
    LedgerError,
    LedgerNotStarted,
    LedgerUnreadable,
)
from orchestrator.simulator import Simulator
from orchestrator.status import load_records
from tests.conftest import cli_env, run_cli, write_manifest


def tables(path: Path) -> set[str]:
    db = sqlite3.connect(path)
    try:
        return {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        db.close()


def columns(path: Path, table: str) -> list[str]:
    db = sqlite3.connect(path)
    try:
        return [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
    finally:
        db.close()


def partly_created(path: Path, script: str) -> None:
    db = sqlite3.connect(path)
    db.executescript(script)
    db.close()


def usable(path: Path) -> None:
    with Ledger(path, "b") as ledger:
        ledger.sync_items([("a", "text2video", 1)])
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        ledger.record_submitted("a", "T1")
        ledger.record_charge("a", 2.5)
        assert ledger.get("a").state is ItemState.RUNNING
        assert ledger.get("a").charged_units == 2.5
    _, records = Ledger.read_only(path)
    assert [r.task_id for r in records] == ["T1"]


@pytest.mark.parametrize(
    "script",
    [
        "",  # the file was created, SQLite never wrote to it
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",  # killed after one
        # an older version's tables (attempts without charged_units), meta rows never written
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "CREATE TABLE items (id TEXT PRIMARY KEY, kind TEXT NOT NULL, state TEXT NOT NULL);"
        "CREATE TABLE attempts (item_id TEXT NOT NULL, attempt INTEGER NOT NULL,"
        " external_task_id TEXT NOT NULL UNIQUE);",
        # meta rows, but not the ones saying whose ledger it is
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        "INSERT INTO meta VALUES ('schema_version', '2');",
    ],
    ids=["empty-file", "meta-table-only", "old-tables-no-meta", "no-identity"],
)
def test_a_partly_created_ledger_is_made_again(tmp_path: Path, script: str) -> None:
    path = tmp_path / "state.sqlite3"
    path.touch()
    partly_created(path, script)
    with pytest.raises(LedgerNotStarted, match="no runs recorded yet"):
        Ledger.read_only(path)
    # status: nothing has run yet, rather than an error
    with pytest.raises(FileNotFoundError, match="no runs recorded yet"):
        load_records(path, "b")
    usable(path)
    assert "charged_units" in columns(path, "attempts")  # made again, not kept as it was


def test_a_ledger_killed_between_its_tables_and_its_meta_rows_is_made_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.sqlite3"

    def out_of_space(self: Ledger) -> str:
        raise sqlite3.OperationalError("database or disk is full")

    with monkeypatch.context() as patched:
        patched.setattr(Ledger, "_init_meta", out_of_space)
        with pytest.raises(sqlite3.OperationalError):
            Ledger(path, "b")
    assert {"meta", "items", "attempts", "runs"} <= tables(path)
    usable(path)


GARBAGE = b"GIF89a not a database at all, but a file someone put here" * 50


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (GARBAGE, "file is not a database"),
        ("other-program", "tables of another kind: bookmarks"),
        ("items-without-meta", "items rows but no batch identity"),
    ],
)
def test_a_file_that_is_not_a_ledger_is_refused_and_left_as_it_is(
    tmp_path: Path, content: bytes | str, why: str
) -> None:
    path = tmp_path / "state.sqlite3"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "other-program":
        partly_created(path, "CREATE TABLE bookmarks (url); INSERT INTO bookmarks VALUES ('x');")
    else:
        # Item rows with no identity: they may name tasks sent under a salt we no longer know.
        partly_created(
            path,
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE items (id TEXT PRIMARY KEY); INSERT INTO items VALUES ('a');",
        )
    before = path.read_bytes()
    for attempt in (lambda: Ledger(path, "b"), lambda: Ledger.read_only(path)):
        with pytest.raises(LedgerError, match=why) as refused:
            attempt()
        assert not isinstance(refused.value, LedgerNotStarted)
        message = str(refused.value)
        # How to go on (state check / recover) is the CLI's to say: it knows the manifest.
        assert isinstance(refused.value, LedgerUnreadable) and refused.value.path == path
        assert "it was left as it is" in message and "Nothing was sent" in message
    assert path.read_bytes() == before
    assert not path.with_name(path.name + "-wal").exists()


def test_an_extra_table_in_a_ledger_is_its_own_business(tmp_path: Path) -> None:
    # A later version may add a table (CREATE TABLE IF NOT EXISTS): this one still opens it.
    path = tmp_path / "state.sqlite3"
    usable(path)
    partly_created(path, "CREATE TABLE later_version (x);")
    with Ledger(path, "b") as ledger:
        assert ledger.get("a").task_id == "T1"


def test_status_and_run_on_partial_and_foreign_ledgers(tmp_path: Path, sim: Simulator) -> None:
    manifest = write_manifest(tmp_path, sim, [{"id": "a", "prompt": "a prompt"}])
    state = tmp_path / "out" / "state.sqlite3"
    state.parent.mkdir()
    state.touch()
    partly_created(state, "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
    status = run_cli(["status", str(manifest)], cli_env(sim))
    assert status.code == 0, status.stderr
    assert "No runs recorded yet" in status.stdout
    run = run_cli(["run", str(manifest)], cli_env(sim))
    assert run.code == 0, run.stderr

    state.unlink()
    state.write_bytes(GARBAGE)
    refused = run_cli(["run", str(manifest)], cli_env(sim))
    assert refused.code == 2, refused.stderr
    assert "cannot be read as a ledger" in refused.stderr and "state recover" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert state.read_bytes() == GARBAGE
    assert sim.stats().create_requests == 1  # the first run's; the refused one sent nothing
