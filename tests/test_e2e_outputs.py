"""End to end: the output directory a user keeps. Item folders never take the place of the
tool's own files; the report, results, status and exit code agree on what is on disk."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator import FaultRule, Simulator
from tests.conftest import cli_env, run_cli, start_cli, write_manifest


def report(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "out" / "report.json").read_text())
    return data


def results(directory: Path) -> list[dict[str, Any]]:
    lines = (directory / "out" / "results.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


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


def test_interrupted_download_is_not_reported_succeeded_and_rerun_fetches_it(
    tmp_path: Path, sim: Simulator
) -> None:
    # The asset is held by the server: the interrupt lands after the task succeeded, while its
    # file is being downloaded.
    sim.add_fault(FaultRule(op="asset", effect="delay", delay=5.0, times=1))
    manifest = write_manifest(tmp_path, sim, [{"id": "clip", "prompt": "held asset"}])
    env = cli_env(sim)
    proc = start_cli(["run", str(manifest)], env)
    wait_for(lambda: sim.stats().asset_requests >= 1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr

    assert not list((tmp_path / "out" / "clip").glob("0.*"))
    data = report(tmp_path)
    (item,) = data["items"]
    # Not succeeded (its file is not on disk), and not failed either: nothing went wrong, the
    # run was stopped before the download; the rerun finishes it.
    assert item["status"] == "running"
    assert item["task_id"] is not None
    assert item["assets"][0]["path"] is None
    error = item["error"]
    assert error["retryable"] is True and error["code"] == "downloads_pending"
    assert "not all downloaded" in error["message"]
    assert "rerun" in error["hint"].lower() and "without resubmitting" in error["hint"]
    assert data["counts"]["succeeded"] == 0 and data["counts"]["failed"] == 0
    assert data["counts"]["running"] == 1
    assert results(tmp_path) == data["items"]
    assert "| clip | failed" not in (tmp_path / "out" / "report.md").read_text()
    assert "1 running" in stderr and "failed  clip" not in stderr  # the summary

    status = json.loads(run_cli(["status", str(manifest), "--json"], env).stdout)
    (row,) = status["items"]
    assert (row["status"], row["error"]) == ("running", error)

    rerun = run_cli(["run", str(manifest)], env)
    assert rerun.code == 0, rerun.stderr
    assert sim.stats().tasks_created == 1  # fetched, not resubmitted
    (item,) = report(tmp_path)["items"]
    assert (item["status"], item["error"]) == ("succeeded", None)
    assert (tmp_path / "out" / item["assets"][0]["path"]).stat().st_size == item["assets"][0][
        "bytes"
    ]


def test_rerun_removes_part_files_a_kill_left_and_nothing_else(
    tmp_path: Path, sim: Simulator
) -> None:
    manifest = write_manifest(tmp_path, sim, [{"id": "clip", "prompt": "killed mid-download"}])
    env = cli_env(sim)
    assert run_cli(["run", str(manifest)], env).code == 0
    folder = tmp_path / "out" / "clip"
    # What a SIGKILL mid-download leaves: the file not in place, its temporary file beside it.
    (folder / "0.mp4").unlink()
    (folder / ".0.00112233445566ff.part").write_bytes(b"half a video")
    (folder / "notes.part").write_text("the user's own file")

    result = run_cli(["run", str(manifest)], env)
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["0.mp4", "notes.part"]
    assert sim.stats().tasks_created == 1


def test_verify_files_rehashes_every_file_and_fetches_only_the_damaged_one(
    tmp_path: Path, sim: Simulator
) -> None:
    items: list[dict[str, Any]] = [
        {"id": "a", "prompt": "kept intact"},
        {"id": "b", "kind": "image", "model": "kling-v2-1", "prompt": "one flipped", "n": 2},
    ]
    manifest = write_manifest(tmp_path, sim, items)
    env = cli_env(sim)
    assert run_cli(["run", str(manifest)], env).code == 0
    out = tmp_path / "out"
    recorded = {
        asset["path"]: asset["sha256"] for item in report(tmp_path)["items"]
        for asset in item["assets"]
    }
    damaged = out / "b" / "1.png"
    before = damaged.stat()
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    # Same size, same modification time: only reading the bytes can tell.
    os.utime(damaged, ns=(before.st_atime_ns, before.st_mtime_ns))
    untouched = {p: (out / p).stat().st_mtime_ns for p in recorded if p != "b/1.png"}

    def on_disk() -> dict[str, str]:
        return {p: hashlib.sha256((out / p).read_bytes()).hexdigest() for p in recorded}

    served = sim.stats().asset_requests
    cheap = run_cli(["run", str(manifest)], env)
    assert cheap.code == 0, cheap.stderr
    assert sim.stats().asset_requests == served  # the default check does not read the files
    assert on_disk()["b/1.png"] != recorded["b/1.png"]

    thorough = run_cli(["run", str(manifest), "--verify-files"], env)
    assert thorough.code == 0, thorough.stderr
    assert sim.stats().asset_requests == served + 1  # exactly the damaged file
    assert on_disk() == recorded
    assert {p: (out / p).stat().st_mtime_ns for p in untouched} == untouched
    assert sim.stats().tasks_created == 2  # nothing resubmitted
    assert report(tmp_path)["counts"]["succeeded"] == 2
