"""Where a batch stands: per-phase counts kept by the engine, one redrawn line on a terminal.

The engine moves each item between phases (``queued``, ``submitting``, ``running``,
``downloading``, ``done``, ``partial``, ``failed``); :class:`Progress` only counts. The
:class:`ProgressLine` renders a snapshot as one line that is redrawn in place, so it is used only
when stderr is a terminal: under cron there is no progress output at all, just the JSON log and
the final summary.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

PHASES = ("queued", "submitting", "running", "downloading", "done", "partial", "failed")
FINISHED = ("done", "partial", "failed")


@dataclass(frozen=True)
class Snapshot:
    counts: dict[str, int]
    total: int
    finished_this_run: int
    elapsed: float

    @property
    def rate(self) -> float:
        """Items finished per second in this run."""
        return self.finished_this_run / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        remaining = self.total - sum(self.counts.get(p, 0) for p in FINISHED)
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

    def snapshot(self) -> Snapshot:
        return Snapshot(
            counts={p: self._counts.get(p, 0) for p in PHASES},
            total=len(self._phase),
            finished_this_run=self._finished_this_run,
            elapsed=self._clock() - self._started,
        )


def _duration(seconds: float | None) -> str:
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


def render(snap: Snapshot) -> str:
    c = snap.counts
    finished = c["done"] + c["partial"] + c["failed"]
    parts = [
        f"{finished}/{snap.total}",
        f"queued {c['queued']}",
        f"submitting {c['submitting']}",
        f"running {c['running']}",
    ]
    if c["downloading"]:
        parts.append(f"downloading {c['downloading']}")
    parts.append(f"done {c['done']}")
    if c["partial"]:
        parts.append(f"partial {c['partial']}")
    parts.append(f"failed {c['failed']}")
    parts.append(f"{snap.rate * 60:.1f}/min")
    parts.append(f"ETA {_duration(snap.eta)}")
    return " | ".join(parts)


class ProgressLine:
    """Redraws one line on a terminal; ``clear()`` before anything else is printed."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._shown = False

    def draw(self, snap: Snapshot) -> None:
        self._out.write("\r\x1b[2K" + render(snap))
        self._out.flush()
        self._shown = True

    def clear(self) -> None:
        if self._shown:
            self._out.write("\r\x1b[2K")
            self._out.flush()
            self._shown = False
