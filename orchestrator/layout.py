"""What lives in ``output.dir``: the tool's own files, and one folder per item.

::

    <output.dir>/
      report.json  report.md  report.html       the report (report.py; --report moves them)
      results.jsonl                             one line per item, beside the report
      state.sqlite3  (-wal, -shm, -journal)     the ledger and SQLite's files beside it
      state.sqlite3.lock                        the run lock (ledger.py; --state moves them)
      batch.json  batch.lock                    the batch's identity and the folder's run lock
                                                (identity.py: they stay, whatever --state says)
      logs/                                     one JSON-lines file per run (logs.py)
      <item-id>/<index>.<ext>                   the generated files (downloads.py)

An item id names its folder: :func:`check_item_id` is what makes it a safe directory name on
every OS (the manifest refuses any other id offline; the downloader checks it again before it
writes). Item folders share the directory with the tool's own files, so an item id must never
name one of them either: an item ``report.json`` would get a folder where the report is
written, an item ``logs`` would put its files among the logs. :func:`own_name_clash` is the
rule the manifest applies to every id (case-insensitively: macOS and Windows file systems
ignore letter case); :func:`item_folder_clash` is the same rule for ``--state`` and
``--report`` paths placed in the output directory.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

STATE_FILE = "state.sqlite3"
REPORT_FILE = "report.json"
RESULTS_FILE = "results.jsonl"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
LOGS_DIR = "logs"
#: Which batch owns the folder, when it first ran, the ledger its last run used.
IDENTITY_FILE = "batch.json"
#: The folder's run lock: one run at a time writes into it, wherever its state file is.
OUTPUT_LOCK = "batch.lock"
#: The run lock beside the state file: ``<state>.lock``.
LOCK_SUFFIX = ".lock"
#: Files SQLite keeps beside the state file (WAL mode; a rollback journal while it switches).
SQLITE_SUFFIXES = ("-wal", "-shm", "-journal")

_SAFE_ID = re.compile(r"[A-Za-z0-9._-]+")
#: Names Windows reserves for devices, with or without an extension ("con.mp4" is reserved too).
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"}
    | {f"COM{i}" for i in range(10)}
    | {f"LPT{i}" for i in range(10)}
)
_MAX_NAME = 255


def state_files(state: Path) -> list[Path]:
    """The state file and every file created beside it (SQLite's, the run lock)."""
    return [
        state,
        *(state.with_name(state.name + s) for s in SQLITE_SUFFIXES),
        state.with_name(state.name + LOCK_SUFFIX),
    ]


def report_files(report: Path) -> list[Path]:
    """report.json (wherever ``--report`` puts it) and the files written beside it."""
    return [
        report,
        report.with_name(RESULTS_FILE),
        report.with_name(MARKDOWN_FILE),
        report.with_name(HTML_FILE),
    ]


def _own_names() -> dict[str, str]:
    """Case-folded name -> what it is, for the names the tool itself uses in output.dir."""
    names = {
        REPORT_FILE: "report",
        RESULTS_FILE: "per-item results file",
        MARKDOWN_FILE: "report for people",
        HTML_FILE: "page of the items",
        LOGS_DIR: "log directory",
        IDENTITY_FILE: "batch identity file",
        OUTPUT_LOCK: "run lock",
    }
    for path in state_files(Path(STATE_FILE)):
        names[path.name] = "state file" if path.name == STATE_FILE else "state file's companion"
    return {name.casefold(): what for name, what in names.items()}


_OWN_NAMES = _own_names()


def check_item_id(item_id: str) -> str:
    """Return ``item_id`` if it is safe as a directory name on every OS, else raise ValueError.

    Allowed: letters, digits, ``.``, ``_``, ``-``; not only dots, no trailing dot (Windows drops
    it), not a Windows device name (``CON``, ``nul.txt``, ``COM1``...), at most 255 characters.
    """
    if not isinstance(item_id, str) or not _SAFE_ID.fullmatch(item_id):
        raise ValueError(f"item id {item_id!r} is not a safe file name: use [A-Za-z0-9._-]")
    if item_id.strip(".") == "" or item_id.endswith("."):
        raise ValueError(f"item id {item_id!r} is not a safe file name: dots only or trailing dot")
    if item_id.split(".", 1)[0].upper() in _WINDOWS_RESERVED:
        raise ValueError(f"item id {item_id!r} is a reserved device name on Windows")
    if len(item_id) > _MAX_NAME:
        raise ValueError(f"item id is longer than {_MAX_NAME} characters")
    return item_id


def own_name_clash(item_id: str) -> str | None:
    """Why ``item_id`` cannot name a folder in output.dir (it is one of the tool's own names,
    in any letter case), or None when it can."""
    what = _OWN_NAMES.get(item_id.casefold())
    if what is None:
        return None
    return f"names the orchestrator's own {what} in output.dir"


def item_folder_clash(
    output_dir: Path, paths: Iterable[Path], item_ids: Iterable[str]
) -> tuple[Path, str] | None:
    """The first of ``paths`` that lies in output.dir where an item's folder is (the path is
    the folder itself or inside it, in any letter case), with that item's id; else None."""
    root = output_dir.resolve()
    folded: dict[str, str] = {}
    for item_id in item_ids:
        folded.setdefault(item_id.casefold(), item_id)
    for path in paths:
        resolved = path.resolve()
        if resolved == root or not resolved.is_relative_to(root):
            continue
        first = resolved.relative_to(root).parts[0]
        hit = folded.get(first.casefold())
        if hit is not None:
            return path, hit
    return None


def owner_only(file: int | Path) -> None:
    """Tighten one of the tool's files (an open descriptor, or a path that may not exist) to
    owner read/write if group or others have any access: one created earlier, by hand or by
    an older version, keeps its permissions through ``os.open``. Best effort: a file system
    without Unix permissions (or a file of another owner) refuses, and that must not stop a
    run (these files hold no credentials)."""
    try:
        mode = stat.S_IMODE(os.fstat(file).st_mode if isinstance(file, int) else
                            os.stat(file).st_mode)
        if mode & 0o077:
            if isinstance(file, int):
                os.fchmod(file, 0o600)
            else:
                os.chmod(file, 0o600)
    except OSError:
        pass
