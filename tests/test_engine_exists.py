"""A create the provider refuses because its external id already names a task: that task exists
and is paid for. The engine finds it (reads may lag behind the create) and polls it; it never
fails the item for it, and never resends under a new id."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import Category, ErrorInfo, ProviderError
from orchestrator.ledger import ItemState, Ledger
from orchestrator.providers.base import Task, TaskRequest, TaskStatus
from tests.test_engine import FakeClock, FakeProvider, manifest, run, sent_id, server_error

pytestmark = pytest.mark.anyio


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def exists_error(ext: str) -> ProviderError:
    info = ErrorInfo(
        category=Category.VALIDATION,
        message=f"External_task_id {ext} already exists",
        retryable=False,
        hint="The task exists: it is looked up.",
        code=1201,
        http_status=400,
    )
    return ProviderError(info, exists=True)


class LaggingProvider(FakeProvider):
    """Kling as it is: a reused external id is refused, and reads by external id show a task
    only ``lag`` seconds after it was created."""

    def __init__(self, clock: FakeClock, lag: float) -> None:
        super().__init__(clock)
        self.lag = lag
        self.created_at: dict[str, float] = {}

    async def create(self, request: TaskRequest, external_task_id: str) -> Task:
        if external_task_id in self.committed:
            self.create_calls.append((external_task_id, self.clock.now))
            raise exists_error(external_task_id)
        self.created_at[external_task_id] = self.clock.now
        return await super().create(request, external_task_id)

    async def lookup(
        self, request: TaskRequest, external_task_id: str, *, sent_after: float | None = None
    ) -> Task | None:
        self.lookup_calls += 1
        created = self.created_at.get(external_task_id)
        if created is None or self.clock.now < created + self.lag:
            return None  # not visible yet: to this reader, "absent"
        return self.committed[external_task_id]


async def test_a_lagging_read_then_already_exists_finds_the_task(
    tmp_path: Path, clock: FakeClock
) -> None:
    provider = LaggingProvider(clock, lag=12.0)
    # The first create commits but its answer is lost (a 504): the lookups right after it do
    # not see the task yet, so it is resent, and refused as already existing.
    provider.create_rule = lambda ext, n: (True, server_error(5002, ambiguous=True, status=504))
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        outcome = await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        rec = ledger.get("a")
        assert rec.state is ItemState.SUCCEEDED, rec.error
        assert rec.task_id == "T1" and rec.tasks_created == 1
    exts = [ext for ext, _ in provider.create_calls]
    assert len(set(exts)) == 1  # never a new id: one task, one payment
    assert len(provider.committed) == 1
    assert provider.lookup_calls >= 3
    assert outcome.stopped_by is None


async def test_a_task_never_shown_is_left_unresolved_not_resent(
    tmp_path: Path, clock: FakeClock
) -> None:
    provider = LaggingProvider(clock, lag=10_000.0)
    provider.create_rule = lambda ext, n: (True, server_error(5002, ambiguous=True, status=504))
    m = manifest(tmp_path, ["a"])
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        await run(m, provider, clock, ledger)
        rec = ledger.get("a")
        assert rec.state is ItemState.SUBMITTING  # the next run looks it up again
        assert rec.error is not None
        assert "exists (so it is paid for)" in rec.error.message
        assert "Nothing was resubmitted" in rec.error.hint
    assert len(provider.committed) == 1
    creates = len(provider.create_calls)
    assert creates == 2  # the lost one and the one refused as a duplicate
    # The search is bounded by retry.lookup_timeout (300 s by default).
    waited = clock.now - provider.created_at[provider.create_calls[0][0]]
    assert 300 - 60 <= waited <= 300 + 2 * 10 + 60


async def test_already_exists_on_the_first_send_is_found(tmp_path: Path, clock: FakeClock) -> None:
    # A task made under this id by an earlier run the ledger forgot: never a failure.
    provider = LaggingProvider(clock, lag=0.0)
    m = manifest(tmp_path, ["a"])
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        ext = sent_id(ledger, m.items[0])
        provider.committed[ext] = Task("EARLIER", TaskStatus.SUBMITTED, ext)
        provider.created_at[ext] = clock.now - 3600
        await run(m, provider, clock, ledger)
        rec = ledger.get("a")
        assert rec.state is ItemState.SUCCEEDED
        assert rec.task_id == "EARLIER"
    assert len(provider.create_calls) == 1
