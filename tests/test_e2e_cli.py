"""End to end: what a user (or cron) meets on the command line, beyond the batch itself.

The demo as the README gives it, moved state and report files, the JSON log's events,
account stops for permission and IP whitelist, and bad paths: each run as a user runs it, against
the simulator on loopback, with what was sent counted by the simulator.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator import FaultRule, Simulator
from tests.conftest import REPO, cli_env, run_cli, write_manifest
from tests.test_e2e import load_report, text_items


def sent(sim: Simulator) -> int:
    stats = sim.stats()
    return stats.create_requests + stats.query_requests + stats.list_requests


def test_the_demo_batch_succeeds(tmp_path: Path) -> None:
    """The README's first command, on a copy of the demo (its output stays in tmp)."""
    shutil.copy(REPO / "manifests" / "demo.yaml", tmp_path / "demo.yaml")
    shutil.copytree(REPO / "manifests" / "images", tmp_path / "images")
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}  # no credentials needed
    result = run_cli(["run", str(tmp_path / "demo.yaml")], env, timeout=120)
    assert result.code == 0, result.stderr
    report = json.loads((tmp_path / "out" / "demo" / "report.json").read_text())
    total = len(report["items"])
    assert total >= 5
    assert report["counts"]["succeeded"] == total
    for item in report["items"]:
        assert item["assets"] and all(a["sha256"] and a["path"] for a in item["assets"])
        assert len(item["assets"]) == item["expected_assets"]


def test_state_and_report_can_be_moved(tmp_path: Path, sim: Simulator) -> None:
    manifest = write_manifest(tmp_path, sim, text_items(3))
    state = tmp_path / "elsewhere" / "batch.sqlite3"
    report = tmp_path / "reports" / "night.json"
    env = cli_env(sim)
    result = run_cli(["run", str(manifest), "--state", str(state), "--report", str(report)], env)
    assert result.code == 0, result.stderr
    assert state.exists() and report.exists()
    assert not (tmp_path / "out" / "state.sqlite3").exists()
    assert not (tmp_path / "out" / "report.json").exists()
    assert json.loads(report.read_text())["counts"]["succeeded"] == 3
    assert str(report) in result.stderr

    # The moved ledger is the batch's memory: status reads it, a rerun resumes from it.
    shown = run_cli(["status", str(manifest), "--state", str(state), "--json"], env)
    assert shown.code == 0, shown.stderr
    assert {row["state"] for row in json.loads(shown.stdout)["items"]} == {"succeeded"}
    before = sent(sim)
    rerun = run_cli(["run", str(manifest), "--state", str(state), "--report", str(report)], env)
    assert rerun.code == 0, rerun.stderr
    assert sent(sim) == before


def log_events(directory: Path) -> list[dict[str, Any]]:
    files = sorted((directory / "out" / "logs").glob("run-*.jsonl"))
    assert files, "a run writes its JSON log into <output.dir>/logs"
    return [json.loads(line) for f in files for line in f.read_text().splitlines()]


def test_log_events_have_stable_names_and_ids(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(
        FaultRule(
            op="create", effect="error", match="number 1", times=1,
            http_status=429, code=1302, message="request too fast", retry_after="0",
        )
    )
    manifest = write_manifest(tmp_path, sim, text_items(2), name="logged")
    result = run_cli(["run", str(manifest)], cli_env(sim))
    assert result.code == 0, result.stderr
    events = log_events(tmp_path)
    names = [e["event"] for e in events]
    for name in ("batch.started", "item.submit", "item.submitted", "item.create_failed",
                 "item.retry_scheduled", "item.succeeded", "batch.finished"):
        assert name in names, name
    for event in events:
        assert event["batch"] == "logged"
        assert "timestamp" in event and "level" in event
        if event["event"].startswith("item."):
            assert event["item"] in ("clip-000", "clip-001")
            assert isinstance(event["attempt"], int) and event["attempt"] >= 1
            assert event["external_task_id"].startswith("orc-")
    submitted = [e for e in events if e["event"] == "item.submitted"]
    assert len(submitted) == 2
    assert all(e["task_id"] and e["request_id"] for e in submitted)
    succeeded = [e for e in events if e["event"] == "item.succeeded"]
    assert {e["task_id"] for e in succeeded} == {e["task_id"] for e in submitted}
    refused = next(e for e in events if e["event"] == "item.create_failed")
    assert (refused["http_status"], refused["code"], refused["category"]) == (
        429, 1302, "rate_limit"
    )
    retry = next(e for e in events if e["event"] == "item.retry_scheduled")
    assert isinstance(retry["delay"], float | int)


@pytest.mark.parametrize(
    ("http_status", "code", "category"),
    [(403, 1103, "permission"), (429, 1304, "permission")],
    ids=["no-access-1103", "ip-whitelist-1304"],
)
def test_permission_and_whitelist_errors_stop_the_batch(
    tmp_path: Path, sim: Simulator, http_status: int, code: int, category: str
) -> None:
    sim.add_fault(
        FaultRule(op="create", effect="error", match="number 2", times=1,
                  http_status=http_status, code=code, message="refused by policy")
    )
    items = text_items(10)
    manifest = write_manifest(
        tmp_path, sim, items, limits={"concurrency": 1, "requests_per_minute": 6000}
    )
    result = run_cli(["run", str(manifest)], cli_env(sim))
    assert result.code == 3, result.stderr
    report = load_report(tmp_path)
    assert report["stopped_by"]["code"] == code
    assert report["stopped_by"]["category"] == category
    # One refused create stops the batch: nothing more is sent.
    assert sim.stats().create_requests == 3
    assert report["counts"]["succeeded"] == 2
    assert report["counts"]["not_run"] == 8
    assert f"{code}" in result.stderr and "What to do" in result.stderr


def test_validate_without_credentials_exits_2(tmp_path: Path, sim: Simulator) -> None:
    env = {k: v for k, v in cli_env(sim).items() if not k.startswith("KLING_")}
    result = run_cli(["validate", str(write_manifest(tmp_path, sim, text_items(1)))], env)
    assert result.code == 2
    assert "KLING_ACCESS_KEY" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("where", ["output.dir", "--state", "--report"])
def test_unusable_paths_exit_2_and_send_nothing(
    tmp_path: Path, sim: Simulator, where: str
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    args: list[str] = []
    output = {"dir": "out"}
    if where == "output.dir":
        output = {"dir": str(blocker / "out")}
    elif where == "--state":
        args = ["--state", str(blocker / "state.sqlite3")]
    else:
        args = ["--report", str(blocker / "report.json")]
    manifest = write_manifest(tmp_path, sim, text_items(2), output=output)
    result = run_cli(["run", str(manifest), *args], cli_env(sim))
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "nothing was sent" in result.stderr and str(blocker) in result.stderr
    assert sent(sim) == 0


def test_a_state_file_that_is_not_a_ledger_exits_2(tmp_path: Path, sim: Simulator) -> None:
    state = tmp_path / "state.sqlite3"
    state.write_bytes(b"this is not an SQLite database, just some bytes " * 20)
    manifest = write_manifest(tmp_path, sim, text_items(1))
    result = run_cli(["run", str(manifest), "--state", str(state)], cli_env(sim))
    assert result.code == 2, result.stderr
    assert "Traceback" not in result.stderr and str(state) in result.stderr
    assert sent(sim) == 0
