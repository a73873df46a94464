"""The Kling provider: each request on the API its model is served on, reads where the create
went, and Kling's answers as provider-neutral tasks and errors.

One HTTP request per call (plus the one resend ``JwtAuth`` makes after a token renewal; a
lookup reads as many pages as its proof needs): the engine is the only retry layer. The
pieces, one concern each:

    routing     catalogue.api_for(kind, model, provider.api): "v1" (legacy, model in the body)
                or "v2" (API 2.0, model in the path), decided from the request on every call
    v1 / v2     the two wire formats: bodies and task objects (v1.py, v2.py)
    transport   the one place where what the wire says becomes a ProviderError (transport.py)
    account     whether a resource pack has units left (account.py)

Lookups prove absence, or say they cannot: legacy tasks by scanning the family's list newest
first, API 2.0 tasks by reading the time-window list around the send to its end.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Container, Hashable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import httpx

from orchestrator.errors import ProviderError
from orchestrator.providers.base import Kind, Task, TaskRequest
from orchestrator.providers.http_channel import is_utf8, printable
from orchestrator.providers.kling import v1, v2
from orchestrator.providers.kling.account import COSTS_PATH, costs_params, pack_warning
from orchestrator.providers.kling.catalogue import API_CHOICES, V1, V2, Catalogue
from orchestrator.providers.kling.catalogue import catalogue as packaged_catalogue
from orchestrator.providers.kling.transport import MAX_ANSWER_BYTES, Answer, Channel, Op
from orchestrator.providers.kling.v1 import FAMILIES, build_body
from orchestrator.providers.kling.wire import Malformed, refused, unix_ms

#: Kling's page size ceiling for the list endpoint.
MAX_PAGE_SIZE = 500
#: Kling's pageNum ceiling: a lookup reads at most this many list pages.
MAX_PAGES = 1000
#: Seconds before its recorded send time that our task's ``created_at`` (Kling's clock) may
#: lie, and after this machine's now that a task it lists may be stamped. JWT auth keeps this
#: machine's clock at most ~5 s ahead of Kling's (nbf = now - 5); an API key bounds nothing,
#: so the margin is wide: it only costs reading a few more entries.
LOOKUP_CLOCK_MARGIN = 600.0
#: Seconds an entry may be newer than one listed before it without calling the list unordered.
_LIST_ORDER_SLACK = 60.0
#: Connections to the API, and requests in flight at once (the rest wait their turn in a FIFO
#: semaphore, not counted against their timeout). Polling takes few requests (list pages), so
#: this bounds the creates in flight: at 0.3-1 s a create, 8 send 500-1600 a minute, more than
#: an account's rate allows. More costs CPU: httpcore's pool checks every idle connection on
#: each request and response (2000-task benchmark, CPU s per 1000 tasks: 100 connections 6.9,
#: 20: 5.6, 8: 4.8, 4: 4.2, with the same wall time).
MAX_CONNECTIONS = 8
#: The account check runs before a batch starts: it may not hold the start for long.
ACCOUNT_TIMEOUT = 10.0

_Found = dict[str, Task | ProviderError | None]


def _json_body(body: Mapping[str, Any]) -> bytes:
    try:
        return json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:  # UnicodeEncodeError (lone surrogates) included
        raise refused(
            f"the item's fields cannot be sent as JSON: {printable(str(exc))}",
            "Check the item's field values (numbers, strings, lists and mappings only).",
        ) from None


def _sendable(ident: str) -> bool:
    """An id a batch read can name: comma-separated lists cannot carry a comma."""
    return bool(ident) and is_utf8(ident) and "," not in ident


def _copy(error: ProviderError) -> ProviderError:
    """One error per id: each caller may raise its own (tracebacks attach to the instance)."""
    return dataclasses.replace(error, details=dict(error.details))


class KlingProvider:
    """Kling's legacy ``/v1`` API and API 2.0 on one host (``base_url``, e.g.
    https://api-singapore.klingai.com). ``api`` is ``provider.api``: "auto" (v1 where the
    model has it), "v1" or "v2"; ``catalogue`` says which model is served where. Each request
    is bounded by ``timeout`` seconds in total (the whole body included), each answer by
    ``max_answer_bytes``.

    Usable as ``async with KlingProvider(...) as provider:``; otherwise call ``aclose()``.
    """

    name: str = "kling"
    #: The most ids one API 2.0 batch read names.
    batch_limit: int = v2.BATCH_LIMIT

    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth,
        *,
        timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        lookup_pages: int = MAX_PAGES,
        max_connections: int = MAX_CONNECTIONS,
        api: str = "auto",
        catalogue: Catalogue | None = None,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
    ) -> None:
        if not 1 <= lookup_pages <= MAX_PAGES:
            raise ValueError(f"lookup_pages must be from 1 to {MAX_PAGES}")
        if api not in API_CHOICES:
            raise ValueError(f"api must be one of {list(API_CHOICES)}")
        self._channel = Channel(base_url, auth, timeout=timeout, transport=transport,
                                clock=clock, max_connections=max_connections,
                                max_answer_bytes=max_answer_bytes)
        self._clock = clock
        self._lookup_pages = lookup_pages
        self._api = api
        self._catalogue = catalogue if catalogue is not None else packaged_catalogue()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._channel.aclose()

    # -- routing -------------------------------------------------------------------------------

    def api_of(self, request: TaskRequest) -> str:
        """The API ``request`` is served on (v1 or v2); raises a VALIDATION ProviderError
        (sent=False) when its model is not served on the API ``provider.api`` names."""
        model = request.fields.get("model")
        name = model if isinstance(model, str) else ""
        api = self._catalogue.api_for(request.kind, name, self._api)
        if api is None:
            where = {V1: "the legacy /v1 API", V2: "API 2.0"}.get(self._api, self._api)
            raise refused(
                f"{name} is not served on {where} for {request.kind}",
                "Set provider.api to auto, or choose a model served on the API it names.",
            )
        return api

    def _routed(self, request: TaskRequest) -> str | None:
        try:
            return self.api_of(request)
        except ProviderError:
            return None

    # -- the Provider protocol -----------------------------------------------------------------

    async def create(self, request: TaskRequest, external_task_id: str) -> Task:
        if self.api_of(request) == V2:
            path, body = await v2.build_body(request, external_task_id, self._catalogue)
            if not is_utf8(path):
                raise refused(f"the model name {printable(path)!r} cannot be sent in a URL",
                              "Check the item's `model`.")
            answer = await self._channel.call(Op.CREATE, "POST", quote(path, safe="/"),
                                              content=_json_body(body))
            return self._v2_task(Op.CREATE, request.kind.media, answer)
        content = _json_body(await build_body(request, external_task_id))
        answer = await self._channel.call(
            Op.CREATE, "POST", "v1/" + FAMILIES[request.kind].path, content=content
        )
        return self._task(Op.CREATE, request.kind, answer)

    async def query(self, request: TaskRequest, task_id: str) -> Task:
        if self.api_of(request) == V2:
            return await self._query_v2(request.kind.media, task_id)
        return await self._query(request.kind, task_id)

    async def lookup(
        self, request: TaskRequest, external_task_id: str, *, sent_after: float | None = None
    ) -> Task | None:
        """Find our task by external id; None only when its absence is proven.

        Legacy (v1): by path first, then by scanning the family's list, newest first. Kling
        documents the query path as accepting the external id, but public clients disagree,
        so a "not found" there is confirmed against the list. None means the list ended (a
        short page), or, with ``sent_after`` (Unix seconds, the first time this external id
        was sent), it reached tasks created well before that (minus ``LOOKUP_CLOCK_MARGIN``,
        since the clocks differ). When absence cannot be proven (entries without
        ``created_at``, an entry that is not a task, a list not newest first, ``lookup_pages``
        read) a non-retryable SERVER ProviderError says so: the caller must not resend.

        API 2.0: as ``lookup_many`` with one id.
        """
        if self.api_of(request) == V2:
            key = v2.BatchKey(V2, request.kind.media)
            found = (await self.lookup_many(key, [external_task_id],
                                            sent_after=sent_after))[external_task_id]
            if isinstance(found, ProviderError):
                raise found
            return found
        return await self._lookup_v1(request.kind, external_task_id, sent_after)

    # -- legacy /v1 ----------------------------------------------------------------------------

    async def _query(self, kind: Kind, task_id: str) -> Task:
        answer = await self._channel.call(Op.QUERY, "GET", self._item_path(kind, task_id))
        return self._task(Op.QUERY, kind, answer)

    async def _lookup_v1(
        self, kind: Kind, external_task_id: str, sent_after: float | None
    ) -> Task | None:
        try:
            task = await self._query(kind, external_task_id)
        except ProviderError as exc:
            if not exc.not_found:
                raise
        else:
            if task.external_task_id in (None, external_task_id):
                return task
        page_size = MAX_PAGE_SIZE
        cutoff_ms = None if sent_after is None else (sent_after - LOOKUP_CLOCK_MARGIN) * 1000
        oldest_ms: float | None = None  # the oldest created_at seen so far
        for page in range(1, self._lookup_pages + 1):
            entries, answer = await self._list(kind, page, page_size)
            times: list[float] = []
            for position, entry in enumerate(entries):
                if not isinstance(entry, dict):
                    raise self._channel.unproven(external_task_id, answer, (
                        f"entry {position} of list page {page} is not a task object"))
                if v1.external_id(entry) == external_task_id:
                    return self._task(Op.LIST, kind, Answer(entry, answer.request_id,
                                                            answer.http_status))
                created = unix_ms(entry.get("created_at"))
                if created is None:
                    continue
                if oldest_ms is not None and created > oldest_ms + _LIST_ORDER_SLACK * 1000:
                    raise self._channel.unproven(external_task_id, answer, (
                        f"list page {page} is not ordered newest first"))
                oldest_ms = created if oldest_ms is None else min(oldest_ms, created)
                times.append(created)
            if len(entries) < page_size:
                return None  # the end of the list: every task of the family was read
            if cutoff_ms is None:
                continue
            if not times:
                raise self._channel.unproven(external_task_id, answer, (
                    f"the entries of list page {page} carry no created_at"))
            if min(times) < cutoff_ms:
                return None  # older than any task this external id can have created
        raise self._channel.unproven(external_task_id, None, (
            f"not among the {self._lookup_pages * page_size} newest tasks (the most a lookup "
            "reads)"))

    async def list_tasks(self, kind: Kind, page: int, page_size: int) -> list[Task]:
        """One page of legacy tasks, newest first (Kling: pageNum 1..1000, pageSize 1..500)."""
        if not 1 <= page <= 1000 or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError("page must be 1..1000 and page_size 1..500")
        entries, answer = await self._list(kind, page, page_size)
        return [self._task(Op.LIST, kind, Answer(entry, answer.request_id, answer.http_status))
                for entry in entries]

    def list_key(self, request: TaskRequest) -> Hashable | None:
        """The legacy family list a v1-routed request's tasks appear on; None for API 2.0
        (whether its tasks appear on the legacy lists is unverified)."""
        return request.kind if self._routed(request) == V1 else None

    async def list_matching(
        self, key: Hashable, page: int, task_ids: Container[str]
    ) -> tuple[dict[str, Task], int]:
        """One full page (500) of the newest tasks: those of ``task_ids`` found on it, parsed,
        and how many entries the page had (fewer than 500: the last page). Only the wanted
        entries are parsed; a wanted entry that is malformed is left out (the caller queries
        that task on its own and gets the error classified)."""
        if not 1 <= page <= 1000:
            raise ValueError("page must be 1..1000")
        if not isinstance(key, Kind):
            raise TypeError(f"not a list of this provider: {key!r}")
        kind = key
        entries, answer = await self._list(kind, page, MAX_PAGE_SIZE)
        found: dict[str, Task] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            ident = entry.get("task_id")
            if isinstance(ident, int) and not isinstance(ident, bool):
                ident = str(ident)
            if not isinstance(ident, str) or ident not in task_ids:
                continue
            try:
                found[ident] = v1.parse_task(kind, entry, answer.request_id, self._channel.clean)
            except Malformed:
                continue
        return found, len(entries)

    @staticmethod
    def _item_path(kind: Kind, ident: str) -> str:
        if not ident or not is_utf8(ident):
            raise refused(
                f"cannot query Kling for the task id {printable(ident)!r}",
                "Task ids must be non-empty text; check the ledger entry for this item.",
            )
        return f"v1/{FAMILIES[kind].path}/{quote(ident, safe='')}"

    async def _list(self, kind: Kind, page: int, page_size: int) -> tuple[list[object], Answer]:
        params = {"pageNum": str(page), "pageSize": str(page_size)}
        answer = await self._channel.call(Op.LIST, "GET", "v1/" + FAMILIES[kind].path,
                                          params=params)
        if not isinstance(answer.data, list):
            raise self._channel.malformed(Op.LIST, answer, "list data is not an array")
        return answer.data, answer

    def _task(self, op: Op, kind: Kind, answer: Answer) -> Task:
        try:
            return v1.parse_task(kind, answer.data, answer.request_id, self._channel.clean)
        except Malformed as exc:
            raise self._channel.malformed(op, answer, str(exc)) from None

    # -- capacity: one limit per resource-pack type ---------------------------------------------

    def capacity_group(self, request: TaskRequest) -> str:
        """Kling counts concurrency per resource-pack type: video tasks and image tasks hold
        slots of different packs (an image task ``n`` of its pack's)."""
        return request.kind.media

    # -- API 2.0: the BatchReader protocol -----------------------------------------------------

    def batch_key(self, request: TaskRequest) -> Hashable | None:
        """API 2.0 tasks of one media are read together; legacy ones one at a time (or from
        their family's list)."""
        if self._routed(request) != V2:
            return None
        return v2.BatchKey(V2, request.kind.media)

    async def query_many(self, key: Hashable, task_ids: Sequence[str]) -> dict[str, Task]:
        """``GET /tasks?task_ids=...``: the tasks reported, by id. An id the answer leaves out,
        or whose entry is malformed, is left out (queried alone, it gets its error); so is an
        id no request can carry (empty, not text, a comma)."""
        media = self._media(key)
        wanted = list(dict.fromkeys(i for i in task_ids if _sendable(i)))
        if len(wanted) > self.batch_limit:
            raise ValueError(f"at most {self.batch_limit} ids per batch read")
        if not wanted:
            return {}
        items, answer = await self._read("task_ids", wanted)
        found: dict[str, Task] = {}
        for entry in items:
            ident = v2.task_id(entry)
            if ident is None or ident not in wanted or ident in found:
                continue
            try:
                found[ident] = v2.parse_task(media, entry, answer.request_id,
                                             self._channel.clean)
            except Malformed:
                continue
        return found

    async def lookup_many(
        self, key: Hashable, external_task_ids: Sequence[str], *, sent_after: float | None
    ) -> _Found:
        """By external id, ``batch_limit`` ids a request; then, for the ids not found, an
        absence proof: the time-window list from ``sent_after`` minus ``LOOKUP_CLOCK_MARGIN``
        to now plus the margin, read to its last page (one proof for all of them). Without
        ``sent_after`` the window has no start and absence cannot be proven: each such id gets
        the ProviderError saying so (never None)."""
        media = self._media(key)
        results: _Found = {}
        ids = list(dict.fromkeys(external_task_ids))
        for ident in ids:
            if not _sendable(ident):
                results[ident] = refused(
                    f"cannot look up the external id {printable(ident)!r}",
                    "External ids must be non-empty text without commas; check the ledger.")
        sendable = [i for i in ids if i not in results]
        for start in range(0, len(sendable), self.batch_limit):
            chunk = sendable[start:start + self.batch_limit]
            try:
                items, answer = await self._read("external_task_ids", chunk)
            except ProviderError as exc:
                results.update({ident: _copy(exc) for ident in chunk})
                continue
            self._match(media, items, answer, set(chunk), results)
        missing = [i for i in sendable if i not in results]
        if not missing:
            return results
        if sent_after is None:
            for ident in missing:
                results[ident] = self._channel.unproven(ident, None, (
                    "no send time is known, so the API 2.0 time-window list has no start"))
            return results
        await self._prove_absent(media, missing, sent_after, results)
        return results

    async def _query_v2(self, media: str, task_id: str) -> Task:
        """One task by id: a batch read of one. Reads by task id do not lag behind creates,
        so an answer without it says the task does not exist."""
        if not _sendable(task_id):
            raise refused(
                f"cannot query Kling for the task id {printable(task_id)!r}",
                "Task ids must be non-empty text; check the ledger entry for this item.",
            )
        items, answer = await self._read("task_ids", [task_id])
        for entry in items:
            if v2.task_id(entry) == task_id:
                return self._v2_task(Op.READ, media, Answer(entry, answer.request_id,
                                                            answer.http_status))
        raise self._channel.absent(answer, f"task {task_id} is not among the tasks Kling "
                                           "reports for it (GET /tasks?task_ids=)")

    async def _read(self, param: str, ids: Sequence[str]) -> tuple[list[object], Answer]:
        # Commas travel as commas (the separator); each id is escaped on its own.
        query = ",".join(quote(ident, safe="") for ident in ids)
        answer = await self._channel.call(Op.READ, "GET", f"{v2.TASKS_PATH}?{param}={query}")
        try:
            return v2.entries(answer.data), answer
        except Malformed as exc:
            raise self._channel.malformed(Op.READ, answer, str(exc)) from None

    def _match(
        self, media: str, items: Iterable[object], answer: Answer, wanted: set[str],
        results: _Found,
    ) -> None:
        """Record the entries that carry a wanted external id, and stop wanting those found.
        A malformed one records its error (the task exists but cannot be read) and stays
        wanted, so that a readable entry later on still wins."""
        for entry in items:
            ext = v2.external_id(entry) if isinstance(entry, dict) else None
            if ext is None or ext not in wanted:
                continue
            try:
                results[ext] = v2.parse_task(media, entry, answer.request_id,
                                             self._channel.clean)
            except Malformed as exc:
                results.setdefault(ext, self._channel.malformed(Op.READ, answer, str(exc)))
            else:
                wanted.discard(ext)

    async def _prove_absent(
        self, media: str, missing: list[str], sent_after: float, results: _Found
    ) -> None:
        start_ms = max(0, int((sent_after - LOOKUP_CLOCK_MARGIN) * 1000))
        end_ms = int((self._clock() + LOOKUP_CLOCK_MARGIN) * 1000)
        wanted = set(missing)
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(self._lookup_pages):
            try:
                answer = await self._channel.call(
                    Op.WINDOW, "POST", v2.TASKS_PATH,
                    content=v2.window_body(start_ms, end_ms, cursor),
                )
            except ProviderError as exc:
                results.update({ident: _copy(exc) for ident in wanted})
                return
            try:
                page = v2.window_page(answer.data)
            except Malformed as exc:
                error = self._channel.malformed(Op.WINDOW, answer, str(exc))
                results.update({ident: _copy(error) for ident in wanted})
                return
            if not all(isinstance(entry, dict) for entry in page.result):
                for ident in wanted:
                    results[ident] = self._channel.unproven(
                        ident, answer, "an entry of the time-window list is not a task object")
                return
            self._match(media, page.result, answer, wanted, results)
            if not wanted:
                return
            if not page.has_more:
                for ident in wanted:  # read to its end: never created (or seen malformed)
                    results.setdefault(ident, None)
                return
            cursor = page.next_cursor
            if cursor is None or cursor in seen:
                for ident in wanted:
                    results[ident] = self._channel.unproven(
                        ident, answer, "the time-window list repeats a cursor")
                return
            seen.add(cursor)
        for ident in wanted:
            results[ident] = self._channel.unproven(ident, None, (
                f"the time-window list has more than {self._lookup_pages} pages (the most a "
                "lookup reads)"))

    @staticmethod
    def _media(key: Hashable) -> str:
        if not isinstance(key, v2.BatchKey) or key.api != V2:
            raise TypeError(f"not a batch of this provider: {key!r}")
        return key.media

    def _v2_task(self, op: Op, media: str, answer: Answer) -> Task:
        try:
            return v2.parse_task(media, answer.data, answer.request_id, self._channel.clean)
        except Malformed as exc:
            raise self._channel.malformed(op, answer, str(exc)) from None

    # -- the account, and callbacks ------------------------------------------------------------

    async def account_warning(self) -> str | None:
        """One request to ``GET /account/costs`` (packs bought in the last 400 days): a warning
        when no pack has units left, None otherwise, and None on any failure."""
        try:
            answer = await self._channel.call(
                Op.ACCOUNT, "GET", COSTS_PATH, params=costs_params(self._clock()),
                timeout=ACCOUNT_TIMEOUT,
            )
        except ProviderError:
            return None
        return pack_warning(answer.data)

    def task_from_callback(self, request: TaskRequest, body: bytes) -> Task:
        """The task a callback POSTs (flat, no envelope): the legacy shape (``task_id``,
        ``task_status``) or API 2.0's (``id``, ``status``). Raises a SERVER ProviderError
        when it is neither."""
        try:
            document: object = json.loads(body)
        except (ValueError, RecursionError):
            document = None
        answer = Answer(document, None, None)
        if isinstance(document, dict) and "task_id" not in document and "id" in document:
            return self._v2_task(Op.CALLBACK, request.kind.media, answer)
        return self._task(Op.CALLBACK, request.kind, answer)
