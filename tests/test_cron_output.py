"""Under cron: one JSON line on stdout with --json, only errors on stderr with -q, every
event with -v; the log file keeps everything either way."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.simulator import Simulator
from tests.conftest import cli_env, run_cli, write_manifest


def test_json_prints_one_summary_line_on_stdout(tmp_path: Path, sim: Simulator) -> None:
    manifest = write_manifest(tmp_path, sim, [{"id": "a", "prompt": "a json lake"}])
    result = run_cli(["run", str(manifest), "--json"], cli_env(sim))
    assert result.code == 0, result.stderr
    (line,) = result.stdout.splitlines()
    data = json.loads(line)
    assert (data["batch"], data["exit_code"], data["exit_reason"]) == ("e2e", 0, "succeeded")
    assert data["counts"]["succeeded"] == 1 and data["stopped_by"] is None
    assert Path(data["report"]).is_file() and Path(data["log"]).is_file()
    assert "Batch 'e2e'" in result.stderr  # the summary for a person stays on stderr


def test_json_says_what_stopped_the_batch(tmp_path: Path, sim: Simulator) -> None:
    manifest = write_manifest(tmp_path, sim, [{"id": "a", "prompt": "a capped lake"}],
                              limits={"max_units": 0.5})
    result = run_cli(["run", str(manifest), "--json", "-q"], cli_env(sim))
    assert result.code == 3, result.stderr
    data = json.loads(result.stdout)
    assert data["exit_code"] == 3 and data["stopped_by"]["code"] == "max_units"
    assert sim.stats().create_requests == 0


def test_quiet_keeps_stderr_to_errors(tmp_path: Path, sim: Simulator) -> None:
    manifest = write_manifest(tmp_path, sim, [{"id": "a", "prompt": "a quiet lake"}])
    assert run_cli(["run", str(manifest), "--only", "a"], cli_env(sim)).code == 0
    quiet = run_cli(["run", str(manifest), "-q"], cli_env(sim))
    assert quiet.code == 0 and quiet.stderr == "" and quiet.stdout == ""
    loud = run_cli(["run", str(manifest), "-v"], cli_env(sim))
    assert loud.code == 0 and '"event":"batch.started"' in loud.stderr
    logs = list((tmp_path / "out" / "logs").glob("run-*.jsonl"))
    # Each run's log file has every event, the quiet run's too.
    assert len(logs) == 3 and all('"batch.started"' in path.read_text() for path in logs)


def test_quiet_and_verbose_do_not_go_together(tmp_path: Path, sim: Simulator) -> None:
    manifest = write_manifest(tmp_path, sim, [{"id": "a", "prompt": "p"}])
    result = run_cli(["run", str(manifest), "-q", "-v"], cli_env(sim))
    assert result.code == 2 and "not allowed with argument" in result.stderr
