"""The lease and limit SQL several workers share, on a real PostgreSQL: claims never overlap, a
lost lease fences its old holder's writes, the account's slots never exceed the cap however many
workers ask at once, and create turns are spaced across workers."""

from __future__ import annotations

import itertools
import threading
import time
from typing import Any

import psycopg
import pytest

from orchestrator.ledger_api import ItemState
from orchestrator.ledger_pg import PgLedger
from orchestrator.ledger_pg_leases import (
    acquire_slots,
    claim,
    fenced_update,
    release,
    release_slots,
    renew,
    renew_slots,
    slots_in_use,
    take_turn,
)


def _batch(url: str, items: int) -> None:
    with PgLedger(url, "b") as ledger:
        ledger.sync_items([(f"i{n:03d}", "text2video", 1) for n in range(items)])
        ledger.record_intent("i000", 1, ledger.external_task_id("i000", 1))
        ledger.record_submitted("i000", "T0")
        ledger.finish("i000", ItemState.SUCCEEDED)  # done: never claimed


def _connect(url: str) -> psycopg.Connection[Any]:
    return psycopg.connect(url, autocommit=True)


def test_workers_claiming_at_once_never_get_the_same_item(pg_url: str) -> None:
    _batch(pg_url, 201)
    got: dict[str, dict[str, int]] = {}
    start = threading.Barrier(4)

    def worker(name: str) -> None:
        with _connect(pg_url) as conn:
            start.wait()
            mine: dict[str, int] = {}
            while batch := claim(conn, "b", name, limit=7, ttl=30):
                mine.update(batch)
            got[name] = mine

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    claimed = [item for mine in got.values() for item in mine]
    assert len(claimed) == len(set(claimed)) == 200  # all but the finished one, each once
    assert "i000" not in claimed
    tokens = [token for mine in got.values() for token in mine.values()]
    assert len(set(tokens)) == 200


def test_an_expired_lease_is_taken_over_and_fences_its_old_holder(pg_url: str) -> None:
    _batch(pg_url, 3)
    with _connect(pg_url) as a, _connect(pg_url) as b:
        first = claim(a, "b", "worker-a", limit=10, ttl=0.3)
        assert sorted(first) == ["i001", "i002"]
        assert claim(b, "b", "worker-b", limit=10, ttl=30) == {}  # held
        assert renew(a, "b", first, ttl=0.3) == set()  # still a's
        time.sleep(0.4)  # a paused past its lease (SIGSTOP)
        second = claim(b, "b", "worker-b", limit=10, ttl=30)
        assert sorted(second) == ["i001", "i002"]
        assert all(second[i] != first[i] for i in second)
        # a wakes up: its renewal says what it lost, and its writes change nothing.
        assert renew(a, "b", first, ttl=30) == {"i001", "i002"}
        assert not fenced_update(a, "b", "i001", first["i001"], {"state": "running"})
        assert fenced_update(b, "b", "i001", second["i001"], {"state": "running"})
        release(a, "b", first)  # a's stale release frees nothing
        assert claim(a, "b", "worker-a", limit=10, ttl=30) == {}
        release(b, "b", second)
        assert sorted(claim(a, "b", "worker-a", limit=10, ttl=30)) == ["i001", "i002"]
        state = a.execute("SELECT state FROM items WHERE batch = 'b' AND id = 'i001'")
        assert state.fetchone() == ("running",)


def test_the_accounts_slots_never_exceed_the_cap_across_workers(pg_url: str) -> None:
    PgLedger(pg_url, "b").close()  # the schema
    cap = 7
    peak = [0]
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(5)

    def worker(name: str) -> None:
        try:
            with _connect(pg_url) as conn, _connect(pg_url) as watch:
                start.wait()
                for n in range(40):
                    item = f"{name}-{n}"
                    weight = 1 + n % 3  # image tasks hold n slots
                    while not acquire_slots(conn, "acct", name, item, weight, cap=cap, ttl=30):
                        time.sleep(0.001)
                    used = slots_in_use(watch, "acct")
                    with lock:
                        peak[0] = max(peak[0], used)
                    release_slots(conn, "acct", name, item)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{n}",)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert 3 <= peak[0] <= cap
    with _connect(pg_url) as conn:
        assert slots_in_use(conn, "acct") == 0


def test_a_dead_workers_slots_expire_and_a_live_one_keeps_them(pg_url: str) -> None:
    PgLedger(pg_url, "b").close()
    with _connect(pg_url) as conn:
        assert acquire_slots(conn, "acct", "dead", "x", 2, cap=3, ttl=0.2)
        assert acquire_slots(conn, "acct", "live", "y", 1, cap=3, ttl=0.2)
        assert not acquire_slots(conn, "acct", "live", "z", 1, cap=3, ttl=30)
        time.sleep(0.1)
        assert renew_slots(conn, "acct", "live", ttl=30) == 1
        time.sleep(0.2)  # "dead" stopped renewing
        assert slots_in_use(conn, "acct") == 1
        assert acquire_slots(conn, "acct", "live", "z", 2, cap=3, ttl=30)
        assert not acquire_slots(conn, "acct", "other", "w", 1, cap=3, ttl=30)


def test_create_turns_are_spaced_across_workers(pg_url: str) -> None:
    PgLedger(pg_url, "b").close()
    waits: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        with _connect(pg_url) as conn:
            for _ in range(10):
                wait = take_turn(conn, "acct", interval=0.05)
                with lock:
                    waits.append(time.monotonic() + wait)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    turns = sorted(waits)
    gaps = [b - a for a, b in itertools.pairwise(turns)]
    assert len(turns) == 30
    # 30 turns 50 ms apart: the last is about 1.45 s after the first, whoever asked.
    assert turns[-1] - turns[0] == pytest.approx(29 * 0.05, abs=0.2)
    assert min(gaps) > 0.05 - 0.03  # no burst (allowing for the threads' own timing)


def test_an_older_database_is_brought_up_to_date(pg_url: str) -> None:
    PgLedger(pg_url, "b").close()
    with _connect(pg_url) as conn:
        conn.execute("UPDATE orchestrator_schema SET version = 1")
        conn.execute("ALTER TABLE items DROP COLUMN lease_token")
    PgLedger(pg_url, "b").close()
    with _connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM orchestrator_schema").fetchone() == (2,)
        conn.execute("SELECT lease_token FROM items")
