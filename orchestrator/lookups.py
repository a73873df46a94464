"""Lookups by external id, many in one request where the provider can.

After a crash, every item whose create was in flight is looked up at the start of the rerun;
under a storm of lost answers, many are looked up within moments of each other. A provider
that reads many tasks by external id in one request (Kling API 2.0: ``GET
/tasks?external_task_ids=a,b``) answers them together: :class:`LookupBatcher` gathers the
lookups asked in the same moment (the same turn of the event loop) into ``lookup_many`` calls of
at most the provider's batch limit. Each caller still gets its own answer: the task, None (its
absence is proven), or its own ProviderError.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field

import anyio
import anyio.lowlevel

from orchestrator.errors import Category, ErrorInfo, ProviderError
from orchestrator.providers.base import BatchReader, Provider, Task, TaskFinder, TaskRequest

#: Event-loop turns the first lookup of a moment waits for the others to join it.
_GATHER_TURNS = 2


@dataclass(eq=False)
class _Wanted:
    external_task_id: str
    sent_after: float | None
    done: anyio.Event = field(default_factory=anyio.Event)
    result: Task | ProviderError | None = None


def _interrupted() -> ProviderError:
    info = ErrorInfo(
        category=Category.NETWORK,
        message="the shared lookup was interrupted before it was answered",
        retryable=True,
        hint="The task is looked up again before anything is resubmitted.",
    )
    return ProviderError(info, sent=True)


def _cannot_look_up() -> ProviderError:
    info = ErrorInfo(
        category=Category.VALIDATION,
        message="this provider cannot look a task up by the id its create carried: whether "
        "the create took effect cannot be known from here",
        retryable=False,
        hint="Nothing was resubmitted. Check the provider's console for the task before "
        "sending it again.",
    )
    return ProviderError(info, sent=False)


class LookupBatcher:
    """``lookup`` with the provider's own signature; gathered into ``lookup_many`` where the
    request's tasks can be read together, passed through to ``lookup`` otherwise."""

    def __init__(self, provider: Provider, requests: Counter[str] | None = None) -> None:
        self._provider = provider
        #: "lookup" counts the requests made (one per lookup_many call when gathered)
        self.requests: Counter[str] = requests if requests is not None else Counter()
        self._reader = provider if isinstance(provider, BatchReader) else None
        self._waiting: dict[Hashable, list[_Wanted]] = {}
        #: lookup_many calls made, and the lookups they answered (for tests and benchmarks)
        self.calls = 0
        self.answered = 0

    def can_look_up(self, request: TaskRequest) -> bool:
        """Whether a task of ``request`` can be found by the external id its create carried:
        False means a create whose answer was lost cannot be settled at all."""
        if isinstance(self._provider, TaskFinder):
            return True
        return self._reader is not None and self._reader.batch_key(request) is not None

    async def lookup(
        self, request: TaskRequest, external_task_id: str, *, sent_after: float | None
    ) -> Task | None:
        key = self._reader.batch_key(request) if self._reader is not None else None
        if key is None:
            if not isinstance(self._provider, TaskFinder):
                raise _cannot_look_up()
            self.requests["lookup"] += 1
            return await self._provider.lookup(request, external_task_id, sent_after=sent_after)
        wanted = _Wanted(external_task_id, sent_after)
        queue = self._waiting.setdefault(key, [])
        queue.append(wanted)
        if len(queue) == 1:
            await self._lead(key)
        await wanted.done.wait()
        result = wanted.result
        if isinstance(result, ProviderError):
            raise dataclasses.replace(result)  # each caller raises its own exception object
        return result

    async def _lead(self, key: Hashable) -> None:
        """The first lookup of a moment asks for everyone who joined it meanwhile."""
        batch: list[_Wanted] = []
        try:
            for _ in range(_GATHER_TURNS):
                await anyio.lowlevel.checkpoint()
            batch = self._waiting.pop(key, [])
            assert self._reader is not None
            limit = max(1, self._reader.batch_limit)
            # One absence proof serves lookups sent after the same moment; a lookup without
            # that moment cannot be proven absent, so it must not widen the others' window.
            known = [w for w in batch if w.sent_after is not None]
            unknown = [w for w in batch if w.sent_after is None]
            for group in (known, unknown):
                for start in range(0, len(group), limit):
                    await self._ask(key, group[start : start + limit])
        finally:
            for wanted in batch or self._waiting.pop(key, []):
                if not wanted.done.is_set():
                    wanted.result = _interrupted()
                    wanted.done.set()

    async def _ask(self, key: Hashable, chunk: list[_Wanted]) -> None:
        assert self._reader is not None
        times = [w.sent_after for w in chunk if w.sent_after is not None]
        self.calls += 1
        self.requests["lookup"] += 1
        try:
            found = await self._reader.lookup_many(
                key, [w.external_task_id for w in chunk], sent_after=min(times) if times else None
            )
        except ProviderError as err:
            for wanted in chunk:
                wanted.result = err
                wanted.done.set()
            return
        for wanted in chunk:
            if wanted.external_task_id in found:
                wanted.result = found[wanted.external_task_id]
                self.answered += 1
            else:
                wanted.result = _missing(wanted.external_task_id)
            wanted.done.set()


def _missing(external_task_id: str) -> ProviderError:
    info = ErrorInfo(
        category=Category.SERVER,
        message=f"the provider's lookup did not answer for external_task_id {external_task_id}",
        retryable=True,
        hint="Nothing was resubmitted; the task is looked up again.",
    )
    return ProviderError(info, sent=True)
