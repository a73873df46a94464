"""A provider that cannot look tasks up cannot adopt a batch's earlier tasks: a run whose state
file does not know the folder's earlier runs is refused, naming what it would pay again, unless
``--new-batch`` says to start afresh.

The provider here is Kling's without its lookup (the capability is the class's), injected in
the CLI's process: what is sent is counted by the simulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.providers.base import TaskFinder
from orchestrator.providers.kling import KlingProvider
from orchestrator.simulator import SimConfig, Simulator
from tests.conftest import cli_env, run_cli, write_manifest
from tests.test_disk_full import run_injected

#: Kling's provider, but without the capability to look a task up by its external id.
WITHOUT_LOOKUP = """
import dataclasses
from orchestrator.cli import common
from orchestrator.providers import registry
from orchestrator.providers.kling import KlingProvider

class CannotLookUp(KlingProvider):
    lookup = None

common.plugin_of = lambda manifest: dataclasses.replace(
    registry.plugin("kling"),
    provider_class=CannotLookUp,
    connect=lambda base_url, auth, timeout, options: CannotLookUp(
        base_url, auth, timeout=timeout, api=options.api
    ),
)
"""


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimConfig(task_duration=(0.05, 0.1), reject_duplicate_external_ids=False)
    with Simulator(config) as simulator:
        yield simulator


def items(n: int) -> list[dict[str, Any]]:
    return [{"id": f"clip-{i}", "prompt": f"new batch prompt {i}"} for i in range(n)]


def lose_state(directory: Path) -> None:
    state = directory / "out" / "state.sqlite3"
    for suffix in ("", "-wal", "-shm"):
        state.with_name(state.name + suffix).unlink(missing_ok=True)


def test_the_capability_is_the_providers() -> None:
    assert issubclass(KlingProvider, TaskFinder)

    class CannotLookUp(KlingProvider):
        lookup = None  # type: ignore[assignment]

    assert not issubclass(CannotLookUp, TaskFinder)


def test_no_lookup_means_no_start_over_without_new_batch(tmp_path: Path, sim: Simulator) -> None:
    batch = items(7)
    manifest = write_manifest(tmp_path, sim, batch)
    env = cli_env(sim)
    first = run_injected(WITHOUT_LOOKUP, ["run", str(manifest)], env)
    assert first.code == 0, first.stderr
    assert sim.stats().tasks_created == 7
    lose_state(tmp_path)

    refused = run_injected(WITHOUT_LOOKUP, ["run", str(manifest)], env)
    assert refused.code == 2, refused.stderr
    assert "Traceback" not in refused.stderr
    assert "cannot look tasks up" in refused.stderr
    assert "is looked up by its external id" not in refused.stderr
    assert "7 items with results there (clip-0, clip-1, clip-2, clip-3, clip-4 and 2 more)" in (
        refused.stderr
    )
    assert "--new-batch" in refused.stderr and "Nothing was sent" in refused.stderr
    assert sim.stats().tasks_created == 7  # nothing sent
    # Refused again on the next attempt: the ledger the refused run opened is not the batch's.
    assert run_injected(WITHOUT_LOOKUP, ["run", str(manifest)], env).code == 2

    afresh = run_injected(WITHOUT_LOOKUP, ["run", str(manifest), "--new-batch"], env)
    assert afresh.code == 0, afresh.stderr
    assert "starts afresh" in afresh.stderr
    assert sim.stats().tasks_created == 14  # paid again, as the user asked
    # From now on the ledger knows the folder's runs: no flag needed.
    again = run_injected(WITHOUT_LOOKUP, ["run", str(manifest)], env)
    assert again.code == 0, again.stderr
    assert sim.stats().tasks_created == 14


def test_a_provider_that_looks_up_adopts_instead(tmp_path: Path, sim: Simulator) -> None:
    batch = items(3)
    manifest = write_manifest(tmp_path, sim, batch)
    env = cli_env(sim)
    assert run_cli(["run", str(manifest)], env).code == 0
    lose_state(tmp_path)
    again = run_cli(["run", str(manifest)], env)
    assert again.code == 0, again.stderr
    assert "cannot look tasks up" not in again.stderr
    assert sim.stats().tasks_created == 3
