"""End to end: assets end up verified on disk; faults in the download path are retried; a
rerun fetches only what is missing; nothing is resubmitted for a file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from orchestrator.simulator import FaultRule, SimConfig, Simulator
from tests.conftest import cli_env, run_cli, write_manifest


def report(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "out" / "report.json").read_text())
    return data


def check_files(directory: Path, item: dict[str, Any]) -> None:
    for asset in item["assets"]:
        path = directory / "out" / asset["path"]
        data = path.read_bytes()
        assert len(data) == asset["bytes"]
        assert hashlib.sha256(data).hexdigest() == asset["sha256"]


def test_assets_downloaded_and_verified_despite_faults(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(FaultRule(op="asset", effect="truncate", match="clip", times=1))
    sim.add_fault(FaultRule(op="asset", effect="wrong_type", match="stills", times=1))
    items: list[dict[str, Any]] = [
        {"id": "clip", "prompt": "a clip"},
        {"id": "stills", "kind": "image", "model": "kling-v2-1", "prompt": "stills", "n": 3},
    ]
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
    assert result.code == 0, result.stderr
    data = report(tmp_path)
    by_id = {i["id"]: i for i in data["items"]}
    assert [a["path"] for a in by_id["clip"]["assets"]] == ["clip/0.mp4"]
    assert [a["path"] for a in by_id["stills"]["assets"]] == [f"stills/{n}.png" for n in range(3)]
    for item in data["items"]:
        check_files(tmp_path, item)
    stats = sim.stats()
    assert stats.asset_requests == 4 + 2  # one truncated and one wrong type, both retried
    assert stats.tasks_created == 2
    assert not list((tmp_path / "out").rglob("*.part"))


def test_rerun_downloads_only_the_deleted_file(tmp_path: Path, sim: Simulator) -> None:
    items: list[dict[str, Any]] = [
        {"id": "a", "prompt": "first"},
        {"id": "b", "kind": "image", "model": "kling-v2-1", "prompt": "second", "n": 2},
    ]
    manifest = write_manifest(tmp_path, sim, items)
    assert run_cli(["run", str(manifest)], cli_env(sim)).code == 0
    before = sim.stats()
    kept = tmp_path / "out" / "a" / "0.mp4"
    kept_mtime = kept.stat().st_mtime_ns
    (tmp_path / "out" / "b" / "1.png").unlink()

    result = run_cli(["run", str(manifest)], cli_env(sim))
    assert result.code == 0, result.stderr
    after = sim.stats()
    assert after.asset_requests - before.asset_requests == 1
    assert after.create_requests == before.create_requests  # nothing resubmitted for a file
    assert kept.stat().st_mtime_ns == kept_mtime
    for item in report(tmp_path)["items"]:
        check_files(tmp_path, item)


def test_damaged_file_is_fetched_again(tmp_path: Path, sim: Simulator) -> None:
    manifest = write_manifest(tmp_path, sim, [{"id": "a", "prompt": "to be damaged"}])
    assert run_cli(["run", str(manifest)], cli_env(sim)).code == 0
    path = tmp_path / "out" / "a" / "0.mp4"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    before = sim.stats().asset_requests
    assert run_cli(["run", str(manifest)], cli_env(sim)).code == 0
    assert sim.stats().asset_requests == before + 1
    check_files(tmp_path, report(tmp_path)["items"][0])


def test_expired_url_is_refreshed_by_a_new_query(tmp_path: Path) -> None:
    with Simulator(SimConfig(task_duration=(0.05, 0.1), asset_url_ttl=0.3)) as sim:
        sim.add_fault(FaultRule(op="asset", effect="delay", delay=0.5, times=1))
        manifest = write_manifest(tmp_path, sim, [{"id": "a", "prompt": "expiring"}])
        result = run_cli(["run", str(manifest)], cli_env(sim))
        assert result.code == 0, result.stderr
        assert sim.stats().tasks_created == 1
        check_files(tmp_path, report(tmp_path)["items"][0])
        # The refused attempt and the one from the fresh URL: both sent, the second a retry.
        assert report(tmp_path)["requests"]["download"] == sim.stats().asset_requests == 2
        assert report(tmp_path)["retries"] == 1
        log = "".join(p.read_text() for p in (tmp_path / "out" / "logs").glob("*.jsonl"))
        assert "item.url_expired" in log


def test_persistent_download_failure_fails_the_item_and_rerun_fixes_it(
    tmp_path: Path, sim: Simulator
) -> None:
    # Downloads get max(8, 2 x retry.max_attempts) = 8 attempts: all of them fail.
    sim.add_fault(FaultRule(op="asset", effect="error", http_status=500, times=8))
    manifest = write_manifest(tmp_path, sim, [{"id": "a", "prompt": "unlucky download"}])
    env = cli_env(sim)
    first = run_cli(["run", str(manifest)], env, timeout=300)
    assert first.code == 1, first.stderr
    data = report(tmp_path)
    item = data["items"][0]
    assert item["status"] == "failed"
    assert item["error"]["retryable"] is True
    assert item["task_id"] is not None
    # status agrees with the report: the item, its error and the totals.
    status = json.loads(run_cli(["status", str(manifest), "--json"], env).stdout)
    (row,) = status["items"]
    assert (row["state"], row["status"], row["error"]) == ("succeeded", "failed", item["error"])
    assert status["totals"] == data["counts"]
    text = run_cli(["status", str(manifest)], env).stdout
    assert "HTTP 500" in text and "Totals: 1 failed (1 items)" in text
    second = run_cli(["run", str(manifest)], env, timeout=300)
    assert second.code == 0, second.stderr
    assert sim.stats().tasks_created == 1  # the task was never paid twice for its file
    check_files(tmp_path, report(tmp_path)["items"][0])


def test_download_false_keeps_urls_only(tmp_path: Path, sim: Simulator) -> None:
    manifest = write_manifest(
        tmp_path, sim, [{"id": "a", "prompt": "urls only"}],
        output={"dir": "out", "download": False},
    )
    assert run_cli(["run", str(manifest)], cli_env(sim)).code == 0
    (asset,) = report(tmp_path)["items"][0]["assets"]
    assert asset["url"].startswith("http://127.0.0.1")
    assert asset["path"] is None
    assert sim.stats().asset_requests == 0
    assert not (tmp_path / "out" / "a").exists()
    assert os.path.exists(tmp_path / "out" / "report.json")


def test_report_counts_every_download_attempt_and_retry(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(FaultRule(op="asset", effect="truncate", times=2))
    manifest = write_manifest(tmp_path, sim, [{"id": "a", "prompt": "cut short twice"}])
    result = run_cli(["run", str(manifest)], cli_env(sim))
    assert result.code == 0, result.stderr
    assert sim.stats().asset_requests == 3
    data = report(tmp_path)
    assert data["requests"]["download"] == 3
    assert data["retries"] == 2  # the create and the polls needed none
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| download | 3 |" in markdown
    assert "- Retries made: 2" in markdown
