"""``report``: the batch's report from its ledger on demand, with the ledger in the output
folder's file or in PostgreSQL, after a run and while one is going; nothing is sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator import FaultRule, Simulator
from tests.conftest import cli_env, run_cli, start_cli, write_manifest
from tests.test_e2e import text_items, wait_for


def _env(sim: Simulator, ledger: str, request: pytest.FixtureRequest) -> dict[str, str]:
    env = cli_env(sim)
    if ledger == "postgres":
        env["ORCHESTRATOR_STATE"] = request.getfixturevalue("pg_url")
    return env


def _report(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "out" / "report.json").read_text())
    return data


@pytest.mark.parametrize("ledger", ["sqlite", "postgres"])
def test_the_report_is_written_again_from_the_ledger(
    tmp_path: Path, sim: Simulator, ledger: str, request: pytest.FixtureRequest
) -> None:
    manifest = write_manifest(tmp_path, sim, text_items(5))
    env = _env(sim, ledger, request)
    none_yet = run_cli(["report", str(manifest)], env)
    assert none_yet.code == 2 and "no report to write yet" in none_yet.stderr
    assert run_cli(["run", str(manifest)], env).code == 0
    after_run = _report(tmp_path)
    for name in ("report.json", "report.md", "report.html", "results.jsonl"):
        (tmp_path / "out" / name).unlink()
    before = sim.stats()
    result = run_cli(["report", str(manifest)], env)
    assert result.code == 0, result.stderr
    assert "(5 succeeded)" in result.stdout
    again = _report(tmp_path)
    assert again["snapshot"] is True and "snapshot" not in after_run
    assert again["counts"] == after_run["counts"]
    assert [i["id"] for i in again["items"]] == [i["id"] for i in after_run["items"]]
    assert [i["assets"] for i in again["items"]] == [i["assets"] for i in after_run["items"]]
    assert again["run_count"] == 1 and again["requests"] == after_run["requests"]
    for name in ("report.md", "report.html", "results.jsonl"):
        assert (tmp_path / "out" / name).is_file()
    after = sim.stats()
    assert (after.create_requests, after.query_requests, after.list_requests) == (
        before.create_requests, before.query_requests, before.list_requests)


def test_a_report_while_a_run_is_going_shows_where_it_is(
    tmp_path: Path, sim: Simulator, pg_url: str
) -> None:
    sim.add_fault(FaultRule(op="create", effect="delay", match="number 3", delay=2.0, times=1))
    manifest = write_manifest(tmp_path, sim, text_items(6),
                              limits={"concurrency": 2, "requests_per_minute": 6000})
    env = {**cli_env(sim), "ORCHESTRATOR_STATE": pg_url}
    proc = start_cli(["run", str(manifest)], env)
    try:
        wait_for(lambda: sim.stats().create_requests >= 4)
        other = tmp_path / "elsewhere" / "report.json"  # another host's copy
        result = run_cli(["report", str(manifest), "--report", str(other)], env)
        assert result.code == 0, result.stderr
        counts = json.loads(other.read_text())["counts"]
        assert sum(counts.values()) == 6 and counts["succeeded"] < 6
    finally:
        proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert _report(tmp_path)["counts"]["succeeded"] == 6
