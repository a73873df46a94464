"""What every part of one run shares: the manifest, the provider, the ledger, the clock, the
outcome being counted, the provider's slots, the retry budget, and the batch's stop.

The slots: ``limits.concurrency`` caps every task of the batch together (``slots``); within
it, each capacity group the provider counts apart (Kling: its video and its image resource
packs, see :class:`CapacityGroups`) has a pool of its own whose limit is found from that
group's own over-capacity refusals (``adaptive``). A provider without groups has one."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import structlog

from orchestrator.config import Manifest
from orchestrator.errors import ErrorInfo
from orchestrator.ledger_api import BatchLedger
from orchestrator.limits import AdaptiveConcurrency, ConcurrencyMeter, SlotPool
from orchestrator.progress import Progress
from orchestrator.providers.base import CapacityGroups, Provider, TaskRequest
from orchestrator.retry import RetryBudget, RetryLoop, RetryPolicy


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
    concurrency: dict[str, Any] = field(default_factory=dict)
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
class Held:
    """Slots an item holds right now (it gives them back while it backs off a 1303), and the
    capacity group they are counted in."""

    count: int
    group: str = ""


class SlotGroup:
    """One capacity group's pool, its limit policy, and the slots of its accepted tasks (the
    evidence an over-capacity refusal gives of the group's limit: capacity.py)."""

    def __init__(self, ceiling: int) -> None:
        self.pool = SlotPool(ceiling)
        self.adaptive = AdaptiveConcurrency(self.pool, ceiling)
        self.tasked: dict[str, int] = {}
        self.tasked_slots = 0


def error_fields(info: ErrorInfo) -> dict[str, Any]:
    """The fields every log event about a failure carries."""
    return {
        "category": str(info.category),
        "code": info.code,
        "http_status": info.http_status,
        "reason": info.message,
        "hint": info.hint,
    }


class Batch:
    """One run's shared state. The parts of the engine (admission, submission, tracking,
    collection) each hold it; none holds another's state."""

    def __init__(
        self,
        manifest: Manifest,
        provider: Provider,
        ledger: BatchLedger,
        *,
        rand: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
    ) -> None:
        self.manifest = manifest
        self.provider = provider
        self.ledger = ledger
        self.rand = rand
        self.sleep = sleep
        self.clock = clock
        self.outcome = RunOutcome()
        self.progress = Progress()
        self.log: Any = structlog.get_logger("orchestrator").bind(batch=manifest.name)
        self.policy = RetryPolicy(
            max_attempts=manifest.retry.max_attempts,
            base_delay=manifest.retry.base_delay,
            max_delay=manifest.retry.max_delay,
        )
        self.budget = RetryBudget()
        #: every task of the batch together: limits.concurrency
        self.slots = SlotPool(manifest.limits.concurrency)
        #: each capacity group's own pool and limit (one, "", for most providers)
        self.groups: dict[str, SlotGroup] = {}
        self.meter = ConcurrencyMeter()
        self._stop_event: anyio.Event | None = None
        #: items waiting out a backoff now (what the progress view calls provider backoff)
        self.backing_off = 0
        #: item id -> the group of its accepted task
        self._tasked: dict[str, str] = {}

    # -- the provider's slots -------------------------------------------------------------

    def group_of(self, request: TaskRequest) -> str:
        """The capacity group a task of ``request`` is counted in."""
        if isinstance(self.provider, CapacityGroups):
            return self.provider.capacity_group(request)
        return ""

    def group(self, key: str) -> SlotGroup:
        found = self.groups.get(key)
        if found is None:
            found = self.groups[key] = SlotGroup(self.manifest.limits.concurrency)
            if self.stopping:
                found.pool.close()
        return found

    async def acquire(self, request: TaskRequest) -> Held:
        """The slots a task of ``request`` takes, in its group and in the batch's cap (in that
        order: a group at its limit does not hold the batch's slots while it waits). Raises
        PoolClosed when the batch stops meanwhile."""
        key = self.group_of(request)
        pool = self.group(key).pool
        taken = await pool.acquire(request.expected_assets)
        try:
            count = await self.slots.acquire(taken)
        except BaseException:
            pool.release(taken)
            raise
        if count != taken:  # the batch's cap is smaller than the group's: take as many
            pool.release(taken - count)
        return Held(count, key)

    def take_now(self, request: TaskRequest) -> Held:
        """Slots a task an earlier run left running holds already (see SlotPool.take_now)."""
        key = self.group_of(request)
        count = self.slots.take_now(self.group(key).pool.take_now(request.expected_assets))
        return Held(count, key)

    def release(self, held: Held) -> None:
        """Give back what ``held`` holds (idempotent: it then holds nothing)."""
        if held.count:
            self.group(held.group).pool.release(held.count)
            self.slots.release(held.count)
            held.count = 0

    def waits_for_slots(self, request: TaskRequest) -> bool:
        """Whether a task of ``request`` would wait for slots now (the progress view)."""
        pool = self.group(self.group_of(request)).pool
        want = pool.weight(request.expected_assets)
        return (pool.used + want > pool.total
                or self.slots.used + self.slots.weight(want) > self.slots.total)

    def task_started(self, item_id: str, held: Held) -> None:
        """The provider accepted (or an earlier run left running) this item's task."""
        if item_id not in self._tasked:
            self._tasked[item_id] = held.group
            group = self.group(held.group)
            group.tasked[item_id] = held.count
            group.tasked_slots += held.count

    def task_ended(self, item_id: str) -> None:
        """The item's task was seen ending (or the item ended): idempotent."""
        key = self._tasked.pop(item_id, None)
        if key is not None:
            group = self.group(key)
            group.tasked_slots -= group.tasked.pop(item_id, 0)

    def concurrency_figures(self) -> dict[str, Any]:
        """The report's ``concurrency``: the batch's, and per group when there are several."""
        configured = self.manifest.limits.concurrency
        groups = self.groups or {"": SlotGroup(configured)}

        def figures(group: SlotGroup) -> dict[str, Any]:
            a = group.adaptive
            return {"final": a.cap, "lowest": a.lowest, "over_capacity_cuts": a.cuts,
                    "limit_found": a.limit}

        if len(groups) == 1:
            (only,) = groups.values()
            return {"configured": configured, **figures(only), "sustained": self.meter.peak()}
        per = {key: figures(group) for key, group in sorted(groups.items())}
        return {
            "configured": configured,
            "final": min(configured, sum(f["final"] for f in per.values())),
            "lowest": min(f["lowest"] for f in per.values()),
            "sustained": self.meter.peak(),
            "over_capacity_cuts": sum(f["over_capacity_cuts"] for f in per.values()),
            # The account's limits are per group: no one number to advise.
            "limit_found": None,
            "groups": per,
        }

    # -- retries --------------------------------------------------------------------------

    def retry_loop(self) -> RetryLoop:
        """A new retry loop under the manifest's policy, drawing on the batch's budget."""
        return RetryLoop(self.policy, self.rand, self.budget)

    def account(self, info: ErrorInfo | None) -> None:
        """The retry budget's view of one request (answered, or failed with ``info``)."""
        if info is None:
            self.budget.on_success()
        else:
            self.budget.charge(info)

    # -- the stop -------------------------------------------------------------------------

    def begin(self) -> None:
        self._stop_event = anyio.Event()

    @property
    def started(self) -> bool:
        return self._stop_event is not None

    @property
    def stopping(self) -> bool:
        return self._stop_event is not None and self._stop_event.is_set()

    def record_stop(self, cause: ErrorInfo) -> None:
        """What stops the batch, for the report and the exit code (3); logged."""
        self.outcome.stopped_by = cause
        self.log.error("batch.stopping", **error_fields(cause))

    def stop(self, cause: ErrorInfo | None) -> None:
        """No new submissions from now on; running tasks are still polled to the end."""
        if self.stopping:
            return
        if cause is not None:
            self.record_stop(cause)
        assert self._stop_event is not None
        self._stop_event.set()
        self.slots.close()
        for group in self.groups.values():
            group.pool.close()

    async def pause(self, delay: float) -> None:
        """A backoff wait that ends early when the batch stops (nothing new will be sent)."""
        stop = self._stop_event
        assert stop is not None
        if stop.is_set():
            return
        self.backing_off += 1
        try:
            async with anyio.create_task_group() as tg:

                async def until_stop() -> None:
                    await stop.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(until_stop)
                await self.sleep(delay)
                tg.cancel_scope.cancel()
        finally:
            self.backing_off -= 1
