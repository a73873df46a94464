"""What a batch leaves behind for people and tools.

- ``report.json`` (the contract in DESIGN.md);
- ``results.jsonl``: one line per item in the same shape as the report's items, for ``jq``,
  spreadsheets and other tools;
- ``report.md``: the same report for people (:func:`render_markdown`, :func:`write_markdown`):
  counts by status and error category, timing, requests and retries, and a table of the failed
  and partial items with what to do about each;
- the short summary printed at the end of a run (:func:`summary`).

A run writes all three with :func:`write_report`, which streams: items go from the ledger to the
files one at a time, and only small aggregates (:class:`ItemStats`: counts, one float per timed
item, the first failed/partial items) stay in memory, so a batch of 100,000 items costs no more
memory at the end than while it runs. :func:`build_report`, :func:`write_json_atomic` and
:func:`write_results_jsonl` do the same from an in-memory report (small batches, tests).

Every file is written atomically (atomic_files.py: temp file, fsync, rename): a reader never sees
half of one. report.json's indented JSON is laid out by json_layout.py.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import shutil
import tempfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from orchestrator import layout
from orchestrator.atomic_files import atomic_file
from orchestrator.errors import MAX_UNITS, ErrorInfo, is_downloads_pending
from orchestrator.json_layout import nested_json
from orchestrator.ledger import ItemRecord, ItemState

#: Report statuses. "running" appears only when a batch was interrupted or stopped while tasks
#: were in flight: a rerun collects them. "unresolved": a create whose outcome this run could
#: not establish; it is never resent blindly (the rerun looks it up again).
STATUSES = ("succeeded", "partial", "failed", "not_run", "running", "unresolved")
#: Statuses that need a person's attention: listed with their hints.
PROBLEM_STATUSES = ("failed", "partial", "unresolved")

#: Rows of the failed/partial table in report.md; the rest are in results.jsonl.
MARKDOWN_MAX_ROWS = 500

#: Rows of the runs table in report.md (the most recent); report.json has more (see runs.py).
MARKDOWN_MAX_RUNS = 20

#: Failed/partial items listed in the end-of-run summary.
SUMMARY_MAX_PROBLEMS = 20


def item_status(rec: ItemRecord) -> str:
    if rec.download_error is not None and rec.state in (ItemState.SUCCEEDED, ItemState.PARTIAL):
        if is_downloads_pending(rec.download_error):
            # Generated, its files not fetched yet (the run was interrupted or killed before):
            # not done, and nothing failed; the rerun downloads them.
            return "running"
        return "failed"  # generated, but its files could not be downloaded; a rerun tries
    if rec.state is ItemState.SUCCEEDED:
        return "succeeded"
    if rec.state is ItemState.PARTIAL:
        return "partial"
    if rec.state is ItemState.FAILED:
        return "failed"
    if rec.state is ItemState.PENDING:
        return "not_run"
    if rec.state in (ItemState.SUBMITTING, ItemState.RUNNING) and rec.error is not None:
        # Its create's outcome, or its task's answers, could not be established this run: the
        # rerun looks it up or polls it again, never resends it.
        return "unresolved"
    return "running"


def item_error(rec: ItemRecord) -> ErrorInfo | None:
    """The error the report shows: why the files are not on disk outranks the task's verdict
    (a partial item's asset_mismatch comes back once its files are)."""
    return rec.download_error or rec.error


def iso_utc(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC (seconds, the same form as the report's started_at)."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def task_seconds(rec: ItemRecord) -> float | None:
    """Seconds from the current attempt's submit intent to the end of its task at the provider
    (generation: ``finished_at`` is the verdict, written before the files are downloaded).

    None while the item has no finished attempt (never submitted, running, or pending a retry).
    """
    if rec.submitted_at is None or rec.finished_at is None:
        return None
    return round(max(0.0, rec.finished_at - rec.submitted_at), 3)


def item_entry(rec: ItemRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "status": item_status(rec),
        "kind": rec.kind,
        "attempts": rec.tasks_created,
        "task_id": rec.task_id,
        "external_task_id": rec.external_task_id,
        "expected_assets": rec.expected_assets,
        "assets": [
            {"index": a.index, "url": a.url, "path": a.path, "bytes": a.bytes, "sha256": a.sha256}
            for a in rec.assets
        ],
        "error": error_entry(item_error(rec)),
        "submitted_at": iso_utc(rec.submitted_at),
        "finished_at": iso_utc(rec.finished_at),
        "task_seconds": task_seconds(rec),
        "charged_units": rec.charged_units,
    }


def error_entry(info: ErrorInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    data = info.to_dict()
    data.pop("scope", None)
    return data


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


# -- aggregates -------------------------------------------------------------------------------


@dataclass
class ItemStats:
    """What report.md and the summary need from the items, gathered one item at a time.

    Memory: one float per timed item and the first ``keep_problems`` failed/partial items;
    never the items themselves.
    """

    total: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    #: error category -> items whose (last) error has it
    categories: Counter[str] = field(default_factory=Counter)
    #: task seconds of the items that have one, in item order
    durations: array[float] = field(default_factory=lambda: array("d"))
    #: the first failed/partial items, in item order: {"id", "status", "error"}
    problems: list[dict[str, Any]] = field(default_factory=list)
    #: all failed/partial items (``problems`` holds at most ``keep_problems`` of them)
    problem_count: int = 0
    #: units the provider says it charged, and for how many items it said so
    charged_units: float = 0.0
    items_charged: int = 0
    keep_problems: int = max(MARKDOWN_MAX_ROWS, SUMMARY_MAX_PROBLEMS)

    def add(self, item: Mapping[str, Any]) -> None:
        """Count one report item (an :func:`item_entry`)."""
        self.total += 1
        status = item.get("status")
        self.counts[str(status)] += 1
        error = item.get("error")
        if error is not None:
            self.categories[str(error.get("category", "?"))] += 1
        seconds = item.get("task_seconds")
        if seconds is not None:
            self.durations.append(float(seconds))
        charged = item.get("charged_units")
        if charged is not None:
            self.charged_units += float(charged)
            self.items_charged += 1
        if status in PROBLEM_STATUSES:
            self.problem_count += 1
            if len(self.problems) < self.keep_problems:
                self.problems.append({"id": item.get("id"), "status": status, "error": error})

    @classmethod
    def of(cls, items: Iterable[Mapping[str, Any]]) -> ItemStats:
        stats = cls()
        for item in items:
            stats.add(item)
        return stats


def _stats(report: Mapping[str, Any], stats: ItemStats | None) -> ItemStats:
    return stats if stats is not None else ItemStats.of(report.get("items", []))


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


def write_markdown(path: Path, report: Mapping[str, Any], stats: ItemStats | None = None) -> None:
    """``stats``: the items' aggregates when ``report`` has no items (see render_markdown)."""
    text = render_markdown(report, stats)

    def write(fh: IO[str]) -> None:
        fh.write(text)

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
    scrub: Callable[[Any], Any] | None = None,
    late: Callable[[ItemStats], Mapping[str, Any]] | None = None,
) -> WrittenReport:
    """Write report.json, results.jsonl and report.md in one pass over ``records``.

    ``late``: called with the items' aggregates once every item is counted, before report.json
    is written; its keys follow ``extra``'s (what depends on the counts: how the run ended).

    ``records`` come in the report's item order (manifest order: ``ledger.iter_items(ids)``),
    and are read one at a time: memory does not grow with the batch beyond :class:`ItemStats`.
    report.json is byte for byte what ``write_json_atomic(path, build_report(...))`` writes
    (``counts`` comes before ``items``, so the items go to an unnamed temp file beside the
    report first); results.jsonl and report.md default to files beside report.json. Each file
    is written atomically; report.json is renamed into place first. ``scrub`` cleans every
    item and ``extra`` of credentials first (a ledger written by an older version may hold
    what a server echoed).
    """
    if scrub is not None:
        extra = scrub(dict(extra)) if extra else extra
        records = (_scrubbed_record(rec, scrub) for rec in records)
    if extra and {"counts", "items"} & extra.keys():
        raise ValueError("extra must not set 'counts' or 'items'")
    _, default_results, default_markdown = layout.report_files(report_path)
    results_path = results_path or default_results
    markdown_path = markdown_path or default_markdown
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
    report_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8", dir=report_path.parent) as spool,
        atomic_file(results_path) as jsonl,
    ):
        for rec in records:
            entry = item_entry(rec)
            stats.add(entry)
            jsonl.write(_COMPACT_JSON.encode(entry))
            jsonl.write("\n")
            spool.write(",\n    " if stats.total > 1 else "    ")
            spool.write(nested_json(entry, "    "))
        head["counts"] = {status: stats.counts.get(status, 0) for status in STATUSES}
        _charged_into(head, stats)
        if late is not None:
            added = late(stats)
            if {"counts", "items"} & added.keys():
                raise ValueError("late must not set 'counts' or 'items'")
            head.update(added)
        spool.seek(0)
        with atomic_file(report_path) as fh:
            fh.write("{")
            for n, (key, value) in enumerate(head.items()):
                fh.write(",\n  " if n else "\n  ")
                fh.write(json.dumps(key, ensure_ascii=False))
                fh.write(": ")
                if key != "items":
                    fh.write(nested_json(value, "  "))
                elif stats.total:
                    fh.write("[\n")
                    shutil.copyfileobj(spool, fh)
                    fh.write("\n  ]")
                else:
                    fh.write("[]")
            fh.write("\n}\n")
    del head["items"]
    write_markdown(markdown_path, head, stats)
    return WrittenReport(head, stats)


# -- timing -----------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0 < p <= 100) by the NEAREST-RANK method: the smallest value with
    at least p% of the values at or below it (always a value that was observed). None if empty.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def wall_seconds(report: Mapping[str, Any]) -> float | None:
    """Seconds between the report's started_at and finished_at (None if either is unreadable)."""
    try:
        start = dt.datetime.fromisoformat(str(report["started_at"]))
        end = dt.datetime.fromisoformat(str(report["finished_at"]))
        return (end - start).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None


def timing(report: Mapping[str, Any], stats: ItemStats | None = None) -> dict[str, Any]:
    """p50/p90 task time over the items that have one, and the run's total wall time."""
    durations = _stats(report, stats).durations
    return {
        "items_timed": len(durations),
        "task_seconds_p50": percentile(durations, 50),
        "task_seconds_p90": percentile(durations, 90),
        "task_seconds_max": max(durations) if durations else None,
        "wall_seconds": wall_seconds(report),
    }


def format_seconds(seconds: float | None) -> str:
    """``12.3 s``, ``4m 05s``, ``2h 03m 04s``; ``n/a`` for None."""
    if seconds is None:
        return "n/a"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


# -- report.md --------------------------------------------------------------------------------


def md_cell(value: Any) -> str:
    """A value made safe for one Markdown table cell: pipes escaped, one line, no raw HTML."""
    if value is None:
        return ""
    text = str(value)
    text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;").strip()


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> list[str]:
    """A GitHub-flavoured Markdown table; ``align`` has one ``l``/``r`` per column."""
    marks = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    lines = ["| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "|".join(marks) + "|"]
    lines.extend("| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows)
    return lines


def _stop_cause(stop: Mapping[str, Any], error_line: str) -> tuple[str, str]:
    """What stopped the batch, as the summary and report.md name it, and the detail to show:
    the user's own limits.max_units is not an error of the account."""
    if stop.get("code") == MAX_UNITS:
        return "your limits.max_units", str(stop.get("message", ""))
    return "an account-level error", error_line


def counts_text(counts: Mapping[str, int]) -> str:
    """``3 succeeded, 1 failed``: the non-zero counts, in their order."""
    return ", ".join(f"{n} {what}" for what, n in counts.items() if n)


def _error_line(err: Mapping[str, Any]) -> str:
    code = f" (code {err['code']})" if err.get("code") is not None else ""
    http = f" HTTP {err['http_status']}" if err.get("http_status") is not None else ""
    return f"{err.get('category', '?')}{code}{http}: {err.get('message', '')}"


def render_markdown(report: Mapping[str, Any], stats: ItemStats | None = None) -> str:
    """report.md: deterministic (only values from the report, never the current time).

    The items are read from ``stats`` when given (then ``report`` needs no ``items``: the
    streamed end-of-run report), else from ``report["items"]``.
    """
    stats = _stats(report, stats)
    counts: Mapping[str, int] = report.get("counts") or stats.counts
    times = timing(report, stats)
    out: list[str] = [f"# Batch report: {report.get('batch', '?')}", ""]

    out += [
        f"- Manifest: `{report.get('manifest', '?')}`",
        f"- Started: {report.get('started_at', '?')}{_first_of(report)}",
        f"- Finished: {report.get('finished_at', '?')}",
        f"- Total wall time: {format_seconds(times['wall_seconds'])}",
        f"- Items: {stats.total}",
    ]
    if report.get("log"):
        out.append(f"- Log: `{report['log']}`")
    if report.get("account_warning"):
        out.append(f"- **Account**: {md_cell(report['account_warning'])}")
    if report.get("changed_items"):
        changed = report["changed_items"]
        out.append(
            f"- **Changed since their result**: {changed['count']} items "
            f"({md_cell(', '.join(changed['ids'][:20]))})"
            + ("; rerun with `--rerun-changed`" if not changed.get("rerun") else "")
        )
    out.append("")

    # What ended the run early, if anything: the first thing a reader needs to know.
    notes: list[str] = []
    stop = report.get("stopped_by")
    if stop:
        cause, detail = _stop_cause(stop, _error_line(stop))
        notes.append(f"**Stopped by {cause}**: {md_cell(detail)}.")
        if stop.get("hint"):
            notes.append(f"What to do: {md_cell(stop['hint'])}")
        notes.append("Rerun the same command afterwards: finished items are not resubmitted.")
    if report.get("local_failure"):
        local = md_cell(report["local_failure"])
        notes.append(f"**Stopped by a failure of this machine**: {local}.")
    if report.get("interrupted"):
        notes.append("**Interrupted**: tasks in flight stay in the ledger; a rerun collects them.")

    if report.get("deadline_reached"):
        notes.append(
            f"**Deadline reached**: nothing was submitted after it; "
            f"{counts.get('not_run', 0)} items not run. Rerun to continue."
        )
    if notes:
        out += ["## Run ended early", ""]
        out += [f"- {n}" for n in notes]
        out.append("")

    out += ["## Items by status", ""]
    statuses = [s for s in STATUSES if s in counts] + [s for s in counts if s not in STATUSES]
    out += _table(
        ["status", "items"],
        [*([s, counts[s]] for s in statuses), ["**total**", f"**{stats.total}**"]],
        "lr",
    )
    out.append("")

    out += ["## Errors by category", ""]
    categories = stats.categories
    if categories:
        out.append("The last error of each item that has one.")
        out.append("")
        out += _table(
            ["category", "items"],
            sorted(categories.items(), key=lambda kv: (-kv[1], kv[0])),
            "lr",
        )
    else:
        out.append("No errors.")
    out.append("")

    # Percentiles by the nearest-rank method (see percentile()): always an observed duration.
    out += ["## Timing", ""]
    out += _table(
        ["measure", "value"],
        [
            ["task time p50", format_seconds(times["task_seconds_p50"])],
            ["task time p90", format_seconds(times["task_seconds_p90"])],
            ["task time max", format_seconds(times["task_seconds_max"])],
            ["items timed", times["items_timed"]],
            ["total wall time", format_seconds(times["wall_seconds"])],
        ],
        "lr",
    )
    out += [
        "",
        "Task time runs from an item's last submission to the end of its task at the provider "
        "(generation; downloads not included).",
        "",
    ]

    units: Mapping[str, Any] = report.get("units") or {}
    if units:
        out += ["## Units", ""]
        estimated = f"{units.get('estimated', 0):g}"
        if units.get("indicative"):
            estimated += " (from the built-in INDICATIVE prices)"
        if units.get("unpriced_tasks"):
            estimated += f", plus {units['unpriced_tasks']} unpriced tasks"
        charged = units.get("charged")
        unit_rows = [
            ["estimated, for the tasks created", estimated],
            ["charged, as the provider reports it",
             "not reported" if charged is None
             else f"{charged:g} (for {units.get('items_charged', 0)} items)"],
        ]
        out += _table(["units", "value"], unit_rows, "lr")
        out.append("")

    out += ["## Requests", ""]
    if int(report.get("run_count") or 0) > 1:
        out += [f"Over all {report['run_count']} runs of the batch (each run: see Runs).", ""]
    requests: Mapping[str, int] = report.get("requests") or {}
    if requests:
        out += _table(
            ["kind", "sent"],
            [
                *([k, requests[k]] for k in sorted(requests)),
                ["**total**", f"**{sum(requests.values())}**"],
            ],
            "lr",
        )
    else:
        out.append("No requests recorded.")
    out += ["", f"- Retries made: {report.get('retries', 0)}"]
    if report.get("retries_denied"):
        out.append(
            f"- Retries skipped by the retry budget (the provider kept failing): "
            f"{report['retries_denied']}"
        )
    if report.get("peak_slots") is not None:
        out.append(f"- Peak slots in use: {report['peak_slots']}")
    out.append("")

    out += _runs_section(report)

    conc: Mapping[str, Any] = report.get("concurrency") or {}
    if conc:
        out += ["## Concurrency", ""]
        labels = [
            ("configured", "configured (limits.concurrency)"),
            ("sustained", "sustained by the account"),
            ("lowest", "lowest cap reached"),
            ("final", "cap at the end"),
            ("over_capacity_cuts", "cuts after an over-capacity answer"),
        ]
        out += _table(
            ["measure", "value"],
            [[label, conc[key]] for key, label in labels if key in conc],
            "lr",
        )
        if conc.get("over_capacity_cuts") and conc.get("sustained"):
            out += [
                "",
                f"The account refused concurrency {conc.get('configured')}: consider "
                f"`limits.concurrency: {conc['sustained']}`.",
            ]
        out.append("")

    out += ["## Failed, partial and unresolved items", ""]
    if stats.problem_count:
        shown = stats.problems[:MARKDOWN_MAX_ROWS]
        rows = []
        for item in shown:
            err = item.get("error") or {}
            rows.append(
                [
                    item.get("id"),
                    item.get("status"),
                    err.get("category"),
                    err.get("code"),
                    err.get("message"),
                    err.get("hint"),
                ]
            )
        out += _table(["id", "status", "category", "code", "message", "hint"], rows)
        if stats.problem_count > len(shown):
            out += [
                "",
                f"{stats.problem_count - len(shown)} more failed, partial or unresolved items "
                "are not shown: see results.jsonl (one JSON line per item).",
            ]
    else:
        out.append("None.")
    out.append("")
    return "\n".join(out)


def _first_of(report: Mapping[str, Any]) -> str:
    count = int(report.get("run_count") or 0)
    return f" (the first of {count} runs)" if count > 1 else ""


def _runs_section(report: Mapping[str, Any]) -> list[str]:
    """The batch's runs, most recent last: when each ran, how it ended, what it sent."""
    runs: Sequence[Mapping[str, Any]] = report.get("runs") or []
    if not runs:
        return []
    out = ["## Runs", ""]
    shown = runs[-MARKDOWN_MAX_RUNS:]
    count = int(report.get("run_count") or len(runs))
    if count > len(shown):
        out += [f"The last {len(shown)} of {count} runs (report.json lists more).", ""]
    rows = [
        [
            run.get("run"),
            run.get("started_at"),
            run.get("finished_at") or "",
            run.get("exit"),
            sum((run.get("requests") or {}).values()),
            run.get("retries"),
        ]
        for run in shown
    ]
    out += _table(["run", "started", "finished", "ended", "requests", "retries"], rows, "rlllrr")
    out.append("")
    return out


# -- end of run summary -----------------------------------------------------------------------


def summary(
    report: Mapping[str, Any],
    *,
    report_path: Path,
    stop: ErrorInfo | None,
    stats: ItemStats | None = None,
) -> str:
    """``stats``: the items' aggregates when ``report`` has no items (see render_markdown)."""
    stats = _stats(report, stats)
    counts = report["counts"]
    total = stats.total
    shown = counts_text(counts)
    lines = [f"Batch '{report['batch']}': {total} items: {shown or 'nothing to do'}."]
    if stop is not None:
        code = f" (code {stop.code})" if stop.code is not None else ""
        cause, detail = _stop_cause(
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
    if conc.get("over_capacity_cuts") and conc.get("sustained"):
        lines.append(
            f"The account refused concurrency {conc['configured']} (over capacity): it sustained "
            f"{conc['sustained']} tasks at once; consider limits.concurrency: {conc['sustained']}."
        )
    if report.get("retries_denied"):
        lines.append(
            f"The provider kept failing: {report['retries_denied']} retries were skipped to "
            "avoid a storm (retry budget). Rerun later: those items are retried."
        )
    for item in stats.problems[:SUMMARY_MAX_PROBLEMS]:
        err = item["error"] or {}
        code = f" code {err['code']}" if err.get("code") is not None else ""
        lines.append(
            f"  {item['status']:7} {item['id']}: {err.get('category', '?')}{code}: "
            f"{err.get('message', '')}"
        )
        if err.get("hint"):
            lines.append(f"          -> {err['hint']}")
    if stats.problem_count > SUMMARY_MAX_PROBLEMS:
        lines.append(
            f"  ... and {stats.problem_count - SUMMARY_MAX_PROBLEMS} more: see the report."
        )
    lines.append(f"Report: {report_path}")
    return "\n".join(lines)
