"""The per-item state machine: each item driven from its ledger state to a terminal state.

The engine is the one retry layer: providers send exactly one request per call and raise
``ProviderError``; from ``ErrorInfo`` alone the engine decides whether to retry (full-jitter
backoff that honours Retry-After), to settle an ambiguous create first, to fail the item, or to
stop the whole batch (account-scope errors). Its parts each hold one concern:

* :mod:`.admission`: slots, the create rate, the units cap, the deadline, the account check,
  the run's lock;
* :mod:`.submission`: creates, and the settlement of a lost create the provider's capabilities
  choose (look the task up by external id, or hold the item unresolved);
* :mod:`.tracking`: polling a known task to its end;
* :mod:`.collection`: verifying what a task returned and putting it on disk.

Never paying twice rests on three rules:
1. the ledger records the intent (with the external id) before a create is sent;
2. a create whose outcome is ambiguous is settled before anything is sent again: looked up by
   external id (after a grace period, twice) and re-sent only when the task is absent, or,
   where tasks cannot be looked up, held unresolved until the user asks for a resend;
3. a task id, once known, is only ever polled, never resubmitted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping
from typing import Any

import anyio
import anyio.to_thread

from orchestrator.config import Item, Manifest
from orchestrator.downloads import Downloader
from orchestrator.engine import verdicts
from orchestrator.engine.admission import Admission
from orchestrator.engine.batch import Batch, Held, RunOutcome, error_fields
from orchestrator.engine.collection import FINISHED_WITH_FILES, Collector
from orchestrator.engine.submission import Submitter
from orchestrator.engine.tracking import PollAbandoned, Tracker
from orchestrator.engine.verdicts import Unresolved
from orchestrator.errors import Category, downloads_pending, is_downloads_pending
from orchestrator.fingerprint import FileHashes, fingerprint, needs_files
from orchestrator.ledger_api import BatchLedger, ItemRecord, ItemState
from orchestrator.lookups import LookupBatcher
from orchestrator.progress import Progress, Snapshot
from orchestrator.providers.base import AccountChecker, Provider, Task, TaskStatus
from orchestrator.retry import Retry, next_step

#: The progress phase an item is in, from its ledger state.
_PHASE_OF = {
    ItemState.PENDING: "queued",
    ItemState.SUBMITTING: "submitting",
    ItemState.RUNNING: "running",
    ItemState.SUCCEEDED: "done",
    ItemState.PARTIAL: "partial",
    ItemState.FAILED: "failed",
}
#: Ledger states that stand on a task id (the task runs, or returned files).
_TASK_STATES = (*FINISHED_WITH_FILES, ItemState.RUNNING)


def _phase(rec: ItemRecord) -> str:
    """The progress phase of an item, as the report will call it: a finished task whose files
    are not on disk is not done."""
    if rec.download_error is not None and rec.state in FINISHED_WITH_FILES:
        return "downloading" if is_downloads_pending(rec.download_error) else "failed"
    return _PHASE_OF[rec.state]


def _standing(records: Iterable[ItemRecord]) -> dict[str, int]:
    """Where a batch stands: its items by what is left to do for them."""
    counts = dict.fromkeys(("done", "to download", "running", "to send", "failed"), 0)
    for rec in records:
        if rec.state in FINISHED_WITH_FILES:
            counts["to download" if rec.download_error is not None else "done"] += 1
        elif rec.state in (ItemState.SUBMITTING, ItemState.RUNNING):
            counts["running"] += 1
        elif rec.state is ItemState.PENDING:
            counts["to send"] += 1
        else:
            counts["failed"] += 1
    return counts


class Engine:
    def __init__(
        self,
        manifest: Manifest,
        provider: Provider,
        ledger: BatchLedger,
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
        retry_failed: Collection[str] | None = None,
        force: bool = False,
        only: Collection[str] | None = None,
        lock_held: Callable[[], bool] | None = None,
        on_resume: Callable[[Mapping[str, int]], None] | None = None,
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

        ``retry_failed``: failed items given a new attempt whatever their failure (a policy
        refusal the user has dealt with, say): the ids named, or every failed item when empty.
        Within ``retry.max_attempts`` over all runs; ``force``: one attempt more past it.

        ``only``: this run sends, polls and downloads these items alone; the others are left as
        they are (the report still describes the whole batch).

        ``on_resume``: told, when the ledger already knows some items, where the batch
        stands as this run starts (done, to download, running, to send, failed: item
        counts).

        ``lock_held``: called every second; False means another run took the batch's lock (its
        file was removed and recreated): the run stops submitting at once."""
        self._m = manifest
        self._b = Batch(manifest, provider, ledger, rand=rand, sleep=sleep, clock=clock)
        self._rerun_changed = rerun_changed
        self._retry_failed = None if retry_failed is None else frozenset(retry_failed)
        self._force = force
        #: items allowed one attempt past retry.max_attempts in this run (``force``)
        self._forced: set[str] = set()
        self._only = None if only is None else frozenset(only)
        self._on_resume = on_resume
        self._fingerprints: dict[str, str] = {}
        self._hashes = FileHashes()
        self._admission = Admission(self._b, lock_held=lock_held)
        self._submitter = Submitter(
            self._b,
            self._admission,
            LookupBatcher(provider, self._b.outcome.requests),
            provider_started_at=provider_started_at,
            adopt=adopt,
            adopt_since=adopt_since,
            adopt_settled_at=adopt_settled_at,
            resubmit_unresolved=resubmit_unresolved,
        )
        self._tracker = Tracker(self._b)
        self._collector = Collector(self._b, downloader, verify_files=verify_files)
        self._cancel: anyio.CancelScope | None = None

    @property
    def outcome(self) -> RunOutcome:
        return self._b.outcome

    @property
    def progress(self) -> Progress:
        return self._b.progress

    def snapshot(self) -> Snapshot:
        """Where the batch stands and what limit holds it back, for the progress view."""
        return self._b.progress.snapshot(self._admission.pressure())

    @property
    def stopping(self) -> bool:
        return self._b.stopping

    def interrupt(self) -> None:
        """SIGINT/SIGTERM: stop submitting, abandon polls (tasks stay running in the ledger).

        A create already in flight finishes and its task id is recorded (shielded).
        """
        self._b.outcome.interrupted = True
        self._b.log.warning("batch.interrupted")
        if self._b.started:
            self._b.stop(None)
        if self._cancel is not None:
            self._cancel.cancel()

    def units_estimate(self) -> dict[str, Any]:
        return self._admission.units_estimate()

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> RunOutcome:
        async with self._b.ledger.attached():
            return await self._run()

    async def _run(self) -> RunOutcome:
        b, m, ledger = self._b, self._m, self._b.ledger
        outcome = b.outcome
        b.begin()
        run_started = b.clock()
        downloads_before = self._collector.counts()
        ledger.sync_items(
            (item.id, str(item.request.kind), item.request.expected_assets) for item in m.items
        )
        # Streamed into one dict (100,000 records are tens of MB: never two copies at once).
        records = {r.id: r for r in ledger.iter_items()}
        self._hashes = FileHashes(ledger.file_hashes())
        await self._known_fingerprints(records)
        self._admission.open()
        self._reopen(records)
        del records
        records = {r.id: r for r in ledger.iter_items()}
        for item in m.items:
            b.progress.set(item.id, _phase(records[item.id]), initial=True)
        if self._on_resume is not None:
            standing = _standing(records.values())
            if standing["to send"] < len(records):
                self._on_resume(standing)
        b.log.info(
            "batch.started",
            items=len(m.items),
            concurrency=m.limits.concurrency,
            requests_per_minute=m.limits.requests_per_minute,
        )
        chosen = [i for i in m.items if self._only is None or i.id in self._only]
        in_flight = [
            i for i in chosen
            if records[i.id].state in (ItemState.SUBMITTING, ItemState.RUNNING)
        ]
        pending = [i for i in chosen if records[i.id].state is ItemState.PENDING]
        to_fetch = [i for i in chosen if self._collector.needs_download(records[i.id])]
        for item in to_fetch:
            rec = records[item.id]
            if rec.download_error is None:
                # Not done until its files are back on disk, even if this run ends first.
                ledger.record_assets(item.id, rec.assets, downloads_pending())
        if self._collector.verifies_every_file:
            # The others look intact: hashed, and marked only if one turns out not to be.
            fetching = {i.id for i in to_fetch}
            to_fetch += [
                i for i in chosen
                if i.id not in fetching and records[i.id].state in FINISHED_WITH_FILES
            ]
        del records  # a record per item: not held for the whole run
        with anyio.CancelScope() as scope:
            self._cancel = scope
            async with anyio.create_task_group() as tg:
                watcher = anyio.CancelScope()
                if m.limits.deadline is not None:
                    tg.start_soon(self._admission.deadline_watch, watcher, run_started)
                background = anyio.CancelScope()
                tg.start_soon(self._background, background)
                if isinstance(b.provider, AccountChecker) and pending:
                    tg.start_soon(self._admission.check_account)
                async with anyio.create_task_group() as items:
                    # Finished tasks whose files are missing or damaged: downloads only.
                    for item in to_fetch:
                        items.start_soon(self._download_task, item)
                    # Tasks from an earlier run already hold provider slots: count them at once.
                    for item in in_flight:
                        items.start_soon(self._item_task, item, self._admission.resume(item))

                    async def start(item: Item, held: Held) -> None:
                        items.start_soon(self._item_task, item, held)

                    await self._admission.admit(pending, start)
                watcher.cancel()
                background.cancel()
        self._collector.count_since(downloads_before)
        ledger.remember_file_hashes(self._hashes.learnt)
        outcome.peak_slots = b.slots.peak
        outcome.retries_denied = b.budget.denied
        if m.limits.max_units is not None:
            outcome.units_submitted = self._admission.units_spent
        outcome.concurrency = b.concurrency_figures()
        b.log.info(
            "batch.finished",
            interrupted=outcome.interrupted,
            stopped=outcome.stopped_by is not None,
            requests=dict(outcome.requests),
            retries=outcome.retries,
        )
        return outcome

    async def _background(self, scope: anyio.CancelScope) -> None:
        """The poll scheduler and the ledger's periodic commit, until the items are done."""
        with scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._tracker.poller.run)
                tg.start_soon(self._admission.commit_often)

    def _reopen(self, records: dict[str, ItemRecord]) -> None:
        """A rerun retries what is worth retrying and re-polls what timed out while polling.

        ``retry.max_attempts`` bounds the paid tasks of an item over all runs, not per run: a
        batch rerun from cron every hour must not pay for a failing item every hour.
        """
        ledger = self._b.ledger
        changed = set(self._b.outcome.changed)
        for item in self._m.items:
            rec = records[item.id]
            if rec.state in _TASK_STATES and rec.task_id is None:
                # A verdict with no task to stand on (two runs once wrote this ledger at once):
                # found again by its external id, never sent blindly.
                state = ItemState.SUBMITTING if rec.external_task_id else ItemState.PENDING
                ledger.reopen(item.id, state)
                continue
            if item.id in changed and self._rerun_changed and rec.state.terminal:
                ledger.reopen(item.id, ItemState.PENDING)
                continue
            if rec.state is not ItemState.FAILED or rec.error is None:
                continue
            if self._only is not None and item.id not in self._only:
                continue
            paid = ledger.paid_for(item.id, self._fingerprints.get(item.id))
            asked = self._retry_failed is not None and (
                not self._retry_failed or item.id in self._retry_failed
            )
            if asked and (paid < self._b.policy.max_attempts or self._force):
                if paid >= self._b.policy.max_attempts:
                    self._forced.add(item.id)
                self._b.log.info("item.retry_requested", item=item.id, paid=paid,
                                 forced=item.id in self._forced)
                ledger.reopen(item.id, ItemState.PENDING)
            elif rec.error.category is Category.TIMEOUT and rec.task_id is not None:
                ledger.reopen(item.id, ItemState.RUNNING)
            elif rec.error.retryable and paid < self._b.policy.max_attempts:
                ledger.reopen(item.id, ItemState.PENDING)

    async def _known_fingerprints(self, records: dict[str, ItemRecord]) -> None:
        """The current fingerprint of every item the ledger has sent, and which of them
        changed since (their result is not what the manifest asks for now)."""
        changed = self._b.outcome.changed
        for item in self._m.items:
            rec = records[item.id]
            if rec.fingerprint is None:
                continue  # never sent, or recorded by an older version: nothing to compare
            try:
                current = await self._fingerprint(item)
            except OSError:
                continue  # the image is gone: reported when the item is sent again
            if current != rec.fingerprint and rec.state is not ItemState.PENDING:
                changed.append(item.id)
        if changed:
            self._b.log.warning(
                "batch.items_changed",
                items=len(changed),
                first=changed[:10],
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

    async def _item_task(self, item: Item, held: Held) -> None:
        b = self._b
        log = b.log.bind(item=item.id)
        try:
            await self._drive(item, held, log)
        except Exception as exc:
            # A bug must not take the other items down. The ledger row keeps whatever state it
            # had (so a rerun resumes it safely); the error says what happened.
            log.exception("item.crashed", error_type=type(exc).__name__)
            b.outcome.crashed += 1
            b.ledger.record_unresolved(item.id, verdicts.internal_error(exc))
        finally:
            b.task_ended(item.id)
            b.release(held)
            b.progress.set(item.id, _phase(b.ledger.get(item.id)))

    async def _download_task(self, item: Item) -> None:
        b = self._b
        log = b.log.bind(item=item.id)
        try:
            await self._collector.download(item, log, leftovers=True)
        except Exception as exc:
            log.exception("item.crashed", error_type=type(exc).__name__)
            b.outcome.crashed += 1
        finally:
            b.progress.set(item.id, _phase(b.ledger.get(item.id)))

    # -- one item -------------------------------------------------------------------------

    async def _drive(self, item: Item, held: Held, log: Any) -> None:
        b = self._b
        ledger = b.ledger
        attempts_this_run = 0
        while True:
            rec = ledger.get(item.id)
            b.progress.set(item.id, _phase(rec))
            log = log.bind(attempt=rec.attempt, external_task_id=rec.external_task_id)
            #: the task's result, when the create's answer carried it (nothing to poll)
            result: Task | None = None
            try:
                if rec.state is ItemState.SUBMITTING:
                    assert rec.external_task_id is not None
                    result = await self._submitter.resume(
                        item, held, rec.attempt, rec.external_task_id, rec.error, log
                    )
                elif rec.state is ItemState.PENDING:
                    if b.stopping:
                        return
                    try:
                        fp = await self._fingerprint(item)
                    except OSError as exc:
                        info = verdicts.unreadable_input(exc)
                        ledger.finish(item.id, ItemState.FAILED, error=info)
                        log.warning("item.failed", **error_fields(info))
                        return
                    paid = ledger.paid_for(item.id, fp)
                    limit = b.policy.max_attempts
                    if item.id in self._forced and attempts_this_run == 0:
                        limit = paid + 1  # --force: one attempt past retry.max_attempts
                    if attempts_this_run >= limit or paid >= limit:
                        info = verdicts.attempts_spent(rec.error, paid)
                        ledger.finish(item.id, ItemState.FAILED, error=info)
                        log.warning("item.failed", reason="attempts exhausted",
                                    **error_fields(info))
                        return
                    if not self._admission.reserve_units(item, log):
                        return
                    attempts_this_run += 1
                    attempt = rec.attempt + 1
                    seq = ledger.next_seq(item.id, fp)
                    ext = ledger.external_task_id(item.id, seq, fp)
                    log = log.bind(attempt=attempt, external_task_id=ext)
                    result = await self._submitter.submit(
                        item, held, attempt, ext, fp, seq, log
                    )
                elif rec.state is not ItemState.RUNNING:
                    return
            except Unresolved as exc:
                ledger.record_unresolved(item.id, exc.info)
                log.error("item.unresolved", **error_fields(exc.info))
                return
            rec = ledger.get(item.id)
            if rec.state is not ItemState.RUNNING:
                return  # the create ended the item (failed, or not sent because stopping)
            assert rec.task_id is not None
            log = log.bind(task_id=rec.task_id)
            try:
                if result is not None:
                    final: Task | None = result
                    self._tracker.ended(item, result)
                else:
                    final = await self._tracker.until_end(item, rec, log)
            except PollAbandoned:
                return
            if final is None:
                return
            if final.charged_units is not None:
                ledger.record_charge(item.id, final.charged_units)
            if final.status is TaskStatus.FAILED:
                info = final.failure or verdicts.task_failed(final.message)
                if info.retryable:
                    # A new paid attempt: bounded by max_attempts in this run and over all runs.
                    step = next_step(b.policy, attempts_this_run, info, None, b.rand)
                    if isinstance(step, Retry) and rec.tasks_created < b.policy.max_attempts:
                        ledger.record_retry(item.id, info)
                        b.outcome.retries += 1
                        log.warning(
                            "item.task_failed", retry_in=round(step.delay, 3),
                            **error_fields(info)
                        )
                        await b.pause(step.delay)
                        continue
                    info = verdicts.attempts_spent(info, rec.tasks_created)
                ledger.finish(item.id, ItemState.FAILED, error=info)
                log.warning("item.failed", **error_fields(info))
                return
            if self._collector.verify(item, final, log) and self._collector.downloads:
                # The task has ended at the provider: its slots are free for others.
                b.release(held)
                await self._collector.download(item, log)
            return
