"""The slot pool counts provider slots: weighted, FIFO, resizable, cancellation-safe."""

from __future__ import annotations

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

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


# -- adaptive concurrency (AIMD) and the concurrency the account sustained -----------------------


def test_over_capacity_halves_the_cap_once_per_round_rounding_up() -> None:
    pool = SlotPool(8)
    aimd = AdaptiveConcurrency(pool, ceiling=8)
    sent = aimd.epoch
    assert aimd.on_over_capacity(sent) is True
    assert aimd.cap == 4
    # Answers to creates sent before that cut were decided under the old cap: no second cut.
    assert aimd.on_over_capacity(sent) is False
    assert aimd.cap == 4
    assert aimd.on_over_capacity(aimd.epoch) is True
    assert aimd.cap == 2
    assert (aimd.lowest, aimd.cuts) == (2, 2)
    pool.total = 3
    assert aimd.on_over_capacity(aimd.epoch) and aimd.cap == 2  # 3 -> 2, not 1
    assert aimd.on_over_capacity(aimd.epoch) and aimd.cap == 1
    assert aimd.on_over_capacity(aimd.epoch) and aimd.cap == 1  # never below one


def test_cap_grows_back_one_slot_per_round_of_accepted_creates_up_to_the_ceiling() -> None:
    pool = SlotPool(6)
    aimd = AdaptiveConcurrency(pool, ceiling=6)
    aimd.on_over_capacity(aimd.epoch)
    assert aimd.cap == 3
    grown = []
    for _ in range(40):
        aimd.on_accepted()
        grown.append(aimd.cap)
    # 3 accepted creates at cap 3 make it 4, then 4 more make it 5, then 5 make it 6.
    assert grown[2] == 4 and grown[1] == 3
    assert grown[6] == 5 and grown[5] == 4
    assert grown[11] == 6 and grown[10] == 5
    assert max(grown) == 6 and grown[-1] == 6


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
