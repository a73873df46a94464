"""Progress: counted per phase by the engine, drawn only on a terminal."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from orchestrator.progress import Progress, ProgressLine, render
from orchestrator.simulator import Simulator
from tests.conftest import cli_env, run_cli, write_manifest


class Ticker:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_counts_rate_and_eta() -> None:
    clock = Ticker()
    progress = Progress(clock)
    for i in range(10):
        progress.set(f"i{i}", "queued")
    progress.set("old", "done", initial=True)  # finished in an earlier run: not this run's rate
    for i in range(4):
        progress.set(f"i{i}", "running")
    progress.set("i0", "done")
    progress.set("i1", "failed")
    clock.now = 60.0
    snap = progress.snapshot()
    assert snap.counts["queued"] == 6
    assert snap.counts["running"] == 2
    assert (snap.counts["done"], snap.counts["failed"]) == (2, 1)
    assert snap.total == 11
    assert snap.rate == 2 / 60
    assert snap.eta == 8 / (2 / 60)
    line = render(snap)
    assert line.startswith("3/11 | queued 6 | submitting 0 | running 2 | done 2 | failed 1")
    assert "2.0/min" in line and "ETA 4m00s" in line


def test_no_rate_no_eta() -> None:
    progress = Progress(Ticker())
    progress.set("a", "queued")
    assert progress.snapshot().eta is None
    assert "ETA --" in render(progress.snapshot())


def test_line_redraws_and_clears() -> None:
    out = io.StringIO()
    line = ProgressLine(out)
    progress = Progress(Ticker())
    progress.set("a", "queued")
    line.draw(progress.snapshot())
    line.clear()
    line.clear()  # idempotent
    assert out.getvalue().count("\r\x1b[2K") == 2


def strings_in(value: Any) -> Iterator[str]:
    """Every string in a decoded JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def test_strings_in_finds_nested_control_characters() -> None:
    found = list(strings_in({"a": [1, {"b\r": "x\x1b[2K"}], "c": None}))
    assert found == ["a", "b\r", "x\x1b[2K", "c"]


def test_no_terminal_no_progress_control_characters(tmp_path: Path, sim: Simulator) -> None:
    items = [{"id": f"c{i}", "prompt": f"cron run {i}"} for i in range(6)]
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
    assert result.code == 0, result.stderr
    logs = "".join(p.read_text() for p in (tmp_path / "out" / "logs").glob("*.jsonl"))
    for text in (result.stderr, result.stdout, logs):
        assert "\r" not in text
        assert "\x1b" not in text
    assert "queued" not in result.stderr
    # The JSON encoder escapes control characters, so the raw text above cannot show one that
    # was logged: look at the decoded values too.
    events = [json.loads(line) for line in logs.splitlines()]
    assert any(e.get("event") == "batch.finished" for e in events)
    for event in events:
        for value in strings_in(event):
            assert "\r" not in value and "\x1b" not in value, (event, value)


def test_terminal_shows_the_progress_line(tmp_path: Path, sim: Simulator) -> None:
    items = [{"id": f"t{i}", "prompt": f"terminal run {i}"} for i in range(6)]
    manifest = write_manifest(tmp_path, sim, items)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "run", str(manifest)],
        env=cli_env(sim), stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            data = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    assert proc.wait(timeout=30) == 0
    screen = b"".join(chunks).decode("utf-8", "replace")
    assert "queued" in screen and "running" in screen and "ETA" in screen
    assert "\r\x1b[2K" in screen
    assert "6 succeeded" in screen
    assert "item.submitted" not in screen  # info events go to the log file, not over the line
