"""One request to Kling, one answer or one ProviderError: the only place where what the wire
says (httpx exceptions, HTTP statuses, envelope codes and messages) becomes ours.

    Channel.call   send   httpx (and raw OSError) exceptions -> network / timeout errors with
                          .sent and .ambiguous; a request not answered in full (connect, send,
                          the whole body) within its timeout -> a timeout error like a read
                          timeout; a body past MAX_ANSWER_BYTES -> a server error (ambiguous on
                          a create), read no further
                   answer HTTP status + envelope code + message -> codes (classify, exists,
                          not found), Retry-After, request_id
    Channel.clean  every text taken from an answer or an exception: credentials masked, lone
                   surrogates replaced (so reports and consoles can print it), stripped, short

Both APIs (legacy /v1 and API 2.0) share the envelope ``{code, message, request_id, data}``
and the code table, so both go through here. The operation (``Op``) decides what an answer
may mean: only a create can be ambiguous or "exists", only a legacy query "not found".
"""

from __future__ import annotations

import enum
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn
from urllib.parse import urlsplit

import anyio
import httpx

from orchestrator.body_cap import ACCEPT_ENCODING, BodyTooLarge, CappedTransport
from orchestrator.errors import (
    Category,
    ErrorInfo,
    ProviderError,
    Scope,
    network_error,
    request_timeout,
)
from orchestrator.providers.kling.codes import (
    CODES,
    MALFORMED_HINT,
    UNPROVEN_HINT,
    classify,
    exists_info,
    means_exists,
    means_not_found,
    not_found,
    parse_code,
    rule_for,
)
from orchestrator.providers.kling.wire import printable
from orchestrator.retry import parse_retry_after, parse_retry_after_ms

_USER_AGENT = "kling-batch-orchestrator/0.1"
#: The largest answer read. Kling's largest, a list page of 500 tasks, is far below it; a body
#: past it is not an answer but a broken or hostile server, and must not fill the memory.
MAX_ANSWER_BYTES = 8 * 1024 * 1024
_ANSWER_TOO_LARGE_HINT = (
    "Kling's answer was larger than any it documents (a proxy or a wrong provider.base_url?); "
    "the item is retried, a create is looked up first."
)

_REDACTIONS = (
    (re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*"), "<jwt>"),
    (re.compile(r"(?i)bearer\s+\S+"), "Bearer <redacted>"),
)


class Op(enum.Enum):
    """What a request is for: it decides ambiguity, "exists" and what "not found" means."""

    CREATE = "create"
    #: a legacy query of one task by path (task id or external id)
    QUERY = "query"
    #: a legacy list page
    LIST = "list"
    #: an API 2.0 batch read (GET /tasks?task_ids= / ?external_task_ids=)
    READ = "read"
    #: an API 2.0 time-window list (POST /tasks)
    WINDOW = "window"
    ACCOUNT = "account"
    #: a body Kling POSTed to our callback_url (no HTTP answer of ours)
    CALLBACK = "callback"


@dataclass(frozen=True)
class Answer:
    data: object
    request_id: str | None
    #: None for a callback body, which answers no request
    http_status: int | None


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


class Channel:
    """The HTTP client for one Kling host, and the translation of everything it can meet."""

    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth,
        *,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None,
        clock: Callable[[], float] = time.time,
        max_connections: int,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
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
            # Under the client, so that the cap holds even where httpx reads a body itself
            # (JwtAuth reads every answer to spot an expired token).
            transport=_CookieFree(CappedTransport(transport, max_answer_bytes)),
            # No pool timeout: waiting for a free connection is queueing behind our own
            # requests (each bounded by ``timeout``), not a provider failure to retry.
            timeout=httpx.Timeout(timeout, pool=None),
            follow_redirects=False,
            headers={
                "User-Agent": _USER_AGENT,
                "Accept": "application/json",
                # Only what CappedTransport inflates within the cap.
                "Accept-Encoding": ACCEPT_ENCODING,
            },
        )
        self._auth = auth
        self._clock = clock
        self._timeout = timeout
        self._gate = anyio.Semaphore(max_connections)
        #: named by hints whose advice depends on it (1002: a key works on its region's host)
        self.host = self.clean(urlsplit(base_url).hostname or base_url) or "the configured host"

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(
        self,
        op: Op,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        """One request (``path`` from the host root); the answer of a 2xx envelope with code 0
        (or none), or the ProviderError saying what went wrong."""
        response = await self._send(op, method, path, content=content, params=params,
                                    timeout=timeout)
        return self._answer(op, response)

    # -- sending -------------------------------------------------------------------------------

    async def _send(
        self,
        op: Op,
        method: str,
        path: str,
        *,
        content: bytes | None,
        params: Mapping[str, str] | None,
        timeout: float | None,
    ) -> httpx.Response:
        """The one place httpx exceptions become ProviderErrors."""
        creating = op is Op.CREATE
        where = f"{method} /{path}"
        details: dict[str, Any] = {"operation": op.value}
        budget = min(timeout, self._timeout) if timeout is not None else self._timeout
        try:
            request = self._client.build_request(
                method, path, content=content, params=params,
                headers={"Content-Type": "application/json"} if content is not None else None,
                timeout=(httpx.Timeout(budget, pool=None)
                         if timeout is not None else httpx.USE_CLIENT_DEFAULT),
            )
            # Never more requests than connections reach httpcore: requests queued inside its
            # pool make every request and response rescan the queue and the connections
            # (measured: 3.5 ms of CPU a request with 200 queued, 1.65 ms with none).
            async with self._gate:
                # httpx's timeout bounds each read, so a body trickling a byte at a time never
                # ends: the whole exchange (connect, send, every body byte, the resend after a
                # token renewal) gets ``budget`` in total. Counted from here, not from the
                # queue: waiting behind our own requests is not the provider's slowness.
                with anyio.move_on_after(budget) as deadline:
                    return await self._client.send(request)
            # Not known to be unsent (the deadline may have caught the connect, but may as well
            # have caught the body): a create is looked up, as after a read timeout.
            assert deadline.cancelled_caught
            message = f"{where}: no complete answer within {budget:g} s"
            raise ProviderError(request_timeout(message), sent=True, ambiguous=creating,
                                details=details)
        except BodyTooLarge as exc:
            info = ErrorInfo(
                category=Category.SERVER,
                message=f"{where}: HTTP {exc.http_status}: {exc}",
                retryable=True,
                hint=_ANSWER_TOO_LARGE_HINT,
                http_status=exc.http_status,
            )
            details["bytes_read"] = exc.read
            raise ProviderError(info, sent=True, ambiguous=creating, details=details) from None
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

    # -- answers -------------------------------------------------------------------------------

    def _answer(self, op: Op, response: httpx.Response) -> Answer:
        status = response.status_code
        envelope = _json(response.content)
        code: int | None = None
        raw_message = ""
        request_id: str | None = None
        data: object = None
        if isinstance(envelope, dict):
            code = parse_code(envelope.get("code"))
            found = envelope.get("message")
            raw_message = found if isinstance(found, str) else ""
            raw_request_id = envelope.get("request_id")
            request_id = ((self.clean(raw_request_id) or None)
                          if isinstance(raw_request_id, str) else None)
            data = envelope.get("data")
        answer = Answer(data, request_id, status)

        if 200 <= status <= 299:
            if not isinstance(envelope, dict):
                raise self.malformed(op, answer, self._describe_body(response, envelope))
            if code in (0, None):
                return answer
        self._raise_rejected(op, response, envelope, answer, code, raw_message)

    def _raise_rejected(
        self,
        op: Op,
        response: httpx.Response,
        envelope: object,
        answer: Answer,
        code: int | None,
        raw_message: str,
    ) -> NoReturn:
        status = response.status_code
        is_envelope = isinstance(envelope, dict)
        message = self.clean(raw_message)
        if not message and not is_envelope:
            message = self._describe_body(response, envelope)
        rule = rule_for(status, code)
        # Decided on Kling's raw words; what is shown is the cleaned text. A bare 404 page (no
        # Kling envelope) is a wrong URL or a proxy, not proof of absence: answering "absent"
        # on it could make the engine resubmit a task that exists.
        absent = op is Op.QUERY and is_envelope and means_not_found(status, code, raw_message)
        # Only a refusal of the request's values can say that the external id is taken: the
        # same words on a 5xx or a rate limit would not prove the task exists.
        exists = (op is Op.CREATE and is_envelope and rule.category is Category.VALIDATION
                  and means_exists(raw_message))
        if absent:
            info = not_found(status, code, message)
        elif exists:
            info = exists_info(status, code, message)
        else:
            info = classify(status, code, message, host=self.host)
        retry_after = parse_retry_after_ms(response.headers.get("retry-after-ms"))
        if retry_after is None:
            retry_after = parse_retry_after(response.headers.get("retry-after"), self._clock())
        if retry_after is None:
            retry_after = rule.min_wait
        ambiguous = op is Op.CREATE and not exists and (
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
            exists=exists,
            details={"operation": op.value},
        )

    def malformed(self, op: Op, answer: Answer, message: str) -> ProviderError:
        """A 2xx answer whose body is not the documented shape (``message`` may quote it)."""
        info = ErrorInfo(
            category=Category.SERVER,
            message=self.clean(f"unexpected answer from Kling: {message}"),
            retryable=True,
            hint=MALFORMED_HINT,
            http_status=answer.http_status,
        )
        # A 2xx to a create most likely means the task exists: look it up, do not resubmit.
        return ProviderError(info, sent=True, ambiguous=op is Op.CREATE,
                             request_id=answer.request_id, details={"operation": op.value})

    def absent(self, answer: Answer, message: str) -> ProviderError:
        """A read by task id whose answer leaves the task out: it does not exist (API 2.0
        reads by task id do not lag behind creates)."""
        info = not_found(answer.http_status, None, self.clean(message))
        return ProviderError(info, sent=True, request_id=answer.request_id, not_found=True,
                             details={"operation": Op.QUERY.value})

    def unproven(
        self, external_task_id: str, answer: Answer | None, reason: str
    ) -> ProviderError:
        """A lookup that could not prove the task absent: the create must not be resent."""
        info = ErrorInfo(
            category=Category.SERVER,
            message=self.clean(
                f"cannot prove that no task has external_task_id {external_task_id}: {reason}"
            ),
            retryable=False,
            hint=UNPROVEN_HINT,
            http_status=answer.http_status if answer is not None else None,
        )
        return ProviderError(
            info,
            sent=True,
            request_id=answer.request_id if answer is not None else None,
            details={"operation": "lookup"},
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
        detail = self.clean(str(exc))
        name = type(exc).__name__
        return f"{where}: {name}: {detail}" if detail else f"{where}: {name}"

    def clean(self, text: str) -> str:
        """Server and library text, stripped of anything credential-shaped and kept short.

        Masks before cutting, so a cut never leaves a credential's prefix behind; may return ""
        (blank text), which callers replace with the code's meaning.
        """
        text = printable(text)
        secrets = getattr(self._auth, "secrets", None)
        values: Iterable[object] = secrets() if callable(secrets) else ()
        for value in values:
            if isinstance(value, str) and value:
                text = text.replace(value, "<redacted>")
        for pattern, replacement in _REDACTIONS:
            text = pattern.sub(replacement, text)
        return text.strip()[:500]
