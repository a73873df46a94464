"""A full disk (or another failure of this machine's files) ends a run cleanly: one line with the
cause and the path, the report if the disk allows, exit 3, no traceback; the rerun finishes
the batch and pays for nothing twice (the simulator's count).

The CLI runs as a user runs it (a subprocess), with the failure injected into the one writer
under test: the ledger (SQLite's own page limit makes it answer SQLITE_FULL), the log, the
downloads, the report. The last test fills a real (tmpfs) file system under a running batch.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator import SimConfig, Simulator
from tests.conftest import CliResult, cli_env, run_cli, start_cli, write_manifest

#: The line a run stopped by a full disk ends with, whichever file it was writing.
DISK_FULL = re.compile(
    r"^disk full writing (?P<path>\S+): free space, then rerun: nothing is lost"
    r"(?P<report> \(the report could not be written either: disk full writing \S+\))?$",
    re.MULTILINE,
)


def run_injected(setup: str, args: list[str], env: dict[str, str]) -> CliResult:
    """The CLI after ``setup`` (Python) has run in its process: how a failure is injected."""
    code = textwrap.dedent(setup) + textwrap.dedent(
        """
        import sys
        from orchestrator.__main__ import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


def items(n: int) -> list[dict[str, Any]]:
    return [{"id": f"clip-{i:03d}", "prompt": f"disk test prompt {i}"} for i in range(n)]


def assert_each_prompt_paid_once(sim: Simulator, prompts: list[str]) -> None:
    stats = sim.stats()
    assert stats.duplicate_external_ids == ()
    assert {p: stats.by_prompt.get(p, 0) for p in prompts} == dict.fromkeys(prompts, 1)
    assert stats.tasks_created == len(prompts)


def assert_clean_stop(result: CliResult, path: Path | None = None) -> re.Match[str]:
    """Exit 3, the one line (naming ``path`` when given), no traceback."""
    assert result.code == 3, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    found = DISK_FULL.search(result.stderr)
    assert found is not None, result.stderr
    if path is not None:
        assert found["path"] == str(path), result.stderr
    return found


def load(directory: Path, name: str = "report.json") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "out" / name).read_text())
    return data


def rerun_finishes(directory: Path, sim: Simulator, batch: list[dict[str, Any]]) -> None:
    rerun = run_cli(["run", str(directory / "manifest.yaml")], cli_env(sim))
    assert rerun.code == 0, rerun.stderr
    assert load(directory)["counts"]["succeeded"] == len(batch)
    assert_each_prompt_paid_once(sim, [i["prompt"] for i in batch])


#: After its fifth task id the ledger's file may not grow by one page more: SQLite answers
#: SQLITE_FULL from then on, as it does when the disk is full.
LEDGER_FULL = """
from orchestrator.ledger import Ledger
_submitted = Ledger.record_submitted
seen = []
def record_submitted(self, item_id, task_id):
    seen.append(task_id)
    if len(seen) == 5:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        self._db.execute(f"PRAGMA max_page_count = {pages}")
    _submitted(self, item_id, task_id)
Ledger.record_submitted = record_submitted
"""


def test_ledger_full_mid_run_stops_cleanly_and_the_rerun_finishes(
    tmp_path: Path, sim: Simulator
) -> None:
    batch = items(40)
    manifest = write_manifest(tmp_path, sim, batch, output={"download": False})
    result = run_injected(LEDGER_FULL, ["run", str(manifest)], cli_env(sim))
    state = tmp_path / "out" / "state.sqlite3"
    found = assert_clean_stop(result, state)
    assert found["report"] is None  # only the ledger was full: the report was written
    assert 0 < sim.stats().create_requests < len(batch)  # it failed mid-run
    report = load(tmp_path)
    assert report["local_failure"] == found[0]
    assert report["stopped_by"] is None  # not the account
    assert report["runs"][-1]["exit"] == "stopped by disk full"
    assert report["runs"][-1]["exit_code"] == 3
    assert "Stopped by a failure of this machine" in (tmp_path / "out" / "report.md").read_text()
    rerun_finishes(tmp_path, sim, batch)


#: The disk is full when the ledger is created: SQLite's own answer (SQLITE_FULL).
LEDGER_FULL_AT_OPEN = """
import sqlite3
from orchestrator.ledger import Ledger
def full(path):
    error = sqlite3.OperationalError("database or disk is full")
    error.sqlite_errorcode = sqlite3.SQLITE_FULL
    raise error
Ledger._connect = staticmethod(full)
"""

#: The log folder cannot be written: a permission, not the disk.
LOGS_FORBIDDEN = """
import errno
from orchestrator import logs
def forbidden(output_dir, now=None):
    raise PermissionError(errno.EACCES, "Permission denied", str(output_dir / "logs"))
logs.open_log_file = forbidden
"""


def test_a_full_disk_before_anything_is_sent_is_resumable(
    tmp_path: Path, sim: Simulator
) -> None:
    manifest = write_manifest(tmp_path, sim, items(2))
    full = run_injected(LEDGER_FULL_AT_OPEN, ["run", str(manifest)], cli_env(sim))
    assert full.code == 3, full.stderr
    assert "Traceback" not in full.stderr
    state = tmp_path / "out" / "state.sqlite3"
    assert full.stderr.strip() == (
        f"cannot open the state file {state}: disk full: free space, then rerun; nothing "
        "was sent."
    )
    forbidden = run_injected(LOGS_FORBIDDEN, ["run", str(manifest)], cli_env(sim))
    assert forbidden.code == 2, forbidden.stderr  # the arguments' (a folder's permissions)
    assert "Permission denied" in forbidden.stderr and "Traceback" not in forbidden.stderr
    assert sim.stats().create_requests == 0
    rerun_finishes(tmp_path, sim, items(2))


#: The log file's disk fills after its first 30 lines.
LOG_FULL = """
import errno
from orchestrator import logs
_open = logs.open_log_file
def open_log_file(output_dir, now=None):
    path, handle = _open(output_dir, now)
    class Full:
        name = handle.name
        lines = 0
        def write(self, text):
            Full.lines += 1
            if Full.lines > 30:
                raise OSError(errno.ENOSPC, "No space left on device")
            return handle.write(text)
        def flush(self):
            handle.flush()
        def close(self):
            handle.close()
    return path, Full()
logs.open_log_file = open_log_file
"""


def test_log_full_mid_run_stops_cleanly(tmp_path: Path, sim: Simulator) -> None:
    batch = items(30)
    manifest = write_manifest(tmp_path, sim, batch, output={"download": False})
    result = run_injected(LOG_FULL, ["run", str(manifest)], cli_env(sim))
    (log,) = (tmp_path / "out" / "logs").iterdir()
    assert_clean_stop(result, log)
    assert 0 < sim.stats().create_requests < len(batch)
    assert load(tmp_path)["runs"][-1]["exit"] == "stopped by disk full"
    rerun_finishes(tmp_path, sim, batch)


#: Every download finds the disk full once the first file is written.
DOWNLOADS_FULL = """
import errno
from orchestrator import part_files
_write = part_files.PartFile.write
written = []
def write(self, chunk):
    if written:
        raise OSError(errno.ENOSPC, "No space left on device")
    written.append(len(chunk))
    _write(self, chunk)
part_files.PartFile.write = write
"""


def test_downloads_on_a_full_disk_stop_the_batch(tmp_path: Path, sim: Simulator) -> None:
    batch = items(24)
    manifest = write_manifest(
        tmp_path, sim, batch, limits={"concurrency": 2, "requests_per_minute": 6000}
    )
    result = run_injected(DOWNLOADS_FULL, ["run", str(manifest)], cli_env(sim))
    found = assert_clean_stop(result)
    # The item folder the download was writing to (under the resolved output dir).
    assert Path(found["path"]).parent == (tmp_path / "out").resolve()
    # The batch stopped: no new submissions once a download found the disk full.
    assert sim.stats().create_requests < len(batch)
    report = load(tmp_path)
    assert report["counts"]["not_run"] > 0
    assert report["local_failure"] == found[0]
    failed = [i for i in report["items"] if i["status"] == "failed"]
    assert failed and all(i["error"]["message"].endswith("No space left on device")
                          for i in failed)
    rerun_finishes(tmp_path, sim, batch)
    for item in load(tmp_path)["items"]:
        assert (tmp_path / "out" / item["assets"][0]["path"]).is_file()


#: report.json's disk is full (the ledger, elsewhere, is not).
REPORT_FULL = """
import contextlib, errno
from orchestrator import atomic_files, report
@contextlib.contextmanager
def full(path):
    with atomic_files.atomic_file(path) as handle:
        yield handle
        raise OSError(errno.ENOSPC, "No space left on device")
report.atomic_file = full
"""


def test_report_on_a_full_disk_is_said_and_the_rerun_writes_it(
    tmp_path: Path, sim: Simulator
) -> None:
    batch = items(3)
    manifest = write_manifest(tmp_path, sim, batch, output={"download": False})
    result = run_injected(REPORT_FULL, ["run", str(manifest)], cli_env(sim))
    assert_clean_stop(result, tmp_path / "out" / "report.json")
    assert not (tmp_path / "out" / "report.json").exists()
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    rerun_finishes(tmp_path, sim, batch)
    # The first run's row says how it ended: its items were done, its report was not.
    first = load(tmp_path)["runs"][0]
    assert (first["exit"], first["exit_code"]) == ("stopped by disk full", 3)


# -- a real file system filling up under a running batch ----------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MB tmpfs, where this machine lets us mount one (root, a kernel with tmpfs)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
            capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True, timeout=30)


def fill(directory: Path) -> Path:
    """Take every free byte of the file system under ``directory``."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def test_a_disk_filling_up_mid_run_ends_it_cleanly(small_disk: Path) -> None:
    with Simulator(SimConfig(task_duration=(0.2, 0.5))) as sim:
        batch = items(40)
        manifest = write_manifest(small_disk, sim, batch)
        env = cli_env(sim)
        proc = start_cli(["run", str(manifest)], env)
        deadline = time.monotonic() + 30
        while sim.stats().create_requests < 5:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.01)
        filler = fill(small_disk)
        _, stderr = proc.communicate(timeout=60)
        found = assert_clean_stop(CliResult(proc.returncode, "", stderr))
        assert Path(found["path"]).is_relative_to(small_disk.resolve()), stderr
        assert sim.stats().tasks_created < len(batch)

        filler.unlink()
        rerun = run_cli(["run", str(manifest)], env)
        assert rerun.code == 0, rerun.stderr
        assert load(small_disk)["counts"]["succeeded"] == len(batch)
        assert_each_prompt_paid_once(sim, [i["prompt"] for i in batch])


def test_when_the_report_cannot_be_written_either_the_line_says_so(
    tmp_path: Path, sim: Simulator
) -> None:
    batch = items(20)
    manifest = write_manifest(tmp_path, sim, batch, output={"download": False})
    result = run_injected(LEDGER_FULL + REPORT_FULL, ["run", str(manifest)], cli_env(sim))
    found = assert_clean_stop(result, tmp_path / "out" / "state.sqlite3")
    assert found["report"] == (
        " (the report could not be written either: disk full writing "
        f"{tmp_path / 'out' / 'report.json'})"
    )
    assert len(result.stderr.strip().splitlines()[-1]) == len(found[0])  # the last line
    rerun_finishes(tmp_path, sim, batch)
