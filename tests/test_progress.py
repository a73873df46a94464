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
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console

from orchestrator.progress import Pressure, Progress, Snapshot, View, binding
from orchestrator.simulator import Simulator
from orchestrator.terminal import Terminal
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
    assert snap.limit is None
    text = "\n".join(View(snap).lines(200))
    assert "3/11" in text and "ETA 4m00s" in text and "2.0/min" in text
    assert "done 2 · failed 1 · running 2 · queued 6" in text


def test_no_rate_no_eta() -> None:
    progress = Progress(Ticker())
    progress.set("a", "queued")
    assert progress.snapshot().eta is None
    assert "ETA --" in next(View(progress.snapshot()).lines(80))


def test_binding_limit_is_named() -> None:
    assert binding(Pressure()) is None  # nothing waits: the provider's tasks are the pace
    slots = Pressure(slots_used=20, slots_total=20, slots_configured=20, slots_waiting=True)
    assert binding(slots) == "slots 20/20"
    cut = replace(slots, slots_used=5, slots_total=5)
    assert binding(cut) == "slots 5/5 (cut from 20)"
    # A create waiting for the rate holds its slots: the rate is what binds.
    assert binding(replace(slots, rate_waiting=2, requests_per_minute=60)) == "create rate 60/min"
    assert binding(replace(slots, rate_waiting=2, backing_off=3)) == "provider backoff (3 waiting)"
    assert binding(replace(slots, backing_off=3, units_capped=True)) == "max_units reached"


def _busy(limit: str | None) -> Snapshot:
    counts = {"queued": 8766, "submitting": 2, "running": 20, "downloading": 3, "done": 1234,
              "partial": 1, "failed": 12}
    return Snapshot(counts=counts, total=10038, finished_this_run=1247, elapsed=125.0,
                    limit=limit)


def rendered(snap: Snapshot, width: int) -> list[str]:
    """The view as a terminal of ``width`` columns shows it."""
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, force_terminal=True).print(View(snap))
    return out.getvalue().splitlines()


def test_view_fits_80_columns() -> None:
    lines = rendered(_busy("slots 10/10 (cut from 20)"), 80)
    assert len(lines) == 2
    assert all(len(line) <= 80 for line in lines), lines
    bar, status = lines
    assert "━" in bar and "1247/10038" in bar and "ETA 14m41s" in bar and "598.6/min" in bar
    # Short words, and every count a person looks for, with the binding limit.
    for part in ("done 1234", "fail 12", "run 20", "queue 8766", "limit: slots 10/10"):
        assert part in status, status


def test_view_at_200_columns_says_everything_in_full() -> None:
    lines = rendered(_busy("create rate 60/min"), 200)
    assert len(lines) == 2 and all(len(line) <= 200 for line in lines)
    assert "12%" in lines[0] and "2m05s elapsed" in lines[0]
    assert lines[1] == (
        "done 1234 · failed 12 · partial 1 · running 20 · downloading 3 · sending 2 · "
        "queued 8766 · limit: create rate 60/min"
    )


def test_view_on_a_very_narrow_terminal_keeps_the_essentials() -> None:
    for width in (20, 40):
        lines = rendered(_busy("slots 20/20"), width)
        assert len(lines) == 2 and all(len(line) <= width for line in lines), lines
        assert lines[0].startswith("1247/10038")  # no room for a bar
        assert lines[1].startswith("done 1234 fail 12")


def test_terminal_prints_lines_above_the_live_view() -> None:
    out = io.StringIO()
    terminal = Terminal(out, live=True, width=80)
    progress = Progress(Ticker())
    progress.set("a", "queued")
    terminal.start()
    terminal.show(progress.snapshot())
    terminal.say("a: failed: content (code 1301): rejected. Hint: rephrase.")
    terminal.stop()
    terminal.stop()  # idempotent
    screen = out.getvalue()
    assert "a: failed: content (code 1301)" in screen and "queued 1" in screen
    assert "\x1b[?25h" in screen  # the cursor is shown again


def test_terminal_without_live_view_writes_plain_lines() -> None:
    out = io.StringIO()
    terminal = Terminal(out, live=False)
    terminal.start()
    terminal.show(Progress(Ticker()).snapshot())
    terminal.say("line")
    terminal.stop()
    assert out.getvalue() == "line\n"


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
