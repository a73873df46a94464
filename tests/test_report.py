"""report.json items carry timing; report.md reads well; results.jsonl is one item per line."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from orchestrator import report
from orchestrator.errors import Category, ErrorInfo
from orchestrator.ledger import AssetRecord, ItemState, Ledger

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

POLICY = ErrorInfo(
    category=Category.POLICY,
    message="content | flagged\nby the filter",
    retryable=False,
    hint="Change the prompt, then rerun with a new item id.",
    code=1301,
    http_status=400,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _error(category: str, message: str, hint: str, code: int | None = None) -> dict[str, Any]:
    return {
        "category": category,
        "code": code,
        "http_status": None,
        "message": message,
        "retryable": False,
        "hint": hint,
    }


def _item(item_id: str, status: str, seconds: float | None, error: Any = None) -> dict[str, Any]:
    return {
        "id": item_id,
        "status": status,
        "kind": "text2video",
        "attempts": 1 if status != "not_run" else 0,
        "task_id": f"T-{item_id}" if status != "not_run" else None,
        "external_task_id": None,
        "expected_assets": 1,
        "assets": [],
        "error": error,
        "submitted_at": None,
        "finished_at": None,
        "task_seconds": seconds,
    }


def section(lines: list[str], heading: str) -> list[str]:
    """The lines of one report.md section, its heading included, up to the next heading."""
    start = lines.index(heading)
    end = next((n for n in range(start + 1, len(lines)) if lines[n].startswith("## ")), None)
    return lines[start:end]


def mixed_report() -> dict[str, Any]:
    """Ten timed items (10, 20, ... 100 s, shuffled) and two untimed ones."""
    items = [
        _item("s1", "succeeded", 30.0),
        _item("s2", "succeeded", 100.0),
        _item("s3", "succeeded", 10.0),
        _item("s4", "succeeded", 70.0),
        _item("s5", "succeeded", 50.0),
        _item(
            "mug",
            "partial",
            40.0,
            _error("asset_mismatch", "3 of 4 images returned", "Submit a new item."),
        ),
        _item(
            "p1", "failed", 20.0, _error("policy", "content | flagged\nagain", "Reword it.", 1301)
        ),
        _item("p2", "failed", 60.0, _error("policy", "flagged", "Reword it.", 1301)),
        _item("t1", "failed", 90.0, _error("timeout", "did not finish", "Rerun to poll again.")),
        _item("s6", "succeeded", 80.0),
        _item("nr", "not_run", None, _error("rate_limit", "slow down", "Wait.", 1302)),
        _item("run", "running", None),
    ]
    return {
        "batch": "launch",
        "manifest": "manifests/launch.yaml",
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T01:02:03+00:00",
        "counts": {"succeeded": 6, "partial": 1, "failed": 3, "not_run": 1, "running": 1},
        "items": items,
        "requests": {"query": 25, "create": 12, "lookup": 3},
        "retries": 4,
        "peak_slots": 5,
        "concurrency": {
            "configured": 8,
            "final": 3,
            "lowest": 2,
            "sustained": 3,
            "over_capacity_cuts": 2,
        },
        "retries_denied": 0,
        "stopped_by": None,
        "interrupted": False,
        "deadline_reached": True,
        "log": "out/logs/run.jsonl",
    }


# -- item timing ------------------------------------------------------------------------------


def test_items_carry_submit_and_finish_times(tmp_path: Path) -> None:
    clock = Clock(T0)
    with Ledger(tmp_path / "s", "b", clock=clock) as ledger:
        ledger.sync_items([("done", "text2video", 1), ("run", "image", 2), ("new", "image", 1)])
        ledger.record_intent("done", 1, ledger.external_task_id("done", 1))
        ledger.record_submitted("done", "T1")
        ledger.record_intent("run", 1, ledger.external_task_id("run", 1))
        ledger.record_submitted("run", "T2")
        clock.now = T0 + 42.25
        ledger.finish("done", ItemState.SUCCEEDED, assets=[AssetRecord(0, "u")])
        clock.now = T0 + 50  # its file is on disk 7.75 s later: not part of the task time
        ledger.record_assets("done", [AssetRecord(0, "u", path="done/0.mp4")], None)
        data = report.build_report(
            batch="b",
            manifest=Path("m.yaml"),
            item_ids=["done", "run", "new"],
            records=ledger.all(),
            started_at="2026-01-01T00:00:00+00:00",
            finished_at="2026-01-01T00:01:00+00:00",
        )
    done, run, new = data["items"]
    assert done["submitted_at"] == "2026-01-01T00:00:00+00:00"
    assert done["finished_at"] == "2026-01-01T00:00:42+00:00"
    assert done["task_seconds"] == 42.25
    assert (run["submitted_at"], run["finished_at"], run["task_seconds"]) == (
        "2026-01-01T00:00:00+00:00",
        None,
        None,
    )
    assert (new["submitted_at"], new["finished_at"], new["task_seconds"]) == (None, None, None)
    # The DESIGN.md keys are all still there.
    assert {
        "id",
        "status",
        "kind",
        "attempts",
        "task_id",
        "external_task_id",
        "expected_assets",
        "assets",
        "error",
    } <= done.keys()
    assert (done["status"], run["status"], new["status"]) == ("succeeded", "running", "not_run")
    json.dumps(data)  # JSON-safe


def test_percentile_is_nearest_rank() -> None:
    values = [70.0, 10.0, 100.0, 40.0, 20.0, 90.0, 30.0, 60.0, 50.0, 80.0]
    assert report.percentile(values, 50) == 50.0
    assert report.percentile(values, 90) == 90.0
    assert report.percentile(values, 100) == 100.0
    assert report.percentile([7.0], 90) == 7.0
    assert report.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert report.percentile([], 50) is None


def test_format_seconds() -> None:
    assert report.format_seconds(None) == "n/a"
    assert report.format_seconds(12.34) == "12.3 s"
    assert report.format_seconds(90) == "1m 30s"
    assert report.format_seconds(3723) == "1h 02m 03s"


# -- report.md --------------------------------------------------------------------------------


def test_markdown_has_counts_categories_timing_requests_and_problems() -> None:
    data = mixed_report()
    md = report.render_markdown(data)
    lines = md.splitlines()
    assert lines[0] == "# Batch report: launch"
    assert "- Manifest: `manifests/launch.yaml`" in lines
    assert "- Total wall time: 1h 02m 03s" in lines

    # counts by status, every status, with the total
    for row in (
        "| succeeded | 6 |",
        "| partial | 1 |",
        "| failed | 3 |",
        "| not_run | 1 |",
        "| running | 1 |",
        "| **total** | **12** |",
    ):
        assert row in lines, row

    # counts by error category: only those that occur, most frequent first
    categories = section(lines, "## Errors by category")
    cat_rows = [line for line in categories if line.startswith("| ") and "category" not in line]
    assert cat_rows == [
        "| policy | 2 |",
        "| asset_mismatch | 1 |",
        "| rate_limit | 1 |",
        "| timeout | 1 |",
    ]
    assert "billing" not in "\n".join(categories)

    # timing: nearest rank over the ten timed items (10..100 s)
    assert "| task time p50 | 50.0 s |" in lines
    assert "| task time p90 | 1m 30s |" in lines
    assert "| items timed | 10 |" in lines
    assert "| total wall time | 1h 02m 03s |" in lines
    # what the figure measures (the task's end at the provider; downloads come after it)
    assert (
        "Task time runs from an item's last submission to the end of its task at the provider "
        "(generation; downloads not included)." in lines
    )

    # requests by kind and retries
    assert "| create | 12 |" in lines
    assert "| lookup | 3 |" in lines
    assert "| query | 25 |" in lines
    assert "| **total** | **40** |" in lines
    assert "- Retries made: 4" in lines
    assert "- Peak slots in use: 5" in lines

    # concurrency and how the run ended
    assert "| configured (limits.concurrency) | 8 |" in lines
    assert "| sustained by the account | 3 |" in lines
    assert "| lowest cap reached | 2 |" in lines
    assert any(
        line.startswith("- **Deadline reached**") and "1 items not run" in line for line in lines
    )
    assert "Interrupted" not in md and "Stopped by" not in md

    # the failed and partial items, in report order, each with its hint; pipes escaped
    problems = section(lines, "## Failed, partial and unresolved items")
    table = [line for line in problems if line.startswith("|")]
    assert table[0] == "| id | status | category | code | message | hint |"
    assert table[2:] == [
        "| mug | partial | asset_mismatch |  | 3 of 4 images returned | Submit a new item. |",
        "| p1 | failed | policy | 1301 | content \\| flagged again | Reword it. |",
        "| p2 | failed | policy | 1301 | flagged | Reword it. |",
        "| t1 | failed | timeout |  | did not finish | Rerun to poll again. |",
    ]
    # every table row has the same number of unescaped cell separators as its header
    for row in table:
        assert row.replace("\\|", "").count("|") == 7


def test_markdown_leads_with_counts_then_problems_then_files_then_internals() -> None:
    lines = report.render_markdown(mixed_report()).splitlines()
    headings = [line for line in lines if line.startswith("## ")]
    assert headings == [
        "## Items by status",
        "## Run ended early",
        "## Failed, partial and unresolved items",
        "## Errors by category",
        "## Files",
        "## Items in detail",
        "## Batch",
        "## Timing",
        "## Requests",
        "## Concurrency",
    ]
    # the counts in a line under the title, before any table
    assert lines[2] == "12 items: 6 succeeded, 1 partial, 3 failed, 1 not_run, 1 running."


def test_markdown_lists_every_items_files_and_internals() -> None:
    data = mixed_report()
    mug = data["items"][5]
    mug["assets"] = [
        {"index": 0, "url": "https://cdn/0", "path": "mug/0.png", "bytes": 3, "sha256": "a"},
        {"index": 1, "url": "https://cdn/1", "path": "mug/1.png", "bytes": 3, "sha256": "b"},
        {"index": 2, "url": "https://cdn/2", "path": None, "bytes": None, "sha256": None},
    ]
    mug["expected_assets"] = 4
    mug["charged_units"] = 2.5
    mug["external_task_id"] = "orc-mug-1"
    lines = report.render_markdown(data).splitlines()

    files = section(lines, "## Files")
    listed = [line for line in files if line.startswith("- ")]
    assert [line.split("`")[1] for line in listed] == [i["id"] for i in data["items"]]
    assert (
        "- `mug` (partial): [mug/0.png](mug/0.png), [mug/1.png](mug/1.png), "
        "file 2 not downloaded" in listed
    )
    assert "- `p1` (failed): no files" in listed
    assert "https://cdn" not in "\n".join(lines)  # the provider's URLs are not the files

    details = section(lines, "## Items in detail")
    rows = [line for line in details if line.startswith("| ")]
    assert rows[0] == (
        "| id | status | kind | attempts | task id | external task id | files | "
        "charged units | task time | submitted | finished |"
    )
    assert len(rows) == 1 + len(data["items"])
    mug_row = "| mug | partial | text2video | 1 | T-mug | orc-mug-1 | 2 of 4 | 2.5 | 40.0 s |  |  |"
    assert mug_row in rows
    assert "| nr | not_run | text2video | 0 |  |  | 0 of 1 |  |  |  |  |" in rows

    # seen from elsewhere (--report outside the output directory), the links follow
    moved = report.render_markdown(data, assets_base="../out%20dir").splitlines()
    assert "[mug/0.png](../out%20dir/mug/0.png)" in "\n".join(section(moved, "## Files"))


def test_markdown_is_deterministic_and_does_not_touch_the_report() -> None:
    data = mixed_report()
    before = copy.deepcopy(data)
    assert report.render_markdown(data) == report.render_markdown(data)
    assert data == before


def test_markdown_stop_and_interrupt() -> None:
    data = mixed_report()
    data["deadline_reached"] = False
    data["interrupted"] = True
    data["stopped_by"] = {
        "category": "billing",
        "code": 1102,
        "http_status": 429,
        "message": "balance exhausted",
        "retryable": False,
        "hint": "Top up the account.",
    }
    md = report.render_markdown(data)
    assert "## Run ended early" in md
    assert "**Stopped by an account-level error**: billing (code 1102) HTTP 429: balance" in md
    assert "What to do: Top up the account." in md
    assert "**Interrupted**" in md
    assert "Deadline" not in md


def test_markdown_clean_batch_has_no_problem_sections() -> None:
    data = {
        "batch": "ok",
        "manifest": "m.yaml",
        "started_at": "2026-01-01T00:00:00+00:00",
        "finished_at": "2026-01-01T00:00:30+00:00",
        "counts": {"succeeded": 1, "partial": 0, "failed": 0, "not_run": 0, "running": 0},
        "items": [_item("a", "succeeded", 12.0)],
    }
    md = report.render_markdown(data)
    assert "No errors." in md
    assert section(md.splitlines(), "## Failed, partial and unresolved items")[1:] == [
        "",
        "None.",
        "",
    ]
    assert "## Concurrency" not in md
    assert "## Run ended early" not in md
    assert "No requests recorded." in md
    assert "| task time p50 | 12.0 s |" in md
    assert "| total wall time | 30.0 s |" in md


def test_markdown_caps_the_problem_table() -> None:
    n = report.MARKDOWN_MAX_ROWS + 100
    items = [_item(f"i{k}", "failed", None, _error("server", "boom", "Rerun.")) for k in range(n)]
    data = {
        "batch": "big",
        "manifest": "m.yaml",
        "started_at": "x",
        "finished_at": "y",
        "counts": {"failed": n},
        "items": items,
    }
    md = report.render_markdown(data)
    lines = md.splitlines()
    problems = section(lines, "## Failed, partial and unresolved items")
    rows = [line for line in problems if line.startswith("| i") and not line.startswith("| id ")]
    assert len(rows) == report.MARKDOWN_MAX_ROWS
    assert rows[-1].startswith(f"| i{report.MARKDOWN_MAX_ROWS - 1} |")
    assert "100 more failed, partial or unresolved items are not shown: see results.jsonl" in md
    assert "- Total wall time: n/a" in lines


def test_md_cell_escaping() -> None:
    assert report.md_cell(None) == ""
    assert report.md_cell(1301) == "1301"
    assert report.md_cell("a|b") == "a\\|b"
    assert report.md_cell("one\ntwo\r\nthree") == "one two three"
    assert report.md_cell("back\\slash") == "back\\\\slash"
    assert report.md_cell("<script>") == "&lt;script&gt;"


def test_write_markdown(tmp_path: Path) -> None:
    data = mixed_report()
    path = tmp_path / "out" / "report.md"
    report.write_markdown(path, data)
    assert path.read_text(encoding="utf-8") == report.render_markdown(data)
    assert [p.name for p in path.parent.iterdir()] == ["report.md"]  # no temp file left


# -- results.jsonl ----------------------------------------------------------------------------


def test_results_jsonl_round_trip(tmp_path: Path) -> None:
    clock = Clock(T0)
    with Ledger(tmp_path / "s", "b", clock=clock) as ledger:
        ledger.sync_items([("z-last", "text2video", 1), ("a-first", "image", 4)])
        for item_id in ("z-last", "a-first"):
            ledger.record_intent(item_id, 1, ledger.external_task_id(item_id, 1))
            ledger.record_submitted(item_id, f"T-{item_id}")
        clock.now += 5
        ledger.finish("z-last", ItemState.SUCCEEDED, assets=[AssetRecord(0, "u", bytes=3)])
        ledger.finish("a-first", ItemState.FAILED, error=POLICY)
        data = report.build_report(
            batch="b",
            manifest=Path("m.yaml"),
            item_ids=["z-last", "a-first"],
            records=ledger.all(),
            started_at="s",
            finished_at="f",
        )
    path = tmp_path / "out" / "results.jsonl"
    report.write_results_jsonl(path, data["items"])
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert text.endswith("\n")
    assert len(lines) == 2
    parsed = [json.loads(line) for line in lines]
    assert parsed == data["items"]
    assert [p["id"] for p in parsed] == ["z-last", "a-first"]  # manifest order kept
    assert parsed[1]["error"]["message"] == "content | flagged\nby the filter"
    assert parsed[0]["task_seconds"] == 5.0

    # rewriting replaces the file whole, from any iterable, and leaves no temp file
    report.write_results_jsonl(path, (item for item in data["items"][:1]))
    assert [json.loads(line) for line in path.read_text().splitlines()] == data["items"][:1]
    assert [p.name for p in path.parent.iterdir()] == ["results.jsonl"]
    report.write_results_jsonl(path, [])
    assert path.read_text() == ""


def test_summary_still_lists_problems_with_hints() -> None:
    data = mixed_report()
    text = report.summary(data, report_path=Path("out/report.json"), stop=None)
    assert text.startswith("Batch 'launch': 12 items: 6 succeeded, 1 partial, 3 failed")
    assert "-> Reword it." in text
    assert "Deadline reached" in text
    assert "sustained 3 tasks at once" in text
    assert text.endswith(
        "Report: out/report.json; to read: report.md, report.html (with the media)"
    )


def test_summary_lists_at_most_the_problems_asked_for() -> None:
    data = mixed_report()
    short = report.summary(data, report_path=Path("out/report.json"), stop=None,
                           max_problems=1)
    listed = [line for line in short.splitlines() if line.startswith("  ") and ": " in line
              and not line.lstrip().startswith(("->", "..."))]
    assert len(listed) == 1
    assert "  ... and 3 more: see the report." in short
