"""``run --dry-run``: what a run would do and where it would send, with nothing sent and
nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestrator.simulator import Simulator
from tests.conftest import cli_env, run_cli, write_manifest


def test_a_dry_run_says_where_it_would_send_and_sends_nothing(
    tmp_path: Path, sim: Simulator
) -> None:
    items: list[dict[str, Any]] = [
        {"id": "a", "prompt": "a lake"}, {"id": "b", "prompt": "a hill", "duration": 10}
    ]
    manifest = write_manifest(tmp_path, sim, items, limits={"concurrency": 3, "max_units": 40})
    result = run_cli(["run", str(manifest), "--dry-run"], cli_env(sim))
    assert result.code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "Dry run of batch 'e2e': nothing is sent, nothing is written."
    host = sim.url.split("//")[1].split(":")[0]
    assert lines[1] == (
        f"provider: Kling, {sim.url} (host {host}), credentials from KLING_ACCESS_KEY + "
        "KLING_SECRET_KEY (JWT)"
    )
    assert lines[2] == "items: 2: 2 text2video kling-v2-5-turbo"
    assert lines[3] == "limits: concurrency 3, 6000 creates a minute, max_units 40"
    assert lines[5] == "state: none yet: every item would be sent"
    assert any(line.startswith("total: 2 tasks") for line in lines)  # the estimate
    assert sim.stats().create_requests == 0 and sim.stats().query_requests == 0
    assert not (tmp_path / "out").exists()

    first = run_cli(["run", str(manifest)], cli_env(sim))
    assert first.code == 0 and "Resuming" not in first.stderr  # a first run: nothing to resume
    again = run_cli(["run", str(manifest), "--dry-run"], cli_env(sim))
    assert "state: a rerun: 2 succeeded (finished items are not sent again)" in again.stdout
    assert sim.stats().create_requests == 2


def test_a_dry_run_without_credentials_is_refused_like_a_run(
    tmp_path: Path, sim: Simulator
) -> None:
    manifest = write_manifest(tmp_path, sim, [{"id": "a", "prompt": "p"}])
    env = {k: v for k, v in cli_env(sim).items() if not k.startswith("KLING_")}
    result = run_cli(["run", str(manifest), "--dry-run"], env)
    assert result.code == 2 and "no Kling credentials" in result.stderr


def test_a_rerun_starts_by_saying_where_the_batch_stands(tmp_path: Path, sim: Simulator) -> None:
    items = [{"id": f"i{n}", "prompt": f"resume prompt {n}"} for n in range(3)]
    manifest = write_manifest(tmp_path, sim, items)
    assert run_cli(["run", str(manifest), "--only", "i0", "i1"], cli_env(sim)).code == 0
    result = run_cli(["run", str(manifest)], cli_env(sim))
    assert result.code == 0, result.stderr
    assert result.stderr.splitlines()[0] == "Resuming batch 'e2e': 2 done, 1 to send."
    assert sim.stats().create_requests == 3


def test_validate_says_where_a_run_will_send_and_with_which_credentials(
    tmp_path: Path, sim: Simulator
) -> None:
    manifest = write_manifest(tmp_path, sim, [{"id": "a", "prompt": "p"}])
    host = sim.url.split("//")[1].split(":")[0]
    env = {k: v for k, v in cli_env(sim).items() if not k.startswith("KLING_")}
    with_key = run_cli(["validate", str(manifest)], {**env, "KLING_API_KEY": "k" * 32})
    assert with_key.code == 0, with_key.stderr
    assert with_key.stdout.splitlines()[1] == (
        f"It will send to Kling, {sim.url} (host {host}), credentials from KLING_API_KEY."
    )
    assert "k" * 32 not in with_key.stdout + with_key.stderr
    with_jwt = run_cli(["validate", str(manifest)], cli_env(sim))
    assert "credentials from KLING_ACCESS_KEY + KLING_SECRET_KEY (JWT)." in with_jwt.stdout
