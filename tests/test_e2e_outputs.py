"""End to end: the output directory a user keeps. Item folders never take the place of the
tool's own files; the report, results, status and exit code agree on what is on disk."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator import Simulator
from tests.conftest import cli_env, run_cli, write_manifest


def sent(sim: Simulator) -> int:
    stats = sim.stats()
    return stats.create_requests + stats.query_requests + stats.list_requests


@pytest.mark.parametrize("bad", ["report.json", "REPORT.json", "Logs", "state.sqlite3"])
def test_ids_naming_the_tools_own_files_are_refused(
    tmp_path: Path, sim: Simulator, bad: str
) -> None:
    items: list[dict[str, Any]] = [{"id": "fine", "prompt": "p"}, {"id": bad, "prompt": "q"}]
    manifest = write_manifest(tmp_path, sim, items)
    for command in ("validate", "run"):
        result = run_cli([command, str(manifest)], cli_env(sim))
        assert result.code == 2, (command, result.stderr)
        assert "items[1].id" in result.stderr
        assert f"'{bad}' names the orchestrator's own" in result.stderr
        assert "Traceback" not in result.stderr
    assert sent(sim) == 0
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("option", "where", "message"),
    [
        ("--state", "out/clip/state.sqlite3", "would be in the folder of item 'clip'"),
        ("--state", "out/CLIP", "would be in the folder of item 'clip'"),
        ("--report", "out/clip/r.json", "would be in the folder of item 'clip'"),
        ("--report", "out/state.sqlite3", "would overwrite the state file"),
        ("--report", "out", "is a directory"),
    ],
)
def test_state_and_report_paths_that_collide_are_refused(
    tmp_path: Path, sim: Simulator, option: str, where: str, message: str
) -> None:
    manifest = write_manifest(tmp_path, sim, [{"id": "clip", "prompt": "p"}])
    (tmp_path / "out").mkdir()
    result = run_cli(["run", str(manifest), option, str(tmp_path / where)], cli_env(sim))
    assert result.code == 2, result.stderr
    assert result.stderr.startswith(f"{option}: ")
    assert message in result.stderr and "Nothing was sent" in result.stderr
    assert "Traceback" not in result.stderr
    assert sent(sim) == 0
    assert list((tmp_path / "out").iterdir()) == []  # no ledger, no lock, no log, no folder
