"""What every part of one run shares: the manifest, the provider, the ledger, the clock, the
outcome being counted, the provider's slots, the retry budget, and the batch's stop."""

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
from orchestrator.providers.base import Provider
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
    concurrency: dict[str, int | None] = field(default_factory=dict)
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
    """Slots an item holds right now (it gives them back while it backs off a 1303)."""

    count: int


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
        self.slots = SlotPool(manifest.limits.concurrency)
        self.adaptive = AdaptiveConcurrency(self.slots, manifest.limits.concurrency)
        self.meter = ConcurrencyMeter()
        self._stop_event: anyio.Event | None = None
        #: items waiting out a backoff now (what the progress view calls provider backoff)
        self.backing_off = 0
        #: slots of tasks the provider accepted and we have not seen end: the evidence an
        #: over-capacity refusal gives of the account's limit (capacity.py)
        self._tasked: dict[str, int] = {}
        self.tasked_slots = 0

    # -- the provider's slots -------------------------------------------------------------

    def task_started(self, item_id: str, slots: int) -> None:
        """The provider accepted (or an earlier run left running) this item's task."""
        if item_id not in self._tasked:
            self._tasked[item_id] = slots
            self.tasked_slots += slots

    def task_ended(self, item_id: str) -> None:
        """The item's task was seen ending (or the item ended): idempotent."""
        self.tasked_slots -= self._tasked.pop(item_id, 0)

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
