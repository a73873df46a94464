"""The batch's slots: one pool per capacity group the provider counts apart, inside the batch's
limits.concurrency; a group at its limit does not hold the batch's slots while it waits."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from orchestrator.engine.batch import Batch
from orchestrator.limits import PoolClosed
from orchestrator.providers.base import CapacityGroups, Kind, TaskRequest
from tests.test_engine import manifest

VIDEO = TaskRequest(Kind.TEXT2VIDEO, {"prompt": "p"}, 1)


def image(n: int) -> TaskRequest:
    return TaskRequest(Kind.IMAGE, {"prompt": "p", "n": n}, n)


class Packs:
    """A provider counting video and image tasks apart (as Kling's resource packs)."""

    name = "packs"

    def capacity_group(self, request: TaskRequest) -> str:
        return request.kind.media


def batch(tmp_path: Path, provider: Any, concurrency: int = 6) -> Batch:
    m = manifest(tmp_path, ["a"])
    m = replace(m, limits=replace(m.limits, concurrency=concurrency))
    b = Batch(m, provider, ledger=None,  # type: ignore[arg-type]
              rand=lambda: 1.0, sleep=anyio.sleep, clock=lambda: 0.0)
    b.begin()
    return b


@pytest.mark.anyio
async def test_a_pack_at_its_limit_does_not_hold_the_other_packs_slots(tmp_path: Path) -> None:
    assert isinstance(Packs(), CapacityGroups)
    b = batch(tmp_path, Packs())
    b.group("image").pool.total = 2  # the image pack's limit, found from its refusals
    first = await b.acquire(image(2))
    assert (first.count, first.group) == (2, "image")
    waited = anyio.Event()

    async def second_image() -> None:
        held = await b.acquire(image(1))  # waits for the image pack, not for the batch
        assert held.group == "image"
        waited.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(second_image)
        await anyio.wait_all_tasks_blocked()
        assert b.waits_for_slots(image(1)) and not b.waits_for_slots(VIDEO)
        videos = [await b.acquire(VIDEO) for _ in range(4)]  # 2 + 4 = the batch's 6
        assert all(v.group == "video" for v in videos) and b.slots.used == 6
        assert b.waits_for_slots(VIDEO)
        b.release(first)
        b.release(videos[0])
        await waited.wait()
    assert (b.slots.used, b.group("image").pool.used, b.group("video").pool.used) == (4, 1, 3)
    b.release(videos[1])
    b.release(videos[1])  # idempotent: it holds nothing now
    assert b.slots.used == 3


@pytest.mark.anyio
async def test_one_group_without_the_capability_and_figures_per_group(tmp_path: Path) -> None:
    plain = batch(tmp_path, object())
    held = await plain.acquire(image(3))
    assert held.group == "" and list(plain.groups) == [""]
    figures = plain.concurrency_figures()
    assert "groups" not in figures and figures["configured"] == 6

    b = batch(tmp_path, Packs())
    video, img = await b.acquire(VIDEO), await b.acquire(image(2))
    b.task_started("v", video)
    b.task_started("i", img)
    assert (b.group("video").tasked_slots, b.group("image").tasked_slots) == (1, 2)
    b.group("image").adaptive.on_over_capacity(b.group("image").adaptive.epoch, held=2)
    b.task_ended("i")
    b.task_ended("i")
    assert b.group("image").tasked_slots == 0
    figures = b.concurrency_figures()
    assert figures["groups"]["image"]["limit_found"] == 2
    assert figures["groups"]["video"]["limit_found"] is None
    assert figures["limit_found"] is None and figures["over_capacity_cuts"] == 1


@pytest.mark.anyio
async def test_stopping_refuses_every_groups_waiters(tmp_path: Path) -> None:
    b = batch(tmp_path, Packs(), concurrency=1)
    await b.acquire(VIDEO)
    refused: list[bool] = []

    async def wait_for_video() -> None:
        try:
            await b.acquire(VIDEO)
        except PoolClosed:
            refused.append(True)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for_video)
        await anyio.wait_all_tasks_blocked()
        b.stop(None)
    assert refused == [True]
    with pytest.raises(PoolClosed):
        await b.acquire(image(1))  # a group made after the stop is closed too
