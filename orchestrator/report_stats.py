"""What the reports say of a batch as a whole, gathered one item at a time: counts, error
categories, task times, charged units and the first items that need a person.

:class:`ItemStats` is what lets the end-of-run report stream: report.md, report.html and the
summary are written from it and never from the list of items.
"""

from __future__ import annotations

import datetime as dt
import math
from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestrator.report_items import PROBLEM_STATUSES

#: Failed/partial/unresolved items :class:`ItemStats` keeps: as many as report.md's table of
#: them shows (the end-of-run summary shows fewer).
KEPT_PROBLEMS = 500


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
    keep_problems: int = KEPT_PROBLEMS

    def add(self, item: Mapping[str, Any]) -> None:
        """Count one report item (an :func:`~orchestrator.report_items.item_entry`)."""
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


def stats_of(report: Mapping[str, Any], stats: ItemStats | None) -> ItemStats:
    """``stats`` when given (a streamed report has no items), else those of report's items."""
    return stats if stats is not None else ItemStats.of(report.get("items", []))


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
    durations = stats_of(report, stats).durations
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
