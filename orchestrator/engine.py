"""The per-item state machine: submit under limits, reconcile ambiguity, poll, verify.

One coroutine drives one item from its ledger state to a terminal state. The engine is the one
retry layer: providers send exactly one request per call and raise ``ProviderError``; the
engine decides, from ``ErrorInfo`` alone, whether to retry (with full-jitter backoff that honours
Retry-After), to look the task up first (ambiguous create), to fail the item, or to stop the
whole batch (account-scope errors).

Never paying twice rests on three rules:
1. the ledger records the intent (with the external id) before a create is sent;
2. a create whose outcome is ambiguous is resolved by looking the task up by external id (after
   a grace period, twice) and is re-sent only when the task is absent;
3. a task id, once known, is only ever polled, never resubmitted.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
import anyio.to_thread
import structlog

from orchestrator.config import Item, Manifest
from orchestrator.downloads import DownloadedAsset, Downloader, DownloadError
from orchestrator.errors import (
    Category,
    ErrorInfo,
    ProviderError,
    Scope,
    asset_mismatch,
    downloads_pending,
)
from orchestrator.errors import poll_timeout as poll_timeout_error
from orchestrator.fingerprint import FileHashes, fingerprint, needs_files
from orchestrator.ledger import ItemRecord, ItemState, Ledger
from orchestrator.limits import (
    AdaptiveConcurrency,
    ConcurrencyMeter,
    PoolClosed,
    SlotPool,
    create_rate_limiter,
)
from orchestrator.lookups import LookupBatcher
from orchestrator.poller import ListPoller, Poller, QueryPoller
from orchestrator.pricing import units_for
from orchestrator.progress import Progress
from orchestrator.providers.base import (
    AccountChecker,
    BatchReader,
    Provider,
    Task,
    TaskLister,
    TaskStatus,
    valid_asset_indexes,
)
from orchestrator.retry import RetryBudget, RetryPolicy, backoff_delay

#: Growth of the poll interval between two polls of one task (up to poll.max_interval).
POLL_GROWTH = 1.5
#: A known task id answered "not found" this many polls in a row is given up on.
MAX_NOT_FOUND = 3
#: Lookups by external id before an ambiguous create is declared absent.
LOOKUPS = 2
#: An unanswered create may still commit this many client timeouts after it was sent.
IN_FLIGHT_TIMEOUTS = 2
#: Seconds between commits of the ledger's non-critical writes (intents commit before sending).
COMMIT_EVERY = 1.0
#: Failures that mean "the provider is failing" and are charged to the retry budget.
_BUDGETED = (Category.SERVER, Category.NETWORK, Category.TIMEOUT)


@dataclass
class RunOutcome:
    stopped_by: ErrorInfo | None = None
    interrupted: bool = False
    requests: Counter[str] = field(default_factory=Counter)
    retries: int = 0
    peak_slots: int = 0
    #: items whose coroutine hit an unexpected exception (a bug); logged with a traceback
    crashed: int = 0
    deadline_reached: bool = False
    retries_denied: int = 0
    #: units of the tasks this batch has submitted so far (only with limits.max_units)
    units_submitted: float | None = None
    concurrency: dict[str, int] = field(default_factory=dict)
    #: what the provider's account check said before the batch (None: all looked well)
    account_warning: str | None = None
    #: items whose request changed since their result was made (rerun or only reported)
    changed: list[str] = field(default_factory=list)
    #: tasks found by their external id before a create (the batch ran without this ledger)
    adopted: int = 0
    #: unresolved items sent again on request (--resubmit-unresolved)
    resubmitted: int = 0
    #: the run's lock was taken by another run (its file removed meanwhile): stopped
    lock_lost: bool = False


@dataclass
class _Held:
    """Slots an item holds right now (it gives them back while it backs off a 1303)."""

    count: int


#: The progress phase an item is in, from its ledger state.
_PHASE_OF = {
    ItemState.PENDING: "queued",
    ItemState.SUBMITTING: "submitting",
    ItemState.RUNNING: "running",
    ItemState.SUCCEEDED: "done",
    ItemState.PARTIAL: "partial",
    ItemState.FAILED: "failed",
}


#: Ledger states of a task that returned files (a partial one keeps those it returned).
_FINISHED_WITH_FILES = (ItemState.SUCCEEDED, ItemState.PARTIAL)
#: Ledger states that stand on a task id (the task runs, or returned files).
_TASK_STATES = (*_FINISHED_WITH_FILES, ItemState.RUNNING)


def _phase(rec: ItemRecord) -> str:
    """The progress phase of an item, as the report will call it: a finished task whose files
    are not on disk is not done."""
    if rec.download_error is not None and rec.state in _FINISHED_WITH_FILES:
        return "failed"
    return _PHASE_OF[rec.state]


def _mtime_ns(downloader: Downloader, relative: str) -> int | None:
    try:
        return (downloader.output_dir / relative).stat().st_mtime_ns
    except OSError:
        return None


def _looks_intact(downloader: Downloader, asset: dict[str, Any]) -> bool:
    """Cheap check (like make or rsync): the file is there with the size and modification time
    recorded when it was downloaded. Only files failing this are hashed on a rerun, so a rerun
    of a finished batch does not read every video again."""
    relative = asset.get("path")
    if not isinstance(relative, str) or "sha256" not in asset:
        return False
    try:
        info = os.stat(downloader.output_dir / relative)
    except OSError:
        return False
    return info.st_size == asset.get("bytes") and info.st_mtime_ns == asset.get("mtime_ns")


def _numbered(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Asset records whose indexes can name files: as they are, or renumbered by position
    (the provider's order) when an index is invalid or repeated, as providers renumber the
    assets they parse (records from an older version, or from another provider, may not be)."""
    if valid_asset_indexes(record.get("index") for record in records):
        return records
    return [{**record, "index": position} for position, record in enumerate(records)]


def _unreadable_asset(asset: dict[str, Any], exc: Exception) -> ErrorInfo:
    return ErrorInfo(
        category=Category.SERVER,
        message=f"asset {asset.get('index')!r} could not be downloaded: internal error "
        f"({type(exc).__name__})",
        retryable=False,
        hint="Please report this with the log file; the task is not resubmitted, and a rerun "
        "tries the download again.",
    )


def _unreadable_input(exc: OSError) -> ErrorInfo:
    name = f" {exc.filename}" if getattr(exc, "filename", None) else ""
    return ErrorInfo(
        category=Category.VALIDATION,
        message=f"cannot read the item's input file{name}: {exc.strerror or type(exc).__name__}",
        retryable=True,
        hint="Check that the image file exists and is readable, then rerun: nothing was sent.",
    )


def _error_fields(info: ErrorInfo) -> dict[str, Any]:
    """The fields every log event about a failure carries."""
    return {
        "category": str(info.category),
        "code": info.code,
        "http_status": info.http_status,
        "reason": info.message,
    }


def _attempts_spent(last: ErrorInfo | None, paid: int) -> ErrorInfo:
    """The verdict on an item whose attempts are used up, keeping the last failure's cause."""
    last = last or ErrorInfo(
        category=Category.TASK_FAILED, message="the task failed", retryable=True, hint=""
    )
    return ErrorInfo(
        category=last.category,
        code=last.code,
        http_status=last.http_status,
        message=f"{last.message} (gave up after {paid} paid attempts: retry.max_attempts)",
        # The cause is worth retrying; the rerun does so only once max_attempts is raised.
        retryable=True,
        hint=f"Each attempt was a generation that failed for a reason worth retrying "
        f"({last.hint.rstrip('.') or 'see the message'}). Raise retry.max_attempts above "
        f"{paid} and rerun to try again.",
    )


def _unreadable_task(task_id: str, polls: int, last: ErrorInfo) -> ErrorInfo:
    """The verdict on a task whose every recent poll failed until poll.timeout: the cause, not
    a timeout (a rerun polls it again)."""
    return ErrorInfo(
        category=last.category,
        code=last.code,
        http_status=last.http_status,
        message=f"the provider's answers about task {task_id} could not be used for {polls} "
        f"polls in a row, until poll.timeout: {last.message}",
        retryable=True,
        hint="The task exists and is not resubmitted. Rerun later to poll it again; if this "
        "persists, report it with this message (the provider's answer may have changed shape).",
    )


def _lookups_denied(ext: str) -> ErrorInfo:
    return ErrorInfo(
        category=Category.SERVER,
        message=f"whether the create with external_task_id {ext} took effect is not known yet: "
        "the retry budget is spent because the provider keeps failing",
        retryable=True,
        hint="Nothing was resubmitted. Rerun later: the task is looked up again by its "
        "external id before anything is sent.",
    )


#: What an unresolved item's hint says when its provider cannot look tasks up.
RESUBMIT_HINT = (
    "Nothing was resent: the provider cannot look a task up, so sending it again may pay "
    "twice. Check the provider's dashboard or billing for this job; to send it again anyway, "
    "rerun with --resubmit-unresolved."
)


def _unknowable(cause: ErrorInfo | None) -> ErrorInfo:
    """A create sent whose answer was lost, to a provider that cannot look tasks up (an
    earlier run's verdict is kept as it was)."""
    if cause is not None and cause.hint == RESUBMIT_HINT:
        return cause
    what = cause.message if cause is not None else "the run stopped while it was in flight"
    return ErrorInfo(
        category=cause.category if cause is not None else Category.NETWORK,
        code=cause.code if cause is not None else None,
        http_status=cause.http_status if cause is not None else None,
        message="the create was sent but its answer was lost "
        f"({what}); this provider cannot look tasks up, so "
        "whether the job was made (and paid for) cannot be known",
        retryable=False,
        hint=RESUBMIT_HINT,
    )


def _budget_spent(info: ErrorInfo) -> ErrorInfo:
    return ErrorInfo(
        category=info.category,
        code=info.code,
        http_status=info.http_status,
        message=f"{info.message} (not retried: the retry budget is spent because the provider "
        "keeps failing)",
        retryable=True,
        hint="The provider was failing for many requests in a row; rerun later and the item "
        "is retried.",
    )


class _Unresolved(Exception):
    """A create's outcome could not be established; the item stays ``submitting``."""

    def __init__(self, info: ErrorInfo) -> None:
        self.info = info


@dataclass
class _Life:
    """What polling learnt of a task's life at the provider, for the concurrency meter."""

    since: float
    seen_running: float | None = None
    final: Task | None = None


class _PollAbandoned(Exception):
    """Polling stopped without a verdict (the batch is stopping); the task stays running."""


class Engine:
    def __init__(
        self,
        manifest: Manifest,
        provider: Provider,
        ledger: Ledger,
        *,
        rand: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.time,
        downloader: Downloader | None = None,
        verify_files: bool = False,
        provider_started_at: float | None = None,
        adopt_since: float | None = None,
        adopt_settled_at: float | None = None,
        adopt: bool = False,
        rerun_changed: bool = False,
        resubmit_unresolved: bool = False,
        lock_held: Callable[[], bool] | None = None,
    ) -> None:
        """``verify_files``: hash every recorded file of the finished items and fetch again
        those whose sha256 differs (by default only files whose size or modification time
        changed are hashed, so that a rerun of a finished batch does not read every video).

        ``provider_started_at``: when the provider's server runs inside this process (the
        demo's simulator), the time (on ``clock``) it started. A create sent before then went
        to a server that died with the process that sent it: it cannot still commit, so a
        lookup that finds it absent needs not wait out the client timeout for it.

        ``adopt``: the batch ran before without this ledger (a lost, emptied or replaced state
        file; ``--state`` elsewhere): before the first create of each request the ledger does
        not know, its external id (the same in every ledger) is looked up, and a task found is
        adopted instead of paid for again. ``adopt_since``: no create of the batch is older
        (None: unknown; a lookup then cannot stop early). ``adopt_settled_at``: before then a
        create the earlier run had in flight when it was killed may still commit, so an absence
        is looked at again once it has passed.

        ``rerun_changed``: items whose request changed since their result was made get a new
        attempt (without it they are only reported).

        ``resubmit_unresolved``: items a provider that cannot look tasks up left unresolved
        (a create sent whose answer was lost) are sent again; it may pay twice, so only on
        request. Where tasks can be looked up, unresolved items are always looked up first.

        ``lock_held``: called every second; False means another run took the batch's lock (its
        file was removed and recreated): the run stops submitting at once."""
        self._m = manifest
        self._adopt = adopt
        self._adopt_since = adopt_since
        self._adopt_settled_at = adopt_settled_at
        self._rerun_changed = rerun_changed
        self._resubmit_unresolved = resubmit_unresolved
        self._lock_held = lock_held
        self._fingerprints: dict[str, str] = {}
        self._hashes = FileHashes()
        #: per item being downloaded, the asset URLs as the provider sent them (by index)
        self._live_urls: dict[str, dict[int, str]] = {}
        self._provider_started_at = provider_started_at
        self._downloader = downloader
        self._verify_files = verify_files
        self._provider = provider
        self._ledger = ledger
        self._rand = rand
        self._sleep = sleep
        self._clock = clock
        self._policy = RetryPolicy(
            max_attempts=manifest.retry.max_attempts,
            base_delay=manifest.retry.base_delay,
            max_delay=manifest.retry.max_delay,
        )
        self._slots = SlotPool(manifest.limits.concurrency)
        self._adaptive = AdaptiveConcurrency(self._slots, manifest.limits.concurrency)
        self._meter = ConcurrencyMeter()
        self._budget = RetryBudget()
        self._stop_event: anyio.Event | None = None
        self._cancel: anyio.CancelScope | None = None
        self.outcome = RunOutcome()
        self.progress = Progress()
        self._poller: Poller
        if isinstance(provider, TaskLister | BatchReader):
            self._poller = ListPoller(
                provider,
                window=manifest.poll.interval,
                clock=clock,
                sleep=sleep,
                requests=self.outcome.requests,
                account=self._account,
            )
        else:
            self._poller = QueryPoller(
                provider, sleep=sleep, requests=self.outcome.requests, account=self._account
            )
        self._lookups = LookupBatcher(provider, self.outcome.requests)
        self._log = structlog.get_logger("orchestrator").bind(batch=manifest.name)

    # -- control --------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stop_event is not None and self._stop_event.is_set()

    def _stop(self, cause: ErrorInfo | None) -> None:
        """No new submissions from now on; running tasks are still polled to the end."""
        if self.stopping:
            return
        if cause is not None:
            self.outcome.stopped_by = cause
            self._log.error("batch.stopping", hint=cause.hint, **_error_fields(cause))
        assert self._stop_event is not None
        self._stop_event.set()
        self._slots.close()

    def interrupt(self) -> None:
        """SIGINT/SIGTERM: stop submitting, abandon polls (tasks stay running in the ledger).

        A create already in flight finishes and its task id is recorded (shielded).
        """
        self.outcome.interrupted = True
        self._log.warning("batch.interrupted")
        if self._stop_event is not None:
            self._stop(None)
        if self._cancel is not None:
            self._cancel.cancel()

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> RunOutcome:
        self._stop_event = anyio.Event()
        self._run_started = self._clock()
        downloads_before = Counter(self._downloader.stats if self._downloader else ())
        self._limiter = create_rate_limiter(self._m.limits.requests_per_minute)
        self._ledger.sync_items(
            (item.id, str(item.request.kind), item.request.expected_assets)
            for item in self._m.items
        )
        records = {r.id: r for r in self._ledger.all()}
        self._hashes = FileHashes(self._ledger.file_hashes())
        await self._known_fingerprints(records)
        self._units_spent = self._units_already_spent()
        self._reopen(records)
        records = {r.id: r for r in self._ledger.all()}
        for item in self._m.items:
            self.progress.set(item.id, _phase(records[item.id]), initial=True)
        self._log.info(
            "batch.started",
            items=len(self._m.items),
            concurrency=self._m.limits.concurrency,
            requests_per_minute=self._m.limits.requests_per_minute,
        )
        in_flight = [
            i for i in self._m.items
            if records[i.id].state in (ItemState.SUBMITTING, ItemState.RUNNING)
        ]
        pending = [i for i in self._m.items if records[i.id].state is ItemState.PENDING]
        to_fetch = [i for i in self._m.items if self._needs_download(records[i.id])]
        for item in to_fetch:
            rec = records[item.id]
            if rec.download_error is None:
                # Not done until its files are back on disk, even if this run ends first.
                self._ledger.record_assets(item.id, rec.assets, downloads_pending())
        if self._verify_files and self._downloader is not None:
            # The others look intact: hashed, and marked only if one turns out not to be.
            fetching = {i.id for i in to_fetch}
            to_fetch += [
                i for i in self._m.items
                if i.id not in fetching and records[i.id].state in _FINISHED_WITH_FILES
            ]
        del records  # a record per item: not held for the whole run
        with anyio.CancelScope() as scope:
            self._cancel = scope
            async with anyio.create_task_group() as tg:
                watcher = anyio.CancelScope()
                if self._m.limits.deadline is not None:
                    tg.start_soon(self._deadline_watch, watcher)
                background = anyio.CancelScope()
                tg.start_soon(self._background, background)
                if isinstance(self._provider, AccountChecker) and pending:
                    tg.start_soon(self._check_account)
                async with anyio.create_task_group() as items:
                    # Finished tasks whose files are missing or damaged: downloads only.
                    for item in to_fetch:
                        items.start_soon(self._download_task, item)
                    # Tasks from an earlier run already hold provider slots: count them at once.
                    for item in in_flight:
                        taken = self._slots.take_now(item.request.expected_assets)
                        items.start_soon(self._item_task, item, _Held(taken))
                    for item in pending:
                        if self.stopping:
                            break
                        try:
                            taken = await self._slots.acquire(item.request.expected_assets)
                        except PoolClosed:
                            break
                        items.start_soon(self._item_task, item, _Held(taken))
                watcher.cancel()
                background.cancel()
        if self._downloader is not None:
            # Every HTTP attempt and every retry the downloader made, not the files asked for.
            stats = self._downloader.stats
            attempts = stats["requests"] - downloads_before["requests"]
            if attempts:
                self.outcome.requests["download"] += attempts
            self.outcome.retries += stats["retries"] - downloads_before["retries"]
        self._ledger.remember_file_hashes(self._hashes.learnt)
        self.outcome.peak_slots = self._slots.peak
        self.outcome.retries_denied = self._budget.denied
        if self._m.limits.max_units is not None:
            self.outcome.units_submitted = self._units_spent
        self.outcome.concurrency = {
            "configured": self._m.limits.concurrency,
            "final": self._adaptive.cap,
            "lowest": self._adaptive.lowest,
            "sustained": self._meter.peak(),
            "over_capacity_cuts": self._adaptive.cuts,
        }
        self._log.info(
            "batch.finished",
            interrupted=self.outcome.interrupted,
            stopped=self.outcome.stopped_by is not None,
            requests=dict(self.outcome.requests),
            retries=self.outcome.retries,
        )
        return self.outcome

    def _units_already_spent(self) -> float:
        """Units of every task this batch created (or may have created) in earlier runs."""
        if self._m.limits.max_units is None:
            return 0.0
        by_id = {item.id: item for item in self._m.items}
        spent = 0.0
        for item_id, attempts in self._ledger.paid_attempts().items():
            item = by_id.get(item_id)
            if item is not None:
                spent += attempts * (units_for(item.request, self._m.pricing) or 0.0)
        return spent

    def units_estimate(self) -> dict[str, Any]:
        """The price table's units for every task the batch created (or may have) so far, for
        the report beside what the provider says it charged."""
        by_id = {item.id: item for item in self._m.items}
        estimated = 0.0
        indicative = False
        unpriced = 0
        for item_id, attempts in self._ledger.paid_attempts().items():
            item = by_id.get(item_id)
            if item is None:
                continue
            price = self._m.pricing.price(item.request)
            if price is None:
                unpriced += attempts
                continue
            estimated += attempts * price.each
            indicative = indicative or price.indicative
        return {"estimated": round(estimated, 6), "unit": self._m.pricing.unit,
                "indicative": indicative, "unpriced_tasks": unpriced}

    def _reserve_units(self, item: Item, log: Any) -> bool:
        """limits.max_units: reserve this attempt's units, or stop the batch (exit 3) when they
        would exceed the cap. Counted at the intent, so a create that is then refused still
        counts until the next run recomputes from the ledger: the cap errs on the safe side."""
        cap = self._m.limits.max_units
        if cap is None:
            return True
        units = units_for(item.request, self._m.pricing) or 0.0
        if self._units_spent + units <= cap:
            self._units_spent += units
            return True
        info = ErrorInfo(
            category=Category.BILLING,
            message=f"limits.max_units ({cap:g}) reached: {self._units_spent:g} "
            f"{self._m.pricing.unit} submitted, "
            f"item '{item.id}' needs {units:g} more",
            retryable=False,
            hint="Raise limits.max_units in the manifest (or remove it), then rerun: finished "
            "items are not resubmitted.",
            scope=Scope.ACCOUNT,
        )
        log.warning("limits.max_units_reached", units_spent=self._units_spent, max_units=cap)
        self._stop(info)
        return False

    async def _check_account(self) -> None:
        """Say at once when the account looks unable to pay; never blocks or stops the run
        (the provider's answer may lag, and a run can still succeed)."""
        assert isinstance(self._provider, AccountChecker)
        self.outcome.requests["account"] += 1
        warning = await self._provider.account_warning()
        if warning is not None:
            self.outcome.account_warning = warning
            self._log.warning("account.warning", reason=warning)

    async def _background(self, scope: anyio.CancelScope) -> None:
        """The poll scheduler and the ledger's periodic commit, until the items are done."""
        with scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._poller.run)
                tg.start_soon(self._commit_often)

    async def _commit_often(self) -> None:
        """Writes other than intents are committed in groups; this bounds how stale the state
        file gets (``status`` reads it) and what a crash loses: at most a second of
        transitions, each of which the next run re-establishes from the provider."""
        while True:
            await anyio.sleep(COMMIT_EVERY)  # real time: not part of any timing rule
            self._ledger.commit()
            self._check_locks()

    def _check_locks(self) -> None:
        """Another run holding this batch's lock now (its file was removed, and a second run
        made a new one): stop at once; what is in flight is recorded as usual."""
        held = self._ledger.lock_still_held() and (
            self._lock_held is None or self._lock_held()
        )
        if not held and not self.outcome.lock_lost:
            self.outcome.lock_lost = True
            self._log.error(
                "batch.lock_lost",
                reason="the run lock's file was removed and another run took it: stopping",
            )
            self._stop(None)

    async def _deadline_watch(self, scope: anyio.CancelScope) -> None:
        deadline = self._m.limits.deadline
        assert deadline is not None
        at = deadline.resolve(self._run_started)
        with scope:
            await self._sleep(max(0.0, at - self._clock()))
            if not self.stopping:
                self.outcome.deadline_reached = True
                self._log.warning("batch.deadline_reached")
                self._stop(None)

    def _reopen(self, records: dict[str, ItemRecord]) -> None:
        """A rerun retries what is worth retrying and re-polls what timed out while polling.

        ``retry.max_attempts`` bounds the paid tasks of an item over all runs, not per run: a
        batch rerun from cron every hour must not pay for a failing item every hour.
        """
        changed = set(self.outcome.changed)
        for item in self._m.items:
            rec = records[item.id]
            if rec.state in _TASK_STATES and rec.task_id is None:
                # A verdict with no task to stand on (two runs once wrote this ledger at once):
                # found again by its external id, never sent blindly.
                state = ItemState.SUBMITTING if rec.external_task_id else ItemState.PENDING
                self._ledger.reopen(item.id, state)
                continue
            if item.id in changed and self._rerun_changed and rec.state.terminal:
                self._ledger.reopen(item.id, ItemState.PENDING)
                continue
            if rec.state is not ItemState.FAILED or rec.error is None:
                continue
            paid = self._ledger.paid_for(item.id, self._fingerprints.get(item.id))
            if rec.error.category is Category.TIMEOUT and rec.task_id is not None:
                self._ledger.reopen(item.id, ItemState.RUNNING)
            elif rec.error.retryable and paid < self._policy.max_attempts:
                self._ledger.reopen(item.id, ItemState.PENDING)

    async def _known_fingerprints(self, records: dict[str, ItemRecord]) -> None:
        """The current fingerprint of every item the ledger has sent, and which of them
        changed since (their result is not what the manifest asks for now)."""
        for item in self._m.items:
            rec = records[item.id]
            if rec.fingerprint is None:
                continue  # never sent, or recorded by an older version: nothing to compare
            try:
                current = await self._fingerprint(item)
            except OSError:
                continue  # the image is gone: reported when the item is sent again
            if current != rec.fingerprint and rec.state is not ItemState.PENDING:
                self.outcome.changed.append(item.id)
        if self.outcome.changed:
            self._log.warning(
                "batch.items_changed",
                items=len(self.outcome.changed),
                first=self.outcome.changed[:10],
                rerun=self._rerun_changed,
            )

    async def _fingerprint(self, item: Item) -> str:
        """The item's request fingerprint (its local images hashed off the event loop, once
        per file content). OSError when an image cannot be read."""
        found = self._fingerprints.get(item.id)
        if found is None:
            if needs_files(item.request):
                found = await anyio.to_thread.run_sync(
                    fingerprint, item.request, self._hashes.sha256
                )
            else:
                found = fingerprint(item.request, self._hashes.sha256)
            self._fingerprints[item.id] = found
        return found

    async def _item_task(self, item: Item, held: _Held) -> None:
        log = self._log.bind(item=item.id)
        try:
            await self._drive(item, held, log)
        except Exception as exc:
            # A bug must not take the other items down. The ledger row keeps whatever state it
            # had (so a rerun resumes it safely); the error says what happened.
            log.exception("item.crashed", error_type=type(exc).__name__)
            self.outcome.crashed += 1
            self._ledger.record_unresolved(
                item.id,
                ErrorInfo(
                    category=Category.SERVER,
                    message=f"internal error in the orchestrator ({type(exc).__name__})",
                    retryable=True,
                    hint="Please report this with the log file; rerunning resumes the item "
                    "safely (it is looked up before anything is resubmitted).",
                ),
            )
        finally:
            self._slots.release(held.count)
            self.progress.set(item.id, _phase(self._ledger.get(item.id)))

    # -- one item -------------------------------------------------------------------------

    async def _drive(self, item: Item, held: _Held, log: Any) -> None:
        attempts_this_run = 0
        while True:
            rec = self._ledger.get(item.id)
            self.progress.set(item.id, _phase(rec))
            log = log.bind(attempt=rec.attempt, external_task_id=rec.external_task_id)
            task: Task | None = None
            try:
                if rec.state is ItemState.SUBMITTING:
                    assert rec.external_task_id is not None
                    if self._lookups.can_look_up(item.request):
                        log.info("item.reconciling")
                        task = await self._reconcile(
                            item, rec.external_task_id, log, grace=False, answered=False
                        )
                    elif not self._resubmit_unresolved:
                        raise _Unresolved(_unknowable(rec.error))
                    else:
                        self.outcome.resubmitted += 1
                        log.warning("item.resubmitting", reason="--resubmit-unresolved")
                    if task is None:
                        task = await self._create(
                            item, held, rec.attempt, rec.external_task_id, log, resend=True
                        )
                elif rec.state is ItemState.PENDING:
                    if self.stopping:
                        return
                    try:
                        fp = await self._fingerprint(item)
                    except OSError as exc:
                        info = _unreadable_input(exc)
                        self._ledger.finish(item.id, ItemState.FAILED, error=info)
                        log.warning("item.failed", **_error_fields(info))
                        return
                    paid = self._ledger.paid_for(item.id, fp)
                    if (
                        attempts_this_run >= self._policy.max_attempts
                        or paid >= self._policy.max_attempts
                    ):
                        info = _attempts_spent(rec.error, paid)
                        self._ledger.finish(item.id, ItemState.FAILED, error=info)
                        log.warning("item.failed", reason="attempts exhausted",
                                    **_error_fields(info))
                        return
                    if not self._reserve_units(item, log):
                        return
                    attempts_this_run += 1
                    attempt = rec.attempt + 1
                    seq = self._ledger.next_seq(item.id, fp)
                    ext = self._ledger.external_task_id(item.id, seq, fp)
                    log = log.bind(attempt=attempt, external_task_id=ext)
                    task = None
                    if self._adopt and self._ledger.intent_time(ext) is None:
                        task = await self._adopt_existing(item, attempt, ext, fp, seq, log)
                    if task is None:
                        task = await self._create(
                            item, held, attempt, ext, log, resend=False, fp=fp, seq=seq
                        )
                elif rec.state is ItemState.RUNNING:
                    pass
                else:
                    return
            except _Unresolved as exc:
                self._ledger.record_unresolved(item.id, exc.info)
                log.error("item.unresolved", **_error_fields(exc.info))
                return
            rec = self._ledger.get(item.id)
            if rec.state is not ItemState.RUNNING:
                return  # the create ended the item (failed, or not sent because stopping)
            assert rec.task_id is not None
            log = log.bind(task_id=rec.task_id)
            try:
                final = await self._poll(item, rec, log)
            except _PollAbandoned:
                return
            if final is None:
                return
            if final.charged_units is not None:
                self._ledger.record_charge(item.id, final.charged_units)
            if final.status is TaskStatus.FAILED:
                info = final.failure or ErrorInfo(
                    category=Category.TASK_FAILED,
                    message=final.message or "task failed without a reason",
                    retryable=False,
                    hint="Read the provider's message; fix the input before resubmitting.",
                )
                if info.retryable:
                    limit = self._policy.max_attempts
                    if attempts_this_run < limit and rec.tasks_created < limit:
                        self._ledger.record_retry(item.id, info)
                        delay = backoff_delay(self._policy, attempts_this_run, None, self._rand)
                        self.outcome.retries += 1
                        log.warning(
                            "item.task_failed", retry_in=round(delay, 3), **_error_fields(info)
                        )
                        await self._pause(delay)
                        continue
                    info = _attempts_spent(info, rec.tasks_created)
                self._ledger.finish(item.id, ItemState.FAILED, error=info)
                log.warning("item.failed", **_error_fields(info))
                return
            if self._verify(item, final, log) and self._downloader is not None:
                # The task has ended at the provider: its slots are free for others.
                self._slots.release(held.count)
                held.count = 0
                await self._download(item, log)
            return

    def _verify(self, item: Item, task: Task, log: Any) -> bool:
        """Record the verdict on a succeeded task; True when it has assets to download."""
        expected = item.request.expected_assets
        assets = [{"index": a.index, "url": a.url, "media": a.media} for a in task.assets]
        # The ledger keeps the URLs scrubbed of credentials (a proxy may echo the key in them);
        # this run downloads from the ones the provider sent.
        if self._downloader is not None:
            self._live_urls[item.id] = {a.index: a.url for a in task.assets}
        got = len(assets)
        # Until every file is verified on disk the item is not done: a run that ends before
        # its downloads (interrupt, kill) must not report it succeeded.
        pending = downloads_pending() if self._downloader is not None else None
        if got == 0:
            info = asset_mismatch(expected, 0, item.request.kind.media)
            self._ledger.finish(item.id, ItemState.FAILED, assets=assets, error=info)
            log.warning("item.failed", **_error_fields(info))
            return False
        if got < expected:
            info = asset_mismatch(expected, got, item.request.kind.media)
            self._ledger.finish(
                item.id, ItemState.PARTIAL, assets=assets, error=info, download_error=pending
            )
            log.warning("item.partial", expected=expected, got=got)
        else:
            self._ledger.finish(
                item.id, ItemState.SUCCEEDED, assets=assets, download_error=pending
            )
            log.info("item.succeeded", assets=got)
        return True

    # -- downloads ------------------------------------------------------------------------

    def _needs_download(self, rec: ItemRecord) -> bool:
        """A finished item some of whose files are not known to be safely on disk (by the cheap
        check: see _looks_intact)."""
        if self._downloader is None or rec.state not in _FINISHED_WITH_FILES:
            return False
        return rec.download_error is not None or not all(_looks_intact(self._downloader, a)
                                                          for a in rec.assets)

    async def _download_task(self, item: Item) -> None:
        log = self._log.bind(item=item.id)
        try:
            await self._download(item, log, leftovers=True)
        except Exception as exc:
            log.exception("item.crashed", error_type=type(exc).__name__)
            self.outcome.crashed += 1
        finally:
            self.progress.set(item.id, _phase(self._ledger.get(item.id)))

    async def _download(self, item: Item, log: Any, *, leftovers: bool = False) -> None:
        """Put every asset of a finished item safely on disk; a rerun fetches only the files
        that are missing or fail their checksum (hashed when their size or modification time
        changed, or every one with verify_files). Failures are recorded on the item (its
        verdict stays), and the rerun downloads again: the task is never resubmitted for a
        file."""
        downloader = self._downloader
        assert downloader is not None
        rec = self._ledger.get(item.id)
        records = _numbered([dict(a) for a in rec.assets])
        marked = rec.download_error  # what the ledger says about the files right now
        self.progress.set(item.id, "downloading")
        if leftovers:
            # Temporary files of a run killed mid-download (its own cleanup never ran): only
            # an item finished in an earlier run can have them (``leftovers``); a task that
            # ended in this run has had no download yet. None of this item's files is being
            # downloaded now: its downloads are this loop's.
            removed = await downloader.aremove_stale_parts(item.id)
            if removed:
                log.info("item.stale_parts_removed", files=removed)
        error: ErrorInfo | None = None
        fetched = 0
        for n, asset in enumerate(records):
            if not self._verify_files and _looks_intact(downloader, asset):
                continue
            if "sha256" in asset and await downloader.averify(asset):
                # Same bytes (the file was copied or touched): remember its new mtime.
                records[n] = {**asset, "mtime_ns": _mtime_ns(downloader, str(asset["path"]))}
                continue
            if "sha256" in asset:
                log.info("item.file_changed", index=asset.get("index"), path=asset.get("path"))
            if marked is None:
                # A recorded file is missing or changed: not done until it is back.
                marked = downloads_pending()
                self._ledger.record_assets(item.id, records, marked)
            try:
                got = await self._fetch(item, rec, asset, log)
            except DownloadError as exc:
                error = exc.info
                log.warning("item.download_failed", index=asset.get("index"),
                            **_error_fields(exc.info))
                if exc.stops_batch:
                    # This machine's disk, not the item: every further download (and most
                    # other writes) would fail the same way. No new submissions; the rerun
                    # downloads what is missing, and the CLI says what to free.
                    if not self.stopping:
                        self._log.error("batch.stopping", hint=exc.info.hint,
                                        **_error_fields(exc.info))
                        self._stop(None)
                    break
                continue
            except (KeyError, TypeError, ValueError, OSError) as exc:
                # The downloader classifies its own failures; this is a damaged asset record
                # or a bug. A classified failure of this item's files, not a crash: the
                # verdict stands and the task is never resubmitted for a file.
                error = _unreadable_asset(asset, exc)
                log.warning("item.download_failed", index=asset.get("index"), exc_info=True,
                            error_type=type(exc).__name__, **_error_fields(error))
                continue
            records[n] = {**asset, **got.to_dict(), "mtime_ns": _mtime_ns(downloader, got.path)}
            fetched += 1
            # Recorded per file: a crash mid-item keeps the files already checked (those of
            # the last second may be fetched again: a cost, not a loss).
            self._ledger.record_assets(item.id, records, marked)
        if records != rec.assets or error != rec.download_error:
            self._ledger.record_assets(item.id, records, error)
        self._live_urls.pop(item.id, None)
        if error is None:
            log.info("item.downloaded", files=len(records), fetched=fetched)

    async def _fetch(
        self, item: Item, rec: ItemRecord, asset: dict[str, Any], log: Any
    ) -> DownloadedAsset:
        """One asset. A URL that is expired or refused, or still failing after the downloader's
        retries (a host that moved: the demo's simulator restarted elsewhere), gets one fresh
        URL from a new task query; a failure that is ours (disk) or final is not retried."""
        downloader = self._downloader
        assert downloader is not None and rec.task_id is not None
        index = int(asset["index"])
        media = str(asset.get("media") or item.request.kind.media)
        live = self._live_urls.setdefault(item.id, {})
        url = live.get(index) or str(asset["url"])
        try:
            return await downloader.download(item.id, index, url, media)
        except DownloadError as exc:
            if exc.local or not (exc.expired or exc.info.retryable):
                raise
            log.info("item.url_expired" if exc.expired else "item.url_refresh", index=index)
            self.outcome.requests["query"] += 1
            try:
                task = await self._provider.query(item.request, rec.task_id)
            except ProviderError:
                raise exc from None
            fresh = {a.index: a.url for a in task.assets}
            if not valid_asset_indexes(fresh.keys()) or len(fresh) != len(task.assets):
                fresh = {n: a.url for n, a in enumerate(task.assets)}  # as _numbered does
            if index not in fresh or (not exc.expired and fresh[index] == url):
                raise  # the same URL already had all its retries
            asset["url"] = live[index] = fresh[index]
            self.outcome.retries += 1  # the download again, from the fresh URL
            return await downloader.download(item.id, index, fresh[index], media)

    async def _pause(self, delay: float) -> None:
        """A backoff wait that ends early when the batch stops (nothing new will be sent)."""
        stop = self._stop_event
        assert stop is not None
        if stop.is_set():
            return
        async with anyio.create_task_group() as tg:

            async def until_stop() -> None:
                await stop.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(until_stop)
            await self._sleep(delay)
            tg.cancel_scope.cancel()

    # -- create ---------------------------------------------------------------------------

    async def _create(
        self,
        item: Item,
        held: _Held,
        attempt: int,
        ext: str,
        log: Any,
        *,
        resend: bool,
        fp: str | None = None,
        seq: int | None = None,
    ) -> Task | None:
        """Send the create for ``attempt``, recording the intent before every send.

        Returns the task (ledger: running), or None when the item ended here (failed, or left
        pending because the batch is stopping).
        """
        tries = 0
        last_error: ErrorInfo | None = None
        retry_after: float | None = None
        while True:
            await self._limiter.acquire()
            if self.stopping:
                if resend:
                    self._ledger.record_not_created(item.id, last_error)
                log.info("item.not_sent", reason="batch stopping")
                return None
            # On disk before the request leaves (one commit serves every intent written in the
            # same turn); also stamps the send time that bounds how long a lookup must wait
            # before "absent" is conclusive.
            self._ledger.record_intent(item.id, attempt, ext, fp, seq)
            await self._ledger.durable()
            self.progress.set(item.id, "submitting")
            log.info("item.submit", resend=resend)
            self.outcome.requests["create"] += 1
            epoch = self._adaptive.epoch
            over_capacity = False
            try:
                # A create in flight is allowed to finish and be recorded even on SIGINT:
                # cancelling it would leave a paid task we know nothing about.
                with anyio.CancelScope(shield=True):
                    task = await self._provider.create(item.request, ext)
                    self._ledger.record_submitted(item.id, task.task_id)
                self.progress.set(item.id, "running")
                log.info("item.submitted", task_id=task.task_id, request_id=task.request_id)
                self._budget.on_success()
                self._adaptive.on_accepted()
                return task
            except ProviderError as err:
                info = err.info
                last_error = info
                retry_after = err.retry_after
                over_capacity = err.over_capacity
                log.warning(
                    "item.create_failed",
                    request_id=err.request_id,
                    ambiguous=err.ambiguous,
                    sent=err.sent,
                    **_error_fields(info),
                )
                self._charge(info)
                if err.exists:
                    # The provider refused the create because a task with this external id
                    # exists: it is paid for, and ours. Find it and poll it; never resend.
                    return await self._find_existing(item, ext, log)
                if over_capacity and self._adaptive.on_over_capacity(epoch):
                    log.warning(
                        "limits.concurrency_lowered",
                        cap=self._adaptive.cap,
                        configured=self._m.limits.concurrency,
                    )
                if err.ambiguous and not self._lookups.can_look_up(item.request):
                    # Never resent on its own: the job may exist and be paid for.
                    raise _Unresolved(_unknowable(info)) from None
                if err.ambiguous:
                    found = await self._reconcile(
                        item, ext, log, grace=True, answered=info.http_status is not None
                    )
                    if found is not None:
                        return found
                    # Absent: the create never took effect; it may be sent again.
                elif info.scope is Scope.ACCOUNT:
                    self._ledger.record_not_created(item.id, info)
                    self._stop(info)
                    return None
                elif not info.retryable:
                    self._ledger.finish(item.id, ItemState.FAILED, error=info)
                    log.warning("item.failed", **_error_fields(info))
                    return None
            tries += 1
            assert last_error is not None
            if tries >= self._policy.max_attempts:
                self._ledger.finish(item.id, ItemState.FAILED, error=last_error)
                log.warning("item.failed", retries_exhausted=True, **_error_fields(last_error))
                return None
            if not self._may_retry(last_error):
                denied = _budget_spent(last_error)
                self._ledger.finish(item.id, ItemState.FAILED, error=denied)
                log.warning("item.failed", retry_denied=True, **_error_fields(denied))
                return None
            delay = backoff_delay(self._policy, tries, retry_after, self._rand)
            self.outcome.retries += 1
            log.info("item.retry_scheduled", delay=round(delay, 3), retry=tries)
            if over_capacity:
                # Wait for a slot under the (lowered) cap like everyone else, so that the cut
                # takes effect instead of every holder hammering the provider again.
                self._slots.release(held.count)
                held.count = 0
            await self._pause(delay)
            if held.count == 0:
                try:
                    held.count = await self._slots.acquire(item.request.expected_assets)
                except PoolClosed:
                    self._ledger.record_not_created(item.id, last_error)
                    log.info("item.not_sent", reason="batch stopping")
                    return None
            resend = True

    def _charge(self, info: ErrorInfo) -> None:
        if info.category in _BUDGETED:
            self._budget.on_failure()

    def _account(self, info: ErrorInfo | None) -> None:
        """The retry budget's view of one poll request (answered, or failed with ``info``)."""
        if info is None:
            self._budget.on_success()
        else:
            self._charge(info)

    def _may_retry(self, info: ErrorInfo) -> bool:
        return info.category not in _BUDGETED or self._budget.allow()

    def _lookup_failed(self, err: ProviderError, log: Any) -> None:
        """A lookup that failed: logged and charged to the retry budget; an account-level
        failure stops the batch and leaves the item unresolved (raises _Unresolved)."""
        log.warning("item.lookup_failed", request_id=err.request_id, **_error_fields(err.info))
        self._charge(err.info)
        if err.info.scope is Scope.ACCOUNT:
            self._stop(err.info)
            raise _Unresolved(err.info) from None

    async def _adopt_existing(
        self, item: Item, attempt: int, ext: str, fp: str, seq: int, log: Any
    ) -> Task | None:
        """Before the first create of a request this ledger does not know, in a batch that ran
        without it: the task an earlier run made under the same external id, adopted (recorded
        and polled); None when its absence is proven (the create may be sent). Raises
        _Unresolved when the lookup can prove neither: nothing may be sent then."""
        try:
            found = await self._lookups.lookup(item.request, ext, sent_after=self._adopt_since)
            settled = self._adopt_settled_at
            if found is None and settled is not None and self._clock() < settled:
                # The killed run may have had this very create in flight: absent only once it
                # could no longer commit.
                await self._sleep(settled - self._clock())
                found = await self._lookups.lookup(
                    item.request, ext, sent_after=self._adopt_since
                )
        except ProviderError as err:
            self._lookup_failed(err, log)
            raise _Unresolved(
                replace(
                    err.info,
                    message="the batch ran before without this state file, and whether this "
                    f"item's task exists could not be established: {err.info.message}",
                    retryable=True,
                    hint="Nothing was sent. Rerun the manifest to look it up again (or restore "
                    "the state file the earlier runs used).",
                )
            ) from None
        if found is None:
            return None
        self._ledger.record_intent(item.id, attempt, ext, fp, seq)
        self._ledger.record_submitted(item.id, found.task_id)
        self.outcome.adopted += 1
        self.progress.set(item.id, "running")
        log.info("item.adopted", task_id=found.task_id)
        return found

    async def _find_existing(self, item: Item, ext: str, log: Any) -> Task:
        """The task the provider says exists under ``ext``: looked up until a read shows it.

        Reads by external id may lag behind the create (even a list may not show it yet, and so
        "prove" it absent): only a read that finds the task ends the search. After
        ``retry.lookup_timeout`` the item is left unresolved (raises _Unresolved): nothing is
        resent, and the next run looks again.
        """
        sent_after = self._ledger.intent_time(ext)
        deadline = self._clock() + self._m.retry.lookup_timeout
        log.warning("item.exists", reason="the provider says a task with this external id exists")
        looks = 0
        last: ErrorInfo | None = None
        while True:
            looks += 1
            try:
                found = await self._lookups.lookup(item.request, ext, sent_after=sent_after)
            except ProviderError as err:
                self._lookup_failed(err, log)
                last = err.info
                found = None
            if found is not None:
                self._budget.on_success()
                self._ledger.record_submitted(item.id, found.task_id)
                self.progress.set(item.id, "running")
                log.info("item.reconciled", found=True, task_id=found.task_id, looks=looks)
                return found
            delay = min(self._m.retry.max_delay, self._m.retry.lookup_grace * 2 ** min(looks, 16))
            if self.stopping or self._clock() + delay > deadline:
                waited = self._m.retry.lookup_timeout
                raise _Unresolved(
                    ErrorInfo(
                        category=last.category if last is not None else Category.SERVER,
                        code=last.code if last is not None else None,
                        http_status=last.http_status if last is not None else None,
                        message=f"the provider says a task with external_task_id {ext} exists "
                        f"(so it is paid for), but {looks} lookups in {waited:g} s did not show "
                        "it",
                        retryable=True,
                        hint="Nothing was resubmitted. Rerun the manifest to look it up again "
                        "(reads can lag behind creates), or find the task in the provider's "
                        "console by its external_task_id.",
                    )
                )
            await self._sleep(delay)

    async def _reconcile(
        self, item: Item, ext: str, log: Any, *, grace: bool, answered: bool
    ) -> Task | None:
        """Look an ambiguous create up by external id.

        Returns the task (recorded as running), or None once it was absent on ``LOOKUPS``
        lookups a grace period apart. When the create got no answer (timeout, dropped
        connection, a run killed mid-request) it may still be in flight at the server, even
        past the moment the client gave up; absence then counts only once twice the client
        timeout (plus the grace) has passed since the send. Waiting costs seconds on a rare
        path; resending too early costs a paid task. Raises _Unresolved when the provider
        cannot answer: then nothing may be sent.
        """
        grace_s = self._m.retry.lookup_grace
        # No task with this external id can predate its first intent: a provider listing tasks
        # newest first may stop reading there, however old the create is (a rerun after a crash).
        sent_after = self._ledger.intent_time(ext)
        settled_at = 0.0
        if not answered:
            sent_at = self._ledger.get(item.id).submitted_at or self._clock()
            settled_at = sent_at + IN_FLIGHT_TIMEOUTS * self._m.provider.timeout + grace_s
            restarted = self._provider_started_at
            if restarted is not None and sent_at < restarted:
                settled_at = 0.0  # sent to a server that is gone: nothing of it is in flight
        if grace:
            await self._sleep(grace_s)
        looks = 0
        errors = 0
        while True:
            try:
                found = await self._lookups.lookup(item.request, ext, sent_after=sent_after)
            except ProviderError as err:
                self._lookup_failed(err, log)
                errors += 1
                if (
                    errors >= self._policy.max_attempts
                    or not err.info.retryable
                    or not self._may_retry(err.info)
                ):
                    raise _Unresolved(
                        ErrorInfo(
                            category=err.info.category,
                            code=err.info.code,
                            http_status=err.info.http_status,
                            message=f"could not confirm whether the create took effect: "
                            f"{err.info.message}",
                            retryable=True,
                            hint="Rerun the manifest: the task is looked up again by its "
                            "external id before anything is resubmitted.",
                        )
                    ) from None
                self.outcome.retries += 1
                await self._sleep(backoff_delay(self._policy, errors, err.retry_after, self._rand))
                continue
            if found is not None:
                self._budget.on_success()
                self._ledger.record_submitted(item.id, found.task_id)
                self.progress.set(item.id, "running")
                log.info("item.reconciled", found=True, task_id=found.task_id)
                return found
            # An answered lookup that finds nothing is not the provider recovering: no refund.
            looks += 1
            if looks >= LOOKUPS and self._clock() >= settled_at:
                log.info("item.reconciled", found=False)
                return None
            # Every further lookup is a retry paid for by the failure: it draws on the budget,
            # so a provider failing every create is not stormed with lookups either.
            self._budget.on_failure()
            if not self._budget.allow():
                raise _Unresolved(_lookups_denied(ext))
            # Reads may lag a commit, and a create may still be in flight: absence right
            # after a send is not proof.
            await self._sleep(max(grace_s, settled_at - self._clock()))

    # -- poll -----------------------------------------------------------------------------

    async def _poll(self, item: Item, rec: ItemRecord, log: Any) -> Task | None:
        life = _Life(since=self._clock())
        try:
            return await self._poll_to_end(item, rec, log, life)
        finally:
            self._measure(item, life)

    def _measure(self, item: Item, life: _Life) -> None:
        """The task's life at the provider, by its own clock when it gives both ends."""
        slots = item.request.expected_assets
        final = life.final
        if final is not None and final.created_at is not None and final.ended_at is not None:
            self._meter.record(final.created_at, final.ended_at, slots)
        elif life.seen_running is not None:
            self._meter.record(life.since, life.seen_running, slots)

    async def _poll_to_end(
        self, item: Item, rec: ItemRecord, log: Any, life: _Life
    ) -> Task | None:
        poll = self._m.poll
        assert rec.task_id is not None
        started = rec.submitted_at if rec.submitted_at is not None else self._clock()
        # A task resumed long after submission still gets polled before it can time out.
        deadline = max(started + poll.timeout, self._clock() + poll.max_interval)
        interval = poll.interval
        not_found = 0
        #: the polls since the provider last answered with a task, and the last failure
        failing = 0
        last_failure: ErrorInfo | None = None
        while True:
            delay_hint: float | None = None
            try:
                task = await self._poller.observe(item.request, rec.task_id, interval)
            except ProviderError as err:
                failing += 1
                last_failure = err.info
                if err.info.scope is Scope.ACCOUNT:
                    self._stop(err.info)
                    log.warning("item.poll_abandoned", **_error_fields(err.info))
                    raise _PollAbandoned from None
                if err.not_found:
                    not_found += 1
                    if not_found >= MAX_NOT_FOUND:
                        info = ErrorInfo(
                            category=Category.SERVER,
                            code=err.info.code,
                            http_status=err.info.http_status,
                            message=f"task {rec.task_id} is no longer found by the provider",
                            retryable=False,
                            hint="Contact the provider's support with the task id; it is not "
                            "resubmitted automatically so that it is not paid twice.",
                        )
                        self._ledger.finish(item.id, ItemState.FAILED, error=info)
                        log.warning("item.failed", **_error_fields(info))
                        return None
                else:
                    not_found = 0
                log.info("item.poll_failed", request_id=err.request_id, **_error_fields(err.info))
                delay_hint = err.retry_after
            else:
                not_found = failing = 0
                last_failure = None
                if task.status.finished:
                    life.final = task
                    return task
                life.seen_running = self._clock()
            if self._clock() > deadline:
                if last_failure is not None:
                    # Not a task still running: its answers could not be read. Say so, and
                    # keep it running for the next run to poll (it exists: never resent).
                    info = _unreadable_task(rec.task_id, failing, last_failure)
                    self._ledger.record_unresolved(item.id, info)
                    log.warning("item.unresolved", **_error_fields(info))
                    return None
                info = poll_timeout_error(poll.timeout)
                self._ledger.finish(item.id, ItemState.FAILED, error=info)
                log.warning("item.failed", **_error_fields(info))
                return None
            interval = min(interval * POLL_GROWTH, poll.max_interval)
            if delay_hint is not None:
                interval = max(interval, min(delay_hint, self._policy.max_retry_after))
