"""Rerun control: ``--retry-failed [ID...]`` gives failed items a new attempt without renaming
them (within retry.max_attempts unless ``--force``), and ``--only ID...`` runs some items alone.
The engine's decisions on a scripted provider and a fake clock; the CLI's refusals as a user
meets them."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

import pytest

from orchestrator.config import Manifest
from orchestrator.engine import Engine, RunOutcome
from orchestrator.errors import Category, ErrorInfo
from orchestrator.ledger import ItemState, Ledger
from orchestrator.providers.base import Asset, Task, TaskRequest, TaskStatus
from tests.conftest import run_cli, write_doc
from tests.test_engine import FakeClock, FakeProvider, manifest

pytestmark = pytest.mark.anyio

POLICY = ErrorInfo(category=Category.POLICY, message="prompt flagged", retryable=False,
                   hint="change the prompt", code=1301)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Refusing(FakeProvider):
    """The first task of each item in ``refused`` ends failed by policy; every other task
    succeeds."""

    def __init__(self, refused: set[str]) -> None:
        super().__init__(FakeClock())
        self.refused = refused
        self.first_failing: set[str] = set()
        self.seen: set[str] = set()
        self.status = self._status

    async def create(self, request: TaskRequest, external_task_id: str) -> Task:
        task = await super().create(request, external_task_id)
        item = str(request.fields["prompt"]).removeprefix("prompt ")
        if item in self.refused and item not in self.seen:
            self.first_failing.add(task.task_id)
        self.seen.add(item)
        return task

    def _status(self, task: Task) -> Task:
        if task.task_id in self.first_failing:
            return Task(task.task_id, TaskStatus.FAILED, failure=POLICY, message="flagged")
        return Task(task.task_id, TaskStatus.SUCCEEDED,
                    assets=(Asset(0, "https://x/0.mp4", "video"),))


def refusing(refused: set[str]) -> Refusing:
    return Refusing(refused)


async def run(m: Manifest, provider: FakeProvider, ledger: Ledger, *,
              retry_failed: Collection[str] | None = None, force: bool = False,
              only: Collection[str] | None = None) -> RunOutcome:
    clock = provider.clock
    engine = Engine(m, provider, ledger, sleep=clock.sleep, clock=clock.time, rand=lambda: 1.0,
                    retry_failed=retry_failed, force=force, only=only)
    return await engine.run()


async def test_a_refused_item_gets_a_new_attempt_only_when_asked(tmp_path: Path) -> None:
    m = manifest(tmp_path, ["a", "b"])
    provider = refusing({"a", "b"})
    with Ledger(tmp_path / "s", "t", clock=provider.clock.time) as ledger:
        await run(m, provider, ledger)
        assert {ledger.get(i).state for i in "ab"} == {ItemState.FAILED}
        await run(m, provider, ledger)  # a plain rerun: a policy failure is final
        assert len(provider.create_calls) == 2
        await run(m, provider, ledger, retry_failed=["b"])
        assert ledger.get("a").state is ItemState.FAILED
        assert ledger.get("b").state is ItemState.SUCCEEDED
        assert len(provider.create_calls) == 3
        await run(m, provider, ledger, retry_failed=[])  # every failed item
        assert ledger.get("a").state is ItemState.SUCCEEDED
        assert ledger.get("a").tasks_created == 2
    assert len(provider.create_calls) == 4
    assert len({ext for ext, _ in provider.create_calls}) == 4  # each attempt its own id


async def test_retry_failed_keeps_within_max_attempts_unless_forced(tmp_path: Path) -> None:
    m = manifest(tmp_path, ["a"], max_attempts=1)
    provider = refusing({"a"})
    with Ledger(tmp_path / "s", "t", clock=provider.clock.time) as ledger:
        await run(m, provider, ledger)
        await run(m, provider, ledger, retry_failed=["a"])  # 1 paid of 1 allowed
        assert len(provider.create_calls) == 1 and ledger.get("a").state is ItemState.FAILED
        await run(m, provider, ledger, retry_failed=["a"], force=True)
        assert len(provider.create_calls) == 2 and ledger.get("a").state is ItemState.SUCCEEDED


async def test_only_runs_the_items_named(tmp_path: Path) -> None:
    m = manifest(tmp_path, ["a", "b", "c"])
    provider = refusing(set())
    with Ledger(tmp_path / "s", "t", clock=provider.clock.time) as ledger:
        await run(m, provider, ledger, only=["b"])
        assert [ledger.get(i).state for i in "abc"] == [
            ItemState.PENDING, ItemState.SUCCEEDED, ItemState.PENDING
        ]
        assert len(provider.create_calls) == 1
        await run(m, provider, ledger)
        assert {ledger.get(i).state for i in "abc"} == {ItemState.SUCCEEDED}
    assert len(provider.create_calls) == 3


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--only", "nope"], "--only: no item 'nope' in"),
        (["--retry-failed", "a", "ghost"], "--retry-failed: no item 'ghost' in"),
        (["--force"], "--force goes with --retry-failed"),
    ],
)
def test_the_cli_refuses_items_the_manifest_has_not(
    tmp_path: Path, flags: list[str], said: str
) -> None:
    path = write_doc(tmp_path, {"name": "kling", "base_url": "simulator"},
                     {"kind": "text2video", "model": "kling-v2-5-turbo", "duration": 5},
                     [{"id": "a", "prompt": "p"}], name="rerun")
    result = run_cli(["run", str(path), *flags], dict(os.environ))
    assert result.code == 2 and said in result.stderr and "nothing was sent" in result.stderr
    assert "Traceback" not in result.stderr
