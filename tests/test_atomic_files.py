"""Outputs appear whole or not at all; what a killed writer left is removed by the next run,
and nothing else is."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from orchestrator.atomic_files import atomic_file, is_temp_name, remove_leftovers, temp_name
from orchestrator.identity import OutputDir, read_identity
from orchestrator.layout import IDENTITY_FILE
from orchestrator.simulator import Simulator
from tests.conftest import cli_env, run_cli, write_manifest


def test_temp_names_are_ours_and_nothing_else_is() -> None:
    for _ in range(200):
        assert is_temp_name(temp_name("report.json"), "report.json")
    # What tempfile.mkstemp made before (earlier versions' leftovers) has the same shape.
    fd, made = tempfile.mkstemp(prefix=".results.jsonl.")
    os.close(fd)
    os.unlink(made)
    assert is_temp_name(Path(made).name, "results.jsonl")
    for other in (
        "report.json", ".report.json", ".report.json.bak", ".report.json.abc",
        ".report.json.ABCDEFGH", ".report.json.abcdefghi", "x.report.json.abcdefgh",
        ".report.md.abcdefgh", ".reportXjson.abcdefgh",
    ):
        assert not is_temp_name(other, "report.json"), other


def test_remove_leftovers_takes_only_ours(tmp_path: Path) -> None:
    ours = [tmp_path / temp_name(n) for n in ("report.json", "results.jsonl", "report.md")]
    for path in ours:
        path.write_text("half a file")
    kept = [tmp_path / n for n in (".report.json.bak", "report.json", ".final.json.abcdefgh",
                                   ".results.jsonl.notours!", "notes.txt")]
    for path in kept:
        path.write_text("keep me")
    looks_ours = tmp_path / temp_name("report.md")
    looks_ours.mkdir()  # a folder named like one is not a file we wrote
    removed = remove_leftovers(tmp_path, ["report.json", "results.jsonl", "report.md"])
    assert sorted(removed) == sorted(ours)
    assert all(p.exists() for p in [*kept, looks_ours])
    assert remove_leftovers(tmp_path / "missing", ["report.json"]) == []


def test_a_failing_write_names_the_file_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "report.json"
    target.write_text("the old report")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError) as failed, atomic_file(target) as fh:
        fh.write("the new report")
    assert (failed.value.errno, failed.value.filename) == (errno.ENOSPC, str(target))
    assert target.read_text() == "the old report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_the_next_run_removes_what_a_killed_report_writer_left(
    tmp_path: Path, sim: Simulator
) -> None:
    items = [{"id": f"clip-{i}", "prompt": f"leftover prompt {i}"} for i in range(6)]
    manifest = write_manifest(tmp_path, sim, items, output={"download": False})
    out = tmp_path / "out"
    # A run killed (SIGKILL) while it writes results.jsonl, after its third item.
    killer = textwrap.dedent(
        """
        import os, signal, sys
        from orchestrator import report
        entry = report.item_entry
        written = []
        def item_entry(rec):
            written.append(rec.id)
            if len(written) == 3:
                os.kill(os.getpid(), signal.SIGKILL)
            return entry(rec)
        report.item_entry = item_entry
        from orchestrator.__main__ import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    killed = subprocess.run(
        [sys.executable, "-c", killer, "run", str(manifest)], env=cli_env(sim),
        capture_output=True, text=True, timeout=60,
    )
    assert killed.returncode == -9, killed.stderr
    leftovers = [p for p in out.iterdir() if is_temp_name(p.name, "results.jsonl")]
    assert len(leftovers) == 1  # half written (what it holds is still in the dead buffer)
    # And one an older version left, placed by hand, beside files that are not ours.
    by_hand = out / ".report.md.k3j_9x2a"
    by_hand.write_text("# half a report")
    mine = out / ".report.md.mine"
    mine.write_text("a user's file")

    rerun = run_cli(["run", str(manifest)], cli_env(sim))
    assert rerun.code == 0, rerun.stderr
    assert not leftovers[0].exists() and not by_hand.exists()
    assert mine.read_text() == "a user's file"
    assert json.loads((out / "report.json").read_text())["counts"]["succeeded"] == 6
    assert (out / "results.jsonl").read_text().count("\n") == 6
    events = [json.loads(line)["event"] for p in (out / "logs").iterdir()
              for line in p.read_text().splitlines()]
    assert "report.leftovers_removed" in events


def test_the_batch_identity_is_written_whole_and_a_killed_writers_copy_goes(
    tmp_path: Path,
) -> None:
    leftover = tmp_path / temp_name(IDENTITY_FILE)
    leftover.write_text("{half", encoding="utf-8")
    lookalike = tmp_path / f".{IDENTITY_FILE}.keep-me"
    lookalike.write_text("mine", encoding="utf-8")
    output = OutputDir(tmp_path, "b")
    try:
        output.starting("ledger-1", tmp_path / "state.db")
    finally:
        output.close()
    assert not leftover.exists() and lookalike.read_text(encoding="utf-8") == "mine"
    found = read_identity(tmp_path)
    assert found is not None and found.ledger_id == "ledger-1" and found.runs == 1
    assert (tmp_path / IDENTITY_FILE).stat().st_mode & 0o777 == 0o600
