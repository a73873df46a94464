"""Property: whatever the provider does, no item is lost and nothing is paid twice.

Hypothesis draws, for every create, query and lookup, what the provider does (answer, refuse,
fail before or after committing, time out, drop, rate-limit, stop the account) and how each task
ends. After the run:
- the engine returned (no exception escaped);
- no external id was committed twice, and no item has two successful tasks;
- every item is terminal, or resumable in a way a rerun handles safely: pending (not sent),
  submitting with a recorded error (looked up again first), running (polled again);
- what the ledger says of a finished item matches the provider's truth.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from tempfile import TemporaryDirectory

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.engine import Engine
from orchestrator.errors import Category, ErrorInfo, ProviderError, Scope
from orchestrator.ledger import ItemState, Ledger
from orchestrator.providers.base import Asset, Task, TaskRequest, TaskStatus
from tests.test_engine import FakeClock, manifest

CREATE_BEHAVIOURS = [
    "ok",
    "rate_limited",
    "over_capacity",
    "5xx_before_commit",
    "5xx_after_commit",
    "timeout_before_commit",
    "timeout_after_commit",
    "refused",
    "invalid",
    "billing",
]
QUERY_BEHAVIOURS = ["ok", "5xx", "timeout", "not_found", "auth_revoked"]
LOOKUP_BEHAVIOURS = ["ok", "5xx"]
ENDINGS = ["full", "fewer", "none", "failed_retryable", "failed_policy", "processing"]


def _info(category: Category, *, retryable: bool, code: int | None = None,
          status: int | None = None, scope: Scope = Scope.ITEM) -> ErrorInfo:
    return ErrorInfo(category=category, message=str(category), retryable=retryable, hint="h",
                     code=code, http_status=status, scope=scope)


class ChaoticProvider:
    name = "chaotic"

    def __init__(self, creates: list[str], queries: list[str], lookups: list[str],
                 endings: list[str]) -> None:
        self._creates, self._queries, self._lookups = creates, queries, lookups
        self._endings = endings
        self.calls = Counter[str]()
        self.commits: Counter[str] = Counter()
        self.tasks: dict[str, Task] = {}  # task_id -> final truth
        self.by_ext: dict[str, str] = {}

    def _next(self, kind: str, script: list[str]) -> str:
        i = self.calls[kind]
        self.calls[kind] += 1
        return script[i % len(script)]

    def _commit(self, request: TaskRequest, ext: str) -> Task:
        self.commits[ext] += 1
        task_id = f"T{sum(self.commits.values())}"
        ending = self._endings[(len(self.tasks)) % len(self._endings)]
        n = request.expected_assets
        assets = tuple(Asset(i, f"u{i}", "video") for i in range(n))
        truth = {
            "full": Task(task_id, TaskStatus.SUCCEEDED, ext, assets=assets),
            "fewer": Task(task_id, TaskStatus.SUCCEEDED, ext, assets=assets[: n - 1]),
            "none": Task(task_id, TaskStatus.SUCCEEDED, ext, assets=()),
            "failed_retryable": Task(task_id, TaskStatus.FAILED, ext, failure=_info(
                Category.TASK_FAILED, retryable=True)),
            "failed_policy": Task(task_id, TaskStatus.FAILED, ext, failure=_info(
                Category.POLICY, retryable=False)),
            "processing": Task(task_id, TaskStatus.PROCESSING, ext),
        }[ending]
        self.tasks[task_id] = truth
        self.by_ext[ext] = task_id
        return Task(task_id, TaskStatus.SUBMITTED, ext)

    async def create(self, request: TaskRequest, external_task_id: str) -> Task:
        what = self._next("create", self._creates)
        if what == "ok":
            return self._commit(request, external_task_id)
        if what == "rate_limited":
            raise ProviderError(_info(Category.RATE_LIMIT, retryable=True, code=1302,
                                      status=429), retry_after=1.0)
        if what == "over_capacity":
            raise ProviderError(_info(Category.RATE_LIMIT, retryable=True, code=1303,
                                      status=429), over_capacity=True)
        if what in ("5xx_after_commit", "timeout_after_commit"):
            self._commit(request, external_task_id)
        if what.startswith("5xx"):
            raise ProviderError(_info(Category.SERVER, retryable=True, code=5000, status=500),
                                ambiguous=True)
        if what.startswith("timeout"):
            raise ProviderError(_info(Category.TIMEOUT, retryable=True), ambiguous=True)
        if what == "refused":
            raise ProviderError(_info(Category.NETWORK, retryable=True), sent=False)
        if what == "invalid":
            raise ProviderError(_info(Category.VALIDATION, retryable=False, code=1201,
                                      status=400))
        raise ProviderError(_info(Category.BILLING, retryable=False, code=1102, status=429,
                                  scope=Scope.ACCOUNT))

    async def query(self, request: TaskRequest, task_id: str) -> Task:
        what = self._next("query", self._queries)
        if what == "5xx":
            raise ProviderError(_info(Category.SERVER, retryable=True, code=5000, status=500))
        if what == "timeout":
            raise ProviderError(_info(Category.TIMEOUT, retryable=True))
        if what == "not_found":
            raise ProviderError(_info(Category.VALIDATION, retryable=False, code=1201,
                                      status=400), not_found=True)
        if what == "auth_revoked":
            raise ProviderError(_info(Category.AUTH, retryable=False, code=1002, status=401,
                                      scope=Scope.ACCOUNT))
        return self.tasks[task_id]

    async def lookup(
        self, request: TaskRequest, external_task_id: str, *, sent_after: float | None = None
    ) -> Task | None:
        if self._next("lookup", self._lookups) == "5xx":
            raise ProviderError(_info(Category.SERVER, retryable=True, code=5000, status=500))
        task_id = self.by_ext.get(external_task_id)
        return Task(task_id, TaskStatus.SUBMITTED, external_task_id) if task_id else None

    async def aclose(self) -> None:
        pass


def scripts(options: list[str], weight_ok: int) -> st.SearchStrategy[list[str]]:
    ok = st.sampled_from(["ok"] * weight_ok + options)
    return st.lists(ok, min_size=1, max_size=12)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    creates=scripts(CREATE_BEHAVIOURS, 6),
    queries=scripts(QUERY_BEHAVIOURS, 10),
    lookups=scripts(LOOKUP_BEHAVIOURS, 4),
    endings=st.lists(st.sampled_from(ENDINGS), min_size=1, max_size=6),
    n_items=st.integers(1, 5),
)
def test_no_item_lost_nothing_paid_twice(
    creates: list[str], queries: list[str], lookups: list[str], endings: list[str],
    n_items: int,
) -> None:
    provider = ChaoticProvider(creates, queries, lookups, endings)
    clock = FakeClock()
    with TemporaryDirectory() as tmp:
        m = manifest(Path(tmp), [f"i{n}" for n in range(n_items)], max_attempts=3)
        with Ledger(Path(tmp) / "s", "t", clock=clock.time) as ledger:
            engine = Engine(m, provider, ledger, sleep=clock.sleep, clock=clock.time,
                            rand=lambda: 0.5)
            outcome = anyio.run(engine.run, backend="asyncio")
            records = ledger.all()

    assert outcome.crashed == 0
    assert max(provider.commits.values(), default=0) <= 1, provider.commits
    assert len(records) == n_items
    for rec in records:
        truth = provider.tasks.get(rec.task_id) if rec.task_id else None
        if rec.state is ItemState.SUCCEEDED:
            assert truth is not None and truth.status is TaskStatus.SUCCEEDED
            assert len(truth.assets) == rec.expected_assets
        elif rec.state is ItemState.PARTIAL:
            assert truth is not None and 0 < len(truth.assets) < rec.expected_assets
        elif rec.state is ItemState.FAILED:
            assert rec.error is not None and rec.error.hint
        elif rec.state is ItemState.SUBMITTING:
            assert rec.error is not None  # unresolved: the rerun looks it up before anything
        elif rec.state is ItemState.RUNNING:
            # polled again by the rerun: only when the run stopped or polling was abandoned,
            # or when the task's answers could not be read until poll.timeout (then it says so)
            assert outcome.stopped_by is not None or (
                rec.error is not None and "could not be used" in rec.error.message
            )
        else:
            assert rec.state is ItemState.PENDING
            assert outcome.stopped_by is not None  # only a stopped batch leaves items unsent
    # One successful task per item at most (a succeeded item's task is its only success).
    successes = Counter(
        t.external_task_id.rsplit("-", 1)[0]
        for t in provider.tasks.values()
        if t.status is TaskStatus.SUCCEEDED and t.external_task_id
    )
    assert max(successes.values(), default=0) <= 1
