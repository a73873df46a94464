"""Both ledgers keep one contract: the SQLite file and PostgreSQL (a real server, started by the
test session) record the same states, attempts, charges, files and runs, make an intent durable
before ``durable()`` returns, lose at most the writes since the last commit, and refuse a second
run of the batch."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from orchestrator.errors import Category, ErrorInfo, downloads_pending
from orchestrator.ledger import AssetRecord, ItemState, Ledger, LedgerError, LedgerLocked
from orchestrator.ledger_api import ItemRecord
from orchestrator.ledger_pg import PgLedger, redact_dsn
from orchestrator.ledger_pg_schema import PG_SCHEMA_VERSION

RATE = ErrorInfo(category=Category.RATE_LIMIT, message="slow down", retryable=True, hint="wait")
AnyLedger = Ledger | PgLedger


class Backend:
    """Opens the ledger of a batch, and reads it as ``status`` does (without taking it)."""

    def __init__(self, name: str, where: Any) -> None:
        self.name = name
        self.where = where

    def open(self, batch: str = "b", **options: Any) -> AnyLedger:
        if self.name == "sqlite":
            return Ledger(self.where, batch, **options)
        return PgLedger(self.where, batch, **options)

    def read(self, batch: str = "b") -> dict[str, ItemRecord]:
        if self.name == "sqlite":
            _, records = Ledger.read_only(self.where)
        else:
            _, records = PgLedger.read_only(self.where, batch)
        return {r.id: r for r in records}


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "sqlite":
        return Backend("sqlite", tmp_path / "state.sqlite3")
    return Backend("postgres", request.getfixturevalue("pg_url"))


def test_lifecycle_survives_reopen(backend: Backend) -> None:
    with backend.open() as ledger:
        ledger.sync_items([("a", "text2video", 1), ("b", "image", 4)])
        ext = ledger.external_task_id("a", 1)
        ledger.record_intent("a", 1, ext)
        assert ledger.get("a").state is ItemState.SUBMITTING
        ledger.record_submitted("a", "T1")
        ledger.finish("a", ItemState.SUCCEEDED, assets=[AssetRecord(0, "u")])
    with backend.open() as ledger:
        a = ledger.get("a")
        assert a.state is ItemState.SUCCEEDED
        assert (a.task_id, a.external_task_id, a.tasks_created) == ("T1", ext, 1)
        assert a.assets == [AssetRecord(0, "u")]
        assert a.finished_at is not None and a.submitted_at is not None
        assert ledger.get("b").state is ItemState.PENDING
        assert ledger.get("b").expected_assets == 4
        assert [r.id for r in ledger.all()] == ["a", "b"]
        with pytest.raises(KeyError):
            ledger.get("missing")


def test_attempts_retries_charges_and_fingerprints(backend: Backend) -> None:
    with backend.open() as ledger:
        ledger.sync_items([("a", "text2video", 1)])
        assert ledger.next_seq("a", "fp1") == 1
        first = ledger.external_task_id("a", 1, "fp1")
        ledger.record_intent("a", 1, first, "fp1", 1)
        intent = ledger.intent_time(first)
        assert intent is not None
        ledger.record_submitted("a", "T1")
        ledger.record_charge("a", 5.0)
        ledger.record_retry("a", RATE)
        assert ledger.get("a").state is ItemState.PENDING
        assert ledger.next_seq("a", "fp1") == 2 and ledger.next_seq("a", "fp2") == 1
        second = ledger.external_task_id("a", 2, "fp1")
        ledger.record_intent("a", 2, second, "fp1", 2)
        assert ledger.paid_attempts() == {"a": 2}  # one created, one maybe sent
        ledger.record_not_created("a", RATE)
        third = ledger.external_task_id("a", 3, "fp1")
        ledger.record_intent("a", 3, third, "fp1", 3)
        ledger.record_submitted("a", "T3")
        ledger.record_charge("a", 2.5)
        ledger.finish("a", ItemState.FAILED, error=RATE)
    with backend.open() as ledger:
        a = ledger.get("a")
        assert (a.state, a.attempt, a.tasks_created, a.charged_units) == (
            ItemState.FAILED, 3, 2, 7.5)
        assert a.error is not None and a.error.message == "slow down"
        assert a.fingerprint == "fp1"
        assert ledger.paid_for("a", "fp1") == 2 and ledger.paid_for("a", None) == 2
        assert ledger.paid_for("a", "fp-other") == 0
        assert ledger.intent_time(first) == intent
        assert ledger.intent_time("orc-unknown") is None
        assert [(x["attempt"], x["state"]) for x in ledger.attempts("a")] == [
            (1, "pending"), (2, "not_created"), (3, "failed")]


def test_download_error_is_written_with_the_verdict_and_replaced(backend: Backend) -> None:
    pending = downloads_pending()
    with backend.open() as ledger:
        ledger.sync_items([("a", "text2video", 1)])
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        ledger.record_submitted("a", "T1")
        ledger.finish("a", ItemState.SUCCEEDED, assets=[AssetRecord(0, "")],
                      download_error=pending)
    with backend.open() as ledger:
        assert ledger.get("a").download_error == pending
        ledger.record_assets("a", [AssetRecord(0, "", path="a/0.mp4", sha256="x")], None)
    with backend.open() as ledger:
        a = ledger.get("a")
        assert a.download_error is None and a.assets[0].path == "a/0.mp4"
        ledger.reopen("a", ItemState.PENDING)
    assert backend.read()["a"].state is ItemState.PENDING


def test_writes_are_seen_by_others_once_committed_and_an_intent_before_durable_returns(
    backend: Backend,
) -> None:
    with backend.open() as ledger:
        ledger.sync_items([("a", "text2video", 1), ("b", "text2video", 1)])
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        assert backend.read()["a"].state is ItemState.PENDING  # not committed yet
        assert ledger.uncommitted == 1

        async def send() -> None:
            await ledger.durable()

        anyio.run(send)
        assert backend.read()["a"].state is ItemState.SUBMITTING
        assert ledger.uncommitted == 0
        ledger.record_submitted("a", "T1")
        ledger.commit()
        assert backend.read()["a"].task_id == "T1"


def test_a_second_run_of_the_batch_is_refused_until_the_first_closes(backend: Backend) -> None:
    first = backend.open()
    try:
        with pytest.raises(LedgerLocked, match="another run"):
            backend.open()
    finally:
        first.close()
    backend.open().close()


def test_runs_and_file_hashes_are_kept(backend: Backend) -> None:
    with backend.open() as ledger:
        run = ledger.start_run(100.0)
        ledger.record_run(run, requests={"create": 2}, retries=1)
        ledger.remember_file_hashes({"in/a.png": ((10, 20), "abc")})
        ledger.record_run(run, requests={"create": 3}, retries=1, finished_at=110.0,
                          exit_code=0, exit_reason="done")
        assert ledger.start_run(120.0) == run + 1
    with backend.open() as ledger:
        runs = ledger.runs()
        assert [(r.run, r.started_at, r.finished_at, r.exit_code) for r in runs] == [
            (run, 100.0, 110.0, 0), (run + 1, 120.0, None, None)]
        assert runs[0].requests == {"create": 3} and runs[0].retries == 1
        assert ledger.file_hashes() == {"in/a.png": ((10, 20), "abc")}
        assert ledger.created is False


def test_what_the_provider_sent_is_scrubbed_before_it_is_stored(backend: Backend) -> None:
    secret = "sk-very-secret-key"

    def scrub(value: Any) -> Any:
        return _replace(value, secret, "[REDACTED]")

    with backend.open(scrub=scrub) as ledger:
        ledger.sync_items([("a", "text2video", 1)])
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        ledger.record_submitted("a", "T1")
        leaky = ErrorInfo(category=Category.SERVER, message=f"echo {secret}", retryable=False,
                          hint="h")
        ledger.finish("a", ItemState.FAILED, error=leaky,
                      assets=[AssetRecord(0, f"https://x/a.mp4?key={secret}")])
    stored = backend.read()["a"]
    assert stored.error is not None and secret not in stored.error.message
    assert secret not in stored.assets[0].url


def _replace(value: Any, old: str, new: str) -> Any:
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    return value


# -- PostgreSQL only -----------------------------------------------------------------------------


def test_one_database_holds_many_batches(pg_url: str) -> None:
    with PgLedger(pg_url, "one") as one, PgLedger(pg_url, "two") as two:
        one.sync_items([("a", "text2video", 1)])
        two.sync_items([("a", "image", 2), ("b", "image", 1)])
        assert one.ledger_id != two.ledger_id
    assert [r.expected_assets for r in PgLedger.read_only(pg_url, "two")[1]] == [2, 1]
    assert [r.kind for r in PgLedger.read_only(pg_url, "one")[1]] == ["text2video"]
    with pytest.raises(LedgerError, match="no batch 'three'"):
        PgLedger.read_only(pg_url, "three")


def test_a_ledger_written_by_a_newer_version_is_refused(pg_url: str) -> None:
    PgLedger(pg_url, "b").close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE orchestrator_schema SET version = %s", (PG_SCHEMA_VERSION + 1,))
    with pytest.raises(LedgerError, match="newer than this orchestrator"):
        PgLedger(pg_url, "b")


def test_a_run_that_lost_the_batch_writes_nothing_more(pg_url: str) -> None:
    ledger = PgLedger(pg_url, "b")
    try:
        ledger.sync_items([("a", "text2video", 1)])
        # Another run took the batch over (this run's lock connection had dropped).
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("UPDATE batches SET owner_token = owner_token + 1")
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        with pytest.raises(LedgerError, match="taken over by another run"):
            anyio.run(ledger.durable)
        with pytest.raises(LedgerError):
            ledger.record_submitted("a", "T1")
    finally:
        ledger._conn.close()
    assert PgLedger.read_only(pg_url, "b")[1][0].state is ItemState.PENDING


def test_intents_of_one_turn_share_one_flush_through_the_pool(pg_url: str) -> None:
    with PgLedger(pg_url, "b") as ledger:
        ledger.sync_items([(f"i{n}", "text2video", 1) for n in range(20)])
        before = ledger.commits

        async def main() -> None:
            async with ledger.attached(), anyio.create_task_group() as tg:
                for n in range(20):
                    tg.start_soon(intent, f"i{n}")

        async def intent(item: str) -> None:
            ledger.record_intent(item, 1, ledger.external_task_id(item, 1))
            await ledger.durable()
            assert PgLedger.read_only(pg_url, "b")[1][0].state is ItemState.SUBMITTING

        anyio.run(main)
        assert ledger.commits - before == 1
    states = {r.state for r in PgLedger.read_only(pg_url, "b")[1]}
    assert states == {ItemState.SUBMITTING}


def test_the_url_password_never_reaches_a_message() -> None:
    url = "postgresql://orch:hunter2-password@127.0.0.1:9/ledger?connect_timeout=1"
    assert "hunter2" not in redact_dsn(url)
    assert redact_dsn(url) == "postgresql://orch@127.0.0.1:9/ledger"
    with pytest.raises(LedgerError) as caught:
        PgLedger(url, "b")
    assert "hunter2" not in str(caught.value)
    assert "cannot reach the state database postgresql://orch@127.0.0.1:9/ledger" in str(
        caught.value)


def test_a_flush_that_keeps_failing_breaks_the_ledger_without_losing_the_rows(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    naps: list[float] = []
    ledger = PgLedger(pg_url, "b", sleep=naps.append)
    try:
        ledger.sync_items([("a", "text2video", 1)])
        ledger.record_intent("a", 1, ledger.external_task_id("a", 1))
        calls: list[int] = []
        real: Callable[..., Any] = ledger._conn.transaction

        def failing(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        monkeypatch.setattr(ledger._conn, "transaction", failing)
        with pytest.raises(LedgerError, match="did not take writes"):
            ledger.commit()
        assert len(calls) == 3 and naps == [0.2, 1.0]
        assert ledger.uncommitted == 1  # still pending: never reported durable
        monkeypatch.setattr(ledger._conn, "transaction", real)
        with pytest.raises(LedgerError):  # refused for good: a new run reconciles
            ledger.record_submitted("a", "T1")
    finally:
        ledger._conn.close()
