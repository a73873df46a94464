"""What a batch leaves behind for people and tools, written in one pass over the items.

- ``report.json`` (the contract in DESIGN.md);
- ``results.jsonl``: one line per item in the same shape as the report's items, for ``jq``,
  spreadsheets and other tools;
- ``report.md``: the same report for people (report_md.py): the counts, the items that need a
  person with what to do about each, every item's files, then the internals;
- ``report.html``: a page of cards, one per item, with its media, that works offline from the
  folder (report_html.py);
- the short summary printed at the end of a run (:func:`summary`).

An item reads the same in all of them: report_items.py makes its entry, report_stats.py the
aggregates. A run writes the files with :func:`write_report`, which streams: items go from the
ledger to the files one at a time, and only small aggregates (:class:`ItemStats`: counts, one
float per timed item, the first failed/partial items) stay in memory, so a batch of 100,000
items costs no more memory at the end than while it runs. :func:`build_report`,
:func:`write_json_atomic`, :func:`write_results_jsonl`, :func:`write_markdown` and
:func:`~orchestrator.report_html.write_html` do the same from an in-memory report (small
batches, tests).

Every file is written atomically (atomic_files.py: temp file, fsync, rename): a reader never sees
half of one. report.json's indented JSON is laid out by json_layout.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from orchestrator import layout
from orchestrator.atomic_files import atomic_file
from orchestrator.errors import ErrorInfo
from orchestrator.json_layout import nested_json
from orchestrator.ledger import ItemRecord
from orchestrator.report_html import HtmlSpool, ItemText
from orchestrator.report_items import (
    PROBLEM_STATUSES,
    STATUSES,
    error_entry,
    iso_utc,
    item_entry,
    item_error,
    item_status,
    task_seconds,
)
from orchestrator.report_md import (
    MARKDOWN_MAX_ROWS,
    MARKDOWN_MAX_RUNS,
    MarkdownSpool,
    counts_text,
    group_limits_line,
    md_cell,
    render_markdown,
    stop_cause,
    write_markdown,
)
from orchestrator.report_stats import (
    ItemStats,
    format_seconds,
    percentile,
    stats_of,
    timing,
    wall_seconds,
)

__all__ = [
    "MARKDOWN_MAX_ROWS",
    "MARKDOWN_MAX_RUNS",
    "PROBLEM_STATUSES",
    "STATUSES",
    "SUMMARY_MAX_PROBLEMS",
    "ItemStats",
    "ItemText",
    "WrittenReport",
    "build_report",
    "counts_text",
    "error_entry",
    "format_seconds",
    "iso_utc",
    "item_entry",
    "item_error",
    "item_status",
    "md_cell",
    "percentile",
    "render_markdown",
    "summary",
    "task_seconds",
    "timing",
    "wall_seconds",
    "write_json_atomic",
    "write_markdown",
    "write_report",
    "write_results_jsonl",
]

#: Failed/partial items listed in the end-of-run summary.
SUMMARY_MAX_PROBLEMS = 20


def build_report(
    *,
    batch: str,
    manifest: Path,
    item_ids: Iterable[str],
    records: Iterable[ItemRecord],
    started_at: str,
    finished_at: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Items in manifest order (results are matched by id; the order is only for people)."""
    by_id = {r.id: r for r in records}
    items = [item_entry(by_id[i]) for i in item_ids if i in by_id]
    counts = Counter(item["status"] for item in items)
    report: dict[str, Any] = {
        "batch": batch,
        "manifest": str(manifest),
        "started_at": started_at,
        "finished_at": finished_at,
        "counts": {status: counts.get(status, 0) for status in STATUSES},
        "items": items,
    }
    if extra:
        report.update(extra)
    _charged_into(report, ItemStats.of(items))
    return report


def _scrubbed_record(rec: ItemRecord, scrub: Callable[[Any], Any]) -> ItemRecord:
    """The record with what the provider sent (asset URLs, error texts) scrubbed."""
    error = ErrorInfo.from_dict(scrub(rec.error.to_dict())) if rec.error else None
    download_error = (
        ErrorInfo.from_dict(scrub(rec.download_error.to_dict())) if rec.download_error else None
    )
    assets = [replace(a, url=scrub(a.url)) for a in rec.assets]
    return replace(rec, assets=assets, error=error, download_error=download_error)


def _charged_into(head: dict[str, Any], stats: ItemStats) -> None:
    """``units`` (the estimate the run passed in) gains what the provider says it charged."""
    units = head.get("units")
    if isinstance(units, dict):
        head["units"] = {
            **units,
            "charged": round(stats.charged_units, 6) if stats.items_charged else None,
            "items_charged": stats.items_charged,
        }


# -- atomic files -----------------------------------------------------------------------------


def _write_atomic(path: Path, write: Callable[[IO[str]], None]) -> None:
    """Readers never see a half-written file: write a temp file, fsync, rename."""
    with atomic_file(path) as fh:
        write(fh)


def write_json_atomic(path: Path, data: Any) -> None:
    """Readers never see a half-written report: write a temp file, fsync, rename."""

    def write(fh: IO[str]) -> None:
        json.dump(data, fh, indent=2, ensure_ascii=False)
        fh.write("\n")

    _write_atomic(path, write)


def write_results_jsonl(path: Path, items: Iterable[dict[str, Any]]) -> None:
    """One compact JSON object per line, in the order given (the report's item order)."""

    def write(fh: IO[str]) -> None:
        for item in items:
            fh.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")))
            fh.write("\n")

    _write_atomic(path, write)


# -- streaming: the end-of-run report ---------------------------------------------------------


@dataclass(frozen=True)
class WrittenReport:
    """What :func:`write_report` wrote: every top-level key of report.json but ``items``
    (``counts`` included), and the aggregates of the items (for :func:`summary`)."""

    head: dict[str, Any]
    stats: ItemStats

    @property
    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.head["counts"]
        return counts


#: results.jsonl's lines: ``json.dumps(item, ensure_ascii=False, separators=(",", ":"))``
_COMPACT_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def write_report(
    report_path: Path,
    *,
    batch: str,
    manifest: Path,
    records: Iterable[ItemRecord],
    started_at: str,
    finished_at: str,
    extra: Mapping[str, Any] | None = None,
    results_path: Path | None = None,
    markdown_path: Path | None = None,
    html_path: Path | None = None,
    output_dir: Path | None = None,
    texts: Callable[[str], ItemText | None] | None = None,
    scrub: Callable[[Any], Any] | None = None,
    late: Callable[[ItemStats], Mapping[str, Any]] | None = None,
) -> WrittenReport:
    """Write report.json, results.jsonl, report.md and report.html in one pass over
    ``records``.

    ``late``: called with the items' aggregates once every item is counted, before report.json
    is written; its keys follow ``extra``'s (what depends on the counts: how the run ended).

    ``records`` come in the report's item order (manifest order: ``ledger.iter_items(ids)``),
    and are read one at a time: memory does not grow with the batch beyond :class:`ItemStats`.
    report.json is byte for byte what ``write_json_atomic(path, build_report(...))`` writes
    (``counts`` comes before ``items``, so the items go to an unnamed temp file beside the
    report first); results.jsonl, report.md and report.html default to files beside
    report.json. Each file is written atomically; report.json is renamed into place first.
    ``scrub`` cleans every item, ``extra`` and the texts of credentials first (a ledger written
    by an older version may hold what a server echoed).

    ``output_dir``: where the items' files are (their paths are relative to it; default: the
    report's folder): report.md and report.html link them relative to themselves. ``texts``:
    what the manifest says of an item (its prompt and model), for its card in report.html.
    """
    if scrub is not None:
        extra = scrub(dict(extra)) if extra else extra
        records = (_scrubbed_record(rec, scrub) for rec in records)
    if extra and {"counts", "items"} & extra.keys():
        raise ValueError("extra must not set 'counts' or 'items'")
    _, default_results, default_markdown, default_html = layout.report_files(report_path)
    results_path = results_path or default_results
    markdown_path = markdown_path or default_markdown
    html_path = html_path or default_html
    head: dict[str, Any] = {
        "batch": batch,
        "manifest": str(manifest),
        "started_at": started_at,
        "finished_at": finished_at,
        "counts": None,  # known once every item is counted
        "items": None,  # streamed
    }
    if extra:
        head.update(extra)
    stats = ItemStats()
    folder = report_path.parent
    folder.mkdir(parents=True, exist_ok=True)
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    html_path.parent.mkdir(parents=True, exist_ok=True)
    assets = output_dir if output_dir is not None else folder
    with contextlib.ExitStack() as stack:

        def temp(directory: Path) -> IO[str]:
            """An unnamed temp file: nothing is left behind, whatever happens."""
            return stack.enter_context(
                tempfile.TemporaryFile("w+", encoding="utf-8", dir=directory)
            )

        spool = temp(folder)
        md = MarkdownSpool(
            temp(markdown_path.parent),
            temp(markdown_path.parent),
            _assets_base(assets, markdown_path.parent),
        )
        cards = HtmlSpool(temp(html_path.parent), _assets_base(assets, html_path.parent))
        with atomic_file(results_path) as jsonl:
            for rec in records:
                entry = item_entry(rec)
                stats.add(entry)
                jsonl.write(_COMPACT_JSON.encode(entry))
                jsonl.write("\n")
                spool.write(",\n    " if stats.total > 1 else "    ")
                spool.write(nested_json(entry, "    "))
                md.add(entry)
                text = texts(rec.id) if texts is not None else None
                if text is not None and scrub is not None:
                    text = ItemText(prompt=scrub(text.prompt), model=scrub(text.model))
                cards.add(entry, text)
            head["counts"] = {status: stats.counts.get(status, 0) for status in STATUSES}
            _charged_into(head, stats)
            if late is not None:
                added = late(stats)
                if {"counts", "items"} & added.keys():
                    raise ValueError("late must not set 'counts' or 'items'")
                head.update(added)
            _write_head_and_items(report_path, head, spool, stats.total)
        del head["items"]
        with atomic_file(markdown_path) as fh:
            md.write(fh, head, stats)
        with atomic_file(html_path) as fh:
            cards.write(fh, head, stats)
    return WrittenReport(head, stats)


def _write_head_and_items(path: Path, head: Mapping[str, Any], items: IO[str], count: int) -> None:
    """report.json: ``head``'s keys in order, ``items`` (the spooled entries) in its place."""
    items.seek(0)
    with atomic_file(path) as fh:
        fh.write("{")
        for n, (key, value) in enumerate(head.items()):
            fh.write(",\n  " if n else "\n  ")
            fh.write(json.dumps(key, ensure_ascii=False))
            fh.write(": ")
            if key != "items":
                fh.write(nested_json(value, "  "))
            elif count:
                fh.write("[\n")
                shutil.copyfileobj(items, fh)
                fh.write("\n  ]")
            else:
                fh.write("[]")
        fh.write("\n}\n")


def _assets_base(output_dir: Path, folder: Path) -> str:
    """The output directory as a link from ``folder`` ("" when they are one)."""
    try:
        rel = os.path.relpath(output_dir.resolve(), folder.resolve())
    except ValueError:  # another drive (Windows): only an absolute link reaches it
        return output_dir.resolve().as_uri()
    return "" if rel == "." else urllib.parse.quote(Path(rel).as_posix(), safe="/")


# -- end of run summary -----------------------------------------------------------------------


def summary(
    report: Mapping[str, Any],
    *,
    report_path: Path,
    stop: ErrorInfo | None,
    stats: ItemStats | None = None,
    max_problems: int = SUMMARY_MAX_PROBLEMS,
) -> str:
    """``stats``: the items' aggregates when ``report`` has no items (see render_markdown).
    ``max_problems``: the failed, partial and unresolved items listed (the rest are counted)."""
    stats = stats_of(report, stats)
    counts = report["counts"]
    total = stats.total
    shown = counts_text(counts)
    lines = [f"Batch '{report['batch']}': {total} items: {shown or 'nothing to do'}."]
    if stop is not None:
        code = f" (code {stop.code})" if stop.code is not None else ""
        cause, detail = stop_cause(
            {"code": stop.code, "message": stop.message},
            f"{stop.category}{code}: {stop.message}",
        )
        lines.append(f"STOPPED by {cause}: {detail}")
        lines.append(f"  What to do: {stop.hint}")
        lines.append("  Rerun the same command afterwards: finished items are not resubmitted.")
    if report.get("account_warning"):
        lines.append(f"Account: {report['account_warning']}")
    changed = report.get("changed_items")
    if changed:
        shown = ", ".join(changed["ids"][:10]) + (", ..." if changed["count"] > 10 else "")
        what = ("they get a new attempt" if changed.get("rerun") else
                "their results are what the old definition made: rerun with --rerun-changed "
                "to generate them again")
        lines.append(
            f"{changed['count']} item(s) changed in the manifest since their result was made "
            f"({shown}): {what}."
        )
    if report.get("deadline_reached"):
        lines.append(
            f"Deadline reached: nothing was submitted after it; {counts['not_run']} items not "
            "run. Rerun to continue."
        )
    conc = report.get("concurrency") or {}
    advised = conc.get("limit_found") or conc.get("sustained")
    if conc.get("groups") and conc.get("over_capacity_cuts"):
        lines.append(group_limits_line(conc))
    elif conc.get("over_capacity_cuts") and advised:
        found = (f"its limit looks like {conc['limit_found']}; "
                 if conc.get("limit_found") else "")
        lines.append(
            f"The account refused concurrency {conc['configured']} (over capacity): {found}it "
            f"sustained {conc.get('sustained')} tasks at once; consider limits.concurrency: "
            f"{advised}."
        )
    if report.get("retries_denied"):
        lines.append(
            f"The provider kept failing: {report['retries_denied']} retries were skipped to "
            "avoid a storm (retry budget). Rerun later: those items are retried."
        )
    for item in stats.problems[:max_problems]:
        err = item["error"] or {}
        code = f" code {err['code']}" if err.get("code") is not None else ""
        lines.append(
            f"  {item['status']:7} {item['id']}: {err.get('category', '?')}{code}: "
            f"{err.get('message', '')}"
        )
        if err.get("hint"):
            lines.append(f"          -> {err['hint']}")
    if stats.problem_count > max_problems:
        lines.append(
            f"  ... and {stats.problem_count - max_problems} more: see the report."
        )
    _, _, markdown, page = layout.report_files(report_path)
    lines.append(f"Report: {report_path}; to read: {markdown.name}, {page.name} (with the media)")
    return "\n".join(lines)
