"""Tracking: a task, once its id is known, polled until it ends (never resubmitted).

Status reads go through the poller the provider's capabilities choose: one list or batch read
answering for every task of a family due at once, or one read per task. A task still running
after ``poll.timeout`` fails as a timeout (the next run polls it again); a task whose answers
cannot be read is said so, with the cause; a task the provider no longer finds fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.config import Item
from orchestrator.engine import verdicts
from orchestrator.engine.batch import Batch, error_fields
from orchestrator.errors import ErrorInfo, ProviderError, Scope
from orchestrator.errors import poll_timeout as poll_timeout_error
from orchestrator.ledger_api import ItemRecord, ItemState
from orchestrator.poller import ListPoller, Poller, QueryPoller
from orchestrator.providers.base import BatchReader, Task, TaskLister

#: Growth of the poll interval between two polls of one task (up to poll.max_interval).
POLL_GROWTH = 1.5
#: A known task id answered "not found" this many polls in a row is given up on.
MAX_NOT_FOUND = 3


@dataclass
class _Life:
    """What polling learnt of a task's life at the provider, for the concurrency meter."""

    since: float
    seen_running: float | None = None
    final: Task | None = None


class PollAbandoned(Exception):
    """Polling stopped without a verdict (the batch is stopping); the task stays running."""


class Tracker:
    def __init__(self, batch: Batch) -> None:
        self._b = batch
        provider = batch.provider
        outcome = batch.outcome
        self.poller: Poller
        if isinstance(provider, TaskLister | BatchReader):
            self.poller = ListPoller(
                provider,
                window=batch.manifest.poll.interval,
                clock=batch.clock,
                sleep=batch.sleep,
                requests=outcome.requests,
                account=batch.account,
            )
        else:
            self.poller = QueryPoller(
                provider, sleep=batch.sleep, requests=outcome.requests, account=batch.account
            )

    async def until_end(self, item: Item, rec: ItemRecord, log: Any) -> Task | None:
        """The task's final state, or None when the item ended otherwise (recorded). Raises
        PollAbandoned when the batch stops on an account-level failure."""
        life = _Life(since=self._b.clock())
        try:
            return await self._poll_to_end(item, rec, log, life)
        finally:
            self._measure(item, life)

    def ended(self, item: Item, task: Task) -> None:
        """A task whose end came with its create's answer: measured, not polled."""
        self._measure(item, _Life(since=self._b.clock(), final=task))

    def _measure(self, item: Item, life: _Life) -> None:
        """The task's life at the provider, by its own clock when it gives both ends."""
        slots = item.request.expected_assets
        final = life.final
        meter = self._b.meter
        if final is not None and final.created_at is not None and final.ended_at is not None:
            meter.record(final.created_at, final.ended_at, slots)
        elif life.seen_running is not None:
            meter.record(life.since, life.seen_running, slots)

    async def _poll_to_end(
        self, item: Item, rec: ItemRecord, log: Any, life: _Life
    ) -> Task | None:
        b = self._b
        poll = b.manifest.poll
        assert rec.task_id is not None
        started = rec.submitted_at if rec.submitted_at is not None else b.clock()
        # A task resumed long after submission still gets polled before it can time out.
        deadline = max(started + poll.timeout, b.clock() + poll.max_interval)
        interval = poll.interval
        not_found = 0
        #: the polls since the provider last answered with a task, and the last failure
        failing = 0
        last_failure: ErrorInfo | None = None
        while True:
            delay_hint: float | None = None
            try:
                task = await self.poller.observe(item.request, rec.task_id, interval)
            except ProviderError as err:
                failing += 1
                last_failure = err.info
                if err.info.scope is Scope.ACCOUNT:
                    b.stop(err.info)
                    log.warning("item.poll_abandoned", **error_fields(err.info))
                    raise PollAbandoned from None
                if err.not_found:
                    not_found += 1
                    if not_found >= MAX_NOT_FOUND:
                        info = verdicts.task_gone(rec.task_id, err.info)
                        b.ledger.finish(item.id, ItemState.FAILED, error=info)
                        log.warning("item.failed", **error_fields(info))
                        return None
                else:
                    not_found = 0
                log.info("item.poll_failed", request_id=err.request_id, **error_fields(err.info))
                delay_hint = err.retry_after
            else:
                not_found = failing = 0
                last_failure = None
                if task.status.finished:
                    life.final = task
                    b.task_ended(item.id)
                    return task
                life.seen_running = b.clock()
            if b.clock() > deadline:
                if last_failure is not None:
                    # Not a task still running: its answers could not be read. Say so, and
                    # keep it running for the next run to poll (it exists: never resent).
                    info = verdicts.unreadable_task(rec.task_id, failing, last_failure)
                    b.ledger.record_unresolved(item.id, info)
                    log.warning("item.unresolved", **error_fields(info))
                    return None
                info = poll_timeout_error(poll.timeout)
                b.ledger.finish(item.id, ItemState.FAILED, error=info)
                log.warning("item.failed", **error_fields(info))
                return None
            interval = min(interval * POLL_GROWTH, poll.max_interval)
            if delay_hint is not None:
                interval = max(interval, min(delay_hint, b.policy.max_retry_after))
