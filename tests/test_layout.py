"""The output directory's own names, and paths that would take an item folder's place."""

from __future__ import annotations

from pathlib import Path

from orchestrator.layout import item_folder_clash, own_name_clash, report_files, state_files


def test_own_names_in_any_letter_case() -> None:
    for name in ("report.json", "Report.JSON", "LOGS", "state.sqlite3-WAL", "state.sqlite3.lock"):
        assert own_name_clash(name) is not None, name
    for name in ("report", "logs2", "state.sqlite3.bak", "my-state.sqlite3"):
        assert own_name_clash(name) is None, name


def test_files_beside_the_state_and_the_report(tmp_path: Path) -> None:
    assert [p.name for p in state_files(tmp_path / "s.db")] == [
        "s.db", "s.db-wal", "s.db-shm", "s.db-journal", "s.db.lock",
    ]
    assert [p.name for p in report_files(tmp_path / "r.json")] == [
        "r.json", "results.jsonl", "report.md", "report.html",
    ]


def test_item_folder_clash(tmp_path: Path) -> None:
    out = tmp_path / "out"
    ids = ["clip", "Stills"]
    # In an item's folder, or the folder itself, in any letter case.
    inside = out / "clip" / "state.sqlite3"
    assert item_folder_clash(out, [out / "ok.db", inside], ids) == (inside, "clip")
    assert item_folder_clash(out, [out / "stills"], ids) == (out / "stills", "Stills")
    # Reached through "..": resolved first.
    sneaky = out / "logs" / ".." / "clip"
    assert item_folder_clash(out, [sneaky], ids) == (sneaky, "clip")
    # Beside the item folders, outside the output dir, or the output dir itself: no clash.
    fine = [out / "custom.db", out / "logs" / "r.json", tmp_path / "clip" / "x", out]
    assert item_folder_clash(out, fine, ids) is None
