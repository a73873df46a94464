"""report.json and report.md describe the batch over all its runs, from the ledger's runs."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio

from orchestrator import runs
from orchestrator.downloads import Downloader
from orchestrator.engine import RunOutcome
from orchestrator.ledger import Ledger, RunRecord
from orchestrator.simulator import Simulator
from tests.conftest import cli_env, run_cli, start_cli, write_manifest

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def record(run: int, started: float, finished: float | None, reason: str | None = None,
           **requests: int) -> RunRecord:
    code = None if finished is None else (0 if reason == "succeeded" else 3)
    return RunRecord(run, started, finished, code, reason, dict(requests), retries=run)


def test_batch_figures_sum_the_runs_and_name_the_first_start() -> None:
    figures = runs.batch_figures([
        record(1, T0, T0 + 60, "stopped by billing", create=3, query=5),
        record(2, T0 + 3600, None, None, create=2),  # killed: its last checkpoint
        record(3, T0 + 7200, T0 + 7260, "succeeded", create=7, download=7),
    ])
    assert figures["first_started_at"] == "2026-01-01T00:00:00+00:00"
    assert figures["requests"] == {"create": 12, "download": 7, "query": 5}
    assert figures["retries"] == 1 + 2 + 3
    assert figures["run_count"] == 3
    assert [(r["run"], r["exit"], r["exit_code"]) for r in figures["runs"]] == [
        (1, "stopped by billing", 3), (2, runs.KILLED, None), (3, "succeeded", 0),
    ]
    assert figures["runs"][1]["finished_at"] is None


def test_the_report_lists_the_most_recent_runs_and_sums_them_all() -> None:
    many = [record(n, T0 + n, T0 + n + 1, "succeeded", create=1) for n in range(1, 251)]
    figures = runs.batch_figures(many)
    assert figures["run_count"] == 250
    assert len(figures["runs"]) == runs.RUNS_IN_REPORT
    assert figures["runs"][-1]["run"] == 250
    assert figures["requests"] == {"create": 250}


def test_run_figures_count_downloads_once(tmp_path: Path) -> None:
    downloader = Downloader(tmp_path)
    try:
        downloader.stats.update(requests=4, retries=1)
        going = RunOutcome(requests=Counter(create=2, list=3), retries=2)
        # While the run goes (or after it ended by an error), from the downloader...
        assert runs.run_figures(going, downloader) == ({"create": 2, "download": 4, "list": 3}, 3)
        # ...and once the engine has added them to its outcome, from the outcome alone.
        ended = RunOutcome(requests=Counter(create=2, list=3, download=4), retries=3)
        assert runs.run_figures(ended, downloader) == ({"create": 2, "download": 4, "list": 3}, 3)
        assert runs.run_figures(going, None) == ({"create": 2, "list": 3}, 2)
    finally:
        anyio.run(downloader.aclose)


def test_the_ledger_keeps_the_runs(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with Ledger(path, "b") as ledger:
        first = ledger.start_run(T0)
        ledger.record_run(first, requests={"create": 1}, retries=0)  # a checkpoint
    with Ledger(path, "b") as ledger:
        second = ledger.start_run(T0 + 10)
        ledger.record_run(second, requests={"create": 2}, retries=1, finished_at=T0 + 20,
                          exit_code=0, exit_reason="succeeded")
        assert ledger.runs() == [
            RunRecord(first, T0, None, None, None, {"create": 1}, 0),
            RunRecord(second, T0 + 10, T0 + 20, 0, "succeeded", {"create": 2}, 1),
        ]


def test_a_ledger_from_before_the_runs_table_gets_it_on_open(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with Ledger(path, "b") as ledger:
        ledger.sync_items([("a", "text2video", 1)])
    db = sqlite3.connect(path)
    db.execute("DROP TABLE runs")
    db.commit()
    db.close()
    _, records = Ledger.read_only(path)  # status reads it as it is
    assert [r.id for r in records] == ["a"]
    with Ledger(path, "b") as ledger:
        assert ledger.runs() == []
        ledger.start_run(T0)
        assert len(ledger.runs()) == 1


def load(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "out" / "report.json").read_text())
    return data


def test_the_report_describes_the_batch_over_its_runs(tmp_path: Path, sim: Simulator) -> None:
    items = [{"id": f"clip-{i}", "prompt": f"runs prompt {i}"} for i in range(6)]
    manifest = write_manifest(
        tmp_path, sim, items, limits={"concurrency": 2, "requests_per_minute": 6000}
    )
    env = cli_env(sim)
    sim.set_billing_after(2)
    assert run_cli(["run", str(manifest)], env).code == 3
    sim.set_billing_after(None)
    assert run_cli(["run", str(manifest)], env).code == 0
    before = sim.stats()
    assert run_cli(["run", str(manifest)], env).code == 0  # done: sends nothing
    assert sim.stats().create_requests == before.create_requests

    report = load(tmp_path)
    assert report["run_count"] == 3
    assert [r["exit"] for r in report["runs"]] == ["stopped by billing", "succeeded", "succeeded"]
    assert [r["exit_code"] for r in report["runs"]] == [3, 0, 0]
    assert report["started_at"] == report["first_started_at"] == report["runs"][0]["started_at"]
    assert report["finished_at"] == report["runs"][-1]["finished_at"]
    # Summed over the runs (was: the last run's only, {} and 0 after a rerun that sent nothing)
    summed: Counter[str] = Counter()
    for run in report["runs"]:
        summed.update(run["requests"])
    assert report["requests"] == dict(summed)
    assert report["requests"]["create"] == sim.stats().create_requests
    assert report["requests"]["download"] == sim.stats().asset_requests
    assert report["runs"][-1]["requests"] == {}
    assert report["retries"] == sum(r["retries"] for r in report["runs"])
    assert report["stopped_by"] is None  # the last run's stop, as before

    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "(the first of 3 runs)" in markdown
    table = markdown.split("## Runs", 1)[1].split("\n## ", 1)[0]
    assert "| run | started | finished | ended | requests | retries |" in table
    assert "| stopped by billing |" in table
    assert table.count("| succeeded |") == 2


def test_a_killed_run_is_shown_with_what_it_had_sent(tmp_path: Path, sim: Simulator) -> None:
    items = [{"id": f"clip-{i}", "prompt": f"killed prompt {i}"} for i in range(40)]
    # Slow enough that the run is still going after its first checkpoint.
    manifest = write_manifest(
        tmp_path, sim, items, limits={"concurrency": 2, "requests_per_minute": 60}
    )
    env = cli_env(sim)
    proc = start_cli(["run", str(manifest)], env)
    deadline = time.monotonic() + 30
    while sim.stats().create_requests < 3:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(runs.CHECKPOINT_EVERY + 0.5)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    write_manifest(tmp_path, sim, items)  # the rerun at full speed
    assert run_cli(["run", str(manifest)], env).code == 0
    killed = load(tmp_path)["runs"][0]
    assert (killed["exit"], killed["finished_at"], killed["exit_code"]) == (runs.KILLED, None, None)
    assert killed["requests"].get("create", 0) >= 3
