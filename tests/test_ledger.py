"""The ledger is durable, locked, and records intent before side effects; writes are
group-committed without giving up crash safety."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest

from orchestrator.errors import Category, ErrorInfo, downloads_pending
from orchestrator.ledger import AssetRecord, ItemState, Ledger, LedgerError, LedgerLocked

RATE = ErrorInfo(category=Category.RATE_LIMIT, message="slow down", retryable=True, hint="wait")


def test_lifecycle_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with Ledger(path, "b") as ledger:
        ledger.sync_items([("a", "text2video", 1), ("b", "image", 4)])
        ext = ledger.external_task_id("a", 1)
        ledger.record_intent("a", 1, ext)
        assert ledger.get("a").state is ItemState.SUBMITTING
        ledger.record_submitted("a", "T1")
        ledger.finish("a", ItemState.SUCCEEDED, assets=[AssetRecord(0, "u")])
    with Ledger(path, "b") as ledger:
        a = ledger.get("a")
        assert a.state is ItemState.SUCCEEDED
        assert (a.task_id, a.external_task_id, a.tasks_created) == ("T1", ext, 1)
        assert a.assets == [AssetRecord(0, "u")]
        assert ledger.get("b").state is ItemState.PENDING
        assert ledger.get("b").expected_assets == 4


def test_download_error_is_written_with_the_verdict_and_replaced_by_the_next(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite3"
    pending = downloads_pending()
    with Ledger(path, "b") as ledger:
        ledger.sync_items([("a", "text2video", 1)])
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        ledger.record_submitted("a", "T1")
        ledger.finish("a", ItemState.SUCCEEDED, assets=[AssetRecord(0, "")], download_error=pending)
    with Ledger(path, "b") as ledger:  # durable with the verdict
        assert ledger.get("a").download_error == pending
        ledger.record_assets("a", [AssetRecord(0, "", path="a/0.mp4")], None)
        assert ledger.get("a").download_error is None
        ledger.record_assets("a", [AssetRecord(0, "")], pending)
        ledger.finish("a", ItemState.FAILED, error=RATE)  # a new verdict: no stale file error
        assert ledger.get("a").download_error is None


def test_external_ids_name_the_request_in_every_ledger(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s", "batch") as ledger:
        assert ledger.external_task_id("x", 1, "fp") == ledger.external_task_id("x", 1, "fp")
        ids = {
            ledger.external_task_id(i, a, fp)
            for i in ("x", "y") for a in (1, 2) for fp in ("fp", "changed")
        }
        assert len(ids) == 8
        first = ledger.external_task_id("x", 1, "fp")
    # A fresh state file for the same batch sends the same ids for the same requests: a lost
    # ledger finds the tasks it made instead of paying for them again (the salt it had was
    # what made 9 of 12 items paid twice after an emptied state file).
    with Ledger(tmp_path / "other", "batch") as ledger:
        assert ledger.external_task_id("x", 1, "fp") == first
    with Ledger(tmp_path / "third", "another-batch") as ledger:
        assert ledger.external_task_id("x", 1, "fp") != first


def test_attempt_numbers_count_per_request(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s", "b") as ledger:
        ledger.sync_items([("a", "text2video", 1)])
        assert ledger.next_seq("a", "fp1") == 1
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1, "fp1"), "fp1", 1)
        ledger.record_submitted("a", "T1")
        ledger.record_retry("a", RATE)
        assert ledger.next_seq("a", "fp1") == 2
        assert ledger.paid_for("a", "fp1") == 1
        # The item's request changed: its attempts start again, and so does its budget.
        assert ledger.next_seq("a", "fp2") == 1 and ledger.paid_for("a", "fp2") == 0
        assert ledger.get("a").fingerprint == "fp1"


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


def test_loose_state_files_are_tightened_on_open(tmp_path: Path) -> None:
    # Was: only files the ledger created were owner-only; existing ones kept their mode.
    path = tmp_path / "s"
    Ledger(path, "b").close()
    # A crashed run leaves -wal and -shm behind: an open WAL connection keeps them.
    other = sqlite3.connect(path)
    other.execute("PRAGMA journal_mode=WAL")
    other.execute("CREATE TABLE IF NOT EXISTS scratch (x)")
    names = ("s", "s-wal", "s-shm", "s.lock")
    for name in names:
        os.chmod(tmp_path / name, 0o664)
    try:
        with Ledger(path, "b"):
            modes = {name: stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in names}
    finally:
        other.close()
    assert modes == dict.fromkeys(names, 0o600), {k: oct(v) for k, v in modes.items()}


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
        ledger.commit()  # writes are group-committed: a second connection sees them once committed
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
    with pytest.raises(LedgerError, match="cannot be read as a ledger"):
        Ledger.read_only(tmp_path / "garbage")


# -- group commit ---------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


class Mono:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def states_on_disk(path: Path) -> dict[str, ItemState]:
    """What another process (``status``) sees: committed rows only."""
    return {r.id: r.state for r in Ledger.read_only(path)[1]}


def test_writes_are_visible_to_the_ledger_before_commit(tmp_path: Path) -> None:
    with Ledger(tmp_path / "s", "b", monotonic=Mono()) as ledger:
        ledger.sync_items([("a", "text2video", 1)])
        ext = ledger.external_task_id("a", 1)
        ledger.record_intent("a", 1, ext)
        ledger.record_submitted("a", "T1")
        assert ledger.uncommitted == 2
        rec = ledger.get("a")
        assert (rec.state, rec.task_id, rec.tasks_created) == (ItemState.RUNNING, "T1", 1)
        assert [r.state for r in ledger.all()] == [ItemState.RUNNING]
        assert ledger.attempts("a")[0]["external_task_id"] == ext
        assert ledger.paid_attempts() == {"a": 1}


@pytest.mark.anyio
async def test_other_connections_see_writes_once_committed(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Ledger(path, "b", monotonic=Mono()) as ledger:
        ledger.sync_items([("a", "text2video", 1), ("b", "text2video", 1)])
        assert states_on_disk(path) == {"a": ItemState.PENDING, "b": ItemState.PENDING}
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        assert states_on_disk(path)["a"] is ItemState.PENDING
        ledger.commit()
        assert states_on_disk(path)["a"] is ItemState.SUBMITTING
        assert ledger.uncommitted == 0
        ledger.commit()  # nothing open: no-op
        ledger.record_intent("b", 1, ledger.external_task_id("b", 1))
        assert states_on_disk(path)["b"] is ItemState.PENDING
        commits = ledger.commits
        await ledger.durable()
        assert states_on_disk(path)["b"] is ItemState.SUBMITTING
        assert ledger.commits == commits + 1
        await ledger.durable()  # already durable: no commit
        assert ledger.commits == commits + 1


@pytest.mark.anyio
async def test_concurrent_durable_calls_share_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "s"
    ids = [f"i{n:02}" for n in range(50)]
    with Ledger(path, "b", monotonic=Mono()) as ledger:
        ledger.sync_items([(i, "text2video", 1) for i in ids])
        commits = ledger.commits
        durable: list[str] = []

        async def submit(item_id: str) -> None:
            ledger.record_intent(item_id, 1, ledger.external_task_id(item_id, 1))
            await ledger.durable()
            durable.append(item_id)
            # what a crash right now would leave: the intent is on disk
            assert ledger.uncommitted == 0

        async with anyio.create_task_group() as tg:
            for item_id in ids:
                tg.start_soon(submit, item_id)
        assert ledger.commits == commits + 1
        assert sorted(durable) == ids
        assert set(states_on_disk(path).values()) == {ItemState.SUBMITTING}


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import anyio
    from orchestrator.ledger import Ledger

    async def main() -> None:
        ledger = Ledger(Path(sys.argv[1]), "b")
        ledger.sync_items([("a", "text2video", 1), ("b", "text2video", 1)])
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        await ledger.durable()
        ledger.record_submitted("a", "T-a")  # not awaited: may be lost
        ledger.record_intent("b", 1, ledger.external_task_id("b", 1))  # not awaited
        if sys.argv[2] == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        os._exit(3)

    anyio.run(main)
    """
)


@pytest.mark.parametrize("death", ["sigkill", "os_exit"])
def test_a_durable_intent_survives_a_crash(tmp_path: Path, death: str) -> None:
    path = tmp_path / "s"
    proc = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(path), death],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == (-9 if death == "sigkill" else 3), proc.stderr
    # The file is consistent and the dead run's lock is gone.
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        check.close()
    with Ledger(path, "b") as ledger:
        a = ledger.get("a")
        assert a.state is ItemState.SUBMITTING
        assert a.external_task_id == ledger.external_task_id("a", 1)
        assert ledger.paid_attempts() == {"a": 1}  # counted against the cap: it may have been sent
        # The writes after the last commit were lost, never half-applied: 'a' is left
        # 'submitting' (the next run looks its task up), 'b' was never sent.
        assert a.task_id is None
        b = ledger.get("b")
        assert (b.state, b.attempt) == (ItemState.PENDING, 0)
        assert ledger.attempts("b") == []


def test_a_write_once_max_delay_old_commits(tmp_path: Path) -> None:
    path = tmp_path / "s"
    mono = Mono()
    with Ledger(path, "b", max_delay=0.5, monotonic=mono) as ledger:
        ledger.sync_items([("a", "text2video", 1)])
        commits = ledger.commits
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))  # opens the transaction
        mono.now = 0.4
        ledger.record_submitted("a", "T1")
        assert states_on_disk(path)["a"] is ItemState.PENDING
        assert ledger.commits == commits
        mono.now = 0.5
        ledger.finish("a", ItemState.SUCCEEDED, assets=[AssetRecord(0, "")])
        assert states_on_disk(path)["a"] is ItemState.SUCCEEDED
        assert (ledger.commits, ledger.uncommitted) == (commits + 1, 0)
        # the next write opens a new transaction, aged from now
        mono.now = 0.9
        ledger.record_assets("a", [AssetRecord(0, "", path="a.mp4")], None)
        assert ledger.commits == commits + 1
    with Ledger(tmp_path / "t", "b", max_delay=0) as ledger:  # 0: every write commits
        ledger.sync_items([("a", "text2video", 1)])
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        assert ledger.uncommitted == 0
        assert states_on_disk(tmp_path / "t")["a"] is ItemState.SUBMITTING


def test_a_failed_write_rolls_back_only_itself(tmp_path: Path) -> None:
    path = tmp_path / "s"
    with Ledger(path, "b", monotonic=Mono()) as ledger:
        ledger.sync_items([("a", "text2video", 1), ("b", "text2video", 1)])
        ext_a = ledger.external_task_id("a", 1)
        ledger.record_intent("a", 1, ext_a)
        # An external id is never reused: a second attempt under it is refused.
        with pytest.raises(sqlite3.IntegrityError):
            ledger.record_intent("b", 1, ext_a)
        # A write that fails after its first statement applied: only that write is undone.
        ledger._db.execute(
            "CREATE TEMP TRIGGER boom BEFORE UPDATE ON items WHEN NEW.id = 'b' "
            "BEGIN SELECT RAISE(ABORT, 'boom'); END"
        )
        with pytest.raises(sqlite3.IntegrityError, match="boom"):
            ledger.record_intent("b", 1, ledger.external_task_id("b", 1))
        ledger._db.execute("DROP TRIGGER boom")
        assert ledger.attempts("b") == []
        assert ledger.get("b").state is ItemState.PENDING
        assert ledger.get("a").state is ItemState.SUBMITTING
        assert ledger.uncommitted == 1
        ledger.commit()
        assert states_on_disk(path) == {"a": ItemState.SUBMITTING, "b": ItemState.PENDING}


@pytest.mark.anyio
async def test_lost_uncommitted_writes_are_never_reported_durable(tmp_path: Path) -> None:
    path = tmp_path / "s"
    ledger = Ledger(path, "b", monotonic=Mono())
    ledger.sync_items([("a", "text2video", 1), ("b", "text2video", 1)])
    ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
    # SQLite discarding the whole transaction (as on an I/O error or a full disk).
    ledger._db.execute(
        "CREATE TEMP TRIGGER boom BEFORE UPDATE ON items WHEN NEW.id = 'b' "
        "BEGIN SELECT RAISE(ROLLBACK, 'boom'); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="boom"):
        ledger.record_intent("b", 1, ledger.external_task_id("b", 1))
    with pytest.raises(LedgerError, match="lost writes"):
        await ledger.durable()
    with pytest.raises(LedgerError, match="lost writes"):
        ledger.record_submitted("a", "T1")
    ledger.close()  # still closes and releases the lock
    with Ledger(path, "b") as again:
        assert again.get("a").state is ItemState.PENDING  # the intent never reached the disk


def test_close_commits_pending_writes(tmp_path: Path) -> None:
    path = tmp_path / "s"
    ledger = Ledger(path, "b", monotonic=Mono())
    ledger.sync_items([("a", "text2video", 1), ("b", "text2video", 1)])
    ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
    ledger.close()
    assert states_on_disk(path)["a"] is ItemState.SUBMITTING
    # also when the run ends by an exception: every write leaves a valid state
    with pytest.raises(RuntimeError), Ledger(path, "b", monotonic=Mono()) as ledger:
        ledger.record_intent("b", 1, ledger.external_task_id("b", 1))
        raise RuntimeError("crash of the engine, not of the process")
    assert states_on_disk(path) == {"a": ItemState.SUBMITTING, "b": ItemState.SUBMITTING}


def test_asset_records_round_trip_and_damaged_fields_read_as_absent() -> None:
    whole = AssetRecord(2, "https://x/2.mp4", "video", path="a/2.mp4", bytes=7,
                        sha256="ab" * 32, content_type="video/mp4", mtime_ns=123)
    assert AssetRecord.from_json(whole.to_json()) == whole
    assert whole.downloaded and not AssetRecord(0, "u").downloaded
    assert AssetRecord(0, "u").to_json() == {"index": 0, "url": "u"}
    # What an older version or a damaged file may hold: a file not known to be on disk.
    damaged = AssetRecord.from_json(
        {"index": "0", "url": 5, "path": "a/0.mp4", "bytes": True, "sha256": None}
    )
    assert damaged == AssetRecord(-1, "", path="a/0.mp4")
    assert not damaged.downloaded
    assert AssetRecord.from_json(["not", "a", "record"]) == AssetRecord(-1, "")


def test_stored_assets_that_are_not_a_list_read_as_none(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with Ledger(path, "b") as ledger:
        ledger.sync_items([("a", "text2video", 1)])
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        ledger.record_submitted("a", "T1")
        ledger.finish("a", ItemState.SUCCEEDED, assets=[AssetRecord(0, "u")])
    db = sqlite3.connect(path)
    with db:
        db.execute("UPDATE items SET assets = ? WHERE id = 'a'", ('{"index": 0}',))
    db.close()
    with Ledger(path, "b") as ledger:
        assert ledger.get("a").assets == []
