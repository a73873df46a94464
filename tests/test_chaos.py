"""Chaos: a few hundred items under the simulator's mixed fault profile, killed with SIGKILL
three times and rerun, judged by the simulator's own accounting.

Invariants (the issue's words):
- at most one successful task per item (and it is the one the report names);
- no create reuses an existing external_task_id without a lookup first;
- every item ends in a terminal state in the report;
- report statuses equal the server's truth;
- peak slots never above the configured cap;
and nothing is lost: every task the server created is known to the ledger.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator import Simulator
from orchestrator.simulator.profiles import make_config
from tests.conftest import cli_env, run_cli, start_cli, write_manifest

CAP = 8
N_VIDEO = 200
N_IMAGE = 40
SEED = 20261122
#: Kinds of fault the chaos profile injects, and how often each must at least have fired.
FAULT_GROUPS: tuple[tuple[tuple[str, ...], int], ...] = (
    (("create error ",), 5),  # refused before commit: 429, 401, 5xx
    (("create error_after_commit", "create drop_after_commit", "create delay_after_commit"), 2),
    (("create task_failed", "create fewer_assets"), 2),
)


@pytest.fixture
def chaos_sim() -> Iterator[Simulator]:
    with Simulator(make_config("chaos", seed=SEED, task_duration=(0.05, 0.2))) as sim:
        yield sim


def chaos_items() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = [
        {"id": f"v{i:03d}", "prompt": f"chaos video {i}"} for i in range(N_VIDEO)
    ]
    items += [
        {"id": f"p{i:03d}", "kind": "image", "model": "kling-v2-1", "prompt": f"chaos image {i}",
         "n": 2}
        for i in range(N_IMAGE)
    ]
    return items


def wait_for_creates(sim: Simulator, at_least: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while sim.stats().create_requests < at_least:
        if time.monotonic() > deadline:
            raise AssertionError(f"never reached {at_least} creates")
        time.sleep(0.01)


@pytest.mark.parametrize("ledger", ["sqlite", "postgres"])
def test_chaos_with_kills_keeps_every_invariant(
    tmp_path: Path, chaos_sim: Simulator, ledger: str, request: pytest.FixtureRequest
) -> None:
    """Run with the ledger in the output folder's SQLite file, and in PostgreSQL."""
    sim = chaos_sim
    items = chaos_items()
    manifest = write_manifest(
        tmp_path,
        sim,
        items,
        name="chaos",
        provider={"name": "kling", "base_url": sim.url, "timeout": 1},
        limits={"concurrency": CAP, "requests_per_minute": 12000},
        retry={"max_attempts": 5, "base_delay": 0.01, "max_delay": 0.1, "lookup_grace": 0.05},
        poll={"interval": 0.05, "max_interval": 0.2, "timeout": 60},
    )
    env = cli_env(sim)
    if ledger == "postgres":
        env["ORCHESTRATOR_STATE"] = request.getfixturevalue("pg_url")
    outputs: list[str] = []

    for kill_at in (40, 110, 190):
        proc = start_cli(["run", str(manifest)], env)
        wait_for_creates(sim, kill_at)
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        outputs += [out, err]

    # Reruns until nothing worth retrying is left (a rerun retries retryable failures).
    for _ in range(5):
        result = run_cli(["run", str(manifest)], env, timeout=300)
        outputs += [result.stdout, result.stderr]
        assert result.code in (0, 1), result.stderr[-3000:]
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        retryable = [
            i for i in report["items"] if i["error"] is not None and i["error"]["retryable"]
        ]
        if not retryable:
            break
    else:
        pytest.fail(f"items still retryable after 5 reruns: {[i['id'] for i in retryable]}")

    stats = sim.stats()
    # The faults really fired: a run against a profile whose faults were off would prove
    # nothing. Minimums far below what ~260 creates draw (expected: 20, 11, 10 and 45).
    fired = stats.faults_fired
    for prefixes, least in FAULT_GROUPS:
        count = sum(n for label, n in fired.items() if label.startswith(prefixes))
        assert count >= least, (prefixes, fired)
    assert sum(fired.values()) >= 20, fired

    tasks_by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for task in stats.tasks:
        tasks_by_prompt[task["prompt"]].append(task)
    by_id = {i["id"]: i for i in report["items"]}
    prompts = {i["id"]: i["prompt"] for i in items}
    expected = {i["id"]: i.get("n", 1) for i in items}

    # Every item ends in a terminal state.
    assert Counter(i["status"] for i in report["items"]).keys() <= {
        "succeeded", "partial", "failed"
    }
    assert len(report["items"]) == len(items)

    # No create reused an existing external id without looking it up first.
    assert stats.creates_reusing_external_id_without_lookup == 0
    assert stats.duplicate_external_ids == ()

    # Peak slots never above the configured cap.
    assert stats.peak_slots <= CAP

    # Nothing is lost: every task the server created is known to the ledger.
    if ledger == "postgres":
        import psycopg

        with psycopg.connect(env["ORCHESTRATOR_STATE"]) as conn:
            rows = conn.execute("SELECT external_task_id FROM attempts").fetchall()
        ledger_ext_ids = {row[0] for row in rows}
        assert not (tmp_path / "out" / "state.sqlite3").exists()
    else:
        db = sqlite3.connect(tmp_path / "out" / "state.sqlite3")
        ledger_ext_ids = {row[0] for row in db.execute("SELECT external_task_id FROM attempts")}
        db.close()
    assert {t["external_task_id"] for t in stats.tasks} <= ledger_ext_ids

    for item_id, entry in by_id.items():
        tasks = tasks_by_prompt[prompts[item_id]]
        succeeded = [t for t in tasks if t["status"] == "succeed"]
        # At most one successful task per item, and it is the one the report names.
        assert len(succeeded) <= 1, (item_id, tasks)
        # Report statuses equal the server's truth.
        server = {t["task_id"]: t for t in tasks}
        status = entry["status"]
        if status in ("succeeded", "partial"):
            truth = server[entry["task_id"]]
            assert truth["status"] == "succeed", (item_id, truth)
            got = len(truth["assets"]) if isinstance(truth["assets"], list) else truth["assets"]
            assert got == len(entry["assets"]), (item_id, truth, entry)
            assert (got >= expected[item_id]) == (status == "succeeded"), (item_id, got)
        else:
            category = entry["error"]["category"]
            assert not succeeded or category == "asset_mismatch", (item_id, entry, tasks)
            if category in ("task_failed", "policy"):
                assert server[entry["task_id"]]["status"] == "failed", (item_id, entry)
            if category == "asset_mismatch":
                truth = server[entry["task_id"]]
                assert truth["status"] == "succeed", (item_id, truth)

    # Most items get through a hostile provider.
    assert report["counts"]["succeeded"] >= 0.85 * len(items), report["counts"]

    # Secrets appear in no output of this faulty batch: stdout, stderr, logs, report, ledger.
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            outputs.append(path.read_bytes().decode("utf-8", "replace"))
    for text in outputs:
        assert sim.config.secret_key not in text
        assert "eyJhbGciOi" not in text  # the start of every JWT this client mints


def test_api_key_never_written_under_faults(tmp_path: Path) -> None:
    config = make_config("flaky", seed=7, task_duration=(0.05, 0.1), slow_reply=2.0)
    with Simulator(config) as sim:
        assert sim.config.api_key is not None
        env = {k: v for k, v in cli_env(sim).items() if not k.startswith("KLING_")}
        env["KLING_API_KEY"] = sim.config.api_key
        items = [{"id": f"k{i:02d}", "prompt": f"api key run {i}"} for i in range(30)]
        manifest = write_manifest(
            tmp_path, sim, items,
            provider={"name": "kling", "base_url": sim.url, "timeout": 1},
        )
        result = run_cli(["run", str(manifest)], env, timeout=300)
        assert result.code in (0, 1), result.stderr[-3000:]
        assert sim.stats().tasks_created >= 1
        outputs = [result.stdout, result.stderr]
        for path in (tmp_path / "out").rglob("*"):
            if path.is_file():
                outputs.append(path.read_bytes().decode("utf-8", "replace"))
        for text in outputs:
            assert sim.config.api_key not in text
