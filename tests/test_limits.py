"""The slot pool counts provider slots: weighted, FIFO, resizable, cancellation-safe."""

from __future__ import annotations

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from orchestrator import capacity
from orchestrator.limits import (
    AdaptiveConcurrency,
    ConcurrencyMeter,
    PoolClosed,
    SlotPool,
    create_rate_limiter,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_weighted_acquire_and_release() -> None:
    pool = SlotPool(5)
    assert await pool.acquire(4) == 4
    assert await pool.acquire(1) == 1
    assert pool.used == 5
    pool.release(4)
    assert pool.used == 1
    assert pool.peak == 5


async def test_larger_than_pool_is_clamped_not_deadlocked() -> None:
    pool = SlotPool(3)
    assert await pool.acquire(9) == 3


async def test_fifo_big_waiter_not_starved_by_small_ones() -> None:
    pool = SlotPool(4)
    order: list[str] = []
    first = await pool.acquire(3)

    async def take(name: str, n: int) -> None:
        got = await pool.acquire(n)
        order.append(name)
        await checkpoint()
        pool.release(got)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take, "big", 4)
        await wait_all_tasks_blocked()
        tg.start_soon(take, "small", 1)  # 1 slot is free, but "big" queued first
        await wait_all_tasks_blocked()
        assert order == []
        pool.release(first)
    assert order == ["big", "small"]


async def test_resize_wakes_waiters() -> None:
    pool = SlotPool(1)
    await pool.acquire(1)
    got: list[int] = []

    async def take() -> None:
        got.append(await pool.acquire(1))

    async with anyio.create_task_group() as tg:
        tg.start_soon(take)
        await wait_all_tasks_blocked()
        assert got == []
        pool.total = 2
    assert got == [1]
    assert pool.used == 2


async def test_cancelled_waiter_leaves_no_trace() -> None:
    pool = SlotPool(1)
    await pool.acquire(1)
    with anyio.move_on_after(0.01):
        await pool.acquire(1)
    pool.release(1)
    assert pool.used == 0
    assert await pool.acquire(1) == 1


async def test_close_refuses_waiters_and_newcomers() -> None:
    pool = SlotPool(1)
    await pool.acquire(1)
    errors: list[type[BaseException]] = []

    async def take() -> None:
        try:
            await pool.acquire(1)
        except PoolClosed:
            errors.append(PoolClosed)

    async with anyio.create_task_group() as tg:
        tg.start_soon(take)
        await wait_all_tasks_blocked()
        pool.close()
    assert errors == [PoolClosed]
    with pytest.raises(PoolClosed):
        await pool.acquire(1)


async def test_take_now_counts_resumed_tasks_beyond_total() -> None:
    pool = SlotPool(2)
    pool.take_now(1)
    pool.take_now(2)
    assert pool.used == 3
    pool.release(2)
    assert pool.used == 1


# -- the account's limit, found from its refusals, and the concurrency it sustained ----------


def test_a_refusal_settles_the_cap_on_the_slots_held_when_it_came() -> None:
    # Was: the cap was halved (20 -> 10 -> 5 ...) and climbed back one slot a round, keeping the
    # batch below a limit the refusal had already shown.
    pool = SlotPool(20)
    adaptive = AdaptiveConcurrency(pool, ceiling=20)
    sent = adaptive.epoch
    assert adaptive.on_over_capacity(sent, held=5) is True
    assert (adaptive.cap, adaptive.limit, adaptive.cuts, adaptive.lowest) == (5, 5, 1, 5)
    # Answers to creates sent before that move were decided under the old cap: no second move.
    assert adaptive.on_over_capacity(sent, held=4) is False
    assert adaptive.cap == 5
    assert adaptive.on_over_capacity(adaptive.epoch, held=0) is True
    assert adaptive.cap == 1  # never below one slot


def test_before_any_refusal_the_cap_starts_slow_and_grows_with_each_accepted_create() -> None:
    c = capacity.start(8)
    assert c.cap == capacity.SLOW_START
    caps = []
    for held in (1, 2, 3, 4, 3, 5, 8, 2):
        c = capacity.accepted(c, held=held)
        caps.append(c.cap)
    # Never more than SLOW_START slots being created beyond the accepted tasks', never back
    # down when tasks end, never past the configured cap.
    assert caps == [5, 6, 7, 8, 8, 8, 8, 8]
    assert (c.limit, capacity.start(2).cap) == (None, 2)


def test_the_policy_probes_one_above_the_limit_rarely_and_more_rarely_when_refused() -> None:
    """A recorded sequence: an account of 5 slots, 20 configured, every create answered while
    the cap's slots are full (a busy batch)."""
    true_limit = 5
    c = capacity.refused(capacity.start(20), held=5, sent_in_epoch=0)
    caps: list[int] = []
    refused_at: list[int] = []
    for step in range(2000):
        if c.cap > true_limit:  # the probe's extra create is refused, with 5 held
            c = capacity.refused(c, held=true_limit, sent_in_epoch=c.epoch)
            refused_at.append(step)
        else:
            c = capacity.accepted(c, held=c.cap)
        caps.append(c.cap)
    assert max(caps) == true_limit + 1 and min(caps) == true_limit
    assert c.limit == true_limit
    # The first probe after 4 rounds of 5 accepted creates, then after 8, 16, 32, then every
    # 64 rounds: rare, and never by more than one slot.
    gaps = [b - a - 1 for a, b in zip([-1, *refused_at], refused_at, strict=False)]
    assert gaps == [20, 40, 80, 160, 320, 320, 320, 320, 320]
    assert c.probe_rounds == capacity.MAX_PROBE_ROUNDS
    assert len(refused_at) / len(caps) < 0.01


def test_a_probe_accepted_at_full_cap_raises_the_limit_up_to_the_ceiling() -> None:
    c = capacity.refused(capacity.start(7), held=4, sent_in_epoch=0)
    for _ in range(500):  # an account whose limit grew (a new resource pack): every probe holds
        c = capacity.accepted(c, held=c.cap)
    assert (c.cap, c.limit) == (7, 7)  # never above limits.concurrency
    # Accepted with room to spare proves nothing about the cap: no change while probing.
    probe = capacity.refused(capacity.start(10), held=3, sent_in_epoch=0)
    probe = capacity.Capacity(**{**probe.__dict__, "cap": 4})
    assert capacity.accepted(probe, held=2).limit == 3


def test_image_slots_count_as_their_weight() -> None:
    # Two image tasks of n=4 held 8 slots when the 9th was refused: the limit is 8 slots.
    c = capacity.refused(capacity.start(20), held=8, sent_in_epoch=0)
    assert (c.cap, c.limit) == (8, 8)


def test_meter_counts_overlapping_lives_weighted_by_slots() -> None:
    meter = ConcurrencyMeter()
    assert meter.peak() == 0
    meter.record(0.0, 10.0, 1)
    meter.record(2.0, 4.0, 4)  # an image task with n=4
    meter.record(3.0, 5.0, 1)
    assert meter.peak() == 6
    # Half-open: a task ending when another starts does not count twice.
    handoff = ConcurrencyMeter()
    handoff.record(0.0, 1.0, 1)
    handoff.record(1.0, 2.0, 1)
    assert handoff.peak() == 1
    # A life that was never seen (its end before its start) is ignored.
    handoff.record(5.0, 4.0, 3)
    assert handoff.peak() == 1


async def test_create_rate_limiter_has_no_start_up_burst() -> None:
    """aiolimiter's AsyncLimiter(rpm, 60) would let rpm creates out at once; ours lets one
    through per 60/rpm seconds from the very start."""
    limiter = create_rate_limiter(600)
    assert limiter.time_period == pytest.approx(0.1)
    assert limiter.has_capacity()
    await limiter.acquire()
    assert not limiter.has_capacity()  # the second create waits its 0.1 s
