"""The slot pool counts provider slots: weighted, FIFO, resizable, cancellation-safe."""

from __future__ import annotations

import anyio
import pytest
from anyio import wait_all_tasks_blocked
from anyio.lowlevel import checkpoint

from orchestrator.limits import PoolClosed, SlotPool

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
