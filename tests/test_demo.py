"""The demo as a user runs it (`python -m orchestrator run manifests/demo.yaml`, the simulator
in-process), killed mid-batch and resumed.

What was paid for is judged from the simulator's own account: the state file it keeps beside
the ledger (one line per task it committed).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.conftest import REPO, run_cli, start_cli
from tests.media_structure import check_asset_file

DEMO_ITEMS = 6


def demo_copy(directory: Path) -> Path:
    shutil.copytree(REPO / "manifests" / "images", directory / "images")
    manifest = directory / "demo.yaml"
    shutil.copy(REPO / "manifests" / "demo.yaml", manifest)
    return manifest


def demo_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLING_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def committed_tasks(state: Path) -> list[dict[str, Any]]:
    if not state.exists():
        return []
    lines = state.read_text().splitlines()
    return [entry["task"] for entry in map(json.loads, lines) if "task" in entry]


def test_demo_killed_mid_batch_resumes_and_pays_each_item_once(tmp_path: Path) -> None:
    # Was: the rerun's new in-process simulator knew none of the earlier tasks: running items
    # ended "no longer found" (failed for good) and mid-submit ones waited 2 x 60 s.
    manifest = demo_copy(tmp_path)
    out = tmp_path / "out" / "demo"
    state = out / "simulator-state.jsonl"
    env = demo_env()

    proc = start_cli(["run", str(manifest), "--no-progress"], env)
    deadline = time.monotonic() + 30
    while len(committed_tasks(state)) < 2:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the demo never created two tasks"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert len(committed_tasks(state)) < DEMO_ITEMS  # killed mid-batch, not after it
    db = sqlite3.connect(out / "state.sqlite3")
    submitting = {ext for (ext,) in db.execute(
        "SELECT external_task_id FROM items WHERE state = 'submitting'")}
    db.close()
    # A create the kill caught in flight may have been committed (the lookup must find it) or
    # not. Make the second case happen: drop the tasks of those creates from the simulator's
    # account, as if the kill had landed before the server committed them. They must be
    # resent, once, and at once: the server they went to died with the run that sent them.
    lines = state.read_text().splitlines(keepends=True)
    state.write_text("".join(
        line for line in lines
        if json.loads(line).get("task", {}).get("spec", {}).get("external_task_id")
        not in submitting
    ))

    started = time.monotonic()
    result = run_cli(["run", str(manifest)], env, timeout=120)
    assert result.code == 0, result.stderr
    assert time.monotonic() - started < 60  # no wait for creates lost with the killed run

    report = json.loads((out / "report.json").read_text())
    assert report["counts"]["succeeded"] == DEMO_ITEMS
    tasks = committed_tasks(state)
    # Each item paid once: one task per prompt and per external id, and the task each item
    # reports is the one the simulator made for it.
    assert len(tasks) == DEMO_ITEMS
    assert max(Counter(t["spec"]["prompt"] for t in tasks).values()) == 1
    by_external = {t["spec"]["external_task_id"]: t["task_id"] for t in tasks}
    for item in report["items"]:
        assert by_external[item["external_task_id"]] == item["task_id"]
        for asset in item["assets"]:
            assert (out / asset["path"]).stat().st_size == asset["bytes"]
            check_asset_file(out / asset["path"])  # a picture or a video a browser shows
    kinds = Counter(Path(a["path"]).suffix for i in report["items"] for a in i["assets"])
    assert kinds == {".mp4": 5, ".png": 4}
