"""Under cron: one JSON line on stdout with --json, only errors on stderr with -q, every
event with -v; the log file keeps everything either way."""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.simulator import FaultRule, Simulator
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
    assert loud.code == 0 and "batch.started: items=1" in loud.stderr
    logs = list((tmp_path / "out" / "logs").glob("run-*.jsonl"))
    # Each run's log file has every event, the quiet run's too.
    assert len(logs) == 3 and all('"batch.started"' in path.read_text() for path in logs)


def test_quiet_and_verbose_do_not_go_together(tmp_path: Path, sim: Simulator) -> None:
    manifest = write_manifest(tmp_path, sim, [{"id": "a", "prompt": "p"}])
    result = run_cli(["run", str(manifest), "-q", "-v"], cli_env(sim))
    assert result.code == 2 and "not allowed with argument" in result.stderr


def test_without_a_terminal_stderr_has_failures_as_lines_and_no_retries(
    tmp_path: Path, sim: Simulator
) -> None:
    # Was: under cron, every warning reached stderr as a JSON line, a retry that succeeded
    # included.
    sim.add_fault(FaultRule(op="create", effect="error", match="windy", times=1,
                            http_status=429, code=1302, message="request too fast",
                            retry_after="0"))
    sim.add_fault(FaultRule(op="create", effect="error", match="forbidden", http_status=400,
                            code=1301, message="prompt refused by content moderation"))
    items = [{"id": "ok", "prompt": "a windy lake"}, {"id": "bad", "prompt": "a forbidden lake"}]
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
    assert result.code == 1, result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert not any(line.lstrip().startswith("{") for line in lines), result.stderr
    assert "request too fast" not in result.stderr  # retried, and it succeeded
    (failed,) = [line for line in lines if line.startswith("bad: failed:")]
    assert "(code 1301): prompt refused by content moderation. Hint: " in failed
    logged = "".join(p.read_text() for p in (tmp_path / "out" / "logs").glob("*.jsonl"))
    assert '"event":"item.create_failed"' in logged  # the log keeps the retry


def test_without_a_terminal_the_summary_stays_short(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(FaultRule(op="create", effect="error", match="forbidden", http_status=400,
                            code=1301, message="prompt refused by content moderation"))
    items = [{"id": f"bad{i}", "prompt": f"a forbidden lake {i}"} for i in range(7)]
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
    assert result.code == 1, result.stderr
    lines = result.stderr.splitlines()
    # One line per failure as it happened, then a summary listing five and counting the rest.
    assert sum(line.startswith("bad") and ": failed: " in line for line in lines) == 7
    start = next(i for i, line in enumerate(lines) if line.startswith("Batch 'e2e'"))
    summary = lines[start:]
    assert sum(line.startswith("  failed ") for line in summary) == 5
    assert "  ... and 2 more: see the report." in summary
    assert summary[-1].startswith("Report: ") and "report.html" in summary[-1]
