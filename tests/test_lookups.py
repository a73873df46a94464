"""Lookups by external id asked in the same moment go in one request where the provider reads
many at once (Kling API 2.0); each caller still gets its own answer."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence

import anyio
import pytest

from orchestrator.errors import Category, ErrorInfo, ProviderError
from orchestrator.lookups import LookupBatcher
from orchestrator.providers.base import Kind, Task, TaskRequest, TaskStatus

pytestmark = pytest.mark.anyio

V2 = TaskRequest(Kind.TEXT2VIDEO, {"model": "kling-3.0-turbo"}, 1)
V1 = TaskRequest(Kind.TEXT2VIDEO, {"model": "kling-v3"}, 1)


class Reader:
    name = "fake"
    batch_limit = 50

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], float | None]] = []
        self.single: list[str] = []
        self.tasks = {f"ext-{i}": Task(f"T{i}", TaskStatus.SUBMITTED, f"ext-{i}")
                      for i in range(0, 200, 2)}  # the even ones exist
        self.error: ProviderError | None = None

    def batch_key(self, request: TaskRequest) -> Hashable | None:
        return "v2" if request.fields["model"] == "kling-3.0-turbo" else None

    async def lookup_many(
        self, key: Hashable, external_task_ids: Sequence[str], *, sent_after: float | None
    ) -> dict[str, Task | ProviderError | None]:
        self.calls.append((list(external_task_ids), sent_after))
        await anyio.lowlevel.checkpoint()
        if self.error is not None:
            raise self.error
        found: dict[str, Task | ProviderError | None] = {}
        for ext in external_task_ids:
            if ext == "ext-odd-unanswered":
                continue
            found[ext] = self.tasks.get(ext)
        return found

    async def query_many(self, key: Hashable, task_ids: Sequence[str]) -> dict[str, Task]:
        raise NotImplementedError

    async def lookup(
        self, request: TaskRequest, external_task_id: str, *, sent_after: float | None = None
    ) -> Task | None:
        self.single.append(external_task_id)
        return self.tasks.get(external_task_id)

    async def create(self, request: TaskRequest, external_task_id: str) -> Task:
        raise NotImplementedError

    async def query(self, request: TaskRequest, task_id: str) -> Task:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


async def lookup_all(batcher: LookupBatcher, exts: list[str], sent: dict[str, float | None],
                     request: TaskRequest = V2) -> dict[str, object]:
    results: dict[str, object] = {}

    async def one(ext: str) -> None:
        try:
            results[ext] = await batcher.lookup(request, ext, sent_after=sent.get(ext, 100.0))
        except ProviderError as err:
            results[ext] = err

    async with anyio.create_task_group() as tg:
        for ext in exts:
            tg.start_soon(one, ext)
    return results


async def test_lookups_of_one_moment_share_requests() -> None:
    reader = Reader()
    requests: Counter[str] = Counter()
    batcher = LookupBatcher(reader, requests)
    exts = [f"ext-{i}" for i in range(120)]
    results = await lookup_all(batcher, exts, {})
    assert [len(ids) for ids, _ in reader.calls] == [50, 50, 20]
    assert requests["lookup"] == 3  # instead of 120
    assert results["ext-4"] == reader.tasks["ext-4"]
    assert results["ext-5"] is None  # proven absent by the provider
    assert reader.single == []


async def test_one_window_for_those_with_a_send_time_none_for_the_others() -> None:
    reader = Reader()
    batcher = LookupBatcher(reader)
    sent: dict[str, float | None] = {"ext-0": 300.0, "ext-2": 200.0, "ext-4": None}
    await lookup_all(batcher, ["ext-0", "ext-2", "ext-4"], sent)
    assert sorted(reader.calls) == [(["ext-0", "ext-2"], 200.0), (["ext-4"], None)]


async def test_each_caller_gets_the_error_and_an_unanswered_id_is_not_absent() -> None:
    reader = Reader()
    batcher = LookupBatcher(reader)
    results = await lookup_all(batcher, ["ext-0", "ext-odd-unanswered"], {})
    assert results["ext-0"] == reader.tasks["ext-0"]
    missing = results["ext-odd-unanswered"]
    assert isinstance(missing, ProviderError) and missing.info.retryable  # never "absent"
    reader.error = ProviderError(
        ErrorInfo(Category.SERVER, "boom", retryable=True, hint="h", code=5000), sent=True
    )
    results = await lookup_all(batcher, ["ext-0", "ext-2"], {})
    errors = [results["ext-0"], results["ext-2"]]
    assert all(isinstance(e, ProviderError) and e.info.code == 5000 for e in errors)
    assert errors[0] is not errors[1]  # each raised its own exception object


async def test_requests_the_provider_cannot_gather_are_looked_up_alone() -> None:
    reader = Reader()
    requests: Counter[str] = Counter()
    batcher = LookupBatcher(reader, requests)
    await lookup_all(batcher, ["ext-0", "ext-1"], {}, request=V1)
    assert reader.calls == [] and sorted(reader.single) == ["ext-0", "ext-1"]
    assert requests["lookup"] == 2
