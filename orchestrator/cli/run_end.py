"""The end of a run: the report (if the disk allows), the run's row in the ledger, the exit
code, and the ledger and the log closed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import structlog

from orchestrator import (
    atomic_files,
    layout,
    local_failures,
    report,
    runs,
)
from orchestrator.cli.common import Exit
from orchestrator.config import Manifest
from orchestrator.engine import RunOutcome
from orchestrator.ledger import RunRecord
from orchestrator.local_failures import LocalFailure

if TYPE_CHECKING:
    from orchestrator.state_location import AnyLedger


def _changed_entry(outcome: RunOutcome, rerun: bool) -> dict[str, object] | None:
    """report.json's word on items whose definition changed since their result was made."""
    if not outcome.changed:
        return None
    return {"count": len(outcome.changed), "ids": outcome.changed[:1000], "rerun": rerun}


@dataclass(frozen=True)
class RunFacts:
    """What the end of a run reports, gathered once the engine has stopped."""

    manifest: Manifest
    outcome: RunOutcome
    #: the units estimate (read from the ledger, so when the report is written)
    units: Callable[[], dict[str, Any]]
    #: the run's requests by kind and its retries (runs.run_figures)
    figures: tuple[dict[str, int], int]
    started_at: float
    state_path: Path | str
    report_path: Path
    log_path: Path
    #: cleans what the provider sent of credentials (the log redactor's)
    scrub: Callable[[Any], Any]
    rerun_changed: bool = False
    #: ``run --only``: the items this run was about (its exit code judges them alone)
    only: tuple[str, ...] | None = None


def _ending(
    outcome: RunOutcome, failure: LocalFailure | None, *, all_succeeded: bool
) -> tuple[Exit, str]:
    """The exit code of a run and how its row in the ledger says it ended."""
    if failure is not None:
        return Exit.ACCOUNT_STOP, f"stopped by {failure.cause.what}"
    if outcome.lock_lost:
        return Exit.LOCKED, "stopped: another run took the lock"
    if outcome.interrupted:
        return Exit.INTERRUPTED, "interrupted"
    if outcome.stopped_by is not None:
        return Exit.ACCOUNT_STOP, f"stopped by {outcome.stopped_by.category}"
    if all_succeeded:
        return Exit.OK, "succeeded"
    return Exit.ITEMS_FAILED, "deadline reached" if outcome.deadline_reached else "items failed"


def end_run(
    ledger: AnyLedger, run: int | None, facts: RunFacts, failure: LocalFailure | None
) -> tuple[Exit, str, LocalFailure | None, LocalFailure | None, report.WrittenReport | None]:
    """Write the report (if the disk allows) and the run's end into the ledger; the exit code,
    the failure of this machine that ended the run (if one did), the report's own failure (if
    it could not be written) and the report written."""
    outcome = facts.outcome
    requests, retries = facts.figures

    def local(exc: BaseException, path: Path | None = None) -> LocalFailure:
        found = local_failures.find(exc, ledger_path=facts.state_path, path=path)
        if found is None:
            raise exc
        return found

    finished_at = time.time()  # this run's end, and so the batch's (report and ledger)
    try:
        ledger.commit()  # what the run did is on disk before the report says so
    except local_failures.CAUGHT as exc:
        failure = failure or local(exc)
    previous: list[RunRecord] = []
    try:
        previous = [r for r in ledger.runs() if r.run != run]
    except local_failures.CAUGHT as exc:
        failure = failure or local(exc)
    ended: list[Exit] = []
    reasons: list[str] = []

    def end(all_succeeded: bool, report_failure: LocalFailure | None) -> RunRecord:
        """Close the run's row; when the ledger cannot take it, that is how the run ended."""
        nonlocal failure
        code, reason = _ending(outcome, failure or report_failure, all_succeeded=all_succeeded)
        if run is not None:
            try:
                ledger.record_run(
                    run, requests=requests, retries=retries, finished_at=finished_at,
                    exit_code=int(code), exit_reason=reason,
                )
            except local_failures.CAUGHT as exc:
                failure = failure or local(exc)
                code, reason = _ending(outcome, failure, all_succeeded=all_succeeded)
        ended[:] = [code]
        reasons[:] = [reason]
        return RunRecord(
            run or 0, facts.started_at, finished_at, int(code), reason, requests, retries
        )

    def late(stats: report.ItemStats) -> dict[str, Any]:
        if facts.only is not None:
            succeeded = all(
                report.item_status(ledger.get(i)) == "succeeded" for i in facts.only
            )
        else:
            succeeded = stats.counts["succeeded"] == stats.total
        current = end(succeeded, None)
        figures = runs.batch_figures([*previous, current])
        return {
            "local_failure": failure.line() if failure is not None else None,
            "run_count": figures["run_count"],
            "runs": figures["runs"],
        }

    figures = runs.batch_figures(
        [*previous, RunRecord(0, facts.started_at, None, None, None, requests, retries)]
    )
    report_path = facts.report_path
    removed = atomic_files.remove_leftovers(
        report_path.parent, [p.name for p in layout.report_files(report_path)]
    )
    if removed:
        # Best effort: a log that cannot take this line has ended the run already.
        with contextlib.suppress(OSError):
            structlog.get_logger("orchestrator").info(
                "report.leftovers_removed", files=[str(p) for p in removed]
            )
    written: report.WrittenReport | None = None
    report_failure: LocalFailure | None = None
    requests_by_id = {item.id: item.request for item in facts.manifest.items}

    def texts(item_id: str) -> report.ItemText | None:
        """An item's prompt and model, for its card in report.html."""
        request = requests_by_id.get(item_id)
        return None if request is None else report.ItemText.of(request.fields)

    try:
        # Streamed item by item from the ledger (manifest order): memory does not grow with
        # the batch at the end of the run.
        written = report.write_report(
            report_path,
            batch=facts.manifest.name,
            manifest=facts.manifest.path,
            records=ledger.iter_items(i.id for i in facts.manifest.items),
            # The batch over all its runs: the first start, this (the last) run's end.
            started_at=str(figures["first_started_at"]),
            finished_at=str(report.iso_utc(finished_at)),
            extra={
                "first_started_at": figures["first_started_at"],
                "requests": figures["requests"],
                "retries": figures["retries"],
                "peak_slots": outcome.peak_slots,
                "concurrency": outcome.concurrency,
                "retries_denied": outcome.retries_denied,
                "units_submitted": outcome.units_submitted,
                "units": facts.units(),
                "account_warning": outcome.account_warning,
                "changed_items": _changed_entry(outcome, facts.rerun_changed),
                "adopted": outcome.adopted,
                "resubmitted": outcome.resubmitted,
                "max_units": facts.manifest.limits.max_units,
                "stopped_by": report.error_entry(outcome.stopped_by),
                "interrupted": outcome.interrupted,
                "deadline_reached": outcome.deadline_reached,
                "log": str(facts.log_path),
            },
            late=late,
            output_dir=facts.manifest.output_dir,
            texts=texts,
            scrub=facts.scrub,
        )
    except local_failures.CAUGHT as exc:
        report_failure = local(exc, report_path)
        end(False, report_failure)  # again if report.md failed after report.json: exit 3
    return ended[0], reasons[0], failure, report_failure, written


def close(ledger: AnyLedger, log_file: TextIO) -> BaseException | None:
    """Close the ledger (committing what is pending) and the log; a failure of this machine's
    files doing so is returned (the caller says so), anything else raised."""
    failed: BaseException | None = None
    try:
        ledger.close()
    except local_failures.CAUGHT as exc:
        failed = exc
    try:
        log_file.close()
    except OSError as exc:
        failed = failed or exc
    return failed
