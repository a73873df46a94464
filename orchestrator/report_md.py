"""report.md: the report for people, in the order a person reads it.

1. the counts by status, and anything that ended the run early or needs the account's owner;
2. the failed, partial and unresolved items, each with what to do about it, and the errors by
   category;
3. every item's files, as links relative to report.md;
4. the internals: each item's ids, attempts, units the provider says it charged and times, then
   the batch's timing, units, requests, runs and concurrency.

The per-item sections (3 and the item table of 4) list every item, so they are written one item
at a time (:class:`MarkdownSpool`: temp files beside the report, or memory for a small report)
and copied into place once the counts are known: the end-of-run report streams. Everything else
is read from the report's head and :class:`~orchestrator.report_stats.ItemStats`.
Deterministic: only values from the report, never the current time.
"""

from __future__ import annotations

import io
import shutil
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from orchestrator.atomic_files import atomic_file
from orchestrator.errors import MAX_UNITS
from orchestrator.report_items import STATUSES
from orchestrator.report_stats import KEPT_PROBLEMS, ItemStats, format_seconds, timing

#: Rows of the failed/partial table in report.md; the rest are in results.jsonl.
MARKDOWN_MAX_ROWS = KEPT_PROBLEMS

#: Rows of the runs table in report.md (the most recent); report.json has more (see runs.py).
MARKDOWN_MAX_RUNS = 20

_DETAIL_HEADER = (
    "id", "status", "kind", "attempts", "task id", "external task id", "files",
    "charged units", "task time", "submitted", "finished",
)  # fmt: skip


def md_cell(value: Any) -> str:
    """A value made safe for one Markdown table cell: pipes escaped, one line, no raw HTML."""
    if value is None:
        return ""
    text = str(value)
    text = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    text = text.replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;").strip()


def _row(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(md_cell(c) for c in cells) + " |"


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> list[str]:
    """A GitHub-flavoured Markdown table; ``align`` has one ``l``/``r`` per column."""
    marks = ["---:" if a == "r" else "---" for a in align.ljust(len(header), "l")]
    lines = [_row(header), "|" + "|".join(marks) + "|"]
    lines.extend(_row(row) for row in rows)
    return lines


def stop_cause(stop: Mapping[str, Any], error_line: str) -> tuple[str, str]:
    """What stopped the batch, as the summary and the reports name it, and the detail to show:
    the user's own limits.max_units is not an error of the account."""
    if stop.get("code") == MAX_UNITS:
        return "your limits.max_units", str(stop.get("message", ""))
    return "an account-level error", error_line


def counts_text(counts: Mapping[str, int]) -> str:
    """``3 succeeded, 1 failed``: the non-zero counts, in their order."""
    return ", ".join(f"{n} {what}" for what, n in counts.items() if n)


def error_line(err: Mapping[str, Any]) -> str:
    """``policy (code 1301) HTTP 400: message``."""
    code = f" (code {err['code']})" if err.get("code") is not None else ""
    http = f" HTTP {err['http_status']}" if err.get("http_status") is not None else ""
    return f"{err.get('category', '?')}{code}{http}: {err.get('message', '')}"


def asset_href(base: str, path: str) -> str:
    """A link to a downloaded file: ``path`` (relative to the output directory, percent-encoded:
    it can never become a scheme such as ``javascript:``) seen from the report's folder.
    ``base``: the output directory as a link from that folder ("" when they are one)."""
    quoted = urllib.parse.quote(path, safe="/")
    return f"{base.rstrip('/')}/{quoted}" if base else quoted


# -- the per-item sections --------------------------------------------------------------------


def _files_line(item: Mapping[str, Any], base: str) -> str:
    assets: Sequence[Mapping[str, Any]] = item.get("assets") or []
    files: list[str] = []
    for asset in assets:
        path = asset.get("path")
        if path:
            text = md_cell(path).replace("[", "\\[").replace("]", "\\]")
            files.append(f"[{text}]({asset_href(base, str(path))})")
        else:
            files.append(f"file {md_cell(asset.get('index'))} not downloaded")
    return f"- `{item.get('id')}` ({item.get('status')}): {', '.join(files) or 'no files'}"


def _detail_row(item: Mapping[str, Any]) -> str:
    assets: Sequence[Mapping[str, Any]] = item.get("assets") or []
    on_disk = sum(1 for a in assets if a.get("path"))
    charged = item.get("charged_units")
    seconds = item.get("task_seconds")
    return _row(
        [
            item.get("id"),
            item.get("status"),
            item.get("kind"),
            item.get("attempts"),
            item.get("task_id"),
            item.get("external_task_id"),
            f"{on_disk} of {item.get('expected_assets')}",
            None if charged is None else f"{charged:g}",
            None if seconds is None else format_seconds(seconds),
            item.get("submitted_at"),
            item.get("finished_at"),
        ]
    )


class MarkdownSpool:
    """report.md's per-item sections, written one item at a time (:meth:`add`), then the
    whole document (:meth:`write`) once the counts are known.

    ``files`` and ``details``: where the two per-item sections wait (temp files beside the
    report, so a full disk shows there; or memory). ``assets_base``: see :func:`asset_href`.
    """

    def __init__(self, files: IO[str], details: IO[str], assets_base: str = "") -> None:
        self._files = files
        self._details = details
        self._base = assets_base

    def add(self, item: Mapping[str, Any]) -> None:
        """One report item (an :func:`~orchestrator.report_items.item_entry`)."""
        self._files.write(_files_line(item, self._base) + "\n")
        self._details.write(_detail_row(item) + "\n")

    def write(self, fh: IO[str], report: Mapping[str, Any], stats: ItemStats) -> None:
        """The document: ``report``'s head (its ``items`` are not read) and the items added."""
        fh.write("\n".join(_lead(report, stats)))
        fh.write("\n")
        fh.write("\n".join(_files_head(stats)))
        fh.write("\n")
        self._files.seek(0)
        shutil.copyfileobj(self._files, fh)
        fh.write("\n".join(_details_head(stats)))
        fh.write("\n")
        self._details.seek(0)
        shutil.copyfileobj(self._details, fh)
        fh.write("\n".join(_tail(report, stats)))


def render_markdown(report: Mapping[str, Any], *, assets_base: str = "") -> str:
    """report.md of an in-memory report (its ``items`` included)."""
    items: Sequence[Mapping[str, Any]] = report.get("items") or []
    stats = ItemStats.of(items)
    out = io.StringIO()
    spool = MarkdownSpool(io.StringIO(), io.StringIO(), assets_base)
    for item in items:
        spool.add(item)
    spool.write(out, report, stats)
    return out.getvalue()


def write_markdown(path: Path, report: Mapping[str, Any], *, assets_base: str = "") -> None:
    text = render_markdown(report, assets_base=assets_base)
    with atomic_file(path) as fh:
        fh.write(text)


# -- the sections read from the report's head and the aggregates ------------------------------


def _lead(report: Mapping[str, Any], stats: ItemStats) -> list[str]:
    """Title and counts, what ended the run early, the items that need a person."""
    counts: Mapping[str, int] = report.get("counts") or stats.counts
    out: list[str] = [f"# Batch report: {report.get('batch', '?')}", ""]
    out.append(f"{stats.total} items: {counts_text(counts) or 'nothing to do'}.")
    attention: list[str] = []
    if report.get("account_warning"):
        attention.append(f"- **Account**: {md_cell(report['account_warning'])}")
    if report.get("changed_items"):
        changed = report["changed_items"]
        attention.append(
            f"- **Changed since their result**: {changed['count']} items "
            f"({md_cell(', '.join(changed['ids'][:20]))})"
            + ("; rerun with `--rerun-changed`" if not changed.get("rerun") else "")
        )
    if attention:
        out += ["", *attention]
    out.append("")

    out += ["## Items by status", ""]
    statuses = [s for s in STATUSES if s in counts] + [s for s in counts if s not in STATUSES]
    out += _table(
        ["status", "items"],
        [*([s, counts[s]] for s in statuses), ["**total**", f"**{stats.total}**"]],
        "lr",
    )
    out.append("")
    out += _ended_early(report, counts)
    out += _problems(stats)

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
    return out


def _ended_early(report: Mapping[str, Any], counts: Mapping[str, int]) -> list[str]:
    notes: list[str] = []
    stop = report.get("stopped_by")
    if stop:
        cause, detail = stop_cause(stop, error_line(stop))
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
    if not notes:
        return []
    return ["## Run ended early", "", *(f"- {n}" for n in notes), ""]


def _problems(stats: ItemStats) -> list[str]:
    out = ["## Failed, partial and unresolved items", ""]
    if not stats.problem_count:
        return [*out, "None.", ""]
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
    return [*out, ""]


def _files_head(stats: ItemStats) -> list[str]:
    out = ["## Files", ""]
    if not stats.total:
        return [*out, "No items."]
    return [*out, "Every item's files, relative to this report.", ""]


def _details_head(stats: ItemStats) -> list[str]:
    out = ["", "## Items in detail", ""]
    if not stats.total:
        return [*out, "No items."]
    out += [
        "Ids, attempts (tasks created), task ids, files on disk of those expected, the units "
        "the provider says it charged, and task times.",
        "",
    ]
    return out + _table(_DETAIL_HEADER, [], "lllrllrrrll")


def _tail(report: Mapping[str, Any], stats: ItemStats) -> list[str]:
    """The batch's internals: where it came from, timing, units, requests, runs, concurrency."""
    times = timing(report, stats)
    out: list[str] = ["", "## Batch", ""]
    out += [
        f"- Manifest: `{report.get('manifest', '?')}`",
        f"- Started: {report.get('started_at', '?')}{_first_of(report)}",
        f"- Finished: {report.get('finished_at', '?')}",
        f"- Total wall time: {format_seconds(times['wall_seconds'])}",
        f"- Items: {stats.total}",
    ]
    if report.get("log"):
        out.append(f"- Log: `{report['log']}`")
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
    out += _units(report)
    out += _requests(report)
    out += _runs_section(report)
    out += _concurrency(report)
    return out


def _units(report: Mapping[str, Any]) -> list[str]:
    units: Mapping[str, Any] = report.get("units") or {}
    if not units:
        return []
    estimated = f"{units.get('estimated', 0):g}"
    if units.get("indicative"):
        estimated += " (from the built-in INDICATIVE prices)"
    if units.get("unpriced_tasks"):
        estimated += f", plus {units['unpriced_tasks']} unpriced tasks"
    charged = units.get("charged")
    rows = [
        ["estimated, for the tasks created", estimated],
        ["charged, as the provider reports it",
         "not reported" if charged is None
         else f"{charged:g} (for {units.get('items_charged', 0)} items)"],
    ]  # fmt: skip
    return ["## Units", "", *_table(["units", "value"], rows, "lr"), ""]


def _requests(report: Mapping[str, Any]) -> list[str]:
    out = ["## Requests", ""]
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
    return out


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


def group_limits_line(conc: Mapping[str, Any]) -> str:
    """What the refusals showed of each capacity group's limit (Kling's resource packs)."""
    found = []
    for key, group in sorted((conc.get("groups") or {}).items()):
        if group.get("limit_found"):
            found.append(f"{key} tasks: limit looks like {group['limit_found']}")
        else:
            found.append(f"{key} tasks: limit not reached")
    return (
        "The account refused some tasks over capacity; it counts each resource pack apart ("
        + "; ".join(found) + ")"
        + f". limits.concurrency ({conc.get('configured')}) caps them together; each pack's "
        "limit is found again by every run."
    )


def _concurrency(report: Mapping[str, Any]) -> list[str]:
    conc: Mapping[str, Any] = report.get("concurrency") or {}
    if not conc:
        return []
    out = ["## Concurrency", ""]
    labels = [
        ("configured", "configured (limits.concurrency)"),
        ("sustained", "sustained by the account"),
        ("limit_found", "the account's limit, as its refusals showed it"),
        ("lowest", "lowest cap reached"),
        ("final", "cap at the end"),
        ("over_capacity_cuts", "cuts after an over-capacity answer"),
    ]
    out += _table(
        ["measure", "value"],
        [[label, conc[key]] for key, label in labels if key in conc],
        "lr",
    )
    advised = conc.get("limit_found") or conc.get("sustained")
    if conc.get("groups"):
        out += ["", *_table(
            ["capacity group", "limit found", "lowest cap", "cap at the end", "cuts"],
            [[key, g.get("limit_found") or "not reached", g.get("lowest"), g.get("final"),
              g.get("over_capacity_cuts")] for key, g in sorted(conc["groups"].items())],
            "lrrrr",
        )]
        if conc.get("over_capacity_cuts"):
            out += ["", group_limits_line(conc)]
    elif conc.get("over_capacity_cuts") and advised:
        out += [
            "",
            f"The account refused concurrency {conc.get('configured')}: consider "
            f"`limits.concurrency: {advised}`.",
        ]
    out.append("")
    return out
