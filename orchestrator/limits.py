"""Concurrency cap counted in provider slots, and the create-rate limiter.

Kling counts a task against the account from submission until it ends, and an image task with
``n`` outputs holds ``n`` slots. :class:`SlotPool` is a weighted semaphore with the same
accounting: FIFO (a task that needs 9 slots is not starved by a stream of 1-slot tasks) and
resizable at runtime (the knob adaptive concurrency turns).
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass, field

import anyio
from aiolimiter import AsyncLimiter

from orchestrator import capacity


class PoolClosed(Exception):
    """The pool stopped granting slots (the batch is stopping)."""


@dataclass(eq=False)
class _Waiter:
    slots: int
    event: anyio.Event = field(default_factory=anyio.Event)
    granted: bool = False


class SlotPool:
    def __init__(self, total: int) -> None:
        if total < 1:
            raise ValueError("a slot pool needs at least one slot")
        self._total = total
        self._used = 0
        self._waiters: deque[_Waiter] = deque()
        self._closed = False
        self.peak = 0

    @property
    def total(self) -> int:
        return self._total

    @total.setter
    def total(self, value: int) -> None:
        self._total = max(1, value)
        self._wake()

    @property
    def used(self) -> int:
        return self._used

    def weight(self, slots: int) -> int:
        """Slots a task needing ``slots`` will take: never more than the whole pool, or it
        could never start."""
        return max(1, min(slots, self._total))

    async def acquire(self, slots: int) -> int:
        """Wait for ``slots`` slots (clamped to the pool size); returns the number taken,
        which must be passed back to :meth:`release`."""
        if self._closed:
            raise PoolClosed
        want = self.weight(slots)
        if not self._waiters and self._used + want <= self._total:
            self._take(want)
            return want
        waiter = _Waiter(want)
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release(want)
            else:
                self._waiters.remove(waiter)
                self._wake()
            raise
        if not waiter.granted:
            raise PoolClosed
        return want

    def take_now(self, slots: int) -> int:
        """Count slots that are already in use at the provider (a task resumed from an earlier
        run), even beyond the total: the accounting must match reality."""
        want = self.weight(slots)
        self._take(want)
        return want

    def release(self, slots: int) -> None:
        self._used = max(0, self._used - slots)
        self._wake()

    def close(self) -> None:
        """Refuse every current and future waiter (slots held stay held until released)."""
        self._closed = True
        while self._waiters:
            self._waiters.popleft().event.set()

    def _take(self, slots: int) -> None:
        self._used += slots
        self.peak = max(self.peak, self._used)

    def _wake(self) -> None:
        while self._waiters:
            head = self._waiters[0]
            head.slots = self.weight(head.slots)
            if self._used + head.slots > self._total:
                return
            self._waiters.popleft()
            self._take(head.slots)
            head.granted = True
            head.event.set()


def create_rate_limiter(requests_per_minute: float) -> AsyncLimiter:
    """Evenly spaced creates with no start-up burst.

    ``AsyncLimiter(rpm, 60)`` would let ``rpm`` requests through at once and then throttle;
    one request per ``60/rpm`` seconds is what the provider's limit means. Must be called with
    the event loop running (aiolimiter binds to the loop it first sees).
    """
    return AsyncLimiter(1, 60.0 / requests_per_minute)


class AdaptiveConcurrency:
    """The slot pool's size under :mod:`orchestrator.capacity`'s policy: the account's limit
    found from over-capacity refusals (providers do not publish it), settled on at once, probed
    above rarely and by one, never above ``ceiling`` (limits.concurrency)."""

    def __init__(self, pool: SlotPool, ceiling: int) -> None:
        self._pool = pool
        self.ceiling = ceiling
        self.state = capacity.start(ceiling)
        pool.total = self.state.cap

    @property
    def cap(self) -> int:
        return self._pool.total

    @property
    def epoch(self) -> int:
        return self.state.epoch

    @property
    def lowest(self) -> int:
        """The lowest cap a refusal set (the slow start's is not counted)."""
        return self.state.lowest

    @property
    def cuts(self) -> int:
        return self.state.cuts

    @property
    def limit(self) -> int | None:
        """The account's limit as the refusals showed it (None: none came)."""
        return self.state.limit

    def on_over_capacity(self, sent_in_epoch: int, held: int) -> bool:
        """An over-capacity refusal while ``held`` slots were held by accepted tasks; True
        when it moved the cap (a refusal of a create sent before the last move does not)."""
        new = capacity.refused(self.state, held=held, sent_in_epoch=sent_in_epoch)
        moved = new is not self.state
        self._apply(new)
        return moved

    def on_accepted(self, held: int) -> None:
        """A create accepted; ``held``: slots held by accepted tasks, this one's included."""
        self._apply(capacity.accepted(self.state, held=held))

    def _apply(self, new: capacity.Capacity) -> None:
        self.state = new
        if self._pool.total != new.cap:
            self._pool.total = new.cap


class ConcurrencyMeter:
    """The most slots the provider held for this batch at one moment: what the account
    sustained.

    Counted from each task's life at the provider (its own created and ended times when it
    gives them), not from our slot pool: a task's slot is freed at the provider before we
    notice its end, so our pool's count runs ahead of the account's. Without the provider's
    times a task counts from when its create was accepted to when it was last seen running:
    a lower bound, never more than the account really ran. Three floats a task.
    """

    def __init__(self) -> None:
        self._starts = array("d")
        self._ends = array("d")
        self._weights = array("l")

    def record(self, start: float, end: float, slots: int) -> None:
        if end >= start:
            self._starts.append(start)
            self._ends.append(end)
            self._weights.append(slots)

    def peak(self) -> int:
        """Sweep over the lives, an end before a start at the same instant (half-open)."""
        events = sorted(
            [(end, -w) for end, w in zip(self._ends, self._weights, strict=True)]
            + [(start, w) for start, w in zip(self._starts, self._weights, strict=True)]
        )
        held = best = 0
        for _, change in events:
            held += change
            best = max(best, held)
        return best
