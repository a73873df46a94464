"""Where a batch stands: per-phase counts kept by the engine, and their live view on a terminal.

The engine moves each item between phases (``queued``, ``submitting``, ``running``,
``downloading``, ``done``, ``partial``, ``failed``); :class:`Progress` only counts. What holds
the batch back (its slots, the create rate, a provider's backoff, the units cap) is read off the
engine as a :class:`Pressure` and named by :func:`binding`, a pure function. :class:`View`
renders a snapshot for a terminal of any width: a bar with the totals, rate and ETA, then the
phases and the binding limit, each line cut to fit (the least telling parts go first). The
terminal itself (rich's live display) is in :mod:`orchestrator.terminal`.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from rich.console import Console, ConsoleOptions, RenderResult
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

PHASES = ("queued", "submitting", "running", "downloading", "done", "partial", "failed")
FINISHED = ("done", "partial", "failed")


@dataclass(frozen=True)
class Pressure:
    """What may be holding the batch back, read off the engine at one moment."""

    slots_used: int = 0
    slots_total: int = 1
    #: limits.concurrency as configured (the total is lower while the provider is over capacity)
    slots_configured: int = 1
    #: an item has waited for slots (the pool is full)
    slots_waiting: bool = False
    #: creates waiting for the create rate's next turn
    rate_waiting: int = 0
    requests_per_minute: float = 0.0
    #: items waiting out a backoff (a retry's delay, a provider's Retry-After)
    backing_off: int = 0
    #: limits.max_units stopped new admissions
    units_capped: bool = False


def binding(p: Pressure) -> str | None:
    """The limit holding the batch back now, in words; None when nothing does (every item
    that can be sent is, and the batch waits for the provider's tasks). A backoff holds its
    items' slots and a create waiting for the rate holds its slots too, so either binds
    before the slots do."""
    if p.units_capped:
        return "max_units reached"
    if p.backing_off:
        return f"provider backoff ({p.backing_off} waiting)"
    if p.rate_waiting:
        return f"create rate {p.requests_per_minute:g}/min"
    if p.slots_waiting:
        lowered = p.slots_total < p.slots_configured
        note = f" (cut from {p.slots_configured})" if lowered else ""
        return f"slots {p.slots_used}/{p.slots_total}{note}"
    return None


@dataclass(frozen=True)
class Snapshot:
    counts: dict[str, int]
    total: int
    finished_this_run: int
    elapsed: float
    #: what :func:`binding` says holds the batch back
    limit: str | None = None

    @property
    def finished(self) -> int:
        return sum(self.counts.get(p, 0) for p in FINISHED)

    @property
    def rate(self) -> float:
        """Items finished per second in this run."""
        return self.finished_this_run / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        remaining = self.total - self.finished
        if remaining <= 0:
            return 0.0
        if self.rate <= 0:
            return None
        return remaining / self.rate


class Progress:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._phase: dict[str, str] = {}
        self._counts: Counter[str] = Counter()
        self._finished_this_run = 0

    def set(self, item_id: str, phase: str, *, initial: bool = False) -> None:
        old = self._phase.get(item_id)
        if old == phase:
            return
        if old is not None:
            self._counts[old] -= 1
        self._counts[phase] += 1
        self._phase[item_id] = phase
        if phase in FINISHED and not initial:
            self._finished_this_run += 1

    def snapshot(self, pressure: Pressure | None = None) -> Snapshot:
        return Snapshot(
            counts={p: self._counts.get(p, 0) for p in PHASES},
            total=len(self._phase),
            finished_this_run=self._finished_this_run,
            elapsed=self._clock() - self._started,
            limit=binding(pressure) if pressure is not None else None,
        )


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "--"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def rate_text(per_second: float) -> str:
    """Items a minute, or a second once that reads better."""
    if per_second * 60 >= 1000:
        return f"{per_second:.0f}/s"
    return f"{per_second * 60:.1f}/min"


#: Shown even at zero: a person looks for them.
_ALWAYS = ("done", "failed", "running", "queued")
#: The phases line in its order, in long and short words.
_PHASE_WORDS = {
    "done": ("done", "done"),
    "failed": ("failed", "fail"),
    "partial": ("partial", "part"),
    "running": ("running", "run"),
    "downloading": ("downloading", "dl"),
    "submitting": ("sending", "send"),
    "queued": ("queued", "queue"),
}
#: What stays longest when the line is too long ("limit" is the binding limit).
_KEPT_FIRST = ("done", "failed", "running", "limit", "queued", "partial", "downloading",
               "submitting")


def _fit(parts: Sequence[str], width: int, sep: str) -> str:
    """``parts`` joined, the last ones dropped until the line fits ``width``; the first part
    alone is cut with an ellipsis when even it does not."""
    for n in range(len(parts), 0, -1):
        line = sep.join(parts[:n])
        if len(line) <= width:
            return line
    first = parts[0] if parts else ""
    return first if len(first) <= width else first[: max(width - 1, 0)] + "…"


def status_line(snap: Snapshot, width: int) -> str:
    """Phases and the binding limit in ``width`` columns: long words if they fit, else short
    ones, else the least telling parts dropped (the rest keep their order)."""
    c = snap.counts
    shown = [phase for phase in _PHASE_WORDS if c[phase] or phase in _ALWAYS]
    if snap.limit:
        shown.append("limit")

    def words(style: int, keep: Sequence[str]) -> list[str]:
        return [
            f"limit: {snap.limit}" if part == "limit"
            else f"{_PHASE_WORDS[part][style]} {c[part]}"
            for part in shown if part in keep
        ]

    for style, sep in ((0, " · "), (1, " · "), (1, " ")):
        line = sep.join(words(style, shown))
        if len(line) <= width:
            return line
    ranked = [part for part in _KEPT_FIRST if part in shown]
    for n in range(len(ranked) - 1, 0, -1):
        line = " ".join(words(1, ranked[:n]))
        if len(line) <= width:
            return line
    return _fit(words(1, ranked[:1]), width, " ")


def figures_line(snap: Snapshot, width: int) -> str:
    """Totals, rate, ETA and elapsed time, the least telling dropped to fit ``width``."""
    share = f"{100 * snap.finished / snap.total:.0f}%" if snap.total else "100%"
    parts = [
        f"{snap.finished}/{snap.total}",
        f"ETA {duration(snap.eta)}",
        rate_text(snap.rate),
        share,
        f"{duration(snap.elapsed)} elapsed",
    ]
    return _fit(parts, width, "  ")


#: Columns the bar takes at most, and at least when it is shown at all.
_BAR_MAX = 40
_BAR_MIN = 10


class View:
    """A snapshot for a terminal: it reads the width it is given at each redraw."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def lines(self, width: int) -> Iterator[str]:
        """The view as plain text (the bar left out), for logs and tests."""
        yield figures_line(self.snap, width)
        yield status_line(self.snap, width)

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        snap = self.snap
        figures = figures_line(snap, width)
        room = width - len(figures) - 2
        if room >= _BAR_MIN:
            grid = Table.grid(padding=(0, 2))
            grid.add_column(width=min(room, _BAR_MAX), no_wrap=True)
            grid.add_column(no_wrap=True)
            bar = ProgressBar(total=max(snap.total, 1), completed=snap.finished,
                              width=min(room, _BAR_MAX))
            grid.add_row(bar, Text(figures))
            yield grid
        else:
            yield Text(figures, no_wrap=True, overflow="ellipsis")
        yield Text(status_line(snap, width), no_wrap=True, overflow="ellipsis")
