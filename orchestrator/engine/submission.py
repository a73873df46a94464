"""Submission: a create sent at most once per attempt, whatever its answer.

The intent (with the external id) is durable before a create is sent; a create refused for a
reason worth retrying is sent again under the same id after a backoff. A create whose answer
was lost is settled by a strategy the provider's capabilities choose:

* :class:`ByLookup` (the provider finds a task by the external id its create carried, Kling):
  the task is looked up, after a grace period and twice, and sent again only when its absence
  is proven; a refusal as "already exists" is looked up until a read shows the task; a batch
  that ran without this ledger adopts the tasks found under its ids.
* :class:`HeldUnresolved` (no idempotency key, no client id, no list: LTX): nothing can settle
  it, so the item is held ``unresolved`` and sent again only on request
  (``--resubmit-unresolved``, which may pay twice).
"""

from __future__ import annotations

from typing import Any, Protocol

import anyio

from orchestrator.config import Item
from orchestrator.engine import verdicts
from orchestrator.engine.admission import Admission
from orchestrator.engine.batch import Batch, Held, error_fields
from orchestrator.engine.verdicts import Unresolved
from orchestrator.errors import ErrorInfo, ProviderError, Scope
from orchestrator.ledger_api import ItemState
from orchestrator.lookups import LookupBatcher
from orchestrator.providers.base import Task
from orchestrator.retry import GiveUp, Retry

#: Lookups by external id before an ambiguous create is declared absent.
LOOKUPS = 2
#: An unanswered create may still commit this many client timeouts after it was sent.
IN_FLIGHT_TIMEOUTS = 2


class Settlement(Protocol):
    """How a create whose outcome is not known is settled. Each method returns the task
    (recorded as running) or None when the create may be sent (again); it raises
    :class:`Unresolved` when neither can be established: then nothing may be sent."""

    async def lost(self, item: Item, ext: str, log: Any, info: ErrorInfo) -> Task | None:
        """A create sent in this run whose answer was lost (``info``)."""

    async def resumed(self, item: Item, ext: str, log: Any, cause: ErrorInfo | None) -> Task | None:
        """A create an earlier run sent (the item is ``submitting``): ``cause`` is its verdict."""

    async def exists(self, item: Item, ext: str, log: Any, info: ErrorInfo) -> Task:
        """The provider refused the create because a task with its external id exists."""

    async def adopt(
        self, item: Item, attempt: int, ext: str, fp: str, seq: int, log: Any
    ) -> Task | None:
        """Before the first create of a request this ledger does not know, in a batch that ran
        without it: the task an earlier run made under the same external id."""


class ByLookup:
    """Settles a create by looking its task up by external id (see the module docstring)."""

    def __init__(
        self,
        batch: Batch,
        lookups: LookupBatcher,
        *,
        provider_started_at: float | None,
        adopt_since: float | None,
        adopt_settled_at: float | None,
    ) -> None:
        self._b = batch
        self._lookups = lookups
        self._provider_started_at = provider_started_at
        self._adopt_since = adopt_since
        self._adopt_settled_at = adopt_settled_at

    async def lost(self, item: Item, ext: str, log: Any, info: ErrorInfo) -> Task | None:
        return await self._reconcile(
            item, ext, log, grace=True, answered=info.http_status is not None
        )

    async def resumed(self, item: Item, ext: str, log: Any, cause: ErrorInfo | None) -> Task | None:
        log.info("item.reconciling")
        return await self._reconcile(item, ext, log, grace=False, answered=False)

    def _found(self, item: Item, task: Task) -> None:
        self._b.ledger.record_submitted(item.id, task.task_id)
        self._b.progress.set(item.id, "running")

    def _lookup_failed(self, err: ProviderError, log: Any) -> None:
        """A lookup that failed: logged and charged to the retry budget; an account-level
        failure stops the batch and leaves the item unresolved (raises Unresolved)."""
        log.warning("item.lookup_failed", request_id=err.request_id, **error_fields(err.info))
        self._b.account(err.info)
        if err.info.scope is Scope.ACCOUNT:
            self._b.stop(err.info)
            raise Unresolved(err.info) from None

    async def adopt(
        self, item: Item, attempt: int, ext: str, fp: str, seq: int, log: Any
    ) -> Task | None:
        """The task found is adopted (recorded and polled); None when its absence is proven.
        Raises Unresolved when the lookup can prove neither: nothing may be sent then."""
        b = self._b
        try:
            found = await self._lookups.lookup(item.request, ext, sent_after=self._adopt_since)
            settled = self._adopt_settled_at
            if found is None and settled is not None and b.clock() < settled:
                # The killed run may have had this very create in flight: absent only once it
                # could no longer commit.
                await b.sleep(settled - b.clock())
                found = await self._lookups.lookup(
                    item.request, ext, sent_after=self._adopt_since
                )
        except ProviderError as err:
            self._lookup_failed(err, log)
            raise Unresolved(verdicts.adoption_unknown(err.info)) from None
        if found is None:
            return None
        b.ledger.record_intent(item.id, attempt, ext, fp, seq)
        self._found(item, found)
        b.outcome.adopted += 1
        log.info("item.adopted", task_id=found.task_id)
        return found

    async def exists(self, item: Item, ext: str, log: Any, info: ErrorInfo) -> Task:
        """Looked up until a read shows it: reads by external id may lag behind the create
        (even a list may not show it yet, and so "prove" it absent), so only a read that finds
        the task ends the search. After ``retry.lookup_timeout`` the item is left unresolved:
        nothing is resent, and the next run looks again."""
        b = self._b
        retry = b.manifest.retry
        sent_after = b.ledger.intent_time(ext)
        deadline = b.clock() + retry.lookup_timeout
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
                b.account(None)
                self._found(item, found)
                log.info("item.reconciled", found=True, task_id=found.task_id, looks=looks)
                return found
            delay = min(retry.max_delay, retry.lookup_grace * 2 ** min(looks, 16))
            if b.stopping or b.clock() + delay > deadline:
                raise Unresolved(verdicts.exists_unseen(ext, looks, retry.lookup_timeout, last))
            await b.sleep(delay)

    async def _reconcile(
        self, item: Item, ext: str, log: Any, *, grace: bool, answered: bool
    ) -> Task | None:
        """Look an ambiguous create up by external id.

        Returns the task (recorded as running), or None once it was absent on ``LOOKUPS``
        lookups a grace period apart. When the create got no answer (timeout, dropped
        connection, a run killed mid-request) it may still be in flight at the server, even
        past the moment the client gave up; absence then counts only once twice the client
        timeout (plus the grace) has passed since the send. Waiting costs seconds on a rare
        path; resending too early costs a paid task. Raises Unresolved when the provider
        cannot answer: then nothing may be sent.
        """
        b = self._b
        grace_s = b.manifest.retry.lookup_grace
        # No task with this external id can predate its first intent: a provider listing tasks
        # newest first may stop reading there, however old the create is (a rerun after a crash).
        sent_after = b.ledger.intent_time(ext)
        settled_at = 0.0
        if not answered:
            sent_at = b.ledger.get(item.id).submitted_at or b.clock()
            settled_at = sent_at + IN_FLIGHT_TIMEOUTS * b.manifest.provider.timeout + grace_s
            restarted = self._provider_started_at
            if restarted is not None and sent_at < restarted:
                settled_at = 0.0  # sent to a server that is gone: nothing of it is in flight
        if grace:
            await b.sleep(grace_s)
        looks = 0
        failures = b.retry_loop()
        while True:
            try:
                found = await self._lookups.lookup(item.request, ext, sent_after=sent_after)
            except ProviderError as err:
                self._lookup_failed(err, log)
                step = failures.failed(err.info, err.retry_after)
                if not isinstance(step, Retry):
                    raise Unresolved(verdicts.create_unconfirmed(err.info)) from None
                b.outcome.retries += 1
                await b.sleep(step.delay)
                continue
            if found is not None:
                failures.succeeded()
                self._found(item, found)
                log.info("item.reconciled", found=True, task_id=found.task_id)
                return found
            # An answered lookup that finds nothing is not the provider recovering: no refund.
            looks += 1
            if looks >= LOOKUPS and b.clock() >= settled_at:
                log.info("item.reconciled", found=False)
                return None
            # Every further lookup is a retry paid for by the failure: it draws on the budget,
            # so a provider failing every create is not stormed with lookups either.
            b.budget.on_failure()
            if not b.budget.allow():
                raise Unresolved(verdicts.lookups_denied(ext))
            # Reads may lag a commit, and a create may still be in flight: absence right
            # after a send is not proof.
            await b.sleep(max(grace_s, settled_at - b.clock()))


class HeldUnresolved:
    """Nothing can settle a lost create: the item is held ``unresolved`` and sent again only
    on request (see the module docstring)."""

    def __init__(self, batch: Batch, *, resubmit: bool) -> None:
        self._b = batch
        self._resubmit = resubmit

    async def lost(self, item: Item, ext: str, log: Any, info: ErrorInfo) -> Task | None:
        raise Unresolved(verdicts.unknowable(info))

    async def resumed(self, item: Item, ext: str, log: Any, cause: ErrorInfo | None) -> Task | None:
        if not self._resubmit:
            raise Unresolved(verdicts.unknowable(cause))
        self._b.outcome.resubmitted += 1
        log.warning("item.resubmitting", reason="--resubmit-unresolved")
        return None

    async def exists(self, item: Item, ext: str, log: Any, info: ErrorInfo) -> Task:
        raise Unresolved(verdicts.unknowable(info))

    async def adopt(
        self, item: Item, attempt: int, ext: str, fp: str, seq: int, log: Any
    ) -> Task | None:
        return None  # nothing can be found: the run refuses such a folder before (--new-batch)


class Submitter:
    """Sends the creates of one batch, each under its item's settlement strategy."""

    def __init__(
        self,
        batch: Batch,
        admission: Admission,
        lookups: LookupBatcher,
        *,
        provider_started_at: float | None = None,
        adopt: bool = False,
        adopt_since: float | None = None,
        adopt_settled_at: float | None = None,
        resubmit_unresolved: bool = False,
    ) -> None:
        self._b = batch
        self._admission = admission
        self._lookups = lookups
        self._adopt = adopt
        self._by_lookup = ByLookup(
            batch,
            lookups,
            provider_started_at=provider_started_at,
            adopt_since=adopt_since,
            adopt_settled_at=adopt_settled_at,
        )
        self._held = HeldUnresolved(batch, resubmit=resubmit_unresolved)

    def settlement(self, item: Item) -> Settlement:
        """The strategy the provider's capabilities allow for this item's request."""
        return self._by_lookup if self._lookups.can_look_up(item.request) else self._held

    async def resume(self, item: Item, held: Held, attempt: int, ext: str, cause: ErrorInfo | None,
                     log: Any) -> Task | None:
        """An item an earlier run left ``submitting``: settled, or sent again under its id.
        Returns the task's result when the create's own answer carried it (see ``submit``)."""
        found = await self.settlement(item).resumed(item, ext, log, cause)
        if found is not None:
            return None  # found by a lookup: polled like any running task
        return await self._create(item, held, attempt, ext, log, resend=True)

    async def submit(
        self, item: Item, held: Held, attempt: int, ext: str, fp: str, seq: int, log: Any
    ) -> Task | None:
        """A new attempt: adopted when a batch that ran without this ledger made it, else sent.

        Returns the task's result when the create's own answer carried it (a synchronous
        provider: LTX v1, Replicate with ``Prefer: wait``): it is verified at once and never
        polled. None otherwise: the ledger says where the item stands (running: poll it)."""
        if self._adopt and self._b.ledger.intent_time(ext) is None:
            found = await self.settlement(item).adopt(item, attempt, ext, fp, seq, log)
            if found is not None:
                return None
        return await self._create(item, held, attempt, ext, log, resend=False, fp=fp, seq=seq)

    async def _create(
        self,
        item: Item,
        held: Held,
        attempt: int,
        ext: str,
        log: Any,
        *,
        resend: bool,
        fp: str | None = None,
        seq: int | None = None,
    ) -> Task | None:
        """Send the create for ``attempt``, recording the intent before every send.

        Returns the finished task when the answer carried its result; None otherwise: the
        ledger says running (the task is to be polled), failed, or not sent (the batch is
        stopping).
        """
        b = self._b
        ledger = b.ledger
        settlement = self.settlement(item)
        loop = b.retry_loop()
        last_error: ErrorInfo | None = None
        retry_after: float | None = None
        over_capacity = False
        while True:
            await self._admission.next_create()
            if b.stopping:
                if resend:
                    ledger.record_not_created(item.id, last_error)
                elif loop.tries == 0:
                    self._admission.unreserve_units(item)  # nothing of it was ever sent
                log.info("item.not_sent", reason="batch stopping")
                return None
            # On disk before the request leaves (one commit serves every intent written in the
            # same turn); also stamps the send time that bounds how long a lookup must wait
            # before "absent" is conclusive.
            ledger.record_intent(item.id, attempt, ext, fp, seq)
            await ledger.durable()
            b.progress.set(item.id, "submitting")
            log.info("item.submit", resend=resend)
            b.outcome.requests["create"] += 1
            group = b.group(held.group)
            epoch = group.adaptive.epoch
            try:
                # A create in flight is allowed to finish and be recorded even on SIGINT:
                # cancelling it would leave a paid task we know nothing about.
                with anyio.CancelScope(shield=True):
                    task = await b.provider.create(item.request, ext)
                    ledger.record_submitted(item.id, task.task_id)
                b.progress.set(item.id, "running")
                log.info("item.submitted", task_id=task.task_id, request_id=task.request_id,
                         finished=task.status.finished)
                loop.succeeded()
                b.task_started(item.id, held)
                group.adaptive.on_accepted(group.tasked_slots)
                if task.status.finished:
                    b.task_ended(item.id)  # a synchronous result: it holds no slot now
                return task if task.status.finished else None
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
                    **error_fields(info),
                )
                loop.charge(info)
                if err.exists:
                    # The provider refused the create because a task with this external id
                    # exists: it is paid for, and ours. Find it and poll it; never resend.
                    await settlement.exists(item, ext, log, info)
                    return None
                if over_capacity and group.adaptive.on_over_capacity(epoch, group.tasked_slots):
                    log.warning(
                        "limits.concurrency_lowered",
                        cap=group.adaptive.cap,
                        held=group.tasked_slots,
                        **({"group": held.group} if held.group else {}),
                        configured=b.manifest.limits.concurrency,
                    )
                if err.ambiguous:
                    if await settlement.lost(item, ext, log, info) is not None:
                        return None  # found: polled like any running task
                    # Absent: the create never took effect; it may be sent again.
                elif info.scope is Scope.ACCOUNT:
                    ledger.record_not_created(item.id, info)
                    b.stop(info)
                    return None
                elif not info.retryable:
                    ledger.finish(item.id, ItemState.FAILED, error=info)
                    log.warning("item.failed", **error_fields(info))
                    return None
            assert last_error is not None
            step = loop.failed(last_error, retry_after, may_succeed=True)
            if step is GiveUp.EXHAUSTED:
                ledger.finish(item.id, ItemState.FAILED, error=last_error)
                log.warning("item.failed", retries_exhausted=True, **error_fields(last_error))
                return None
            if not isinstance(step, Retry):
                denied = verdicts.budget_spent(last_error)
                ledger.finish(item.id, ItemState.FAILED, error=denied)
                log.warning("item.failed", retry_denied=True, **error_fields(denied))
                return None
            b.outcome.retries += 1
            log.info("item.retry_scheduled", delay=round(step.delay, 3), retry=loop.tries)
            if over_capacity:
                # Wait for a slot under the (lowered) cap like everyone else, so that the cut
                # takes effect instead of every holder hammering the provider again.
                b.release(held)
            await b.pause(step.delay)
            if held.count == 0 and not await self._admission.reacquire(item, held):
                ledger.record_not_created(item.id, last_error)
                log.info("item.not_sent", reason="batch stopping")
                return None
            resend = True
