"""A batch's identity outlives its state file: lost, emptied, stripped of its -wal, or replaced
by one elsewhere, the ledger never leads to a second paid task for an item whose task exists.

The simulator here accepts a reused external id (``reject_duplicate_external_ids=False``): Kling
refuses one, but the orchestrator must not rely on the server to deduplicate, so a resend of an
existing id would show as a second task in the simulator's own count.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.simulator import FaultRule, SimConfig, Simulator
from tests.conftest import cli_env, run_cli, start_cli, write_manifest


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    config = SimConfig(task_duration=(0.2, 0.5), reject_duplicate_external_ids=False)
    with Simulator(config) as simulator:
        yield simulator


def items(n: int) -> list[dict[str, Any]]:
    return [{"id": f"it-{i:02d}", "prompt": f"identity prompt {i}"} for i in range(n)]


def report(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "out" / "report.json").read_text())
    return data


def assert_paid_once(sim: Simulator, batch: list[dict[str, Any]]) -> None:
    stats = sim.stats()
    prompts = [i["prompt"] for i in batch]
    assert {p: stats.by_prompt.get(p, 0) for p in prompts} == dict.fromkeys(prompts, 1)
    assert stats.tasks_created == len(prompts)


def state(directory: Path) -> Path:
    return directory / "out" / "state.sqlite3"


def test_a_deleted_state_file_pays_for_nothing_again(tmp_path: Path, sim: Simulator) -> None:
    batch = items(10)
    manifest = write_manifest(tmp_path, sim, batch)
    env = cli_env(sim)
    assert run_cli(["run", str(manifest)], env).code == 0
    for suffix in ("", "-wal", "-shm", ".lock"):
        state(tmp_path).with_name(state(tmp_path).name + suffix).unlink(missing_ok=True)
    again = run_cli(["run", str(manifest)], env)
    assert again.code == 0, again.stderr
    assert "holds earlier runs of this batch" in again.stderr
    assert_paid_once(sim, batch)
    data = report(tmp_path)
    assert data["counts"]["succeeded"] == 10 and data["adopted"] == 10


def test_an_empty_state_file_after_a_kill_pays_for_nothing_again(
    tmp_path: Path, sim: Simulator
) -> None:
    batch = items(12)
    sim.add_fault(FaultRule(op="create", effect="delay", match="prompt 5", delay=1.0, times=1))
    manifest = write_manifest(tmp_path, sim, batch, limits={"concurrency": 4})
    env = cli_env(sim)
    proc = start_cli(["run", str(manifest)], env)
    wait_for(lambda: sim.stats().create_requests >= 6)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    # The state file comes back empty (a zero-byte file, as a full disk or a bad copy leaves).
    state(tmp_path).write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        state(tmp_path).with_name(state(tmp_path).name + suffix).unlink(missing_ok=True)
    again = run_cli(["run", str(manifest)], env)
    assert again.code == 0, again.stderr
    assert_paid_once(sim, batch)


def test_a_state_file_whose_wal_was_lost_pays_for_nothing_again(
    tmp_path: Path, sim: Simulator
) -> None:
    batch = items(12)
    manifest = write_manifest(tmp_path, sim, batch, limits={"concurrency": 4})
    env = cli_env(sim)
    assert run_cli(["run", str(manifest), "--rpm", "6000"], env).code == 0
    proc = start_cli(["run", str(manifest)], env)  # a rerun, killed...
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    # ...and then the disk loses the WAL: the main file holds only what was checkpointed.
    for suffix in ("-wal", "-shm"):
        state(tmp_path).with_name(state(tmp_path).name + suffix).unlink(missing_ok=True)
    again = run_cli(["run", str(manifest)], env)
    assert again.code == 0, again.stderr
    assert_paid_once(sim, batch)


def test_a_state_file_elsewhere_finds_the_batch_and_two_runs_never_share_a_folder(
    tmp_path: Path, sim: Simulator
) -> None:
    batch = items(10)
    sim.add_fault(FaultRule(op="create", effect="delay", delay=1.5, times=1))
    manifest = write_manifest(tmp_path, sim, batch, limits={"concurrency": 2})
    env = cli_env(sim)
    first = start_cli(["run", str(manifest)], env)
    wait_for(lambda: sim.stats().create_requests >= 1)
    elsewhere = tmp_path / "elsewhere.sqlite3"
    second = run_cli(["run", str(manifest), "--state", str(elsewhere)], env)
    assert second.code == 4, second.stderr  # the folder's lock, whatever --state says
    assert "another run is writing into" in second.stderr
    first.communicate(timeout=60)
    assert first.returncode == 0
    # Later, the same batch with a new state file elsewhere: it looks up, pays for nothing.
    later = run_cli(["run", str(manifest), "--state", str(elsewhere)], env)
    assert later.code == 0, later.stderr
    assert_paid_once(sim, batch)


def test_another_batch_is_refused_in_a_folder_that_holds_one(
    tmp_path: Path, sim: Simulator
) -> None:
    manifest = write_manifest(tmp_path, sim, items(2))
    env = cli_env(sim)
    assert run_cli(["run", str(manifest)], env).code == 0
    other = write_manifest(tmp_path, sim, items(2), name="another")
    refused = run_cli(["run", str(other)], env)
    assert refused.code == 2, refused.stderr
    assert "holds the outputs of batch 'e2e'" in refused.stderr
    assert "this manifest is batch 'another'" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sim.stats().tasks_created == 2


def test_changed_items_are_reported_and_rerun_on_request(tmp_path: Path, sim: Simulator) -> None:
    batch = items(4)
    manifest = write_manifest(tmp_path, sim, batch)
    env = cli_env(sim)
    assert run_cli(["run", str(manifest)], env).code == 0
    doc = yaml.safe_load(manifest.read_text())
    doc["items"][1]["prompt"] = "a new prompt for item one"
    doc["items"][3]["duration"] = 10
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    rerun = run_cli(["run", str(manifest)], env)
    assert rerun.code == 0, rerun.stderr
    assert "2 item(s) changed in the manifest since their result was made (it-01, it-03)" in (
        rerun.stderr
    )
    assert "--rerun-changed" in rerun.stderr
    assert sim.stats().tasks_created == 4  # reported, not regenerated
    assert report(tmp_path)["changed_items"] == {"count": 2, "ids": ["it-01", "it-03"],
                                                 "rerun": False}
    old = (tmp_path / "out" / "it-01" / "0.mp4").read_bytes()
    regenerated = run_cli(["run", str(manifest), "--rerun-changed"], env)
    assert regenerated.code == 0, regenerated.stderr
    stats = sim.stats()
    assert stats.tasks_created == 6
    assert stats.by_prompt["a new prompt for item one"] == 1
    assert (tmp_path / "out" / "it-01" / "0.mp4").read_bytes() != old
    # Done: the next rerun sees nothing changed and sends nothing.
    quiet = run_cli(["run", str(manifest)], env)
    assert quiet.code == 0 and "changed in the manifest" not in quiet.stderr
    assert sim.stats().tasks_created == 6


def test_a_changed_item_keeps_its_old_files_until_new_ones_are_verified(
    tmp_path: Path, sim: Simulator
) -> None:
    batch = items(2)
    manifest = write_manifest(tmp_path, sim, batch)
    env = cli_env(sim)
    assert run_cli(["run", str(manifest)], env).code == 0
    old = {i: (tmp_path / "out" / f"it-0{i}" / "0.mp4").read_bytes() for i in range(2)}
    doc = yaml.safe_load(manifest.read_text())
    doc["items"][0]["prompt"] = "a forbidden new prompt"
    doc["items"][1]["prompt"] = "a new prompt whose file is short"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    # The new task of one fails (policy); the other's new file cannot be verified.
    sim.add_fault(FaultRule(op="create", effect="task_failed", match="forbidden",
                            message="The content violates the content safety policy"))
    sim.add_fault(FaultRule(op="asset", effect="truncate", match="short"))
    rerun = run_cli(["run", str(manifest), "--rerun-changed"], env)
    assert rerun.code == 1, rerun.stderr
    assert sim.stats().tasks_created == 4  # each changed item got its new attempt
    for i in range(2):
        assert (tmp_path / "out" / f"it-0{i}" / "0.mp4").read_bytes() == old[i]
    statuses = {entry["id"]: entry["status"] for entry in report(tmp_path)["items"]}
    assert statuses == {"it-00": "failed", "it-01": "failed"}
    errors = {entry["id"]: entry["error"]["category"] for entry in report(tmp_path)["items"]}
    assert errors == {"it-00": "policy", "it-01": "network"}  # a short body, every attempt


def test_a_lock_file_removed_mid_run_never_lets_two_runs_write(
    tmp_path: Path, sim: Simulator
) -> None:
    batch = items(16)
    sim.add_fault(FaultRule(op="create", effect="delay", delay=0.6))
    manifest = write_manifest(tmp_path, sim, batch, limits={"concurrency": 2})
    env = cli_env(sim)
    first = start_cli(["run", str(manifest)], env)
    wait_for(lambda: sim.stats().create_requests >= 2)
    for name in ("state.sqlite3.lock", "batch.lock"):
        (tmp_path / "out" / name).unlink()
    second = start_cli(["run", str(manifest)], env)
    _, first_err = first.communicate(timeout=60)
    _, second_err = second.communicate(timeout=60)
    # One of them noticed the lock taken and stopped (exit 4); the other finished or refused.
    codes = sorted([first.returncode, second.returncode])
    assert 4 in codes, (first_err, second_err)
    assert "Traceback" not in first_err + second_err
    final = run_cli(["run", str(manifest)], env)
    assert final.code == 0, final.stderr
    assert report(tmp_path)["counts"]["succeeded"] == 16
    assert_paid_once(sim, batch)
