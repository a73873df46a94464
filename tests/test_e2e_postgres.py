"""End to end with the ledger in PostgreSQL (a real server, started by the test session): the
CLI as a user runs it, ``--state postgresql://...`` or ``ORCHESTRATOR_STATE``; what was paid for
is checked from the simulator's own accounting."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from orchestrator.simulator import FaultRule, Simulator
from tests.conftest import cli_env, run_cli, start_cli, write_manifest
from tests.test_e2e import assert_each_prompt_paid_once, load_report, text_items, wait_for


def test_a_batch_runs_resumes_and_reports_from_a_postgres_ledger(
    tmp_path: Path, sim: Simulator, pg_url: str
) -> None:
    items = text_items(12)
    manifest = write_manifest(tmp_path, sim, items)
    env = cli_env(sim)
    result = run_cli(["run", str(manifest), "--state", pg_url], env)
    assert result.code == 0, result.stderr
    assert load_report(tmp_path)["counts"]["succeeded"] == 12
    assert not (tmp_path / "out" / "state.sqlite3").exists()  # the ledger is in the database
    assert_each_prompt_paid_once(sim, [i["prompt"] for i in items])

    # status reads the database, from the environment variable as from --state.
    status = run_cli(["status", str(manifest), "--json"], {**env, "ORCHESTRATOR_STATE": pg_url})
    assert status.code == 0, status.stderr
    rows = json.loads(status.stdout)
    assert {row["state"] for row in rows["items"]} == {"succeeded"}
    assert "password" not in status.stdout

    # A rerun knows everything is done: nothing is sent.
    before = sim.stats()
    rerun = run_cli(["run", str(manifest)], {**env, "ORCHESTRATOR_STATE": pg_url})
    assert rerun.code == 0, rerun.stderr
    after = sim.stats()
    assert (after.create_requests, after.query_requests) == (
        before.create_requests, before.query_requests)


def test_sigkill_mid_batch_then_rerun_pays_each_item_once(
    tmp_path: Path, sim: Simulator, pg_url: str
) -> None:
    items = text_items(24)
    sim.add_fault(FaultRule(op="create", effect="delay", match="number 7", delay=1.0, times=1))
    manifest = write_manifest(
        tmp_path, sim, items, limits={"concurrency": 6, "requests_per_minute": 6000}
    )
    env = {**cli_env(sim), "ORCHESTRATOR_STATE": pg_url}
    proc = start_cli(["run", str(manifest)], env)
    wait_for(lambda: sim.stats().create_requests >= 9)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    result = run_cli(["run", str(manifest)], env)
    assert result.code == 0, result.stderr
    assert load_report(tmp_path)["counts"]["succeeded"] == 24
    assert_each_prompt_paid_once(sim, [i["prompt"] for i in items])
    assert sim.stats().creates_reusing_external_id_without_lookup == 0


def test_a_second_run_of_the_batch_on_another_host_is_refused(
    tmp_path: Path, sim: Simulator, pg_url: str
) -> None:
    sim.add_fault(FaultRule(op="create", effect="delay", delay=1.5, times=1))
    here, there = tmp_path / "host-a", tmp_path / "host-b"
    here.mkdir()
    there.mkdir()
    items = text_items(2)
    env = {**cli_env(sim), "ORCHESTRATOR_STATE": pg_url}
    first = start_cli(["run", str(write_manifest(here, sim, items))], env)
    wait_for(lambda: sim.stats().create_requests >= 1)
    second = run_cli(["run", str(write_manifest(there, sim, items))], env)
    assert second.code == 4, second.stderr
    assert "another run of batch 'e2e' is in progress" in second.stderr
    first.communicate(timeout=30)
    assert first.returncode == 0
    assert sim.stats().tasks_created == 2


def test_an_unreachable_database_stops_before_anything_is_sent(
    tmp_path: Path, sim: Simulator
) -> None:
    manifest = write_manifest(tmp_path, sim, text_items(2))
    url = "postgresql://orch:s3cret-pw@127.0.0.1:9/ledger?connect_timeout=2"
    result = run_cli(["run", str(manifest), "--state", url], cli_env(sim))
    assert result.code == 3, result.stderr
    assert "cannot reach the state database postgresql://orch@127.0.0.1:9/ledger" in (
        result.stderr)
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert sim.stats().create_requests == 0
    for log in (tmp_path / "out").rglob("*"):
        if log.is_file():
            assert "s3cret-pw" not in log.read_text(errors="replace")


def test_a_batch_stopped_mid_way_moves_to_postgres_with_its_intents(
    tmp_path: Path, sim: Simulator, pg_url: str
) -> None:
    items = text_items(24)
    # The kill lands while a create is held by the server: its intent is in the file only.
    sim.add_fault(FaultRule(op="create", effect="delay", match="number 9", delay=1.5, times=1))
    manifest = write_manifest(
        tmp_path, sim, items, limits={"concurrency": 6, "requests_per_minute": 6000}
    )
    env = cli_env(sim)
    proc = start_cli(["run", str(manifest)], env)
    wait_for(lambda: sim.stats().create_requests >= 11)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    state = tmp_path / "out" / "state.sqlite3"

    moved = run_cli(["state", "migrate", "--from", str(state), "--to", pg_url], env)
    assert moved.code == 0, moved.stderr
    assert "Moved batch 'e2e'" in moved.stdout and "24 items" in moved.stdout
    assert not state.exists() and list((tmp_path / "out").glob("state.sqlite3.migrated-*"))

    # The same batch (its identity moved too): nothing to adopt, the intent is looked up.
    result = run_cli(["run", str(manifest), "--state", pg_url], env)
    assert result.code == 0, result.stderr
    assert "adopt" not in result.stderr
    assert load_report(tmp_path)["counts"]["succeeded"] == 24
    assert_each_prompt_paid_once(sim, [i["prompt"] for i in items])
    assert sim.stats().creates_reusing_external_id_without_lookup == 0

    # A database that has the batch already takes nothing more: never merged.
    again = run_cli(["run", str(manifest)], env)  # a new file ledger; tasks adopted
    assert again.code == 0, again.stderr
    refused = run_cli(["state", "migrate", "--from", str(state), "--to", pg_url], env)
    assert refused.code == 2
    assert "already has a ledger of batch 'e2e'" in refused.stderr
    assert state.exists()


def test_without_the_driver_a_postgres_url_says_what_to_install(
    tmp_path: Path, sim: Simulator
) -> None:
    # psycopg shadowed by a module that cannot be imported: as on a host without the extra.
    blocker = tmp_path / "no-driver"
    blocker.mkdir()
    (blocker / "psycopg.py").write_text("raise ImportError('no psycopg here')\n")
    manifest = write_manifest(tmp_path, sim, text_items(2))
    env = cli_env(sim)
    env["PYTHONPATH"] = f"{blocker}:{env['PYTHONPATH']}"
    url = "postgresql://orch:pw@127.0.0.1:9/ledger"
    for command in (["run", str(manifest), "--state", url], ["status", str(manifest)]):
        result = run_cli(command, {**env, "ORCHESTRATOR_STATE": url})
        assert result.code == 2, result.stderr
        assert "pip install 'kling-batch-orchestrator[postgres]'" in result.stderr
        assert "Traceback" not in result.stderr and "pw@" not in result.stderr
    assert sim.stats().create_requests == 0


def test_a_run_whose_database_connection_drops_stops_and_the_rerun_resumes(
    tmp_path: Path, sim: Simulator, pg_url: str
) -> None:
    import psycopg

    items = text_items(16)
    sim.add_fault(FaultRule(op="create", effect="delay", match="number 5", delay=2.0, times=1))
    manifest = write_manifest(
        tmp_path, sim, items, limits={"concurrency": 4, "requests_per_minute": 6000}
    )
    env = {**cli_env(sim), "ORCHESTRATOR_STATE": pg_url}
    proc = start_cli(["run", str(manifest)], env)
    wait_for(lambda: sim.stats().create_requests >= 6)
    # The server drops the connection that holds the batch (a restart, a network cut).
    with psycopg.connect(pg_url, autocommit=True) as conn:
        dropped = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_locks "
            "WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid()"
        ).fetchall()
    assert dropped == [(True,)]
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 4, stderr
    assert "the connection holding the batch in the state database dropped" in stderr
    assert "Traceback" not in stderr
    result = run_cli(["run", str(manifest)], env)
    assert result.code == 0, result.stderr
    assert load_report(tmp_path)["counts"]["succeeded"] == 16
    assert_each_prompt_paid_once(sim, [i["prompt"] for i in items])


def test_the_database_going_down_mid_run_stops_it_resumably_and_nothing_is_paid_twice(
    tmp_path: Path, sim: Simulator, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A server of its own, stopped while the batch runs (creates in flight), then started
    again on the same data: the run ends with exit 3 and what to check, the rerun finishes."""
    pgserver = pytest.importorskip("pgserver")
    data = tmp_path_factory.mktemp("pg-own")
    server = pgserver.get_server(data, cleanup_mode="stop")
    url = str(server.get_uri())
    items = text_items(20)
    sim.add_fault(FaultRule(op="create", effect="delay", match="number 6", delay=1.5, times=1))
    manifest = write_manifest(
        tmp_path, sim, items, limits={"concurrency": 4, "requests_per_minute": 6000}
    )
    env = {**cli_env(sim), "ORCHESTRATOR_STATE": url}
    try:
        proc = start_cli(["run", str(manifest)], env)
        wait_for(lambda: sim.stats().create_requests >= 7)
        server.cleanup()  # the database stops: every connection goes
        _, stderr = proc.communicate(timeout=90)
        assert proc.returncode == 3, stderr
        assert "the state database stopped answering" in stderr
        assert "check the database server and the network to it" in stderr
        assert "Traceback" not in stderr
        server = pgserver.get_server(data, cleanup_mode="stop")  # back, with its data
        result = run_cli(["run", str(manifest)], {**env, "ORCHESTRATOR_STATE": str(
            server.get_uri())})
        assert result.code == 0, result.stderr
    finally:
        server.cleanup()
    assert load_report(tmp_path)["counts"]["succeeded"] == 20
    assert_each_prompt_paid_once(sim, [i["prompt"] for i in items])
    assert sim.stats().creates_reusing_external_id_without_lookup == 0
