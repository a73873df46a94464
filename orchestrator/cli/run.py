"""``run``: a batch set up, driven by the engine beside the signal watcher, the progress
view and the run's checkpoints, and ended (see :mod:`.run_setup`, :mod:`.run_end`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx

from orchestrator import (
    layout,
    local_failures,
    logs,
    report,
    runs,
)
from orchestrator.cli import common
from orchestrator.cli.common import (
    Exit,
    LocalStop,
    Usage,
    cannot,
    credentials,
    load,
    recovery_hint,
)
from orchestrator.cli.run_end import RunFacts, close, end_run
from orchestrator.cli.run_setup import (
    adopting,
    adoption_note,
    check_chosen_items,
    check_own_files,
    refuse_new_batch,
    settled_at,
)
from orchestrator.config import SIMULATOR_BASE_URL, Manifest
from orchestrator.downloads import AssetPolicy, Downloader
from orchestrator.engine import Engine, RunOutcome
from orchestrator.identity import OutputDir, OutputLocked, OutputRefused
from orchestrator.ledger import LedgerError, LedgerLocked, LedgerUnavailable, LedgerUnreadable
from orchestrator.local_failures import LocalFailure
from orchestrator.memory import release_freed
from orchestrator.providers.base import TaskFinder
from orchestrator.retry import RetryPolicy
from orchestrator.terminal import Terminal

#: Problems the end-of-run summary lists without a terminal (cron mail); at one, the report's
#: SUMMARY_MAX_PROBLEMS.
CRON_MAX_PROBLEMS = 5

#: Seconds between two redraws of the progress view.
PROGRESS_EVERY = 0.5


#: The in-process simulator's account, beside the ledger: a resumed demo finds its tasks.
SIMULATOR_STATE = "simulator-state.jsonl"


@dataclass(frozen=True)
class _Endpoint:
    base_url: str
    auth: httpx.Auth
    #: When the provider's server runs in this process (the demo), the time it started.
    started_at: float | None = None


@contextlib.contextmanager
def _provider_endpoint(
    manifest: Manifest, auth: httpx.Auth | None, redactor: logs.Redactor
) -> Iterator[_Endpoint]:
    if manifest.provider.base_url != SIMULATOR_BASE_URL:
        assert auth is not None
        yield _Endpoint(manifest.provider.base_url, auth)
        return
    # Durable: a killed or interrupted demo resumes against the tasks it created.
    started_at = time.time()
    with common.plugin_of(manifest).simulated(
        manifest.output_dir / SIMULATOR_STATE, redactor.add
    ) as account:
        yield _Endpoint(account.base_url, account.auth, started_at)


def download_policy(manifest: Manifest) -> RetryPolicy:
    """Downloads cost no credits: twice the attempts of a create (at least 8), same pacing."""
    return RetryPolicy(
        max_attempts=max(8, 2 * manifest.retry.max_attempts),
        base_delay=manifest.retry.base_delay,
        max_delay=manifest.retry.max_delay,
    )


def summary_json(
    batch: str,
    code: Exit,
    reason: str,
    written: report.WrittenReport | None,
    report_path: Path,
    log_path: Path,
    failure: LocalFailure | None,
) -> dict[str, Any]:
    """``run --json``: the one line a script reads on stdout at the end of a run."""
    head = written.head if written is not None else {}
    stop = head.get("stopped_by")
    return {
        "batch": batch,
        "exit_code": int(code),
        "exit_reason": reason,
        "counts": head.get("counts"),
        "stopped_by": stop,
        "local_failure": failure.line() if failure is not None else None,
        "report": str(report_path) if written is not None else None,
        "log": str(log_path),
    }


def resuming(terminal: Terminal, batch: str, counts: Mapping[str, int]) -> None:
    """The first line of a rerun: where the batch stands."""
    with contextlib.suppress(OSError):
        terminal.say(f"Resuming batch '{batch}': {report.counts_text(counts)}.")


async def _run_engine(
    engine: Engine, terminal: Terminal, checkpoint: Callable[[], None] | None = None
) -> RunOutcome:
    """Run the engine with the signal watcher, the progress view and ``checkpoint`` (called
    every runs.CHECKPOINT_EVERY seconds: the run's row in the ledger) beside it."""
    async def watch_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if engine.outcome.interrupted:
                    terminal.stop()  # the cursor shown again
                    os._exit(Exit.INTERRUPTED)  # second signal: the user insists
                with contextlib.suppress(OSError):
                    terminal.say(
                        "Interrupted: no new submissions; tasks in flight stay in the ledger "
                        "and the next run collects them. Press Ctrl-C again to quit at once."
                    )
                engine.interrupt()

    async def show_progress() -> None:
        terminal.start()
        while True:
            terminal.show(engine.snapshot())
            await anyio.sleep(PROGRESS_EVERY)

    async def record_run(checkpoint: Callable[[], None]) -> None:
        while True:
            await anyio.sleep(runs.CHECKPOINT_EVERY)
            checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_signals)
        if terminal.wants_live:
            tg.start_soon(show_progress)
        if checkpoint is not None:
            tg.start_soon(record_run, checkpoint)
        try:
            outcome = await engine.run()
        finally:
            terminal.stop()
        tg.cancel_scope.cancel()
    return outcome


def cmd_run(args: argparse.Namespace, err: TextIO, stdout: TextIO) -> Exit:
    manifest = load(args.manifest, err)
    release_freed()  # what parsing a big manifest left free, before the run holds on to it
    if args.concurrency is not None or args.rpm is not None:
        manifest = replace(
            manifest,
            limits=replace(
                manifest.limits,
                concurrency=args.concurrency or manifest.limits.concurrency,
                requests_per_minute=args.rpm or manifest.limits.requests_per_minute,
            ),
        )
    check_chosen_items(manifest, args)
    redactor = logs.Redactor()  # told every secret before anything can store what is sent
    auth = credentials(manifest, redactor.add)
    for warning in manifest.warnings:
        err.write(f"{args.manifest}: warning: {warning}\n")
    out = manifest.output_dir
    state = common.state_of(args, manifest)
    #: the ledger file, or how messages name the database
    state_path: Path | str = state.path if state.path is not None else state.describe()
    report_path = args.report or out / layout.REPORT_FILE
    check_own_files(manifest, state.path, report_path)
    try:
        report_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise cannot("create the report's folder", report_path.parent, exc) from None
    try:
        output = OutputDir(out, manifest.name)
    except OutputLocked as exc:
        err.write(f"Refused: {exc}\n")
        return Exit.LOCKED
    except OutputRefused as exc:
        raise Usage(str(exc)) from None
    except OSError as exc:
        raise cannot("use the output folder", out, exc) from None
    # The redactor knows every secret (the credentials told it): credentials a server echoes
    # (in an asset URL, an error text) are scrubbed from the ledger and the report as from the
    # logs.
    try:
        ledger = state.open(manifest.name, scrub=redactor.clean)
    except LedgerLocked as exc:
        output.close()
        err.write(f"Refused: {exc}\n")
        return Exit.LOCKED
    except LedgerUnreadable as exc:
        output.close()
        raise Usage(f"{exc} {recovery_hint(args.manifest, args.state)}") from None
    except LedgerUnavailable as exc:
        output.close()
        raise LocalStop(str(exc)) from None  # exit 3: resumable once the database is back
    except LedgerError as exc:
        output.close()
        raise Usage(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        output.close()
        raise cannot("open the state file", state_path, exc) from None
    adopt = adopting(output, ledger)
    afresh = False
    if adopt and not issubclass(common.plugin_of(manifest).provider_class, TaskFinder):
        if not args.new_batch:
            ledger.close()
            output.close()
            raise Usage(refuse_new_batch(manifest, state_path))
        err.write("--new-batch: the batch starts afresh; its earlier tasks are not adopted.\n")
        adopt, afresh = False, True
    elif adopt:
        err.write(adoption_note(output, state_path))
    try:
        # Started afresh, the folder's history is this ledger's from now on.
        output.starting(ledger.ledger_id, state_path, runs=len(ledger.runs()) if afresh else None)
    except OSError as exc:
        ledger.close()
        output.close()
        raise cannot("write the batch's identity in", out, exc) from None

    try:
        log_path, log_file = logs.open_log_file(out)
    except OSError as exc:
        ledger.close()
        output.close()
        raise cannot("create the log file in", out / "logs", exc) from None
    terminal = Terminal(err, live=err.isatty() and not args.no_progress and not args.quiet)
    logs.configure(
        redactor,
        file=log_file,
        console=err,
        progress=terminal.wants_live,
        say=terminal.say,
        verbosity=-1 if args.quiet else (1 if args.verbose else 0),
    )
    run_started = time.time()
    run: int | None = None
    failure: LocalFailure | None = None
    try:
        with _provider_endpoint(manifest, auth, redactor) as endpoint:
            provider = common.plugin_of(manifest).connect(
                endpoint.base_url,
                endpoint.auth,
                manifest.provider.timeout,
                manifest.provider.options,
            )
            # Asset URLs may lead to internal or plain-http hosts only when the provider is on
            # one itself (the simulator's assets are on its own loopback host).
            downloader = (
                Downloader(
                    out,
                    policy=download_policy(manifest),
                    attempt_timeout=manifest.download_timeout,
                    asset_policy=AssetPolicy.for_provider(endpoint.base_url),
                    keeps_files=common.plugin_of(manifest).keeps_files,
                )
                if manifest.download
                else None
            )
            engine = Engine(
                manifest,
                provider,
                ledger,
                downloader=downloader,
                verify_files=args.verify_files,
                provider_started_at=endpoint.started_at,
                adopt=adopt,
                adopt_since=output.first_run_at() if adopt else None,
                adopt_settled_at=settled_at(output, manifest) if adopt else None,
                rerun_changed=args.rerun_changed,
                resubmit_unresolved=args.resubmit_unresolved,
                retry_failed=args.retry_failed,
                force=args.force,
                only=args.only,
                lock_held=output.still_held,
                on_resume=(
                    None if args.quiet
                    else lambda counts: resuming(terminal, manifest.name, counts)
                ),
            )

            def checkpoint() -> None:
                """What this run has sent so far, into its row: a kill loses little of it."""
                if run is not None:
                    requests, retries = runs.run_figures(engine.outcome, downloader)
                    ledger.record_run(run, requests=requests, retries=retries)

            async def main() -> RunOutcome:
                try:
                    return await _run_engine(engine, terminal, checkpoint)
                finally:
                    with anyio.CancelScope(shield=True):
                        await provider.aclose()
                        if downloader is not None:
                            await downloader.aclose()

            try:
                run = ledger.start_run(run_started)
                outcome = anyio.run(main, backend="asyncio")
            except* local_failures.CAUGHT as group:
                # This machine's files failed (task groups wrap it): the run ends cleanly with
                # what it did so far, exit 3. Anything else in the group is a bug: raised on.
                failure = local_failures.find(group, ledger_path=state_path)
                if failure is None:
                    raise
                outcome = engine.outcome
        if failure is None and downloader is not None:
            failure = downloader.local_failure  # the downloads stopped the batch
        code, reason, failure, report_failure, written = end_run(
            ledger,
            run,
            RunFacts(
                manifest=manifest,
                outcome=outcome,
                units=engine.units_estimate,
                figures=runs.run_figures(outcome, downloader),
                started_at=run_started,
                state_path=state_path,
                report_path=report_path,
                log_path=log_path,
                scrub=redactor.clean,
                rerun_changed=args.rerun_changed,
                only=tuple(args.only) if args.only else None,
            ),
            failure,
        )
    finally:
        closing = close(ledger, log_file)
        output.close()
    if closing is not None and failure is None:
        # The last commit failed: what it held is re-established by the rerun, as after a
        # crash, but the run did not end as the report says.
        failure = local_failures.find(closing, ledger_path=state_path)
        if failure is not None:
            code = Exit.ACCOUNT_STOP
    if args.json:
        with contextlib.suppress(OSError):
            stdout.write(json.dumps(summary_json(
                manifest.name, code, reason, written, report_path, log_path, failure
            )) + "\n")
            stdout.flush()
    if written is not None and not args.quiet:
        err.write(
            report.summary(
                written.head, report_path=report_path, stop=outcome.stopped_by,
                stats=written.stats,
                # Under cron each problem was a line already: the summary stays short.
                max_problems=(
                    report.SUMMARY_MAX_PROBLEMS if err.isatty() else CRON_MAX_PROBLEMS
                ),
            )
            + "\n"
        )
    if failure is not None:
        err.write(failure.line(report=report_failure) + "\n")
    elif outcome.lock_lost:
        err.write(
            f"Stopped: {ledger.lock_lost_reason}; nothing more was sent. If another run has "
            "the batch, let it finish; otherwise run it again: it resumes.\n"
        )
    elif report_failure is not None:
        err.write(report_failure.line() + "\n")
    elif outcome.crashed:
        err.write(
            f"{outcome.crashed} item(s) hit an internal error (a bug): see 'item.crashed' in "
            f"{log_path}. Rerunning resumes them safely.\n"
        )
    return code
