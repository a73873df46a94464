"""Observing running tasks with as few requests as the provider allows.

Each running task asks for its next observation at its own pace (``poll.interval`` growing to
``poll.max_interval``); the engine's per-task rules (timeouts, "not found", Retry-After) stay
with the engine. What the poller decides is how those asks become requests:

- :class:`QueryPoller` sends one query per ask (a provider without a list endpoint).
- :class:`ListPoller` gathers the asks of each group of tasks the provider can read together.
  For a provider that lists them (Kling /v1: the 500 newest tasks of a family a page), when
  several are due within one ``window`` (``poll.interval``), one list request answers for all
  of them, provided that takes fewer requests than querying each; tasks not on the pages read
  are queried one by one. For a provider that reads many tasks by id (Kling API 2.0: ``GET
  /tasks?task_ids=``), the asks due within the window go in reads of up to its batch limit,
  filled up with asks not due yet. A page or a read also shows tasks whose ask is not due yet:
  those that have ended are answered at once, so the end of a task is noticed within about one
  window instead of one (growing) poll interval.

The number of pages a family needs is learnt from the last sweep (other work in the account
pushes our tasks deeper down the newest-first list); when a sweep would not be cheaper, the asks
are queried one by one as before.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import anyio.abc

from orchestrator.errors import ErrorInfo, ProviderError
from orchestrator.providers.base import BatchReader, Provider, Task, TaskLister, TaskRequest

#: Kling's largest page: the poller always reads full pages.
PAGE_SIZE = 500
#: Pages one sweep may read before the remaining tasks are queried one by one.
MAX_PAGES = 20

#: Called once per request with None (it was answered) or what went wrong (for the retry budget).
Account = Callable[[ErrorInfo | None], None]


class Poller(Protocol):
    async def observe(self, request: TaskRequest, task_id: str, after: float) -> Task:
        """The task as the provider reports it, observed no earlier than about ``after`` seconds
        from now (earlier when a shared request happens to show that it has ended). Raises
        ProviderError when the request that was to observe it failed."""
        ...

    async def run(self) -> None:
        """Serve asks until cancelled (a no-op for pollers that need no scheduler)."""
        ...


def _copy(err: ProviderError) -> ProviderError:
    """Every waiter raises its own exception object (tracebacks are per raise)."""
    return dataclasses.replace(err)


class QueryPoller:
    """One query per observation."""

    def __init__(
        self,
        provider: Provider,
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        requests: Counter[str] | None = None,
        account: Account | None = None,
    ) -> None:
        self._provider = provider
        self._sleep = sleep
        self.requests: Counter[str] = requests if requests is not None else Counter()
        self._account: Account = account or (lambda _info: None)

    async def observe(self, request: TaskRequest, task_id: str, after: float) -> Task:
        await self._sleep(after)
        self.requests["query"] += 1
        try:
            task = await self._provider.query(request, task_id)
        except ProviderError as err:
            self._account(err.info)
            raise
        self._account(None)
        return task

    async def run(self) -> None:
        return None


@dataclass(frozen=True)
class _Group:
    """Tasks one request can answer for together: a list (``list_matching``) or a batch read
    (``query_many``) with the provider's key; none: queried one by one."""

    how: str  # "list" | "batch" | "query"
    key: Hashable | None = None


_ONE_BY_ONE = _Group("query")


@dataclass(eq=False)
class _Ask:
    request: TaskRequest
    group: _Group
    task_id: str
    due: float
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Task | Exception | None = None
    #: a request that will answer it is on its way
    taken: bool = False


class ListPoller:
    """Shared observations: one request answers for many tasks (a list page, a batch read)."""

    def __init__(
        self,
        provider: Provider,
        *,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        requests: Counter[str] | None = None,
        account: Account | None = None,
        max_pages: int = MAX_PAGES,
    ) -> None:
        self._provider = provider
        self._window = window
        self._clock = clock
        self._sleep = sleep
        self.requests: Counter[str] = requests if requests is not None else Counter()
        self._account: Account = account or (lambda _info: None)
        self._max_pages = max_pages
        self._lister = provider if isinstance(provider, TaskLister) else None
        self._reader = provider if isinstance(provider, BatchReader) else None
        self._asks: dict[_Group, dict[str, _Ask]] = {}
        #: per list, the pages the last sweep needed to find what it looked for
        self._depth: dict[Hashable, int] = {}
        self._wake: anyio.Event | None = None
        self._target = math.inf
        #: sweeps run and tasks they answered (for tests and the benchmark)
        self.sweeps = 0
        self.answered_by_list = 0
        self.batch_reads = 0
        self.answered_by_batch = 0

    def _group(self, request: TaskRequest) -> _Group:
        if self._reader is not None:
            key = self._reader.batch_key(request)
            if key is not None:
                return _Group("batch", key)
        if self._lister is not None:
            key = self._lister.list_key(request)
            if key is not None:
                return _Group("list", key)
        return _ONE_BY_ONE

    # -- the engine's side ----------------------------------------------------------------

    async def observe(self, request: TaskRequest, task_id: str, after: float) -> Task:
        group = self._group(request)
        ask = _Ask(request, group, task_id, self._clock() + after)
        asks = self._asks.setdefault(group, {})
        asks[task_id] = ask
        if ask.due < self._target and self._wake is not None:
            self._wake.set()
        try:
            await ask.done.wait()
        finally:
            if asks.get(task_id) is ask:
                del asks[task_id]
        result = ask.result
        if isinstance(result, ProviderError):
            raise _copy(result)
        if isinstance(result, Exception):
            # A bug while serving a shared request: each waiter fails on its own (the engine
            # contains it to the item), the scheduler carries on.
            raise RuntimeError(f"polling failed: {type(result).__name__}: {result}") from result
        assert result is not None
        return result

    # -- the scheduler --------------------------------------------------------------------

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            while True:
                now = self._clock()
                earliest = min(
                    (a.due for asks in self._asks.values() for a in asks.values() if not a.taken),
                    default=math.inf,
                )
                if earliest > now:
                    await self._idle(earliest - now)
                    continue
                for group, asks in self._asks.items():
                    self._dispatch(tg, group, asks, now)

    async def _idle(self, seconds: float) -> None:
        """Until ``seconds`` have passed or an ask came in that is due sooner."""
        self._target = self._clock() + seconds
        self._wake = wake = anyio.Event()
        try:
            if math.isinf(seconds):
                await wake.wait()
                return
            async with anyio.create_task_group() as tg:

                async def woken() -> None:
                    await wake.wait()
                    tg.cancel_scope.cancel()

                tg.start_soon(woken)
                await self._sleep(seconds)
                tg.cancel_scope.cancel()
        finally:
            self._wake = None
            self._target = math.inf

    def _dispatch(
        self, tg: anyio.abc.TaskGroup, group: _Group, asks: dict[str, _Ask], now: float
    ) -> None:
        free = [a for a in asks.values() if not a.taken]
        due = [a for a in free if a.due <= now]
        if not due:
            return
        near = [a for a in free if a.due <= now + self._window]
        key = group.key
        if group.how == "batch" and len(near) >= 2 and self._reader is not None:
            limit = max(1, self._reader.batch_limit)
            # Asks not due yet ride along to fill the last read: an ended task is seen early.
            riders = sorted((a for a in free if a.due > now + self._window), key=lambda a: a.due)
            spare = -len(near) % limit
            for start in range(0, len(near), limit):
                chunk = near[start : start + limit]
                if start + limit >= len(near):
                    chunk = chunk + riders[:spare]
                for a in chunk:
                    a.taken = True
                tg.start_soon(self._batch, tg, key, chunk, now + self._window)
        elif (
            group.how == "list" and len(near) >= 2 and len(near) > self._depth.get(key, 1)
        ):
            for a in near:
                a.taken = True
            later = {a.task_id: a for a in free if not a.taken}
            tg.start_soon(self._sweep, tg, key, {a.task_id: a for a in near}, later)
        else:
            for a in due:
                a.taken = True
                tg.start_soon(self._query, a)

    def _answer(self, ask: _Ask, result: Task | Exception) -> None:
        ask.result = result
        ask.done.set()
        asks = self._asks.get(ask.group)
        if asks is not None and asks.get(ask.task_id) is ask:
            del asks[ask.task_id]

    async def _query(self, ask: _Ask) -> None:
        self.requests["query"] += 1
        try:
            task = await self._provider.query(ask.request, ask.task_id)
        except ProviderError as err:
            self._account(err.info)
            self._answer(ask, err)
            return
        except Exception as exc:
            self._answer(ask, exc)
            return
        self._account(None)
        self._answer(ask, task)

    async def _batch(
        self, tg: anyio.abc.TaskGroup, key: Hashable, chunk: list[_Ask], due_by: float
    ) -> None:
        """One batch read for ``chunk``: asks due by ``due_by`` get their task (or, when the read
        left it out, a query of their own); riders not due yet get theirs only if it ended."""
        assert self._reader is not None
        self.batch_reads += 1
        self.requests["query"] += 1
        try:
            found = await self._reader.query_many(key, [a.task_id for a in chunk])
        except ProviderError as err:
            self._account(err.info)
            for ask in chunk:
                if ask.due <= due_by:
                    self._answer(ask, err)
                else:
                    ask.taken = False
            self._rescan()
            return
        except Exception as exc:
            for ask in chunk:
                self._answer(ask, exc)
            return
        self._account(None)
        for ask in chunk:
            task = found.get(ask.task_id)
            if ask.due > due_by:
                if task is not None and task.status.finished:
                    self.answered_by_batch += 1
                    self._answer(ask, task)
                else:
                    ask.taken = False
            elif task is not None:
                self.answered_by_batch += 1
                self._answer(ask, task)
            else:
                tg.start_soon(self._query, ask)  # left out: its own query says why
        self._rescan()

    def _rescan(self) -> None:
        """Asks were handed back: the scheduler's idle target may be later than they are due."""
        if self._wake is not None:
            self._wake.set()

    async def _sweep(
        self,
        tg: anyio.abc.TaskGroup,
        key: Hashable,
        wanted: dict[str, _Ask],
        later: dict[str, _Ask],
    ) -> None:
        """Read pages until every wanted task is found (or the pages run out, or querying the
        rest one by one is as cheap as another page); tasks of ``later`` seen on the way are
        answered when they have ended."""
        self.sweeps += 1
        needed = 1
        page = 1
        last_page = False
        while len(wanted) >= 2 and page <= self._max_pages:
            self.requests["list"] += 1
            assert self._lister is not None
            try:
                found, entries = await self._lister.list_matching(
                    key, page, wanted.keys() | later.keys()
                )
            except ProviderError as err:
                self._account(err.info)
                for ask in wanted.values():
                    self._answer(ask, err)
                return
            except Exception as exc:
                for ask in wanted.values():
                    self._answer(ask, exc)
                return
            self._account(None)
            for task_id, task in found.items():
                mine = wanted.pop(task_id, None)
                if mine is not None:
                    needed = page
                    self.answered_by_list += 1
                    self._answer(mine, task)
                    continue
                early = later.pop(task_id, None)
                if early is not None and task.status.finished and not early.taken:
                    early.taken = True
                    self.answered_by_list += 1
                    self._answer(early, task)
            if entries < PAGE_SIZE:
                last_page = True
                break
            page += 1
        # Tasks still wanted after the last page are not listed (yet): they say nothing about
        # depth. Otherwise they are deeper than the pages read: learn that the family needs
        # more pages, so that the next sweep happens only when it pays.
        self._depth[key] = needed if last_page or not wanted else max(needed, page)
        for ask in wanted.values():
            tg.start_soon(self._query, ask)
