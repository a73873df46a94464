"""Command line: parse, load, call the engine, map outcomes to exit codes.

Exit codes (DESIGN.md): 0 every item succeeded; 1 finished with failed or partial items;
2 invalid manifest/arguments/credentials (nothing sent); 3 stopped by an account-level error,
or by a failure of this machine's files (disk full, I/O error...: local_failures.py), resumable;
4 another run of the same batch holds the lock (nothing sent); 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import enum
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx
import structlog

from orchestrator import (
    atomic_files,
    layout,
    local_failures,
    logs,
    report,
    runs,
    state_check,
    status,
)
from orchestrator.config import SIMULATOR_BASE_URL, Manifest, ManifestError, load_manifest
from orchestrator.downloads import AssetPolicy, Downloader
from orchestrator.engine import IN_FLIGHT_TIMEOUTS, Engine, RunOutcome
from orchestrator.identity import OutputDir, OutputLocked, OutputRefused
from orchestrator.ledger import Ledger, LedgerError, LedgerLocked, LedgerUnreadable, RunRecord
from orchestrator.local_failures import LocalFailure
from orchestrator.progress import ProgressLine
from orchestrator.providers import registry
from orchestrator.providers.base import TaskFinder
from orchestrator.providers.plugin import ProviderPlugin
from orchestrator.retry import RetryPolicy

#: Seconds between two redraws of the progress line.
PROGRESS_EVERY = 0.5


class Exit(enum.IntEnum):
    OK = 0
    ITEMS_FAILED = 1
    INVALID = 2
    ACCOUNT_STOP = 3
    LOCKED = 4
    INTERRUPTED = 130


class _Usage(Exception):
    """Bad input found by the CLI itself: printed, exit 2, nothing sent."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator",
        description="Run batches of generation tasks (Kling, LTX Video) resumably, never paying "
        "twice.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run (or resume) a batch")
    run.add_argument("manifest", type=Path)
    run.add_argument(
        "--state", type=Path, help=f"ledger file (default: <output.dir>/{layout.STATE_FILE})"
    )
    run.add_argument(
        "--report", type=Path, help=f"report path (default: <output.dir>/{layout.REPORT_FILE})"
    )
    run.add_argument("--concurrency", type=_positive_int, help="override limits.concurrency")
    run.add_argument("--rpm", type=_positive_float, help="override limits.requests_per_minute")
    run.add_argument(
        "--verify-files",
        action="store_true",
        help="hash every downloaded file of the finished items and download again those whose "
        "sha256 differs from the record (by default only files whose size or modification "
        "time changed are hashed)",
    )
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="on a terminal, print every event instead of the live progress line",
    )
    run.add_argument(
        "--new-batch",
        action="store_true",
        help="with a provider that cannot look tasks up: start the batch afresh in an output "
        "folder whose earlier runs this state file does not know, paying again for every item "
        "(without it such a run is refused)",
    )
    run.add_argument(
        "--rerun-changed",
        action="store_true",
        help="give a new attempt (a new paid task) to the items whose definition in the manifest "
        "changed since their result was made; without it they are only reported",
    )

    run.add_argument(
        "--resubmit-unresolved",
        action="store_true",
        help="send again the items left unresolved by a provider that cannot look tasks up (a "
        "create sent whose answer was lost): this MAY PAY TWICE for each of them; where the "
        "provider can look tasks up they are looked up first, whatever this says",
    )

    validate = sub.add_parser("validate", help="check a manifest offline; sends nothing")
    validate.add_argument("manifest", type=Path)
    validate.add_argument(
        "--estimate",
        action="store_true",
        help="also print the units the batch will consume (from the price table)",
    )

    state = sub.add_parser("status", help="what the ledger knows of a batch; no network")
    state.add_argument("manifest", type=Path)
    state.add_argument(
        "--state", type=Path, help=f"ledger file (default: <output.dir>/{layout.STATE_FILE})"
    )
    state.add_argument("--json", action="store_true", help="machine-readable output")

    state_cmd = sub.add_parser(
        "state",
        help="check a batch's state file, or move an unreadable one aside; no network",
        description="check: what the state file is and what the next run will do with it "
        "(exit 0: a run can go on with it; 1: it cannot be read, see recover; 2: it is not "
        "this batch's). recover: move an unreadable state file aside (kept, renamed "
        "<state>.unreadable-<time>) so that the next run starts a new ledger that looks every "
        "item's tasks up by their external ids and adopts them: nothing is paid for twice.",
    )
    state_sub = state_cmd.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    for action, what in (
        ("check", "what the state file is; reads only"),
        ("recover", "move an unreadable state file aside; nothing is deleted"),
    ):
        one = state_sub.add_parser(action, help=what)
        one.add_argument("manifest", type=Path)
        one.add_argument(
            "--state", type=Path, help=f"ledger file (default: <output.dir>/{layout.STATE_FILE})"
        )
        one.add_argument("--json", action="store_true", help="machine-readable output")

    models = sub.add_parser(
        "models",
        help="the models this version knows of a provider, and what each takes (the README's "
        "tables)",
        description="Print a provider's model catalogue as a Markdown table. Kling: status "
        "(with retirement dates), modes, durations, sound, end frames, multi-shot, image "
        "options and API. LTX: status, kinds, resolutions, fps and durations, last frames and "
        "list prices.",
    )
    models.add_argument(
        "--provider", choices=registry.NAMES, default=registry.DEFAULT_PROVIDER,
        help=f"whose models (default: {registry.DEFAULT_PROVIDER})",
    )

    from orchestrator.simulator.cli import add_simulate_parser

    add_simulate_parser(sub)
    return parser


def _load(path: Path, err: TextIO) -> Manifest:
    try:
        return load_manifest(path)
    except ManifestError as exc:
        n = len(exc.problems)
        err.write(f"{path}: {n} problem{'s' if n != 1 else ''}; nothing was sent.\n")
        for problem in exc.problems:
            err.write(problem.format(exc.source) + "\n")
        raise _Usage from None


def _plugin(manifest: Manifest) -> ProviderPlugin:
    """The plug-in of the provider the manifest names."""
    return registry.plugin(manifest.provider.name)


def _credentials(manifest: Manifest, redact: Callable[[str], None]) -> httpx.Auth | None:
    """The provider's credentials from the environment, each secret told to ``redact``; None
    for the bundled simulator (it brings its own demo credentials)."""
    if manifest.provider.base_url == SIMULATOR_BASE_URL:
        return None
    plugin = _plugin(manifest)
    try:
        auth: httpx.Auth | None = plugin.credentials(os.environ, redact)
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    if auth is None:
        raise _Usage(
            f"no {plugin.title} credentials: {plugin.credentials_help}; nothing was sent."
        )
    return auth


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
    with _plugin(manifest).simulated(
        manifest.output_dir / SIMULATOR_STATE, redactor.add
    ) as account:
        yield _Endpoint(account.base_url, account.auth, started_at)


def _check_own_files(manifest: Manifest, state_path: Path, report_path: Path) -> None:
    """The files of ``--state`` and ``--report`` must not take the place of an item's folder in
    output.dir (nor of a directory, nor of each other): refused before anything is created or
    sent. The default names are reserved by the manifest's id rule."""
    own = [
        *(("--state", p) for p in layout.state_files(state_path)),
        *(("--report", p) for p in layout.report_files(report_path)),
    ]
    for flag, path in own:
        if path.is_dir():
            raise _Usage(f"{flag}: {path} is a directory; give a file path. Nothing was sent.")
    clash = layout.item_folder_clash(
        manifest.output_dir, (p for _, p in own), (item.id for item in manifest.items)
    )
    if clash is not None:
        path, item_id = clash
        flag = next(f for f, p in own if p == path)
        raise _Usage(
            f"{flag}: {path} would be in the folder of item '{item_id}' "
            f"({manifest.output_dir / item_id}), where that item's files are downloaded; "
            "put it outside the item folders. Nothing was sent."
        )
    state_files = {p.resolve() for p in layout.state_files(state_path)}
    for path in layout.report_files(report_path):
        if path.resolve() in state_files:
            raise _Usage(
                f"--report: {path} would overwrite the state file or one of its companions "
                f"({state_path}); choose another path. Nothing was sent."
            )


def _changed_entry(outcome: RunOutcome, rerun: bool) -> dict[str, object] | None:
    """report.json's word on items whose definition changed since their result was made."""
    if not outcome.changed:
        return None
    return {"count": len(outcome.changed), "ids": outcome.changed[:1000], "rerun": rerun}


def _settled_at(output: OutputDir, manifest: Manifest) -> float | None:
    """When no create an earlier (killed) run had in flight can still commit: twice the client
    timeout after it last wrote, as for a create this run lost the answer to."""
    last = output.last_activity()
    if last is None:
        return None
    return last + IN_FLIGHT_TIMEOUTS * manifest.provider.timeout + manifest.retry.lookup_grace


def _adopting(output: OutputDir, ledger: Ledger) -> bool:
    """Whether the batch ran before without this ledger: its items are then looked up by their
    external ids before anything is created (nothing is paid for twice)."""
    known = output.found
    counted = len(ledger.runs())  # the runs this ledger recorded before this one
    # A ledger that existed before this run, with no identity beside the outputs to say
    # otherwise (one written by an older version), is the batch's history.
    other = ledger.created or (
        known is not None
        and (
            known.ledger_id != ledger.ledger_id
            or counted < known.runs  # the same ledger, but it lost writes (its -wal, say)
        )
    )
    return output.earlier_runs() and other


def _adoption_note(output: OutputDir, state_path: Path) -> str:
    known = output.found
    before = f" (it used {known.state})" if known is not None and known.state else ""
    return (
        f"Note: {output.directory} holds earlier runs of this batch, but the state file "
        f"{state_path} does not know them{before}: every item is looked up by its external id "
        "before anything is sent, so no task is paid for twice.\n"
    )


def _with_results(output_dir: Path, item_ids: Sequence[str]) -> list[str]:
    """The items whose folder in ``output_dir`` holds a file: results of an earlier run."""
    found = []
    for item_id in item_ids:
        with contextlib.suppress(OSError):
            if any(entry.is_file() for entry in os.scandir(output_dir / item_id)):
                found.append(item_id)
    return found


def _refuse_new_batch(manifest: Manifest, state_path: Path) -> str:
    """Why a run is refused over earlier runs it cannot adopt: the items it would pay again."""
    ids = _with_results(manifest.output_dir, [item.id for item in manifest.items])
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    paid = (
        f"{len(ids)} item{'s' if len(ids) != 1 else ''} with results there ({shown}) and every "
        "other item whose task an earlier run created"
        if ids
        else "every item whose task an earlier run created"
    )
    return (
        f"{manifest.output_dir} holds earlier runs of batch '{manifest.name}', but the state "
        f"file {state_path} does not know them, and this provider cannot look tasks up to "
        f"adopt them: starting over would pay again for {paid}. Restore the state file the "
        "earlier runs used (or give it with --state), or rerun with --new-batch to start "
        "afresh and pay again. Nothing was sent."
    )


def download_policy(manifest: Manifest) -> RetryPolicy:
    """Downloads cost no credits: twice the attempts of a create (at least 8), same pacing."""
    return RetryPolicy(
        max_attempts=max(8, 2 * manifest.retry.max_attempts),
        base_delay=manifest.retry.base_delay,
        max_delay=manifest.retry.max_delay,
    )


class _LocalStop(Exception):
    """This machine's files failed before anything was sent (a full disk, an I/O error):
    printed, exit 3 (resumable once the cause is fixed)."""


def _cannot(what: str, path: Path, exc: Exception) -> Exception:
    """What a failure to set a run up becomes: a full, read-only or failing disk stops the run
    as resumable (exit 3); any other (a path that cannot be, a permission) is the arguments'
    (exit 2). Nothing was sent either way."""
    failure = local_failures.classify(exc, ledger_path=path, path=path)
    if failure is not None and failure.cause.everywhere:
        return _LocalStop(
            f"cannot {what} {path}: {failure.cause.what}: {failure.cause.action}, then rerun; "
            "nothing was sent."
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return _Usage(
        f"cannot {what} {path}: {reason}. Check output.dir in the manifest (or --state, "
        "--report); nothing was sent."
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


async def _run_engine(
    engine: Engine, line: ProgressLine | None, checkpoint: Callable[[], None] | None = None
) -> RunOutcome:
    """Run the engine with the signal watcher, the progress line and ``checkpoint`` (called
    every runs.CHECKPOINT_EVERY seconds: the run's row in the ledger) beside it."""
    async def watch_signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                if engine.outcome.interrupted:
                    os._exit(Exit.INTERRUPTED)  # second signal: the user insists
                sys.stderr.write(
                    "\nInterrupted: no new submissions; tasks in flight stay in the ledger and "
                    "the next run collects them. Press Ctrl-C again to quit at once.\n"
                )
                engine.interrupt()

    async def show_progress(line: ProgressLine) -> None:
        while True:
            line.draw(engine.progress.snapshot())
            await anyio.sleep(PROGRESS_EVERY)

    async def record_run(checkpoint: Callable[[], None]) -> None:
        while True:
            await anyio.sleep(runs.CHECKPOINT_EVERY)
            checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_signals)
        if line is not None:
            tg.start_soon(show_progress, line)
        if checkpoint is not None:
            tg.start_soon(record_run, checkpoint)
        outcome = await engine.run()
        tg.cancel_scope.cancel()
    if line is not None:
        line.clear()
    return outcome


def cmd_run(args: argparse.Namespace, err: TextIO) -> Exit:
    manifest = _load(args.manifest, err)
    if args.concurrency is not None or args.rpm is not None:
        manifest = replace(
            manifest,
            limits=replace(
                manifest.limits,
                concurrency=args.concurrency or manifest.limits.concurrency,
                requests_per_minute=args.rpm or manifest.limits.requests_per_minute,
            ),
        )
    redactor = logs.Redactor()  # told every secret before anything can store what is sent
    auth = _credentials(manifest, redactor.add)
    for warning in manifest.warnings:
        err.write(f"{args.manifest}: warning: {warning}\n")
    out = manifest.output_dir
    state_path = args.state or out / layout.STATE_FILE
    report_path = args.report or out / layout.REPORT_FILE
    _check_own_files(manifest, state_path, report_path)
    try:
        report_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot("create the report's folder", report_path.parent, exc) from None
    try:
        output = OutputDir(out, manifest.name)
    except OutputLocked as exc:
        err.write(f"Refused: {exc}\n")
        return Exit.LOCKED
    except OutputRefused as exc:
        raise _Usage(str(exc)) from None
    except OSError as exc:
        raise _cannot("use the output folder", out, exc) from None
    # The redactor knows every secret (the credentials told it): credentials a server echoes
    # (in an asset URL, an error text) are scrubbed from the ledger and the report as from the
    # logs.
    try:
        ledger = Ledger(state_path, manifest.name, scrub=redactor.clean)
    except LedgerLocked as exc:
        output.close()
        err.write(f"Refused: {exc}\n")
        return Exit.LOCKED
    except LedgerUnreadable as exc:
        output.close()
        raise _Usage(f"{exc} {_recovery_hint(args.manifest, args.state)}") from None
    except LedgerError as exc:
        output.close()
        raise _Usage(str(exc)) from None
    except (OSError, sqlite3.Error) as exc:
        output.close()
        raise _cannot("open the state file", state_path, exc) from None
    adopt = _adopting(output, ledger)
    afresh = False
    if adopt and not issubclass(_plugin(manifest).provider_class, TaskFinder):
        if not args.new_batch:
            ledger.close()
            output.close()
            raise _Usage(_refuse_new_batch(manifest, state_path))
        err.write("--new-batch: the batch starts afresh; its earlier tasks are not adopted.\n")
        adopt, afresh = False, True
    elif adopt:
        err.write(_adoption_note(output, state_path))
    try:
        # Started afresh, the folder's history is this ledger's from now on.
        output.starting(ledger.ledger_id, state_path, runs=len(ledger.runs()) if afresh else None)
    except OSError as exc:
        ledger.close()
        output.close()
        raise _cannot("write the batch's identity in", out, exc) from None

    try:
        log_path, log_file = logs.open_log_file(out)
    except OSError as exc:
        ledger.close()
        output.close()
        raise _cannot("create the log file in", out / "logs", exc) from None
    line = ProgressLine(err) if err.isatty() and not args.no_progress else None
    logs.configure(
        redactor,
        file=log_file,
        console=err,
        progress=line is not None,
        before_console=line.clear if line is not None else None,
    )
    run_started = time.time()
    run: int | None = None
    failure: LocalFailure | None = None
    try:
        with _provider_endpoint(manifest, auth, redactor) as endpoint:
            provider = _plugin(manifest).connect(
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
                    keeps_files=_plugin(manifest).keeps_files,
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
                adopt_settled_at=_settled_at(output, manifest) if adopt else None,
                rerun_changed=args.rerun_changed,
                resubmit_unresolved=args.resubmit_unresolved,
                lock_held=output.still_held,
            )

            def checkpoint() -> None:
                """What this run has sent so far, into its row: a kill loses little of it."""
                if run is not None:
                    requests, retries = runs.run_figures(engine.outcome, downloader)
                    ledger.record_run(run, requests=requests, retries=retries)

            async def main() -> RunOutcome:
                try:
                    return await _run_engine(engine, line, checkpoint)
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
        code, failure, report_failure, written = _end_run(
            ledger,
            run,
            _RunFacts(
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
            ),
            failure,
        )
    finally:
        closing = _close(ledger, log_file)
        output.close()
    if closing is not None and failure is None:
        # The last commit failed: what it held is re-established by the rerun, as after a
        # crash, but the run did not end as the report says.
        failure = local_failures.find(closing, ledger_path=state_path)
        if failure is not None:
            code = Exit.ACCOUNT_STOP
    if written is not None:
        err.write(
            report.summary(
                written.head, report_path=report_path, stop=outcome.stopped_by,
                stats=written.stats,
            )
            + "\n"
        )
    if failure is not None:
        err.write(failure.line(report=report_failure) + "\n")
    elif outcome.lock_lost:
        err.write(
            "Stopped: the run lock's file was removed and another run of this batch took it; "
            "nothing more was sent. Let that run finish.\n"
        )
    elif report_failure is not None:
        err.write(report_failure.line() + "\n")
    elif outcome.crashed:
        err.write(
            f"{outcome.crashed} item(s) hit an internal error (a bug): see 'item.crashed' in "
            f"{log_path}. Rerunning resumes them safely.\n"
        )
    return code


@dataclass(frozen=True)
class _RunFacts:
    """What the end of a run reports, gathered once the engine has stopped."""

    manifest: Manifest
    outcome: RunOutcome
    #: the units estimate (read from the ledger, so when the report is written)
    units: Callable[[], dict[str, Any]]
    #: the run's requests by kind and its retries (runs.run_figures)
    figures: tuple[dict[str, int], int]
    started_at: float
    state_path: Path
    report_path: Path
    log_path: Path
    #: cleans what the provider sent of credentials (the log redactor's)
    scrub: Callable[[Any], Any]
    rerun_changed: bool = False


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


def _end_run(
    ledger: Ledger, run: int | None, facts: _RunFacts, failure: LocalFailure | None
) -> tuple[Exit, LocalFailure | None, LocalFailure | None, report.WrittenReport | None]:
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
        return RunRecord(
            run or 0, facts.started_at, finished_at, int(code), reason, requests, retries
        )

    def late(stats: report.ItemStats) -> dict[str, Any]:
        current = end(stats.counts["succeeded"] == stats.total, None)
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
            scrub=facts.scrub,
        )
    except local_failures.CAUGHT as exc:
        report_failure = local(exc, report_path)
        end(False, report_failure)  # again if report.md failed after report.json: exit 3
    return ended[0], failure, report_failure, written


def _close(ledger: Ledger, log_file: TextIO) -> BaseException | None:
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


def cmd_validate(args: argparse.Namespace, err: TextIO, out: TextIO) -> Exit:
    manifest = _load(args.manifest, err)
    _credentials(manifest, lambda secret: None)
    kinds: dict[str, int] = {}
    for item in manifest.items:
        kinds[str(item.request.kind)] = kinds.get(str(item.request.kind), 0) + 1
    detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    out.write(
        f"{args.manifest}: OK: batch '{manifest.name}', {len(manifest.items)} items ({detail}).\n"
    )
    for warning in manifest.warnings:
        err.write(f"{args.manifest}: warning: {warning}\n")
    if args.estimate:
        out.write(manifest.pricing.estimate_text(manifest) + "\n")
    return Exit.OK


def cmd_status(args: argparse.Namespace, out: TextIO) -> Exit:
    manifest = _load(args.manifest, sys.stderr)
    state_path = args.state or manifest.output_dir / layout.STATE_FILE
    try:
        records = status.load_records(state_path, manifest.name)
    except FileNotFoundError:
        records = []  # nothing has run yet: every item is pending
    except LedgerUnreadable as exc:
        raise _Usage(f"{exc} {_recovery_hint(args.manifest, args.state)}") from None
    except LedgerError as exc:
        raise _Usage(str(exc)) from None
    rows = status.status_rows(records, [item.id for item in manifest.items])
    # What a ledger of an older version may hold of an echoed credential is not shown either.
    redactor = logs.Redactor()
    with contextlib.suppress(ValueError):
        _plugin(manifest).credentials(os.environ, redactor.add)
    rows = redactor.clean(rows)
    render = status.render_status_json if args.json else status.render_status_text
    out.write(render(rows, batch=manifest.name, state_path=state_path) + "\n")
    return Exit.OK


def _recovery_hint(manifest_path: Path, state_arg: Path | None) -> str:
    """How to go on from a state file a run refused: the commands, with this run's arguments."""
    where = f" --state {state_arg}" if state_arg is not None else ""
    return (
        f"`python -m orchestrator state check {manifest_path}{where}` tells what it holds; "
        f"`python -m orchestrator state recover {manifest_path}{where}` moves it aside (kept) "
        "so that the next run starts a new ledger and looks every item's tasks up by their "
        "external ids before creating anything: nothing is paid for twice."
    )


def cmd_state(args: argparse.Namespace, out: TextIO) -> Exit:
    manifest = _load(args.manifest, sys.stderr)
    state_path = args.state or manifest.output_dir / layout.STATE_FILE
    ids = [item.id for item in manifest.items]
    if args.state_command == "check":
        found = state_check.diagnose(state_path, manifest.name, manifest.output_dir, ids)
        moved: tuple[tuple[Path, Path], ...] = ()
    else:
        try:
            done = state_check.recover(state_path, manifest.name, manifest.output_dir, ids)
        except state_check.RecoverRefused as exc:
            sys.stderr.write(f"Refused: {exc}\n")
            return Exit.LOCKED if exc.locked else Exit.INVALID
        except OSError as exc:
            raise _cannot("move the state file aside", state_path, exc) from None
        found, moved = done.diagnosis, done.moved
    if args.json:
        data = found.to_json()
        if args.state_command == "recover":
            data["moved"] = [{"from": str(a), "to": str(b)} for a, b in moved]
        out.write(json.dumps(data, indent=2) + "\n")
    else:
        out.write(state_check.render(found) + "\n")
        if args.state_command == "recover":
            if moved:
                out.write("Moved aside (kept; delete them once the batch is whole again):\n")
                out.writelines(f"  {a} -> {b}\n" for a, b in moved)
                out.write(
                    "Run the batch again: it starts a new ledger, looks every item's tasks "
                    "up by their external ids and adopts them.\n"
                )
            else:
                out.write("Nothing to recover: the state file was left as it is.\n")
    if found.condition is state_check.Condition.OTHER_BATCH:
        return Exit.INVALID
    if args.state_command == "check" and not found.usable:
        return Exit.ITEMS_FAILED
    return Exit.OK


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM like SIGINT from the start (cron's kill, a service stop): before the engine
    # installs its own handling nothing was sent, and the exit code is 130 either way.
    signal.signal(signal.SIGTERM, _terminated)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "run":
            return int(cmd_run(args, sys.stderr))
        if args.command == "status":
            return int(cmd_status(args, sys.stdout))
        if args.command == "state":
            return int(cmd_state(args, sys.stdout))
        if args.command == "models":
            table = registry.plugin(args.provider).models
            sys.stdout.write(table() if table is not None else "no catalogue\n")
            return int(Exit.OK)
        if args.command == "simulate":
            from orchestrator.simulator.cli import cmd_simulate

            return cmd_simulate(args, sys.stdout)
        return int(cmd_validate(args, sys.stderr, sys.stdout))
    except _Usage as exc:
        if exc.args:
            sys.stderr.write(f"{exc.args[0]}\n")
        return int(Exit.INVALID)
    except _LocalStop as exc:
        sys.stderr.write(f"{exc}\n")
        return int(Exit.ACCOUNT_STOP)
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error worth a traceback.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the exit-time flush
        return int(Exit.OK)
    except KeyboardInterrupt:
        # Before the engine's own signal handling is in place: nothing was sent yet.
        sys.stderr.write("\nInterrupted.\n")
        return int(Exit.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
