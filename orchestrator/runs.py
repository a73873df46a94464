"""A batch's runs, and the report's figures over all of them.

A batch is often run several times: after a crash, an interrupt, an account stop, a full disk,
or from cron until it is done. The ledger keeps one row per run (``runs``: written when the run
starts, updated as it goes, closed when it ends), so that report.json and report.md describe
the batch, not only its last run: ``started_at`` (also ``first_started_at``) is the first
run's start, ``finished_at`` the last one's end, ``requests`` and ``retries`` are summed over
the runs, and ``runs`` lists the most recent ones (how each ended, what each sent).

A run that never closed its row was killed (SIGKILL, power loss, the OOM killer): its figures
are those of its last update (at most :data:`CHECKPOINT_EVERY` seconds old).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from orchestrator.downloads import Downloader
from orchestrator.engine import RunOutcome
from orchestrator.ledger import RunRecord
from orchestrator.report import iso_utc

__all__ = [
    "CHECKPOINT_EVERY",
    "KILLED",
    "RUNS_IN_REPORT",
    "batch_figures",
    "run_entry",
    "run_figures",
]

#: Seconds between two updates of a running run's row (what a kill can lose of its figures).
CHECKPOINT_EVERY = 2.0
#: How a run that never recorded its end is shown (killed, or its disk was full).
KILLED = "no end recorded"
#: Runs listed in report.json, the most recent (a batch rerun from cron has many); the sums
#: count every run.
RUNS_IN_REPORT = 100


def run_figures(outcome: RunOutcome, downloader: Downloader | None) -> tuple[dict[str, int], int]:
    """The requests (by kind) and retries of the current run so far.

    The engine adds its downloader's attempts and retries to ``outcome`` when its run ends;
    until then (a run still going, or one ended by an error) they are taken from the
    downloader itself, which counts for this run only.
    """
    requests = Counter(outcome.requests)
    retries = outcome.retries
    if downloader is not None and "download" not in requests:
        requests["download"] += downloader.stats["requests"]
        retries += downloader.stats["retries"]
    return {kind: n for kind, n in sorted(requests.items()) if n}, retries


def run_entry(run: RunRecord) -> dict[str, Any]:
    """One run as report.json lists it."""
    return {
        "run": run.run,
        "started_at": iso_utc(run.started_at),
        "finished_at": iso_utc(run.finished_at),
        "exit": run.exit_reason if run.finished_at is not None else KILLED,
        "exit_code": run.exit_code,
        "requests": dict(run.requests),
        "retries": run.retries,
    }


def batch_figures(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """The report's figures over every run of the batch (oldest first, the current one last):
    the first start, requests and retries summed, how many runs, and the most recent ones."""
    requests: Counter[str] = Counter()
    for run in runs:
        requests.update(run.requests)
    return {
        "first_started_at": iso_utc(runs[0].started_at) if runs else None,
        "requests": dict(sorted(requests.items())),
        "retries": sum(run.retries for run in runs),
        "run_count": len(runs),
        "runs": [run_entry(run) for run in runs[-RUNS_IN_REPORT:]],
    }
