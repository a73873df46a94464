"""The poller's choice between one list request and one query per task, on a virtual clock.

Time advances only when every task is blocked, to the next sleeper's wake-up: no real waiting,
and the figures (requests, notice delays) are exact.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Container, Hashable, Sequence
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import pytest

from orchestrator.errors import Category, ErrorInfo, ProviderError
from orchestrator.poller import PAGE_SIZE, ListPoller, QueryPoller
from orchestrator.providers.base import Kind, Task, TaskRequest, TaskStatus

pytestmark = pytest.mark.anyio

T2V = TaskRequest(Kind.TEXT2VIDEO, {}, 1)


class VirtualClock:
    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self.now + max(0.0, seconds), next(self._order), event))
        await event.wait()

    async def drive(self) -> None:
        """Forever: once everything is blocked, jump to the next wake-up."""
        while True:
            await anyio.wait_all_tasks_blocked()
            while self._sleepers and self._sleepers[0][2].is_set():
                heapq.heappop(self._sleepers)  # cancelled sleepers leave their event unset
            if not self._sleepers:
                await anyio.sleep(0)
                continue
            at, _, event = heapq.heappop(self._sleepers)
            self.now = max(self.now, at)
            event.set()


@dataclass
class FakeTask:
    task_id: str
    ends_at: float
    fails: bool = False


class FakeLister:
    """Tasks of one family, listed newest first; ``foreign`` tasks of someone else are newer
    than ours. Counts every request and can fail lists."""

    name = "fake"

    def __init__(self, clock: VirtualClock, tasks: list[FakeTask], foreign: int = 0) -> None:
        self.clock = clock
        self.tasks = {t.task_id: t for t in tasks}
        self.order = [t.task_id for t in tasks] + [f"other-{i}" for i in range(foreign)]
        self.requests: Counter[str] = Counter()
        self.list_error: Exception | None = None
        self.unlisted: set[str] = set()

    def view(self, task_id: str) -> Task:
        task = self.tasks.get(task_id)
        if task is None:
            return Task(task_id, TaskStatus.SUCCEEDED)
        if self.clock.now < task.ends_at:
            return Task(task_id, TaskStatus.PROCESSING)
        return Task(task_id, TaskStatus.FAILED if task.fails else TaskStatus.SUCCEEDED)

    async def query(self, request: TaskRequest, task_id: str) -> Task:
        self.requests["query"] += 1
        await anyio.lowlevel.checkpoint()
        return self.view(task_id)

    def list_key(self, request: TaskRequest) -> Hashable | None:
        return request.kind

    async def list_matching(
        self, key: Hashable, page: int, task_ids: Container[str]
    ) -> tuple[dict[str, Task], int]:
        self.requests["list"] += 1
        await anyio.lowlevel.checkpoint()
        if self.list_error is not None:
            raise self.list_error
        newest_first = [t for t in reversed(self.order) if t not in self.unlisted]
        entries = newest_first[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        return {t: self.view(t) for t in entries if t in task_ids}, len(entries)

    async def create(self, request: TaskRequest, external_task_id: str) -> Task:
        raise NotImplementedError

    async def lookup(
        self, request: TaskRequest, external_task_id: str, *, sent_after: float | None = None
    ) -> Task | None:
        raise NotImplementedError

    async def aclose(self) -> None:
        pass


async def watch_all_started(
    poller: ListPoller | QueryPoller, clock: VirtualClock, task_ids: list[str]
) -> dict[str, float]:
    """Like watch_all, with the clock and the scheduler already running."""
    noticed: dict[str, float] = {}

    async def one(task_id: str) -> None:
        wait = 5.0
        while not (await poller.observe(T2V, task_id, wait)).status.finished:
            wait *= 1.5
        noticed[task_id] = clock.now

    async with anyio.create_task_group() as tg:
        for task_id in task_ids:
            tg.start_soon(one, task_id)
    return noticed


async def watch_all(
    poller: ListPoller | QueryPoller,
    clock: VirtualClock,
    task_ids: list[str],
    *,
    interval: float = 5.0,
    max_interval: float = 30.0,
    starts: dict[str, float] | None = None,
) -> dict[str, float]:
    """Poll every task the way the engine does until it ends; when each end was noticed."""
    noticed: dict[str, float] = {}

    async def one(task_id: str) -> None:
        if starts:
            await clock.sleep(starts.get(task_id, 0.0))
        wait = interval
        while True:
            task = await poller.observe(T2V, task_id, wait)
            if task.status.finished:
                noticed[task_id] = clock.now
                return
            wait = min(wait * 1.5, max_interval)

    async with anyio.create_task_group() as outer:
        outer.start_soon(clock.drive)
        outer.start_soon(poller.run)
        async with anyio.create_task_group() as tg:
            for task_id in task_ids:
                tg.start_soon(one, task_id)
        outer.cancel_scope.cancel()
    return noticed


def make(
    tasks: list[FakeTask], *, foreign: int = 0, window: float = 5.0
) -> tuple[VirtualClock, FakeLister, ListPoller, list[ErrorInfo | None]]:
    clock = VirtualClock()
    provider = FakeLister(clock, tasks, foreign)
    accounted: list[ErrorInfo | None] = []
    poller = ListPoller(
        provider, window=window, clock=clock.time, sleep=clock.sleep, account=accounted.append
    )
    return clock, provider, poller, accounted


async def test_many_running_tasks_share_list_requests_and_are_noticed_within_a_window() -> None:
    tasks = [FakeTask(f"t{i}", ends_at=55.0 + (i % 11)) for i in range(200)]
    clock, provider, poller, accounted = make(tasks)
    noticed = await watch_all(poller, clock, [t.task_id for t in tasks])

    assert set(noticed) == {t.task_id for t in tasks}
    # 200 tasks polled one by one would take 5+ queries each (1000+ requests).
    assert provider.requests["query"] == 0
    assert provider.requests["list"] <= 20
    assert poller.requests == provider.requests
    assert len(accounted) == provider.requests.total() and not any(accounted)
    for task in tasks:
        assert task.ends_at <= noticed[task.task_id] <= task.ends_at + 30.0


async def test_ends_are_noticed_sooner_than_each_tasks_own_interval() -> None:
    # Tasks started 0..40 s apart: the young ones keep sweeps frequent, and a sweep reports
    # every ended task it sees, whatever its own (grown) interval.
    tasks = [FakeTask(f"t{i}", ends_at=60.0 + i) for i in range(41)]
    clock, provider, poller, _ = make(tasks)
    starts = {f"t{i}": float(i) for i in range(41)}
    noticed = await watch_all(poller, clock, list(starts), starts=starts)
    delays = sorted(noticed[t.task_id] - t.ends_at for t in tasks)
    assert delays[len(delays) // 2] <= 5.0  # median within one window (poll.interval)
    assert provider.requests["query"] <= 2


async def test_a_lone_task_is_queried_not_listed() -> None:
    clock, provider, poller, _ = make([FakeTask("solo", ends_at=20.0)])
    noticed = await watch_all(poller, clock, ["solo"])
    assert noticed == {"solo": pytest.approx(23.75)}  # 5, 12.5, 23.75: its own schedule
    assert provider.requests == Counter(query=3)


async def test_tasks_missing_from_the_list_are_queried_one_by_one() -> None:
    tasks = [FakeTask(f"t{i}", ends_at=4.0) for i in range(10)]
    clock, provider, poller, _ = make(tasks)
    provider.unlisted = {"t3", "t7"}  # not listed yet (reads lag), or never
    noticed = await watch_all(poller, clock, [t.task_id for t in tasks])
    assert set(noticed) == {t.task_id for t in tasks}
    assert provider.requests == Counter(list=1, query=2)


async def test_tasks_deep_in_the_list_are_found_on_later_pages_then_queried_when_cheaper() -> None:
    # 1200 newer tasks of someone else push ours to page 3.
    tasks = [FakeTask(f"t{i}", ends_at=4.0 if i < 2 else 100.0) for i in range(4)]
    clock, provider, poller, _ = make(tasks, foreign=1200)
    noticed = await watch_all(poller, clock, ["t0", "t1", "t2"])
    assert set(noticed) == {"t0", "t1", "t2"}
    # First sweep: pages 1-3 for four... three tasks; after that three due tasks are no longer
    # worth three pages: they are queried.
    assert provider.requests["list"] == 3
    assert provider.requests["query"] >= 1


async def failures_of(poller: ListPoller, task_ids: list[str]) -> list[Exception]:
    """One observation of each task (due in 5 s); what each raised."""
    failures: list[Exception] = []

    async def one(task_id: str) -> None:
        try:
            await poller.observe(T2V, task_id, 5.0)
        except Exception as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tg:
        for task_id in task_ids:
            tg.start_soon(one, task_id)
    return failures


async def test_a_failed_list_fails_each_waiter_with_its_own_error_and_is_charged_once() -> None:
    tasks = [FakeTask(f"t{i}", ends_at=100.0) for i in range(5)]
    clock, provider, poller, accounted = make(tasks)
    info = ErrorInfo(category=Category.SERVER, message="down", retryable=True, hint="h",
                     http_status=503, code=5001)
    provider.list_error = ProviderError(info, retry_after=7.0)

    async with anyio.create_task_group() as outer:
        outer.start_soon(clock.drive)
        outer.start_soon(poller.run)
        errors = await failures_of(poller, [t.task_id for t in tasks])
        outer.cancel_scope.cancel()

    assert len(errors) == 5
    assert len({id(e) for e in errors}) == 5
    assert all(isinstance(e, ProviderError) and e.info == info and e.retry_after == 7.0
               for e in errors)
    assert provider.requests == Counter(list=1)
    assert accounted == [info]


async def test_a_bug_while_listing_fails_the_waiters_not_the_scheduler() -> None:
    tasks = [FakeTask(f"t{i}", ends_at=100.0) for i in range(3)]
    clock, provider, poller, _ = make(tasks)
    provider.list_error = KeyError("surprise")

    async with anyio.create_task_group() as outer:
        outer.start_soon(clock.drive)
        outer.start_soon(poller.run)
        failures = await failures_of(poller, [t.task_id for t in tasks])
        # The scheduler still serves: the next asks are answered (by queries, one by one).
        provider.list_error = None
        assert (await poller.observe(T2V, "t0", 1.0)).status is TaskStatus.PROCESSING
        outer.cancel_scope.cancel()
    assert len(failures) == 3
    assert all(isinstance(f, RuntimeError) and isinstance(f.__cause__, KeyError)
               for f in failures)


async def test_a_cancelled_observer_leaves_nothing_behind() -> None:
    clock, provider, poller, _ = make([FakeTask("a", ends_at=100.0), FakeTask("b", ends_at=6.0)])
    gone = anyio.CancelScope()

    async def observe_a() -> None:
        with gone:
            await poller.observe(T2V, "a", 50.0)

    async with anyio.create_task_group() as outer:
        outer.start_soon(poller.run)
        outer.start_soon(observe_a)
        await anyio.wait_all_tasks_blocked()
        gone.cancel()
        outer.start_soon(clock.drive)
        noticed = await watch_all_started(poller, clock, ["b"])
        outer.cancel_scope.cancel()
    assert noticed == {"b": 12.5}  # its own schedule: 5, then 7.5 later
    assert provider.requests == Counter(query=2)  # "a" was never asked about


async def test_query_poller_sleeps_then_queries() -> None:
    clock = VirtualClock()
    provider = FakeLister(clock, [FakeTask("a", ends_at=3.0)])
    accounted: list[ErrorInfo | None] = []
    poller = QueryPoller(provider, sleep=clock.sleep, account=accounted.append)
    async with anyio.create_task_group() as outer:
        outer.start_soon(clock.drive)
        task = await poller.observe(T2V, "a", 5.0)
        outer.cancel_scope.cancel()
    assert task.status is TaskStatus.SUCCEEDED and clock.now == 5.0
    assert poller.requests == Counter(query=1) and accounted == [None]


# --- batch reads (a provider that reads many tasks by id in one request) ----------------------


class FakeReader(FakeLister):
    """Reads up to ``batch_limit`` tasks by id per request (Kling API 2.0's GET /tasks);
    ``hidden`` tasks are left out of those answers (a single query still sees them)."""

    batch_limit = 3

    def __init__(self, clock: VirtualClock, tasks: list[FakeTask]) -> None:
        super().__init__(clock, tasks)
        self.hidden: set[str] = set()
        self.batches: list[list[str]] = []

    def batch_key(self, request: TaskRequest) -> Hashable | None:
        return "v2"

    async def query_many(self, key: Hashable, task_ids: Sequence[str]) -> dict[str, Task]:
        assert key == "v2" and len(task_ids) <= self.batch_limit
        self.requests["batch"] += 1
        self.batches.append(list(task_ids))
        await anyio.lowlevel.checkpoint()
        return {t: self.view(t) for t in task_ids if t not in self.hidden}

    async def lookup_many(
        self, key: Hashable, external_task_ids: Sequence[str], *, sent_after: float | None
    ) -> dict[str, Task | ProviderError | None]:
        raise NotImplementedError


def make_reader(tasks: list[FakeTask]) -> tuple[VirtualClock, FakeReader, ListPoller]:
    clock = VirtualClock()
    provider = FakeReader(clock, tasks)
    return clock, provider, ListPoller(provider, window=5.0, clock=clock.time, sleep=clock.sleep)


@pytest.mark.anyio
async def test_batch_reads_answer_many_tasks_per_request() -> None:
    tasks = [FakeTask(f"t{i}", ends_at=12.0) for i in range(7)]
    clock, provider, poller = make_reader(tasks)
    noticed = await watch_all(poller, clock, [t.task_id for t in tasks])
    # Asks at 5 s (running) and 12.5 s (ended): 7 tasks due together are read 3 + 3 + 1,
    # twice; never a query of one task on its own (it would have been 14 requests).
    assert noticed == dict.fromkeys(noticed, 12.5)
    assert provider.batches == [["t0", "t1", "t2"], ["t3", "t4", "t5"], ["t6"]] * 2
    assert provider.requests["query"] == provider.requests["list"] == 0
    assert poller.answered_by_batch == 14


@pytest.mark.anyio
async def test_a_batch_read_shows_tasks_that_ended_before_their_poll() -> None:
    early = FakeTask("early", ends_at=1.0)
    late = [FakeTask(f"late{i}", ends_at=100.0) for i in range(2)]
    clock, provider, poller = make_reader([*late, early])
    noticed = await watch_all(
        poller, clock, ["late0", "late1", "early"], starts={"early": 3.0}
    )
    # "early" asks first at 3 + 5 = 8 s; it rides along on the read made at 5 s for the two
    # others' first ask: already ended, it is answered then.
    assert noticed["early"] == 5.0
    assert provider.batches[0] == ["late0", "late1", "early"]


@pytest.mark.anyio
async def test_a_task_left_out_of_a_batch_read_gets_its_own_query() -> None:
    tasks = [FakeTask(f"t{i}", ends_at=1.0) for i in range(3)]
    clock, provider, poller = make_reader(tasks)
    provider.hidden = {"t1"}
    noticed = await watch_all(poller, clock, ["t0", "t1", "t2"])
    assert set(noticed) == {"t0", "t1", "t2"}
    assert provider.requests["batch"] == 1 and provider.requests["query"] == 1
