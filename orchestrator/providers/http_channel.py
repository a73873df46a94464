"""One HTTP exchange with a provider's API, bounded in time and size, and what can go wrong while
sending it: the part of every provider's transport that does not depend on its wire format.

    HttpChannel.send   httpx (and raw OSError) exceptions -> network / timeout ProviderErrors
                       with .sent and .ambiguous (a create that may have been committed); the
                       whole exchange (connect, send, every body byte) bounded by the timeout,
                       a timeout like a read timeout; a body past ``max_answer_bytes`` -> a
                       server error (ambiguous on a create), read no further
    HttpChannel.clean  every text taken from an answer or an exception: credentials masked, lone
                       surrogates replaced (so reports and consoles can print it), stripped, short

What an answer means (statuses, envelopes, error codes) is each provider's own: its transport
reads the ``httpx.Response`` ``send`` returns, in one place per provider.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import anyio
import httpx

from orchestrator.body_cap import ACCEPT_ENCODING, BodyTooLarge, CappedTransport
from orchestrator.cookieless import keep_no_cookies
from orchestrator.errors import (
    Category,
    ErrorInfo,
    ProviderError,
    Scope,
    network_error,
    request_timeout,
)

__all__ = ["NOT_JSON", "USER_AGENT", "HttpChannel", "is_utf8", "parse_json", "printable"]

USER_AGENT = "kling-batch-orchestrator/0.1"
#: Parsed request URLs kept (see HttpChannel._url).
_URL_CACHE = 256
#: What :func:`parse_json` returns for a body that is not JSON.
NOT_JSON = object()

_REDACTIONS = (
    (re.compile(r"eyJ[\w-]*\.[\w-]*\.[\w-]*"), "<jwt>"),
    (re.compile(r"(?i)bearer\s+\S+"), "Bearer <redacted>"),
)


def is_utf8(text: str) -> bool:
    """False for strings holding lone surrogates (JSON's "\\ud800"): they cannot be printed,
    written to a UTF-8 file, or put in a URL."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    return text if is_utf8(text) else text.encode("utf-8", "replace").decode("utf-8")


def parse_json(content: bytes) -> object:
    """The body as JSON, or :data:`NOT_JSON`."""
    try:
        return json.loads(content)
    except (ValueError, RecursionError):
        return NOT_JSON


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


class HttpChannel:
    """The HTTP client for one provider host. ``title`` names the provider in hints."""

    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth,
        *,
        title: str,
        timeout: float,
        transport: httpx.AsyncBaseTransport | None,
        max_connections: int,
        max_answer_bytes: int,
        clock: Callable[[], float] = time.time,
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
            # (an auth flow that reads every answer to spot an expired token).
            transport=_CookieFree(CappedTransport(transport, max_answer_bytes)),
            # No pool timeout: waiting for a free connection is queueing behind our own
            # requests (each bounded by ``timeout``), not a provider failure to retry.
            timeout=httpx.Timeout(timeout, pool=None),
            follow_redirects=False,
            headers={
                "User-Agent": USER_AGENT,
                "Accept": "application/json",
                # Only what CappedTransport inflates within the cap.
                "Accept-Encoding": ACCEPT_ENCODING,
            },
        )
        keep_no_cookies(self._client)
        #: absolute URLs of the paths requested, parsed once (creates and lists recur)
        self._urls: dict[str, httpx.URL] = {}
        self.title = title
        self._auth = auth
        self._clock = clock
        self._timeout = timeout
        self._gate = anyio.Semaphore(max_connections)
        #: named by hints whose advice depends on it
        self.host = self.clean(urlsplit(base_url).hostname or base_url) or "the configured host"

    async def aclose(self) -> None:
        await self._client.aclose()

    def _url(self, path: str) -> httpx.URL:
        """``path`` under the base URL, parsed once for the paths that recur (a task's own
        path is asked for a few times only: the cache is bounded)."""
        url = self._urls.get(path)
        if url is None:
            base = self._client.base_url
            url = base.copy_with(raw_path=base.raw_path + httpx.URL(path).raw_path.lstrip(b"/"))
            if len(self._urls) >= _URL_CACHE:
                self._urls.clear()
            self._urls[path] = url
        return url

    async def send(
        self,
        operation: str,
        method: str,
        path: str,
        *,
        creating: bool,
        content: bytes | None = None,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        """One request (``path`` from the host root), its whole answer read; the one place
        where httpx exceptions become ProviderErrors. ``creating``: the request may commit a
        paid task, so a failure after it left is ambiguous."""
        where = f"{method} /{path}"
        details: dict[str, Any] = {"operation": operation}
        budget = min(timeout, self._timeout) if timeout is not None else self._timeout
        try:
            request = self._client.build_request(
                method, self._url(path), content=content, params=params,
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
                hint=f"{self.title}'s answer was larger than any it documents (a proxy or a "
                "wrong provider.base_url?); the item is retried, a create is looked up first.",
                http_status=exc.http_status,
            )
            details["bytes_read"] = exc.read
            raise ProviderError(info, sent=True, ambiguous=creating, details=details) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            info = ErrorInfo(
                category=Category.NETWORK,
                message=self.describe(where, exc),
                retryable=False,
                hint="Fix provider.base_url: it must be an https:// (or http://) URL of the host.",
                scope=Scope.ACCOUNT,
            )
            raise ProviderError(info, sent=False, details=details) from None
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
                httpx.ProxyError) as exc:
            # Nothing reached the provider: safe to resend, even a create.
            raise ProviderError(network_error(self.describe(where, exc), sent=False),
                                sent=False, details=details) from None
        except httpx.TimeoutException as exc:
            raise ProviderError(request_timeout(self.describe(where, exc)),
                                sent=True, ambiguous=creating, details=details) from None
        except httpx.RequestError as exc:
            # Dropped connections, protocol errors, undecodable bodies: the request may have
            # been acted on.
            raise ProviderError(network_error(self.describe(where, exc), sent=True),
                                sent=True, ambiguous=creating, details=details) from None
        except OSError as exc:
            # httpx wraps OSError only while connecting; one raised while reading or writing
            # (or by a custom transport) arrives as is, and nothing says it was not sent.
            message = self.describe(where, exc)
            info = (request_timeout(message) if isinstance(exc, TimeoutError)
                    else network_error(message, sent=True))
            raise ProviderError(info, sent=True, ambiguous=creating, details=details) from None

    @staticmethod
    def describe_body(response: httpx.Response, envelope: object) -> str:
        kind = response.headers.get("content-type", "no content type").split(";")[0]
        if not response.content:
            shape = "an empty body"
        elif envelope is NOT_JSON:
            shape = f"a non-JSON body ({kind}, {len(response.content)} bytes)"
        else:
            shape = f"a JSON {type(envelope).__name__}, not an object"
        return f"HTTP {response.status_code} with {shape}"

    def describe(self, where: str, exc: Exception) -> str:
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
