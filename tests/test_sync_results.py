"""A provider whose create answers with the result (a synchronous API: LTX v1, Replicate with
``Prefer: wait``): the engine verifies that answer at once and never polls it; what a lost
answer means is the same as for any provider that cannot look tasks up."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from orchestrator.downloads import Downloader
from orchestrator.errors import Category, ErrorInfo, ProviderError
from orchestrator.ledger import ItemState, Ledger
from orchestrator.providers.base import Asset, Task, TaskRequest, TaskStatus
from orchestrator.simulator.media import video_mp4
from tests.test_engine import FakeClock, manifest, run

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class SyncProvider:
    """Each create answers with the finished task (or raises what ``answers`` says); it has
    no status read worth calling and no lookup."""

    name = "sync"

    def __init__(self, answers: list[Task | ProviderError]) -> None:
        self.answers = answers
        self.creates: list[str] = []
        self.queries = 0

    async def create(self, request: TaskRequest, external_task_id: str) -> Task:
        self.creates.append(external_task_id)
        answer = self.answers[min(len(self.creates), len(self.answers)) - 1]
        if isinstance(answer, ProviderError):
            raise answer
        return answer

    async def query(self, request: TaskRequest, task_id: str) -> Task:
        self.queries += 1
        raise AssertionError("a synchronous result is never polled")

    async def aclose(self) -> None:
        pass


def done(task_id: str, n: int = 1) -> Task:
    assets = tuple(Asset(i, f"https://cdn.test/{task_id}/{i}.mp4", "video") for i in range(n))
    return Task(task_id, TaskStatus.SUCCEEDED, assets=assets)


def serve(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=video_mp4(request.url.path, 0),
                          headers={"Content-Type": "video/mp4"})


def downloader(tmp_path: Path, clock: FakeClock) -> Downloader:
    return Downloader(tmp_path, transport=httpx.MockTransport(serve), sleep=clock.sleep)


async def test_a_create_that_answers_with_the_result_is_verified_and_downloaded_unpolled(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    provider = SyncProvider([done("S1")])
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        outcome = await run(manifest(tmp_path, ["a"]), provider, clock, ledger,
                            downloader(tmp_path, clock))
        rec = ledger.get("a")
    assert rec.state is ItemState.SUCCEEDED and rec.download_error is None
    assert rec.task_id == "S1" and rec.assets[0].path == "a/0.mp4"
    assert (tmp_path / "a" / "0.mp4").read_bytes() == video_mp4("/S1/0.mp4", 0)
    assert provider.creates and len(provider.creates) == 1 and provider.queries == 0
    assert outcome.requests["create"] == 1 and "query" not in outcome.requests
    assert "list" not in outcome.requests


async def test_a_result_with_fewer_assets_than_asked_is_partial(tmp_path: Path) -> None:
    clock = FakeClock()
    m = manifest(tmp_path, ["a"])
    item = m.items[0]
    m = replace(m, items=(replace(item, request=replace(item.request, expected_assets=2)),))
    provider = SyncProvider([done("S1", 1)])
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        await run(m, provider, clock, ledger, downloader(tmp_path, clock))
        rec = ledger.get("a")
    assert rec.state is ItemState.PARTIAL and len(rec.assets) == 1
    assert provider.queries == 0


async def test_a_failed_result_worth_retrying_gets_a_new_attempt_not_a_poll(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    failure = ErrorInfo(category=Category.TASK_FAILED, message="gpu fell over",
                        retryable=True, hint="h")
    failed = Task("S1", TaskStatus.FAILED, message="gpu fell over", failure=failure)
    provider = SyncProvider([failed, done("S2")])
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        outcome = await run(manifest(tmp_path, ["a"]), provider, clock, ledger,
                            downloader(tmp_path, clock))
        rec = ledger.get("a")
    assert rec.state is ItemState.SUCCEEDED and rec.task_id == "S2"
    assert len(provider.creates) == 2 and len(set(provider.creates)) == 2  # a new attempt's id
    assert provider.queries == 0 and outcome.retries == 1


async def test_a_lost_answer_is_held_unresolved_never_resent(tmp_path: Path) -> None:
    clock = FakeClock()
    lost = ProviderError(
        ErrorInfo(category=Category.TIMEOUT, message="read timed out", retryable=True, hint="h"),
        ambiguous=True,
    )
    provider = SyncProvider([lost, done("S2")])
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        rec = ledger.get("a")
    assert rec.state is ItemState.SUBMITTING and rec.error is not None
    assert "--resubmit-unresolved" in rec.error.hint
    assert len(provider.creates) == 1 and provider.queries == 0
