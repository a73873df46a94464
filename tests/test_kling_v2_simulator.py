"""The client's API 2.0 against the simulator's, over real HTTP on loopback: create, batch
reads by task id and by external id, and absence proven from the time-window list."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest

from orchestrator.errors import ProviderError
from orchestrator.providers.base import Kind, TaskRequest, TaskStatus
from orchestrator.providers.kling import ApiKeyAuth, KlingProvider
from orchestrator.simulator import SimConfig, Simulator

pytestmark = pytest.mark.anyio


class Clock:
    """The simulator's clock: moved by the test, never slept on."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def turbo(prompt: str, **fields: object) -> TaskRequest:
    return TaskRequest(
        Kind.TEXT2VIDEO, {"model": "kling-3.0-turbo", "prompt": prompt, "mode": "pro",
                          "duration": 5, **fields}, 1
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def sim_and_provider(clock: Clock) -> AsyncIterator[tuple[Simulator, KlingProvider]]:
    config = SimConfig(clock=clock, task_duration=(10.0, 10.0), read_lag=5.0)
    with Simulator(config) as sim:
        assert config.api_key is not None
        async with KlingProvider(sim.url, ApiKeyAuth(config.api_key), timeout=5) as provider:
            yield sim, provider


async def test_create_then_read_many_by_id_on_api_2_0(
    sim_and_provider: tuple[Simulator, KlingProvider], clock: Clock
) -> None:
    sim, provider = sim_and_provider
    created = [await provider.create(turbo(f"prompt {i}"), f"ext-{i}") for i in range(3)]
    assert all(task.status is TaskStatus.SUBMITTED for task in created)
    key = provider.batch_key(turbo("x"))
    assert key is not None and provider.list_key(turbo("x")) is None
    ids = [task.task_id for task in created]
    clock.now += 11  # every task has ended
    found = await provider.query_many(key, ids)
    assert set(found) == set(ids)
    done = found[ids[0]]
    assert done.status is TaskStatus.SUCCEEDED and len(done.assets) == 1
    assert done.charged_units is not None and done.charged_units > 0
    stats = sim.stats()
    assert (stats.v2_create_requests, stats.batch_query_requests) == (3, 1)
    assert stats.query_requests == stats.list_requests == 0


async def test_lookups_by_external_id_in_one_request(
    sim_and_provider: tuple[Simulator, KlingProvider], clock: Clock
) -> None:
    sim, provider = sim_and_provider
    sent = time.time()
    task = await provider.create(turbo("looked up"), "ext-found")
    key = provider.batch_key(turbo("x"))
    assert key is not None
    # Reads by external id lag 5 s: right after the create, the list does not show it either,
    # so it reads as absent (which is why the engine never trusts absence after a create
    # refused as already existing).
    early = await provider.lookup_many(key, ["ext-found"], sent_after=sent)
    assert early == {"ext-found": None}
    clock.now += 6
    found = await provider.lookup_many(key, ["ext-found", "ext-never"], sent_after=sent)
    hit = found["ext-found"]
    assert hit is not None and not isinstance(hit, ProviderError)
    assert hit.task_id == task.task_id
    # Never created: proven absent from the time-window list, read to its end.
    assert found["ext-never"] is None
    stats = sim.stats()
    assert stats.window_list_requests >= 1
    # Without the moment it was first sent, absence cannot be proven: an error, never None.
    unproven = await provider.lookup_many(key, ["ext-never"], sent_after=None)
    assert isinstance(unproven["ext-never"], ProviderError)


async def test_a_reused_external_id_is_refused_as_existing_on_api_2_0(
    sim_and_provider: tuple[Simulator, KlingProvider],
) -> None:
    sim, provider = sim_and_provider
    await provider.create(turbo("first"), "ext-twice")
    with pytest.raises(ProviderError) as caught:
        await provider.create(turbo("again"), "ext-twice")
    assert caught.value.exists and not caught.value.ambiguous
    assert sim.stats().tasks_created == 1
