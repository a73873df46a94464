"""A create whose answer was lost, to a provider that cannot look tasks up: the item is held as
unresolved, never resent on its own (it may be paid for already), reported with what happened,
and sent again only when ``run --resubmit-unresolved`` asks for it, which warns it may pay twice.

The provider is Kling's without its lookup (the capability is the class's), injected in the
CLI's process; what was paid for is the simulator's count.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator import FaultRule, SimConfig, Simulator
from tests.conftest import cli_env, run_cli, write_manifest
from tests.test_disk_full import run_injected
from tests.test_new_batch import WITHOUT_LOOKUP

PROMPTS = ["a calm lake at dawn", "a lost answer over the sea", "a fox in the snow"]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimConfig(
        task_duration=(0.05, 0.1),
        # A resend under the same external id is accepted: what a provider without client ids
        # does with every resend.
        reject_duplicate_external_ids=False,
        faults=(FaultRule(op="create", effect="drop_after_commit", match="lost", times=1),),
    )
    with Simulator(config) as simulator:
        yield simulator


def manifest(directory: Path, sim: Simulator) -> Path:
    items = [{"id": f"clip-{i}", "prompt": prompt} for i, prompt in enumerate(PROMPTS)]
    return write_manifest(directory, sim, items)


def report_items(directory: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((directory / "out" / "report.json").read_text())
    return {item["id"]: item for item in data["items"]}


def test_a_lost_create_is_held_unresolved_and_resent_only_on_request(
    tmp_path: Path, sim: Simulator
) -> None:
    path = manifest(tmp_path, sim)
    env = cli_env(sim)

    first = run_injected(WITHOUT_LOOKUP, ["run", str(path)], env)
    assert first.code == 1, first.stderr
    assert "Traceback" not in first.stderr
    stats = sim.stats()
    assert stats.tasks_created == 3  # the lost answer's task exists: it is paid for
    assert stats.by_prompt[PROMPTS[1]] == 1
    assert "1 unresolved" in first.stderr and "--resubmit-unresolved" in first.stderr
    lost = report_items(tmp_path)["clip-1"]
    assert lost["status"] == "unresolved"
    error = lost["error"]
    assert "answer was lost" in error["message"]
    assert "cannot look tasks up" in error["message"]
    assert "--resubmit-unresolved" in error["hint"] and "pay twice" in error["hint"]
    assert error["retryable"] is False
    assert {report_items(tmp_path)[f"clip-{i}"]["status"] for i in (0, 2)} == {"succeeded"}
    creates = stats.create_requests

    # A rerun sends nothing for it and says the same.
    again = run_injected(WITHOUT_LOOKUP, ["run", str(path)], env)
    assert again.code == 1, again.stderr
    assert sim.stats().create_requests == creates
    assert report_items(tmp_path)["clip-1"]["error"] == error

    # Asked to, it is sent again: a second paid job, as the flag warns.
    resent = run_injected(WITHOUT_LOOKUP, ["run", str(path), "--resubmit-unresolved"], env)
    assert resent.code == 0, resent.stderr
    stats = sim.stats()
    assert stats.by_prompt[PROMPTS[1]] == 2
    assert stats.by_prompt[PROMPTS[0]] == stats.by_prompt[PROMPTS[2]] == 1
    assert report_items(tmp_path)["clip-1"]["status"] == "succeeded"
    data = json.loads((tmp_path / "out" / "report.json").read_text())
    assert data["resubmitted"] == 1
    first_run, second_run, _ = data["runs"]
    assert "lookup" not in first_run["requests"]  # nothing to look it up with
    assert second_run["requests"] == {}


def test_where_tasks_can_be_looked_up_the_flag_changes_nothing(
    tmp_path: Path, sim: Simulator
) -> None:
    path = manifest(tmp_path, sim)
    result = run_cli(["run", str(path), "--resubmit-unresolved"], cli_env(sim))
    assert result.code == 0, result.stderr
    stats = sim.stats()
    # The lost answer was settled by a lookup: one task per prompt.
    assert {p: stats.by_prompt[p] for p in PROMPTS} == dict.fromkeys(PROMPTS, 1)
    assert all(item["status"] == "succeeded" for item in report_items(tmp_path).values())
