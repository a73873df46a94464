"""Observing running tasks with as few requests as the provider allows.

Each running task asks for its next observation at its own pace (``poll.interval`` growing to
``poll.max_interval``); the engine's per-task rules (timeouts, "not found", Retry-After) stay
with the engine. What the poller decides is how those asks become requests:

- :class:`QueryPoller` sends one query per ask (a provider without a list endpoint).
- :class:`ListPoller` gathers the asks of each task family. When several are due within one
  ``window`` (``poll.interval``), one list request (Kling: the 500 newest tasks of the family a
  page) answers for all of them, provided that takes fewer requests than querying each; tasks
  not on the pages read are queried one by one. A page also shows tasks whose ask is not due
  yet: those that have ended are answered at once, so the end of a task is noticed within about
  one window instead of one (growing) poll interval.

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
from orchestrator.providers.base import Provider, Task, TaskLister, TaskRequest

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


@dataclass(eq=False)
class _Ask:
    request: TaskRequest
    #: the list it may be found on (None: queried one by one)
    key: Hashable | None
    task_id: str
    due: float
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Task | Exception | None = None
    #: a request that will answer it is on its way
    taken: bool = False


class _Lister(Provider, TaskLister, Protocol):
    pass


class ListPoller:
    """Shared observations: one list request answers for every task of a family on its pages."""

    def __init__(
        self,
        provider: _Lister,
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
        self._asks: dict[Hashable | None, dict[str, _Ask]] = {}
        #: per list, the pages the last sweep needed to find what it looked for
        self._depth: dict[Hashable, int] = {}
        self._wake: anyio.Event | None = None
        self._target = math.inf
        #: sweeps run and tasks they answered (for tests and the benchmark)
        self.sweeps = 0
        self.answered_by_list = 0

    # -- the engine's side ----------------------------------------------------------------

    async def observe(self, request: TaskRequest, task_id: str, after: float) -> Task:
        key = self._provider.list_key(request)
        ask = _Ask(request, key, task_id, self._clock() + after)
        asks = self._asks.setdefault(key, {})
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
                for key, asks in self._asks.items():
                    self._dispatch(tg, key, asks, now)

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
        self, tg: anyio.abc.TaskGroup, key: Hashable | None, asks: dict[str, _Ask], now: float
    ) -> None:
        free = [a for a in asks.values() if not a.taken]
        due = [a for a in free if a.due <= now]
        if not due:
            return
        near = [a for a in free if a.due <= now + self._window]
        if key is not None and len(near) >= 2 and len(near) > self._depth.get(key, 1):
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
        asks = self._asks.get(ask.key)
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
            try:
                found, entries = await self._provider.list_matching(
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
