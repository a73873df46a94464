"""The Kling adapter: manifest fields to Kling's wire format, Kling's answers to provider-neutral
tasks and errors.

One HTTP request per call (plus the one resend ``JwtAuth`` makes after a token renewal): the
engine is the only retry layer. Every failure leaves as a ``ProviderError``:

    _send          httpx (and raw OSError) exceptions -> network / timeout errors with .sent
                   and .ambiguous
    _answer        HTTP status + envelope code -> codes.classify, Retry-After, request_id
    _parse_task    task objects -> Task; garbage -> SERVER error (never KeyError/TypeError)
    _clean         every text taken from an answer or an exception: credentials masked, lone
                   surrogates replaced (so reports and consoles can print it), stripped, short

Task families are data (``FAMILIES``): adding one is adding a path and its wire fields.
"""

from __future__ import annotations

import base64
import enum
import json
import re
import time
from collections.abc import Callable, Container, Hashable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Self
from urllib.parse import quote

import anyio
import anyio.to_thread
import httpx

from orchestrator.errors import (
    Category,
    ErrorInfo,
    ProviderError,
    Scope,
    network_error,
    request_timeout,
)
from orchestrator.providers.base import (
    Asset,
    ImageSource,
    Kind,
    Task,
    TaskRequest,
    TaskStatus,
    valid_asset_indexes,
)
from orchestrator.providers.kling.codes import (
    CODES,
    classify,
    classify_task_failure,
    means_not_found,
    not_found,
    parse_code,
    rule_for,
)
from orchestrator.retry import parse_retry_after, parse_retry_after_ms

_COMMON_FIELDS = frozenset({"model_name", "prompt", "negative_prompt", "callback_url",
                            "external_task_id"})


@dataclass(frozen=True)
class Family:
    """One Kling task family: where it lives and which body fields it accepts."""

    path: str
    fields: frozenset[str]


FAMILIES: Mapping[Kind, Family] = {
    Kind.TEXT2VIDEO: Family(
        "videos/text2video",
        _COMMON_FIELDS | {"cfg_scale", "mode", "aspect_ratio", "duration", "camera_control"},
    ),
    Kind.IMAGE2VIDEO: Family(
        "videos/image2video",
        _COMMON_FIELDS | {"cfg_scale", "mode", "duration", "camera_control", "image",
                          "image_tail", "static_mask", "dynamic_masks"},
    ),
    Kind.OMNI_VIDEO: Family(
        "videos/omni-video",
        _COMMON_FIELDS | {"mode", "aspect_ratio", "duration", "sound", "image_list"},
    ),
    Kind.IMAGE: Family(
        "images/generations",
        _COMMON_FIELDS | {"image", "image_reference", "image_fidelity", "human_fidelity",
                          "resolution", "n", "aspect_ratio"},
    ),
}

#: Manifest names that differ from Kling's.
_WIRE_NAMES: Mapping[str, str] = {"model": "model_name"}

_STATUSES: Mapping[str, TaskStatus] = {
    "submitted": TaskStatus.SUBMITTED,
    "processing": TaskStatus.PROCESSING,
    "succeed": TaskStatus.SUCCEEDED,
    # Not Kling's spelling today; accepted so a fix on their side does not fail paid tasks.
    "succeeded": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
}

#: Kling's page size ceiling for the list endpoint.
MAX_PAGE_SIZE = 500
#: Kling's pageNum ceiling: a lookup reads at most this many list pages.
MAX_PAGES = 1000
#: Seconds before its recorded send time that our task's ``created_at`` (Kling's clock) may
#: lie. JWT auth keeps this machine's clock at most ~5 s ahead of Kling's (nbf = now - 5);
#: an API key bounds nothing, so the margin is wide: it only costs reading a few more entries.
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
_USER_AGENT = "kling-batch-orchestrator/0.1"

_REDACTIONS = (
    (re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*"), "<jwt>"),
    (re.compile(r"(?i)bearer\s+\S+"), "Bearer <redacted>"),
)


class _Op(enum.Enum):
    """What a request is for: it decides ambiguity and what "not found" means."""

    CREATE = "create"
    QUERY = "query"
    LIST = "list"


class _Malformed(Exception):
    """A 2xx answer that is not the shape Kling documents."""


def _validation(message: str, hint: str) -> ProviderError:
    info = ErrorInfo(Category.VALIDATION, message, retryable=False, hint=hint)
    return ProviderError(info, sent=False)


# -- request bodies ----------------------------------------------------------------------------

def _read_base64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


async def _encode_image(source: ImageSource) -> str:
    if source.url is not None:
        return source.url
    if source.path is None:
        raise _validation("an image field has neither a path nor a url",
                          "Give the image as a local file path or a public URL.")
    try:
        # Kling wants raw base64 (no "data:" prefix); reading up to 10 MB off the event loop.
        return await anyio.to_thread.run_sync(_read_base64, source.path)
    except OSError as exc:
        raise _validation(
            f"cannot read image {source.path}: {exc.strerror or type(exc).__name__}",
            "Check that the image file exists and is readable.",
        ) from None


async def _to_wire(value: Any) -> Any:
    """Images to URL/base64 at any depth (dynamic_masks[].mask too); None values dropped."""
    if isinstance(value, ImageSource):
        return await _encode_image(value)
    if isinstance(value, Mapping):
        return {str(k): await _to_wire(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [await _to_wire(v) for v in value if v is not None]
    return value


async def build_body(request: TaskRequest, external_task_id: str) -> dict[str, Any]:
    """The create body for ``request``; raises a VALIDATION ProviderError (sent=False)."""
    family = FAMILIES[request.kind]
    body: dict[str, Any] = {}
    for name, value in request.fields.items():
        if value is None:
            continue
        wire = _WIRE_NAMES.get(name, name)
        if wire not in family.fields:
            raise _validation(
                f"field '{name}' is not accepted by Kling {family.path}",
                f"Remove '{name}' from the item, or use a kind that accepts it.",
            )
        if wire == "duration" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # Kling wants "5", not 5
        body[wire] = await _to_wire(value)
    body["external_task_id"] = external_task_id
    return body


# -- answers -----------------------------------------------------------------------------------

def _is_utf8(text: str) -> bool:
    """False for strings holding lone surrogates (JSON's "\\ud800"): they cannot be printed,
    written to a UTF-8 file, or put in a URL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(text: str) -> str:
    return text if _is_utf8(text) else text.encode("utf-8", "replace").decode("utf-8")


def _identifier(value: object) -> str | None:
    """An id or URL Kling sent: a non-empty, encodable string, or None."""
    return value if isinstance(value, str) and value and _is_utf8(value) else None


def _parse_assets(kind: Kind, result: object) -> tuple[Asset, ...]:
    if result is None:
        return ()
    if not isinstance(result, dict):
        raise _Malformed("task_result is not an object")
    media = kind.media
    entries = result.get(f"{media}s")
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise _Malformed(f"task_result.{media}s is not a list")
    urls: list[str] = []
    indexes: list[int] = []
    for position, entry in enumerate(entries):
        url = _identifier(entry.get("url")) if isinstance(entry, dict) else None
        if url is None:
            raise _Malformed(f"task_result.{media}s[{position}] has no url")
        urls.append(url)
        index = entry.get("index") if media == "image" else None
        indexes.append(index if type(index) is int else position)
    # An index names the file and matches a fresh URL to an expired one. Negative, huge or
    # repeated ones cannot, but the task is paid and its URLs are good: renumber them all by
    # position (Kling's order) rather than reject the answer, which would leave a succeeded
    # task unread until poll.timeout and fail it. Every read of the same answer renumbers alike.
    if not valid_asset_indexes(indexes):
        indexes = list(range(len(urls)))
    return tuple(
        Asset(index=index, url=url, media=media)
        for index, url in zip(indexes, urls, strict=True)
    )


def _unix_ms(value: object) -> float | None:
    """Kling's ``created_at`` / ``updated_at`` (Unix ms), when a finite, plausible number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 < value < 10**15:  # NaN and infinities fail too; 10**15 ms is the year 33658
        return None
    return float(value)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


def _external_id(data: Mapping[str, Any]) -> str | None:
    info = data.get("task_info")
    return _identifier(info.get("external_task_id")) if isinstance(info, dict) else None


def _parse_task(
    kind: Kind, data: object, request_id: str | None, clean: Callable[[str], str]
) -> Task:
    """``clean`` masks credentials in Kling's free text; _Malformed messages are cleaned by the
    caller, so they may quote what Kling sent."""
    if not isinstance(data, dict):
        raise _Malformed(f"data is {type(data).__name__}, not a task object")
    task_id = data.get("task_id")
    if isinstance(task_id, int) and not isinstance(task_id, bool):
        task_id = str(task_id)
    if not isinstance(task_id, str) or not task_id:
        raise _Malformed("task object has no task_id")
    if not _is_utf8(task_id):
        # It could not be queried later: a URL path cannot carry it.
        raise _Malformed(f"task_id {task_id!r} is not valid text")
    raw_status = data.get("task_status")
    status = _STATUSES.get(raw_status) if isinstance(raw_status, str) else None
    if status is None:
        shown = repr(raw_status) if isinstance(raw_status, str) else (
            f"of type {type(raw_status).__name__}")
        raise _Malformed(f"task {task_id} has unknown task_status {shown}")
    raw_message = data.get("task_status_msg")
    message = (clean(raw_message) or None) if isinstance(raw_message, str) else None
    return Task(
        task_id=task_id,
        status=status,
        external_task_id=_external_id(data),
        message=message,
        assets=_parse_assets(kind, data.get("task_result")),
        request_id=request_id,
        failure=classify_task_failure(message) if status is TaskStatus.FAILED else None,
        raw=data,
        created_at=_seconds(_unix_ms(data.get("created_at"))),
        ended_at=_seconds(_unix_ms(data.get("updated_at"))) if status.finished else None,
    )


@dataclass(frozen=True)
class _Answer:
    data: object
    request_id: str | None
    http_status: int


_NOT_JSON = object()


def _json(content: bytes) -> object:
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return _NOT_JSON


class _CookieFree(httpx.AsyncBaseTransport):
    """Answers without their Set-Cookie headers: an API needs no cookies, and one a server set
    with bytes that cannot go in a header would make every later request fail unsent."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        if "set-cookie" in response.headers:
            del response.headers["set-cookie"]
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class KlingProvider:
    """Kling's legacy ``/v1`` API. ``base_url`` is the host, e.g. https://api-singapore.klingai.com.

    Usable as ``async with KlingProvider(...) as provider:``; otherwise call ``aclose()``.
    """

    name: str = "kling"

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
    ) -> None:
        if transport is None:
            # retries=0: the engine is the one retry layer, and a silent resend of a create
            # could pay twice.
            transport = httpx.AsyncHTTPTransport(
                retries=0,
                limits=httpx.Limits(
                    max_connections=max_connections, max_keepalive_connections=max_connections
                ),
            )
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            auth=auth,
            transport=_CookieFree(transport),
            # No pool timeout: waiting for a free connection is queueing behind our own
            # requests (each bounded by ``timeout``), not a provider failure to retry.
            timeout=httpx.Timeout(timeout, pool=None),
            follow_redirects=False,
            headers={"User-Agent": _USER_AGENT, "Accept": "application/json"},
        )
        if not 1 <= lookup_pages <= MAX_PAGES:
            raise ValueError(f"lookup_pages must be from 1 to {MAX_PAGES}")
        self._auth = auth
        self._clock = clock
        self._lookup_pages = lookup_pages
        self._gate = anyio.Semaphore(max_connections)

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
        await self._client.aclose()

    # -- the Provider protocol -----------------------------------------------------------------

    async def create(self, request: TaskRequest, external_task_id: str) -> Task:
        body = await build_body(request, external_task_id)
        try:
            content = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise _validation(
                f"the item's fields cannot be sent as JSON: {exc}",
                "Check the item's field values (numbers, strings, lists and mappings only).",
            ) from None
        path = FAMILIES[request.kind].path
        answer = await self._call(_Op.CREATE, "POST", path, content=content)
        return self._task(_Op.CREATE, request.kind, answer)

    async def query(self, request: TaskRequest, task_id: str) -> Task:
        return await self._query(request.kind, task_id)

    async def _query(self, kind: Kind, task_id: str) -> Task:
        answer = await self._call(_Op.QUERY, "GET", self._item_path(kind, task_id))
        return self._task(_Op.QUERY, kind, answer)

    async def lookup(
        self, request: TaskRequest, external_task_id: str, *, sent_after: float | None = None
    ) -> Task | None:
        """Find our task by external id: by path first, then by scanning the list, newest first.

        Kling documents the query path as accepting the external id, but public clients
        disagree, so a "not found" there is confirmed against the list. None means absence is
        proven: the list ended (a short page), or, with ``sent_after`` (Unix seconds, the first
        time this external id was sent), it reached tasks created well before that (minus
        ``LOOKUP_CLOCK_MARGIN``, since the clocks differ). A task older than the newest
        thousand is found, not resubmitted. When absence cannot be proven (entries without
        ``created_at``, an entry that is not a task, a list not newest first, ``lookup_pages``
        read) a non-retryable SERVER ProviderError says so: the caller must not resend.
        """
        kind = request.kind
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
                    raise self._unproven(external_task_id, answer, (
                        f"entry {position} of list page {page} is not a task object"))
                if _external_id(entry) == external_task_id:
                    return self._task(_Op.LIST, kind, _Answer(entry, answer.request_id,
                                                              answer.http_status))
                created = _unix_ms(entry.get("created_at"))
                if created is None:
                    continue
                if oldest_ms is not None and created > oldest_ms + _LIST_ORDER_SLACK * 1000:
                    raise self._unproven(external_task_id, answer, (
                        f"list page {page} is not ordered newest first"))
                oldest_ms = created if oldest_ms is None else min(oldest_ms, created)
                times.append(created)
            if len(entries) < page_size:
                return None  # the end of the list: every task of the family was read
            if cutoff_ms is None:
                continue
            if not times:
                raise self._unproven(external_task_id, answer, (
                    f"the entries of list page {page} carry no created_at"))
            if min(times) < cutoff_ms:
                return None  # older than any task this external id can have created
        raise self._unproven(external_task_id, None, (
            f"not among the {self._lookup_pages * page_size} newest tasks (the most a lookup "
            "reads)"))

    async def list_tasks(self, kind: Kind, page: int, page_size: int) -> list[Task]:
        """One page of tasks, newest first (Kling: pageNum 1..1000, pageSize 1..500)."""
        if not 1 <= page <= 1000 or not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError("page must be 1..1000 and page_size 1..500")
        entries, answer = await self._list(kind, page, page_size)
        return [self._task(_Op.LIST, kind, _Answer(entry, answer.request_id, answer.http_status))
                for entry in entries]

    def list_key(self, request: TaskRequest) -> Hashable | None:
        return request.kind

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
                found[ident] = _parse_task(kind, entry, answer.request_id, self._clean)
            except _Malformed:
                continue
        return found, len(entries)

    # -- one request, one answer ---------------------------------------------------------------

    @staticmethod
    def _item_path(kind: Kind, ident: str) -> str:
        if not ident or not _is_utf8(ident):
            raise _validation(
                f"cannot query Kling for the task id {_printable(ident)!r}",
                "Task ids must be non-empty text; check the ledger entry for this item.",
            )
        return f"{FAMILIES[kind].path}/{quote(ident, safe='')}"

    async def _list(self, kind: Kind, page: int, page_size: int) -> tuple[list[object], _Answer]:
        params = {"pageNum": str(page), "pageSize": str(page_size)}
        answer = await self._call(_Op.LIST, "GET", FAMILIES[kind].path, params=params)
        if not isinstance(answer.data, list):
            raise self._malformed(_Op.LIST, answer, "list data is not an array")
        return answer.data, answer

    def _task(self, op: _Op, kind: Kind, answer: _Answer) -> Task:
        try:
            return _parse_task(kind, answer.data, answer.request_id, self._clean)
        except _Malformed as exc:
            raise self._malformed(op, answer, str(exc)) from None

    def _unproven(
        self, external_task_id: str, answer: _Answer | None, reason: str
    ) -> ProviderError:
        """A lookup that could not prove the task absent: the create must not be resent."""
        info = ErrorInfo(
            category=Category.SERVER,
            message=self._clean(
                f"cannot prove that no task has external_task_id {external_task_id}: {reason}"
            ),
            retryable=False,
            hint=(
                "Nothing was resubmitted. Rerun the manifest to look the task up again; if this "
                "persists, search the Kling console for this external_task_id before resubmitting "
                "the item under a new id."
            ),
            http_status=answer.http_status if answer is not None else None,
        )
        return ProviderError(
            info,
            sent=True,
            request_id=answer.request_id if answer is not None else None,
            details={"operation": "lookup"},
        )

    def _malformed(self, op: _Op, answer: _Answer, message: str) -> ProviderError:
        info = ErrorInfo(
            category=Category.SERVER,
            # The message may quote Kling's task_id or task_status: clean it like Kling's text.
            message=self._clean(f"unexpected answer from Kling: {message}"),
            retryable=True,
            hint=(
                "Kling's answer did not have the documented shape; the item is retried. If this "
                "persists, check provider.base_url."
            ),
            http_status=answer.http_status,
        )
        # A 2xx to a create most likely means the task exists: look it up, do not resubmit.
        return ProviderError(info, sent=True, ambiguous=op is _Op.CREATE,
                             request_id=answer.request_id, details={"operation": op.value})

    async def _call(
        self,
        op: _Op,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> _Answer:
        response = await self._send(op, method, "v1/" + path, content=content, params=params)
        return self._answer(op, response)

    async def _send(
        self,
        op: _Op,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The one place httpx exceptions become ProviderErrors."""
        creating = op is _Op.CREATE
        where = f"{method} /{path}"
        details: dict[str, Any] = {"operation": op.value}
        try:
            request = self._client.build_request(
                method, path, content=content, params=params,
                headers={"Content-Type": "application/json"} if content is not None else None,
            )
            # Never more requests than connections reach httpcore: requests queued inside its
            # pool make every request and response rescan the queue and the connections
            # (measured: 3.5 ms of CPU a request with 200 queued, 1.65 ms with none).
            async with self._gate:
                return await self._client.send(request)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            info = ErrorInfo(
                category=Category.NETWORK,
                message=self._describe(where, exc),
                retryable=False,
                hint="Fix provider.base_url: it must be an https:// (or http://) URL of the host.",
                scope=Scope.ACCOUNT,
            )
            raise ProviderError(info, sent=False, details=details) from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                httpx.ProxyError) as exc:
            # Nothing reached Kling: safe to resend, even a create.
            raise ProviderError(network_error(self._describe(where, exc), sent=False),
                                sent=False, details=details) from None
        except httpx.TimeoutException as exc:
            raise ProviderError(request_timeout(self._describe(where, exc)),
                                sent=True, ambiguous=creating, details=details) from None
        except httpx.RequestError as exc:
            # Dropped connections, protocol errors, undecodable bodies: the request may have
            # been acted on.
            raise ProviderError(network_error(self._describe(where, exc), sent=True),
                                sent=True, ambiguous=creating, details=details) from None
        except OSError as exc:
            # httpx wraps OSError only while connecting; one raised while reading or writing
            # (or by a custom transport) arrives as is, and nothing says it was not sent.
            message = self._describe(where, exc)
            info = (request_timeout(message) if isinstance(exc, TimeoutError)
                    else network_error(message, sent=True))
            raise ProviderError(info, sent=True, ambiguous=creating, details=details) from None

    def _answer(self, op: _Op, response: httpx.Response) -> _Answer:
        status = response.status_code
        envelope = _json(response.content)
        code: int | None = None
        message = ""
        request_id: str | None = None
        data: object = None
        if isinstance(envelope, dict):
            code = parse_code(envelope.get("code"))
            raw_message = envelope.get("message")
            message = self._clean(raw_message) if isinstance(raw_message, str) else ""
            raw_request_id = envelope.get("request_id")
            request_id = ((self._clean(raw_request_id) or None)
                          if isinstance(raw_request_id, str) else None)
            data = envelope.get("data")
        answer = _Answer(data, request_id, status)

        if 200 <= status <= 299:
            if not isinstance(envelope, dict):
                raise self._malformed(op, answer, self._describe_body(response, envelope))
            if code in (0, None):
                return answer
        self._raise_rejected(op, response, envelope, answer, code, message)

    def _raise_rejected(
        self,
        op: _Op,
        response: httpx.Response,
        envelope: object,
        answer: _Answer,
        code: int | None,
        message: str,
    ) -> NoReturn:
        status = answer.http_status
        is_envelope = isinstance(envelope, dict)
        if not message and not is_envelope:
            message = self._describe_body(response, envelope)
        rule = rule_for(status, code)
        # A bare 404 page (no Kling envelope) is a wrong URL or a proxy, not proof of absence:
        # answering "absent" on it could make the engine resubmit a task that exists.
        absent = op is _Op.QUERY and is_envelope and means_not_found(status, code)
        info = not_found(status, code, message) if absent else classify(status, code, message)
        retry_after = parse_retry_after_ms(response.headers.get("retry-after-ms"))
        if retry_after is None:
            retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock())
        if retry_after is None:
            retry_after = rule.min_wait
        ambiguous = op is _Op.CREATE and (
            rule.may_have_committed
            or status >= 500
            # Only a 4xx or a known rejection code refuses the request. A 2xx with a code we do
            # not know, a 1xx, or a 3xx (a 303 means "done, see there") may have created it.
            or (not 400 <= status <= 499 and code not in CODES)
        )
        raise ProviderError(
            info,
            sent=True,
            ambiguous=ambiguous,
            retry_after=retry_after,
            request_id=answer.request_id,
            not_found=absent,
            over_capacity=rule.over_capacity,
            details={"operation": op.value},
        )

    @staticmethod
    def _describe_body(response: httpx.Response, envelope: object) -> str:
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        if not response.content:
            shape = "an empty body"
        elif envelope is _NOT_JSON:
            shape = f"a non-JSON body ({kind}, {len(response.content)} bytes)"
        else:
            shape = f"a JSON {type(envelope).__name__}, not an object"
        return f"HTTP {response.status_code} with {shape}"

    def _describe(self, where: str, exc: Exception) -> str:
        detail = self._clean(str(exc))
        name = type(exc).__name__
        return f"{where}: {name}: {detail}" if detail else f"{where}: {name}"

    def _clean(self, text: str) -> str:
        """Server and library text, stripped of anything credential-shaped and kept short.

        Masks before cutting, so a cut never leaves a credential's prefix behind; may return ""
        (blank text), which callers replace with the code's meaning.
        """
        text = _printable(text)
        secrets = getattr(self._auth, "secrets", None)
        values: Iterable[object] = secrets() if callable(secrets) else ()
        for value in values:
            if isinstance(value, str) and value:
                text = text.replace(value, "<redacted>")
        for pattern, replacement in _REDACTIONS:
            text = pattern.sub(replacement, text)
        return text.strip()[:500]
