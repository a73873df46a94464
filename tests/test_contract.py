"""The provider contract: one set of behaviour tests, run by the CLI as a user runs it, against
every provider's simulator, and judged by what each simulator says was paid for.

Where providers differ, the test asks the capability, never the name: a lost create is settled
by a lookup where tasks can be looked up, and held unresolved (never resent on its own) where
they cannot. A new provider gets these tests by adding its harness (providers_under_test.py).
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from orchestrator.status import load_records
from tests.conftest import run_cli, start_cli
from tests.providers_under_test import HARNESSES, Fault, Harness, Running

pytestmark = pytest.mark.parametrize("harness", HARNESSES, ids=lambda h: h.name)


def items(*prompts: str) -> list[dict[str, Any]]:
    return [{"id": f"clip-{i}", "prompt": prompt} for i, prompt in enumerate(prompts)]


def report(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "out" / "report.json").read_text())
    return data


def by_id(directory: Path) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in report(directory)["items"]}


def submitted(state: Path) -> int:
    """How many items the ledger holds a task id for (0 before the ledger exists)."""
    try:
        return sum(1 for record in load_records(state, "contract") if record.task_id)
    except FileNotFoundError:
        return 0


def paid_once(running: Running, prompts: tuple[str, ...]) -> None:
    assert {p: running.paid(p) for p in prompts} == dict.fromkeys(prompts, 1)


def log_events(directory: Path) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for path in sorted((directory / "out" / "logs").glob("*.jsonl")):
        events += [json.loads(line) for line in path.read_text().splitlines() if line]
    return events


PROMPTS = ("a calm lake at dawn", "a fox in the snow", "rain on a tin roof")


def test_submit_poll_verify_download(tmp_path: Path, harness: Harness) -> None:
    with harness.start() as running:
        path = harness.manifest(tmp_path, running, items(*PROMPTS))
        result = run_cli(["run", str(path)], running.env())
        assert result.code == 0, result.stderr
        paid_once(running, PROMPTS)
    found = by_id(tmp_path)
    assert {item["status"] for item in found.values()} == {"succeeded"}
    for item in found.values():
        (asset,) = item["assets"]
        file = tmp_path / "out" / asset["path"]
        assert file.stat().st_size == asset["bytes"] > 0
        assert file.read_bytes()[4:8] == b"ftyp"  # an MP4, verified before it was kept


def test_a_policy_refusal_fails_the_item_unretried(tmp_path: Path, harness: Harness) -> None:
    with harness.start((Fault("policy", "fox", times=None),)) as running:
        path = harness.manifest(tmp_path, running, items(*PROMPTS))
        result = run_cli(["run", str(path)], running.env())
        assert result.code == 1, result.stderr
        assert running.paid(PROMPTS[1]) == 0
        refused = [e for e in log_events(tmp_path)
                   if e.get("event") == "item.create_failed" and e.get("item") == "clip-1"]
        assert len(refused) == 1  # never retried unchanged
    error = by_id(tmp_path)["clip-1"]["error"]
    assert error["category"] == "policy" and not error["retryable"] and error["hint"]


def test_retry_after_is_honoured(tmp_path: Path, harness: Harness) -> None:
    with harness.start((Fault("rate_limited", "lake", times=2, retry_after=1),)) as running:
        path = harness.manifest(tmp_path, running, items(*PROMPTS))
        result = run_cli(["run", str(path)], running.env())
        assert result.code == 0, result.stderr
        paid_once(running, PROMPTS)
    waits = [e["delay"] for e in log_events(tmp_path)
             if e.get("event") == "item.retry_scheduled" and e.get("item") == "clip-0"]
    assert len(waits) == 2 and min(waits) >= 1.0  # as told, not the 0.01 s backoff
    assert report(tmp_path)["retries"] >= 2


def test_a_5xx_before_anything_was_made_is_retried(tmp_path: Path, harness: Harness) -> None:
    with harness.start((Fault("server_error", "snow"),)) as running:
        path = harness.manifest(tmp_path, running, items(*PROMPTS))
        result = run_cli(["run", str(path)], running.env())
        if harness.can_look_up:
            # Looked up, found absent, sent again: one task.
            assert result.code == 0, result.stderr
            paid_once(running, PROMPTS)
        else:
            # A 5xx to a submit may have made the job, and nothing can tell: held, not resent.
            assert result.code == 1, result.stderr
            assert by_id(tmp_path)["clip-1"]["status"] == "unresolved"
            assert running.paid(PROMPTS[1]) == 0


def test_a_lost_create_is_never_paid_twice_unasked(tmp_path: Path, harness: Harness) -> None:
    with harness.start((Fault("lost_create", "rain"),)) as running:
        path = harness.manifest(tmp_path, running, items(*PROMPTS))
        env = running.env()
        result = run_cli(["run", str(path)], env)
        assert running.paid(PROMPTS[2]) == 1
        lost = by_id(tmp_path)["clip-2"]
        if harness.can_look_up:
            assert result.code == 0, result.stderr
            assert lost["status"] == "succeeded"
            return
        assert result.code == 1, result.stderr
        assert lost["status"] == "unresolved"
        assert "--resubmit-unresolved" in lost["error"]["hint"]
        again = run_cli(["run", str(path)], env)
        assert again.code == 1 and running.paid(PROMPTS[2]) == 1
        resent = run_cli(["run", str(path), "--resubmit-unresolved"], env)
        assert resent.code == 0, resent.stderr
        assert running.paid(PROMPTS[2]) == 2  # asked for, and warned about
        paid_once(running, PROMPTS[:2])


def test_a_billing_stop_ends_the_batch_resumably(tmp_path: Path, harness: Harness) -> None:
    prompts = tuple(f"billing prompt {i}" for i in range(6))
    with harness.start(billing_after=2) as running:
        path = harness.manifest(tmp_path, running, items(*prompts),
                                limits={"concurrency": 2})
        result = run_cli(["run", str(path)], running.env())
        assert result.code == 3, result.stderr
        assert "Traceback" not in result.stderr
        assert running.created() == 2
        assert 1 <= running.billing_refusals() <= 2  # at most one per slot
    data = report(tmp_path)
    assert data["stopped_by"]["category"] == "billing"
    assert data["counts"]["succeeded"] == 2 and data["counts"]["not_run"] == 4


def test_a_failed_job_gets_a_new_attempt(tmp_path: Path, harness: Harness) -> None:
    with harness.start((Fault("job_failed", "lake"),)) as running:
        path = harness.manifest(tmp_path, running, items(*PROMPTS))
        result = run_cli(["run", str(path)], running.env())
        assert result.code == 0, result.stderr
        assert running.paid(PROMPTS[0]) == 2
        paid_once(running, PROMPTS[1:])
    assert by_id(tmp_path)["clip-0"]["attempts"] == 2


def test_a_cut_download_is_fetched_again_not_generated(tmp_path: Path, harness: Harness) -> None:
    with harness.start((Fault("asset_truncated", "fox"),)) as running:
        path = harness.manifest(tmp_path, running, items(*PROMPTS))
        result = run_cli(["run", str(path)], running.env())
        assert result.code == 0, result.stderr
        paid_once(running, PROMPTS)


def test_sigkill_and_resume_pays_nothing_twice(tmp_path: Path, harness: Harness) -> None:
    prompts = tuple(f"resume prompt {i}" for i in range(6))
    with harness.start(task_duration=(1.0, 1.5)) as running:
        path = harness.manifest(tmp_path, running, items(*prompts), limits={"concurrency": 6})
        env = running.env()
        proc = start_cli(["run", str(path)], env)
        # Killed while every job runs, once their answers are on the ledger (a kill in the
        # middle of a submit is the lost-create case above).
        state = tmp_path / "out" / "state.sqlite3"
        deadline = time.monotonic() + 30
        while submitted(state) < len(prompts) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert submitted(state) == len(prompts)
        assert running.created() == len(prompts)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        result = run_cli(["run", str(path)], env)
        assert result.code == 0, result.stderr
        paid_once(running, prompts)
    assert {item["status"] for item in by_id(tmp_path).values()} == {"succeeded"}
