"""Admission and limits: what lets an item's create go out, and what stops new ones.

The provider's slots (``limits.concurrency``, lowered while the provider says it is over
capacity), the create rate (``limits.requests_per_minute``), the units cap
(``limits.max_units``), the deadline (``limits.deadline``), the account check before a batch,
and the run's lock (another run holding it stops this one at once).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import anyio

from orchestrator.config import Item
from orchestrator.engine import verdicts
from orchestrator.engine.batch import Batch, Held
from orchestrator.limits import PoolClosed, create_rate_limiter
from orchestrator.pricing import units_for
from orchestrator.progress import Pressure
from orchestrator.providers.base import AccountChecker

#: Seconds between commits of the ledger's non-critical writes (intents commit before sending).
COMMIT_EVERY = 1.0


class Admission:
    def __init__(self, batch: Batch, *, lock_held: Callable[[], bool] | None = None) -> None:
        self._b = batch
        self._lock_held = lock_held
        self._limiter = create_rate_limiter(batch.manifest.limits.requests_per_minute)
        self._units_spent = 0.0
        self._capped = False
        self._rate_waiting = 0
        #: items waiting for slots now (one per group's admission at most)
        self._slots_waited = 0

    def open(self) -> None:
        """At the run's start: the create rate starts afresh, and the units cap counts what
        earlier runs of the batch paid for."""
        self._limiter = create_rate_limiter(self._b.manifest.limits.requests_per_minute)
        self._units_spent = self._units_already_spent()

    # -- slots and the create rate --------------------------------------------------------

    async def admit(
        self, items: Iterable[Item], start: Callable[[Item, Held], Awaitable[None]]
    ) -> None:
        """Start each item once it has its slots, in order within its capacity group, until
        the batch stops. Groups are admitted side by side: one at its limit (Kling's image
        pack) does not hold back the items of another (its video pack)."""
        queues: dict[str, list[Item]] = {}
        for item in items:
            queues.setdefault(self._b.group_of(item.request), []).append(item)
        if len(queues) <= 1:
            for queue in queues.values():
                await self._admit(queue, start)
            return
        async with anyio.create_task_group() as tg:
            for queue in queues.values():
                tg.start_soon(self._admit, queue, start)

    async def _admit(
        self, items: list[Item], start: Callable[[Item, Held], Awaitable[None]]
    ) -> None:
        for item in items:
            if self._b.stopping or self.capped:
                return
            waiting = int(self._b.waits_for_slots(item.request))
            self._slots_waited += waiting
            try:
                held = await self._b.acquire(item.request)
            except PoolClosed:
                return
            finally:
                self._slots_waited -= waiting
            if self.capped:  # the cap was reached while this item waited for its slots
                self._b.release(held)
                return
            await start(item, held)

    def resume(self, item: Item) -> Held:
        """An item whose task an earlier run left running holds its slots at once."""
        held = self._b.take_now(item.request)
        self._b.task_started(item.id, held)
        return held

    async def reacquire(self, item: Item, held: Held) -> bool:
        """Slots again after a wait without them; False when the batch stopped meanwhile."""
        try:
            again = await self._b.acquire(item.request)
        except PoolClosed:
            return False
        held.count, held.group = again.count, again.group
        return True

    async def next_create(self) -> None:
        """Wait for the create rate's next turn (counted while it waits: a turn that is free
        returns without suspending, so no snapshot sees it)."""
        self._rate_waiting += 1
        try:
            await self._limiter.acquire()
        finally:
            self._rate_waiting -= 1

    def pressure(self) -> Pressure:
        """What holds the batch back now, for the progress view."""
        b = self._b
        return Pressure(
            slots_used=b.slots.used,
            slots_total=b.slots.total,
            slots_configured=b.manifest.limits.concurrency,
            slots_waiting=self._slots_waited > 0,
            rate_waiting=self._rate_waiting,
            requests_per_minute=b.manifest.limits.requests_per_minute,
            backing_off=b.backing_off,
            units_capped=self._capped,
        )

    # -- units ----------------------------------------------------------------------------

    @property
    def units_spent(self) -> float:
        return self._units_spent

    def _units_already_spent(self) -> float:
        """Units of every task this batch created (or may have created) in earlier runs."""
        m = self._b.manifest
        if m.limits.max_units is None:
            return 0.0
        by_id = {item.id: item for item in m.items}
        spent = 0.0
        for item_id, attempts in self._b.ledger.paid_attempts().items():
            item = by_id.get(item_id)
            if item is not None:
                spent += attempts * (units_for(item.request, m.pricing) or 0.0)
        return spent

    def units_estimate(self) -> dict[str, Any]:
        """The price table's units for every task the batch created (or may have) so far, for
        the report beside what the provider says it charged."""
        m = self._b.manifest
        by_id = {item.id: item for item in m.items}
        estimated = 0.0
        indicative = False
        unpriced = 0
        for item_id, attempts in self._b.ledger.paid_attempts().items():
            item = by_id.get(item_id)
            if item is None:
                continue
            price = m.pricing.price(item.request)
            if price is None:
                unpriced += attempts
                continue
            estimated += attempts * price.each
            indicative = indicative or price.indicative
        return {"estimated": round(estimated, 6), "unit": m.pricing.unit,
                "indicative": indicative, "unpriced_tasks": unpriced}

    @property
    def capped(self) -> bool:
        """limits.max_units stopped new attempts (those already reserved are still sent)."""
        return self._capped

    def reserve_units(self, item: Item, log: Any) -> bool:
        """limits.max_units: reserve this attempt's units, or refuse it when they would exceed
        the cap. The first refusal ends the batch's admissions (exit 3, "stopped by your
        limits.max_units"), not the batch: every attempt that fitted is still sent and every
        running task collected; no later attempt is sent, even one that would fit (the cap
        stops at the first item past it, in the manifest's order). Counted at the intent, so a
        create that is then refused still counts until the next run recomputes from the
        ledger: the cap errs on the safe side."""
        m = self._b.manifest
        cap = m.limits.max_units
        if cap is None:
            return True
        units = units_for(item.request, m.pricing) or 0.0
        if not self._capped and self._units_spent + units <= cap:
            self._units_spent += units
            return True
        if not self._capped:
            self._capped = True
            info = verdicts.units_cap_reached(
                cap, self._units_spent, m.pricing.unit, item.id, units
            )
            log.warning("limits.max_units_reached", units_spent=self._units_spent, max_units=cap)
            self._b.record_stop(info)  # admissions end here; what was admitted goes on
        return False

    def unreserve_units(self, item: Item) -> None:
        """An attempt whose create was never sent (the batch stopped first): its units free."""
        m = self._b.manifest
        if m.limits.max_units is not None:
            self._units_spent -= units_for(item.request, m.pricing) or 0.0

    # -- the account, the deadline, the lock ----------------------------------------------

    async def check_account(self) -> None:
        """Say at once when the account looks unable to pay; never blocks or stops the run
        (the provider's answer may lag, and a run can still succeed)."""
        provider = self._b.provider
        assert isinstance(provider, AccountChecker)
        self._b.outcome.requests["account"] += 1
        warning = await provider.account_warning()
        if warning is not None:
            self._b.outcome.account_warning = warning
            self._b.log.warning("account.warning", reason=warning)

    async def deadline_watch(self, scope: anyio.CancelScope, run_started: float) -> None:
        deadline = self._b.manifest.limits.deadline
        assert deadline is not None
        at = deadline.resolve(run_started)
        with scope:
            await self._b.sleep(max(0.0, at - self._b.clock()))
            if not self._b.stopping:
                self._b.outcome.deadline_reached = True
                self._b.log.warning("batch.deadline_reached")
                self._b.stop(None)

    async def commit_often(self) -> None:
        """Writes other than intents are committed in groups; this bounds how stale the state
        file gets (``status`` reads it) and what a crash loses: at most a second of
        transitions, each of which the next run re-establishes from the provider."""
        while True:
            await anyio.sleep(COMMIT_EVERY)  # real time: not part of any timing rule
            await self._b.ledger.durable()
            self.check_locks()

    def check_locks(self) -> None:
        """Another run holding this batch's lock now (its file was removed, and a second run
        made a new one): stop at once; what is in flight is recorded as usual."""
        held = self._b.ledger.lock_still_held() and (
            self._lock_held is None or self._lock_held()
        )
        outcome = self._b.outcome
        if not held and not outcome.lock_lost:
            outcome.lock_lost = True
            self._b.log.error(
                "batch.lock_lost",
                reason=f"{self._b.ledger.lock_lost_reason}: stopping",
            )
            self._b.stop(None)
