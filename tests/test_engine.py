"""Engine decisions with a scripted provider and a fake clock: no real waiting.

The end-to-end tests run the real thing against the simulator; these pin down timing rules and
corner cases that are hard to provoke over HTTP (lookups that keep failing, a create still in
flight at the server, a bug inside one item).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import anyio
import httpx
import pytest
from anyio.lowlevel import checkpoint

from orchestrator import report
from orchestrator.config import (
    Item,
    Limits,
    Manifest,
    PollSettings,
    ProviderSettings,
    RetrySettings,
)
from orchestrator.downloads import Downloader
from orchestrator.engine import Engine, RunOutcome
from orchestrator.errors import Category, ErrorInfo, ProviderError, Scope, request_timeout
from orchestrator.fingerprint import file_sha256, fingerprint
from orchestrator.ledger import AssetRecord, ItemState, Ledger
from orchestrator.providers.base import Asset, Kind, Provider, Task, TaskRequest, TaskStatus
from orchestrator.retry import RetryPolicy
from orchestrator.simulator.media import image_png, video_mp4

pytestmark = pytest.mark.anyio

TIMEOUT = 10.0
GRACE = 2.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await checkpoint()


def server_error(code: int = 5000, *, ambiguous: bool, status: int | None = 500) -> ProviderError:
    info = ErrorInfo(
        category=Category.SERVER, message="boom", retryable=True, hint="h",
        code=code, http_status=status,
    )
    return ProviderError(info, ambiguous=ambiguous)


CreateRule = Callable[[str, int], tuple[bool, ProviderError | None]]


class FakeProvider:
    """Creates commit (or not) and answer (or raise) as ``create_rule`` says."""

    name = "fake"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.committed: dict[str, Task] = {}
        self.create_calls: list[tuple[str, float]] = []
        self.lookup_calls = 0
        self.lookup_sent_after: list[float | None] = []
        self.create_rule: CreateRule = lambda ext, n: (True, None)
        self.lookup_error: ProviderError | None = None
        self.status: Callable[[Task], Task] = lambda t: Task(
            t.task_id, TaskStatus.SUCCEEDED, assets=(Asset(0, "https://x/0.mp4", "video"),)
        )
        self.query_error: Exception | None = None

    async def create(self, request: TaskRequest, external_task_id: str) -> Task:
        self.create_calls.append((external_task_id, self.clock.now))
        n = sum(1 for e, _ in self.create_calls if e == external_task_id)
        commit, error = self.create_rule(external_task_id, n)
        task = Task(f"T{len(self.create_calls)}", TaskStatus.SUBMITTED, external_task_id)
        if commit:
            self.committed[external_task_id] = task
        if error is not None:
            raise error
        return task

    async def query(self, request: TaskRequest, task_id: str) -> Task:
        if self.query_error is not None:
            raise self.query_error
        task = next(t for t in self.committed.values() if t.task_id == task_id)
        return self.status(task)

    async def lookup(
        self, request: TaskRequest, external_task_id: str, *, sent_after: float | None = None
    ) -> Task | None:
        self.lookup_calls += 1
        self.lookup_sent_after.append(sent_after)
        if self.lookup_error is not None:
            raise self.lookup_error
        return self.committed.get(external_task_id)

    async def aclose(self) -> None:
        pass


def sent_id(ledger: Ledger, item: Item, seq: int = 1) -> str:
    """The external id the engine sends for attempt ``seq`` of ``item``'s request."""
    return ledger.external_task_id(item.id, seq, fingerprint(item.request, file_sha256))


def manifest(tmp_path: Path, ids: list[str], **retry: float) -> Manifest:
    items = tuple(
        Item(i, TaskRequest(Kind.TEXT2VIDEO, {"prompt": f"prompt {i}"}, 1)) for i in ids
    )
    return Manifest(
        version=1,
        name="t",
        path=tmp_path / "m.yaml",
        provider=ProviderSettings(base_url="http://fake", timeout=TIMEOUT),
        limits=Limits(concurrency=2, requests_per_minute=600_000),
        retry=RetrySettings(
            max_attempts=int(retry.get("max_attempts", 3)),
            base_delay=1.0,
            max_delay=10.0,
            lookup_grace=GRACE,
        ),
        poll=PollSettings(interval=5, max_interval=30, timeout=100),
        output_dir=tmp_path,
        items=items,
    )


async def run(
    m: Manifest,
    provider: Provider,
    clock: FakeClock,
    ledger: Ledger,
    downloader: Downloader | None = None,
) -> RunOutcome:
    engine = Engine(m, provider, ledger, sleep=clock.sleep, clock=clock.time, rand=lambda: 1.0,
                    downloader=downloader)
    try:
        return await engine.run()
    finally:
        if downloader is not None:
            await downloader.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(clock: FakeClock) -> FakeProvider:
    return FakeProvider(clock)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_unanswered_create_is_resent_only_after_it_could_have_committed(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    timeout = ProviderError(request_timeout("read timed out"), ambiguous=True)
    provider.create_rule = lambda ext, n: (n > 1, timeout if n == 1 else None)
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        assert ledger.get("a").state is ItemState.SUCCEEDED
    (ext1, t1), (ext2, t2) = provider.create_calls
    assert ext1 == ext2  # absent, so the same attempt is sent again under its id
    assert t2 - t1 >= 2 * TIMEOUT + GRACE
    assert provider.lookup_calls >= 2


async def test_answered_5xx_that_committed_is_found_not_resent(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    provider.create_rule = lambda ext, n: (True, server_error(5002, ambiguous=True, status=504))
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        rec = ledger.get("a")
        assert rec.state is ItemState.SUCCEEDED
        assert rec.task_id == "T1"
    assert len(provider.create_calls) == 1
    assert clock.sleeps[0] == GRACE  # looked up after the grace period


async def test_answered_5xx_absent_is_resent_without_waiting_for_timeout(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    provider.create_rule = lambda ext, n: (
        (False, server_error(ambiguous=True)) if n == 1 else (True, None)
    )
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        assert ledger.get("a").state is ItemState.SUCCEEDED
    (_, t1), (_, t2) = provider.create_calls
    assert t2 - t1 < TIMEOUT


async def test_lookups_that_keep_failing_never_lead_to_a_resend(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    provider.create_rule = lambda ext, n: (True, server_error(ambiguous=True))
    provider.lookup_error = server_error(ambiguous=False)
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        rec = ledger.get("a")
        assert rec.state is ItemState.SUBMITTING  # the next run looks it up again
        assert rec.error is not None and "could not confirm" in rec.error.message
        assert len(provider.create_calls) == 1

        provider.lookup_error = None
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        assert ledger.get("a").state is ItemState.SUCCEEDED
    assert len(provider.create_calls) == 1


async def test_lookup_that_cannot_prove_absence_leaves_the_item_unresolved(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    # The provider read what it could of the list without finding the task or reaching tasks
    # older than the send: not proof of absence, so nothing may be resent.
    unproven = ProviderError(ErrorInfo(
        category=Category.SERVER, message="cannot prove that no task has external_task_id x",
        retryable=False, hint="h",
    ))
    provider.create_rule = lambda ext, n: (n == 1, server_error(5002, ambiguous=True, status=504))
    provider.lookup_error = unproven
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        started = clock.now
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        rec = ledger.get("a")
        assert rec.state is ItemState.SUBMITTING
        assert rec.error is not None and "cannot prove" in rec.error.message
        assert provider.lookup_calls == 1  # not retried: reading again proves no more

        # The rerun, hours later, tells the provider when the create was first sent.
        clock.now += 6 * 3600
        provider.lookup_error = None
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        assert ledger.get("a").state is ItemState.SUCCEEDED
    assert len(provider.create_calls) == 1
    assert provider.lookup_sent_after == [started, started]


async def test_retry_after_is_honoured_for_rate_limits(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    info = ErrorInfo(
        category=Category.RATE_LIMIT, message="too fast", retryable=True, hint="h", code=1302
    )
    provider.create_rule = lambda ext, n: (
        (False, ProviderError(info, retry_after=7.0)) if n <= 2 else (True, None)
    )
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        outcome = await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        assert ledger.get("a").state is ItemState.SUCCEEDED
    assert clock.sleeps[:2] == [7.0, 7.0]
    assert outcome.retries == 2
    assert len(provider.create_calls) == 3


async def test_non_retryable_create_error_fails_once(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    info = ErrorInfo(
        category=Category.VALIDATION, message="bad", retryable=False, hint="h", code=1201
    )
    provider.create_rule = lambda ext, n: (False, ProviderError(info))
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        rec = ledger.get("a")
        assert rec.state is ItemState.FAILED
        assert rec.error == info
    assert len(provider.create_calls) == 1


async def test_account_error_stops_new_submissions(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    billing = ErrorInfo(
        category=Category.BILLING, message="pack depleted", retryable=False, hint="buy",
        scope=Scope.ACCOUNT, code=1102, http_status=429,
    )
    provider.create_rule = lambda ext, n: (False, ProviderError(billing))
    ids = [f"i{n}" for n in range(6)]
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        outcome = await run(manifest(tmp_path, ids), provider, clock, ledger)
        states = {r.id: r.state for r in ledger.all()}
    assert outcome.stopped_by == billing
    assert len(provider.create_calls) <= 2  # at most the ones already in flight
    assert set(states.values()) == {ItemState.PENDING}


async def test_poll_timeout_then_rerun_polls_instead_of_resubmitting(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    provider.status = lambda t: Task(t.task_id, TaskStatus.PROCESSING)
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        rec = ledger.get("a")
        assert rec.state is ItemState.FAILED
        assert rec.error is not None and rec.error.category is Category.TIMEOUT
        provider.status = lambda t: Task(
            t.task_id, TaskStatus.SUCCEEDED, assets=(Asset(0, "u", "video"),)
        )
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        assert ledger.get("a").state is ItemState.SUCCEEDED
    assert len(provider.create_calls) == 1


async def test_poll_interval_grows_to_the_cap(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    provider.status = lambda t: Task(t.task_id, TaskStatus.PROCESSING)
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
    assert clock.sleeps[:5] == [5, 7.5, 11.25, 16.875, 25.3125]
    assert max(clock.sleeps) == 30


async def test_retryable_task_failures_are_bounded_over_all_runs(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    """retry.max_attempts bounds an item's paid tasks over every run: a cron rerun of a batch
    must not pay for a failing item again and again. Raising it lets a rerun try again."""
    transient = ErrorInfo(
        category=Category.TASK_FAILED, message="Generation timeout", retryable=True, hint="h"
    )
    provider.status = lambda t: Task(t.task_id, TaskStatus.FAILED, failure=transient)
    m = manifest(tmp_path, ["a"], max_attempts=2)
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        await run(m, provider, clock, ledger)
        rec = ledger.get("a")
        assert (rec.state, rec.tasks_created) == (ItemState.FAILED, 2)
        assert rec.error is not None and rec.error.category is Category.TASK_FAILED
        assert "gave up after 2 paid attempts" in rec.error.message
        assert "retry.max_attempts" in rec.error.hint
        await run(m, provider, clock, ledger)
        assert ledger.get("a").tasks_created == 2
        assert len(provider.create_calls) == 2  # the rerun sent nothing
        await run(manifest(tmp_path, ["a"], max_attempts=3), provider, clock, ledger)
        assert ledger.get("a").tasks_created == 3
    ext_ids = [e for e, _ in provider.create_calls]
    assert len(set(ext_ids)) == 3  # every paid attempt has its own external id


async def test_a_bug_in_one_item_does_not_stop_the_others(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    original = provider.query

    async def query(request: TaskRequest, task_id: str) -> Task:
        if task_id == "T1":
            raise RuntimeError("unexpected")
        return await original(request, task_id)

    provider.query = query  # type: ignore[method-assign]
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        outcome = await run(manifest(tmp_path, ["a", "b"]), provider, clock, ledger)
        states = {r.id: r.state for r in ledger.all()}
    assert outcome.crashed == 1
    assert ItemState.SUCCEEDED in states.values()
    assert ItemState.RUNNING in states.values()  # resumable: polled again next run


async def test_interrupt_keeps_running_tasks_for_the_rerun(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    provider.status = lambda t: Task(t.task_id, TaskStatus.PROCESSING)
    m = manifest(tmp_path, ["a", "b", "c"])
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        engine = Engine(m, provider, ledger, sleep=clock.sleep, clock=clock.time)
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run)
            while len(provider.create_calls) < 2:
                await checkpoint()
            engine.interrupt()
        states = sorted(r.state for r in ledger.all())
    assert engine.outcome.interrupted
    assert states == [ItemState.PENDING, ItemState.RUNNING, ItemState.RUNNING]


class AutojumpClock:
    """Time moves only when every task is blocked, straight to the next sleeper's wake-up."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._seq = 0

    def time(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        import heapq

        event = anyio.Event()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.now + max(seconds, 0.0), self._seq, event))
        await event.wait()

    async def drive(self) -> None:
        import heapq

        while True:
            await anyio.wait_all_tasks_blocked()
            if not self._sleepers:
                await anyio.sleep(0.001)  # something waits on real time (the rate limiter)
                continue
            wake, _, event = heapq.heappop(self._sleepers)
            self.now = max(self.now, wake)
            event.set()
            await checkpoint()


def over_capacity() -> ProviderError:
    info = ErrorInfo(
        category=Category.RATE_LIMIT, message="parallel task over resource pack limit",
        retryable=True, hint="h", code=1303, http_status=429,
    )
    return ProviderError(info, over_capacity=True)


async def test_over_capacity_lowers_the_cap_then_grows_it_back(tmp_path: Path) -> None:
    clock = AutojumpClock()
    provider = FakeProvider(clock)  # type: ignore[arg-type]
    account_slots = 2
    polls: dict[str, int] = {}

    def running() -> int:
        return sum(1 for t in provider.committed.values() if polls.get(t.task_id, 0) < 2)

    def rule(ext: str, n: int) -> tuple[bool, ProviderError | None]:
        return (False, over_capacity()) if running() >= account_slots else (True, None)

    def status(task: Task) -> Task:
        polls[task.task_id] = polls.get(task.task_id, 0) + 1
        if polls[task.task_id] < 2:
            return Task(task.task_id, TaskStatus.PROCESSING)
        return Task(task.task_id, TaskStatus.SUCCEEDED, assets=(Asset(0, "u", "video"),))

    provider.create_rule = rule
    provider.status = status
    m = manifest(tmp_path, [f"i{n:02d}" for n in range(30)], max_attempts=50)
    m = Manifest(**{**m.__dict__, "limits": Limits(concurrency=8, requests_per_minute=600_000)})
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        engine = Engine(m, provider, ledger, sleep=clock.sleep, clock=clock.time, rand=lambda: 1.0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.drive)
            await engine.run()
            tg.cancel_scope.cancel()
        assert {r.state for r in ledger.all()} == {ItemState.SUCCEEDED}
    c = engine.outcome.concurrency
    assert c["configured"] == 8
    assert c["lowest"] is not None and c["lowest"] <= 2 < 8
    assert c["over_capacity_cuts"] is not None and c["over_capacity_cuts"] >= 1
    # The refusal's evidence: our count of running tasks runs ahead of the provider's, so the
    # limit found is at least the account's 2 and the cap never went above the configured 8.
    assert c["limit_found"] is not None and 2 <= c["limit_found"] <= 8
    # Measured from what the provider really ran (here: the tasks seen running), not from
    # the pool: the account has 2 slots.
    assert c["sustained"] == account_slots
    assert c["final"] is not None and c["final"] <= 8
    refused = len(provider.create_calls) - len(provider.committed)
    assert refused < 30  # without the cut, 8 holders would keep colliding with 2 slots


async def test_retry_budget_keeps_a_failing_provider_from_a_storm(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    refused = ProviderError(
        ErrorInfo(category=Category.NETWORK, message="connection refused", retryable=True,
                  hint="h"),
        sent=False,
    )
    provider.create_rule = lambda ext, n: (False, refused)
    ids = [f"i{n:03d}" for n in range(200)]
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        outcome = await run(manifest(tmp_path, ids, max_attempts=5), provider, clock, ledger)
        records = ledger.all()
    # Unthrottled, 200 items x 5 attempts would be 1000 requests; the budget allows ~50 retries.
    assert len(provider.create_calls) <= 200 + 60
    assert outcome.retries_denied > 100
    assert all(r.state is ItemState.FAILED for r in records)
    assert all(r.error is not None and r.error.retryable for r in records)
    assert sum("retry budget" in (r.error.message if r.error else "") for r in records) > 100


async def test_deadline_stops_new_submissions_and_collects_running(tmp_path: Path) -> None:
    from orchestrator.config import Deadline

    clock = AutojumpClock()
    provider = FakeProvider(clock)  # type: ignore[arg-type]
    polls: dict[str, int] = {}

    def status(task: Task) -> Task:
        polls[task.task_id] = polls.get(task.task_id, 0) + 1
        if polls[task.task_id] < 3:  # done on the third poll: 5 + 7.5 + 11.25 s
            return Task(task.task_id, TaskStatus.PROCESSING)
        return Task(task.task_id, TaskStatus.SUCCEEDED, assets=(Asset(0, "u", "video"),))

    provider.status = status
    m = manifest(tmp_path, ["a", "b", "c", "d"])
    m = Manifest(
        **{
            **m.__dict__,
            "limits": Limits(
                concurrency=1, requests_per_minute=600_000, deadline=Deadline(after=30.0)
            ),
        }
    )
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        engine = Engine(m, provider, ledger, sleep=clock.sleep, clock=clock.time)
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.drive)
            await engine.run()
            tg.cancel_scope.cancel()
        states = [ledger.get(i).state for i in ("a", "b", "c", "d")]
    assert engine.outcome.deadline_reached
    assert engine.outcome.stopped_by is None
    # a finished at ~23.75 s, b was running at 30 s and was still collected; c, d never sent
    done, waiting = ItemState.SUCCEEDED, ItemState.PENDING
    assert states == [done, done, waiting, waiting]
    assert len(provider.create_calls) == 2


async def test_progress_counts_a_failed_download_as_failed(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    """The live line must not call an item done whose files could not be fetched."""
    provider.status = lambda t: Task(
        t.task_id, TaskStatus.SUCCEEDED,
        assets=(Asset(0, f"https://cdn.test/{t.external_task_id}.mp4", "video"),),
    )
    m = manifest(tmp_path, ["good", "bad"])
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        bad_ext = sent_id(ledger, m.items[1])

        def serve(request: httpx.Request) -> httpx.Response:
            if bad_ext in request.url.path:
                return httpx.Response(500)
            return httpx.Response(200, content=video_mp4("T", 0))

        downloader = Downloader(
            tmp_path / "out",
            transport=httpx.MockTransport(serve),
            policy=RetryPolicy(max_attempts=2, base_delay=1.0, max_delay=1.0),
            sleep=clock.sleep,
        )
        engine = Engine(
            m, provider, ledger, sleep=clock.sleep, clock=clock.time, downloader=downloader
        )
        async with downloader:
            await engine.run()
        assert ledger.get("bad").download_error is not None
    counts = engine.progress.snapshot().counts
    assert (counts["done"], counts["failed"], counts["downloading"]) == (1, 1, 0)


# -- downloads: bad asset indexes -----------------------------------------------------------------


def image_manifest(tmp_path: Path, n: int) -> Manifest:
    m = manifest(tmp_path, [])
    request = TaskRequest(Kind.IMAGE, {"prompt": "mugs", "n": n}, n)
    return replace(m, items=(Item("mugs", request),))


def png_server(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=image_png("T1", int(request.url.path[-5])),
                          headers={"Content-Type": "image/png"})


@pytest.mark.parametrize("indexes", [(-1, -1), (0, 0), (-3, 1)], ids=["negative", "dup", "mixed"])
async def test_unusable_asset_indexes_are_renumbered_not_a_crash(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider, indexes: tuple[int, int]
) -> None:
    # Was: Downloader.download raised ValueError for index -1, which escaped _fetch as a crash:
    # the item was reported succeeded with no file, and every rerun crashed again. (Duplicates
    # wrote both files under one name.) A provider other than Kling, or a ledger from an older
    # version, may still hold such indexes.
    provider.status = lambda t: Task(t.task_id, TaskStatus.SUCCEEDED, assets=tuple(
        Asset(i, f"https://cdn.test/{n}.png", "image") for n, i in enumerate(indexes)
    ))
    downloader = Downloader(tmp_path, transport=httpx.MockTransport(png_server),
                            sleep=clock.sleep)
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        outcome = await run(image_manifest(tmp_path, 2), provider, clock, ledger, downloader)
        rec = ledger.get("mugs")
    assert outcome.crashed == 0
    assert rec.state is ItemState.SUCCEEDED and rec.download_error is None
    assert sorted(str(a.path) for a in rec.assets) == ["mugs/0.png", "mugs/1.png"]
    # Each file holds the asset its URL named, in the provider's order.
    assert (tmp_path / "mugs" / "1.png").read_bytes() == image_png("T1", 1)


async def test_an_unexpected_error_downloading_is_classified_not_a_crash(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    downloader = Downloader(tmp_path, transport=httpx.MockTransport(png_server))
    monkeypatch.setattr(downloader, "download", broken)
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        outcome = await run(manifest(tmp_path, ["a"]), provider, clock, ledger, downloader)
        rec = ledger.get("a")
    assert outcome.crashed == 0
    assert rec.state is ItemState.SUCCEEDED  # the verdict stands: the task is never resubmitted
    assert rec.download_error is not None and "OSError" in rec.download_error.message
    assert len(provider.create_calls) == 1


async def test_a_create_sent_to_an_in_process_provider_that_restarted_is_resent_at_once(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    # The demo's simulator runs in the orchestrator's process: a create the killed run left in
    # flight died with it. Was: the rerun waited 2 x provider.timeout before resending it.
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        ledger.sync_items([("a", "text2video", 1)])
        ext = ledger.external_task_id("a", 1)
        ledger.record_intent("a", 1, ext)  # then the process was killed
        ledger.commit()
        clock.now += 1.0  # the rerun, a second later
        engine = Engine(manifest(tmp_path, ["a"]), provider, ledger, sleep=clock.sleep,
                        clock=clock.time, rand=lambda: 1.0, provider_started_at=clock.now)
        await engine.run()
        assert ledger.get("a").state is ItemState.SUCCEEDED
    assert [e for e, _ in provider.create_calls] == [ext]
    assert provider.lookup_calls == 2  # absent twice, a grace apart: then resent
    assert sum(clock.sleeps[:2]) < TIMEOUT


async def test_a_url_that_keeps_failing_is_refreshed_once(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    # The host in the URL the task first gave is gone (the demo's simulator came back on
    # another port); a fresh query names the one that answers.
    polls: list[str] = []

    def status(task: Task) -> Task:
        host = "gone.test" if not polls else "here.test"
        polls.append(host)
        asset = Asset(0, f"https://{host}/0.mp4", "video")
        return Task(task.task_id, TaskStatus.SUCCEEDED, assets=(asset,))

    def serve(request: httpx.Request) -> httpx.Response:
        if request.url.host == "gone.test":
            raise httpx.ConnectError("connection refused")
        return httpx.Response(200, content=video_mp4("T1", 0))

    provider.status = status
    downloader = Downloader(tmp_path, transport=httpx.MockTransport(serve), sleep=clock.sleep)
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        outcome = await run(manifest(tmp_path, ["a"]), provider, clock, ledger, downloader)
        rec = ledger.get("a")
    assert rec.download_error is None and rec.assets[0].path == "a/0.mp4"
    assert rec.assets[0].url == "https://here.test/0.mp4"
    assert polls == ["gone.test", "here.test"]  # one refresh query
    # Every HTTP attempt is a request: the 8 the first URL was given, then the fresh one.
    assert outcome.requests["download"] == downloader.policy.max_attempts + 1 == 9


async def test_lookups_draw_on_the_retry_budget_too(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    """A create answering 5xx forever (ambiguous: each one is looked up). Lookups that answer
    "absent" are not the provider recovering: they must not refund the budget, and each costs
    a token of it. Measured before: 249 creates and 996 lookups for 200 items."""
    lost = ProviderError(request_timeout("read timed out"), ambiguous=True)  # no answer at all
    for error in (server_error(ambiguous=True), lost):
        clock.now += 10_000
        provider.create_calls.clear()
        provider.lookup_calls = 0
        provider.create_rule = lambda ext, n, error=error: (False, error)  # type: ignore[misc]
        ids = [f"i{n:03d}" for n in range(200)]
        path = tmp_path / f"s-{error.info.category}"
        with Ledger(path, "t", clock=clock.time) as ledger:
            outcome = await run(manifest(tmp_path, ids, max_attempts=5), provider, clock, ledger)
            records = ledger.all()
        creates = len(provider.create_calls)
        assert creates <= 200 + 60, error
        assert provider.lookup_calls <= 2 * creates + 10, (creates, provider.lookup_calls)
        assert outcome.retries_denied > 100
        assert all(r.error is not None and r.error.retryable for r in records)


async def test_answers_that_cannot_be_read_are_reported_as_such_not_as_a_timeout(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    """Every poll answered with something unreadable (an unknown task_status, say) until
    poll.timeout: the item says so, with the provider's detail, and stays for the next run to
    poll; it is not a task that "did not finish", and it is never resubmitted."""
    provider.query_error = ProviderError(
        ErrorInfo(
            category=Category.SERVER,
            message="unexpected answer from Kling: task T1 has unknown task_status 'paused'",
            retryable=True, hint="h", http_status=200,
        )
    )
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)
        rec = ledger.get("a")
        assert rec.state is ItemState.RUNNING and rec.task_id == "T1"
        assert rec.error is not None
        assert "unknown task_status 'paused'" in rec.error.message
        assert "could not be used for" in rec.error.message
        assert "poll.timeout" not in rec.error.hint
        assert report.item_status(rec) == "unresolved"
        provider.query_error = None
        await run(manifest(tmp_path, ["a"]), provider, clock, ledger)  # the rerun polls it
        assert ledger.get("a").state is ItemState.SUCCEEDED
    assert len(provider.create_calls) == 1


async def test_a_verdict_without_a_task_id_is_reconciled_not_a_crash(
    tmp_path: Path, clock: FakeClock, provider: FakeProvider
) -> None:
    """What two runs writing one ledger at once left (one recorded an intent, erasing the task
    id, while the other wrote the verdict): every rerun stopped on an AssertionError. Now the
    item is looked up by its external id and resumed."""
    m = manifest(tmp_path, ["a"])
    with Ledger(tmp_path / "s", "t", clock=clock.time) as ledger:
        ledger.sync_items([("a", "text2video", 1)])
        ext = sent_id(ledger, m.items[0])
        ledger.record_intent("a", 1, ext)
        provider.committed[ext] = Task("T9", TaskStatus.SUBMITTED, ext)
        ledger.finish("a", ItemState.SUCCEEDED, assets=[AssetRecord(0, "https://x/0.mp4")])
        assert ledger.get("a").task_id is None
        outcome = await run(m, provider, clock, ledger)
        rec = ledger.get("a")
        assert (rec.state, rec.task_id) == (ItemState.SUCCEEDED, "T9")
    assert outcome.crashed == 0
    assert provider.create_calls == []  # found, not resent
