"""The end-of-run report is streamed from the ledger: same files, memory that does not grow.

``write_report`` must write exactly what the in-memory path (``build_report`` then
``write_json_atomic``, ``write_results_jsonl``, ``write_markdown`` and ``write_html``) writes,
while holding only small aggregates: it runs at the end of batches of 100,000 items.
"""

from __future__ import annotations

import enum
import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import report, report_html
from orchestrator.errors import Category, ErrorInfo
from orchestrator.json_layout import nested_json
from orchestrator.ledger import AssetRecord, ItemRecord, ItemState, Ledger

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

POLICY = ErrorInfo(
    category=Category.POLICY,
    message="contenu signalé | flagged\nby the filter ✗",
    retryable=False,
    hint="Change the prompt, then rerun with a new item id.",
    code=1301,
    http_status=400,
)
MISMATCH = ErrorInfo(
    category=Category.ASSET_MISMATCH,
    message="3 of 4 images returned",
    retryable=False,
    hint="Submit a new item.",
)
NETWORK = ErrorInfo(
    category=Category.NETWORK, message="connection reset", retryable=True, hint="Rerun."
)

EXTRA: dict[str, Any] = {
    "requests": {"query": 25, "create": 12, "lookup": 3},
    "retries": 4,
    "peak_slots": 5,
    "concurrency": {"configured": 8, "final": 3, "lowest": 2, "sustained": 3},
    "retries_denied": 0,
    "units_submitted": 17,
    "max_units": None,
    "stopped_by": report.error_entry(POLICY),
    "interrupted": False,
    "deadline_reached": True,
    "log": "out/logs/run.jsonl",
}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _assets(item_id: str, n: int, *, on_disk: bool = True) -> list[AssetRecord]:
    return [
        AssetRecord(
            index=k,
            url=f"https://cdn.example/{item_id}/{k}.mp4?sig=abcdef0123456789",
            path=f"out/assets/{item_id}/{k}.mp4" if on_disk else None,
            bytes=1_000_000 + k if on_disk else None,
            sha256=f"{k:064x}" if on_disk else None,
        )
        for k in range(n)
    ]


def fill_ledger(path: Path, n: int) -> tuple[Ledger, list[str]]:
    """A ledger of ``n`` items in every report status, and the manifest's ids: not in id
    order, one id the ledger has not seen, and a ledger item that left the manifest."""
    clock = Clock(T0)
    ledger = Ledger(path, "big", clock=clock, max_delay=3600.0)
    ids = [f"item-{k:06d}" for k in range(n)]
    ledger.sync_items([(i, "image" if k % 7 == 0 else "text2video", 1) for k, i in enumerate(ids)])
    ledger.sync_items([("gone", "text2video", 1)])
    for k, item_id in enumerate(ids):
        kind = k % 10
        if kind == 9:
            continue  # pending: not_run
        clock.now = T0 + k * 0.01
        ledger.record_intent(item_id, 1, ledger.external_task_id(item_id, 1))
        if kind == 8:
            ledger.record_unresolved(item_id, NETWORK)  # submitting with an error: failed
            continue
        ledger.record_submitted(item_id, f"task-{k}")
        if kind == 7:
            continue  # running
        clock.now += 30 + (k * 37) % 400 + 0.125
        if kind in (0, 1, 2, 3):
            ledger.finish(item_id, ItemState.SUCCEEDED, assets=_assets(item_id, 1))
        elif kind == 4:
            ledger.finish(item_id, ItemState.PARTIAL, assets=_assets(item_id, 3), error=MISMATCH)
        elif kind == 5:
            ledger.finish(item_id, ItemState.FAILED, error=POLICY)
        else:  # generated, but the download failed
            ledger.finish(item_id, ItemState.SUCCEEDED, assets=_assets(item_id, 2))
            ledger.record_assets(item_id, _assets(item_id, 2, on_disk=False), NETWORK)
    manifest_ids = ids[1::2] + ids[0::2] + ["never-seen"]
    return ledger, manifest_ids


def write_streamed(ledger: Ledger, ids: list[str], out: Path) -> report.WrittenReport:
    return report.write_report(
        out / "report.json",
        batch="big",
        manifest=Path("manifests/big.yaml"),
        records=ledger.iter_items(ids),
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T02:03:04+00:00",
        extra=EXTRA,
    )


def write_in_memory(ledger: Ledger, ids: list[str], out: Path) -> dict[str, Any]:
    """The way the report was written before it streamed: every item in memory at once."""
    data = report.build_report(
        batch="big",
        manifest=Path("manifests/big.yaml"),
        item_ids=ids,
        records=ledger.all(),
        started_at="2026-01-01T00:00:00+00:00",
        finished_at="2026-01-01T02:03:04+00:00",
        extra=EXTRA,
    )
    report.write_json_atomic(out / "report.json", data)
    report.write_results_jsonl(out / "results.jsonl", data["items"])
    report.write_markdown(out / "report.md", data)
    report_html.write_html(out / "report.html", data)
    return data


def test_streamed_report_equals_the_in_memory_report(tmp_path: Path) -> None:
    ledger, ids = fill_ledger(tmp_path / "state.sqlite3", 3_000)
    with ledger:
        old = write_in_memory(ledger, ids, tmp_path / "old")
        new = write_streamed(ledger, ids, tmp_path / "new")

    # report.json: the same JSON, and in fact the same bytes (json.dump, indent=2)
    old_json = (tmp_path / "old" / "report.json").read_text(encoding="utf-8")
    new_json = (tmp_path / "new" / "report.json").read_text(encoding="utf-8")
    parsed = json.loads(new_json)
    assert parsed == json.loads(old_json) == old
    assert new_json == old_json
    assert list(parsed) == list(old)  # top-level key order kept: counts before items

    # manifest order, and only the manifest's items the ledger knows
    assert [i["id"] for i in parsed["items"]] == ids[:-1]
    assert parsed["counts"] == {
        "succeeded": 1_200,
        "partial": 300,
        "failed": 600,
        "not_run": 300,
        "running": 300,
        "unresolved": 300,  # submitting, with the error of a create not confirmed
    }
    assert new.counts == parsed["counts"]
    assert new.stats.total == 3_000
    assert new.head == {k: v for k, v in old.items() if k != "items"}

    # results.jsonl: one line per report item, equal to it
    lines = (tmp_path / "new" / "results.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == parsed["items"]
    assert (tmp_path / "new" / "results.jsonl").read_bytes() == (
        tmp_path / "old" / "results.jsonl"
    ).read_bytes()

    # report.md and the summary: the same text from the aggregates as from the items
    new_md = (tmp_path / "new" / "report.md").read_text(encoding="utf-8")
    assert new_md == (tmp_path / "old" / "report.md").read_text(encoding="utf-8")
    # 600 failed + 300 partial + 300 unresolved, 500 of them shown
    assert "700 more failed, partial or unresolved items are not shown" in new_md
    stop = ErrorInfo.from_dict(EXTRA["stopped_by"])
    path = tmp_path / "report.json"
    assert report.summary(new.head, report_path=path, stop=stop, stats=new.stats) == (
        report.summary(old, report_path=path, stop=stop)
    )

    # report.html: the same page, its cards streamed
    new_html = (tmp_path / "new" / "report.html").read_text(encoding="utf-8")
    assert new_html == (tmp_path / "old" / "report.html").read_text(encoding="utf-8")
    assert new_html.count('<article class="card"') == 3_000

    # nothing left behind: no temp file, no spool
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == [
        "report.html",
        "report.json",
        "report.md",
        "results.jsonl",
    ]


def test_streamed_report_of_no_items(tmp_path: Path) -> None:
    with Ledger(tmp_path / "state.sqlite3", "big") as ledger:
        old = write_in_memory(ledger, ["a", "b"], tmp_path / "old")
        new = write_streamed(ledger, ["a", "b"], tmp_path / "new")
    for name in ("report.json", "results.jsonl", "report.md", "report.html"):
        assert (tmp_path / "new" / name).read_text() == (tmp_path / "old" / name).read_text()
    assert json.loads((tmp_path / "new" / "report.json").read_text())["items"] == old["items"] == []
    assert new.stats.total == 0
    assert new.counts == dict.fromkeys(report.STATUSES, 0)


def test_a_failing_stream_leaves_the_previous_report_whole(tmp_path: Path) -> None:
    names = ("report.json", "results.jsonl", "report.md", "report.html")
    ledger, ids = fill_ledger(tmp_path / "state.sqlite3", 20)
    with ledger:
        write_streamed(ledger, ids, tmp_path)
        before = {name: (tmp_path / name).read_bytes() for name in names}
        listing = sorted(p.name for p in tmp_path.iterdir())

        def broken() -> Iterator[ItemRecord]:
            yield from ledger.iter_items(ids[:5])
            raise OSError("disk gone")

        with pytest.raises(OSError, match="disk gone"):
            report.write_report(
                tmp_path / "report.json",
                batch="big",
                manifest=Path("m.yaml"),
                records=broken(),
                started_at="s",
                finished_at="f",
            )
        assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no temp file left
    assert {name: (tmp_path / name).read_bytes() for name in names} == before


class _Str(enum.StrEnum):
    A = "a"


class _Int(int):
    pass


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -3,
        10**30,
        _Int(5),
        1.5,
        0.1,
        1e-7,
        1e300,
        -0.0,
        float("nan"),
        float("-inf"),
        "",
        'quote " back \\ tab \t nl \n ctl \x00 \u2028 é ✗ \U0001f600',
        _Str.A,
        [],
        {},
        [[], {}],
        (1, (2, [])),
        {"a": [1, {"b": None, "c": [True, 2.25]}], "z": {"y": {}}},
        {1: "int key", 2.5: "float key", None: "null key", False: "bool key"},
        {"a": 1, 2: [3]},
        [{"x": {1: 2}}],
    ],
)
def test_nested_json_is_what_json_dump_writes(value: Any) -> None:
    for indent in ("", "  ", "    "):
        expected = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + indent)
        assert nested_json(value, indent) == expected


def test_extra_cannot_replace_counts_or_items(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="counts"):
        report.write_report(
            tmp_path / "report.json",
            batch="b",
            manifest=Path("m.yaml"),
            records=[],
            started_at="s",
            finished_at="f",
            extra={"counts": {}},
        )


def test_iter_items_streams_in_the_order_asked(tmp_path: Path) -> None:
    with Ledger(tmp_path / "state.sqlite3", "b") as ledger:
        ledger.sync_items([(f"i{k}", "image", 1) for k in range(7)])
        ledger.record_intent("i3", 1, ledger.external_task_id("i3", 1))  # not committed yet
        assert [r.id for r in ledger.iter_items()] == [f"i{k}" for k in range(7)]
        asked = ["i5", "nope", "i0", "i3", "i6", "i1"]
        got = list(ledger.iter_items(asked, chunk=2))
        assert [r.id for r in got] == ["i5", "i0", "i3", "i6", "i1"]
        assert got == [ledger.get(i) for i in ["i5", "i0", "i3", "i6", "i1"]]
        assert got[2].state is ItemState.SUBMITTING  # sees the open transaction's writes
        assert list(ledger.iter_items([])) == []
        with pytest.raises(ValueError):
            list(ledger.iter_items(asked, chunk=0))


#: Peak Python memory allowed for writing the report of 8,000 items. Built in memory they took
#: ~17 MiB (42.9 MiB for 20,000); the streamed writer holds a float per timed item and the first
#: 500 failed/partial items (1.5 MiB for 20,000).
MAX_PEAK = 4 * 1024 * 1024


def _peak(write: Any) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        write()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_writing_the_report_does_not_grow_with_the_batch(tmp_path: Path) -> None:
    ledger, ids = fill_ledger(tmp_path / "state.sqlite3", 8_000)
    with ledger:
        peak = _peak(lambda: write_streamed(ledger, ids, tmp_path / "new"))
    data = json.loads((tmp_path / "new" / "report.json").read_text(encoding="utf-8"))
    assert len(data["items"]) == 8_000
    assert peak < MAX_PEAK, f"peak {peak / 2**20:.1f} MiB writing the report of 8,000 items"
