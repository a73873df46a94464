"""Answers read only up to a size: a provider's body never takes more memory than the cap.

httpx reads a whole answer into memory before its caller sees it, and an ``httpx.Auth`` that
needs the body (``requires_response_body``, as Kling's JWT auth does to spot an expired token)
reads it even before the client returns. So the cap cannot sit in the caller: it sits under the
client, in a transport wrapper whose body stream counts the bytes as they arrive and raises
:class:`BodyTooLarge` one chunk past the cap; httpx then closes the connection, unread.

    CappedTransport(inner, limit)   every answer's body: at most ``limit`` bytes on the wire
      and at most ``limit`` bytes decoded; a declared Content-Length over it is refused unread
    BodyTooLarge                    raised while the body is read (from ``client.send`` or an
                                    auth flow), with the limit, the bytes read and the status

The wrapper also decodes gzip and deflate itself, in steps no larger than what is left of the
cap, and hands httpx the plain bytes: a compressed body of a few kilobytes can inflate to
gigabytes, and httpx's own decoders inflate a whole network read at once. The caller should
ask only for those two (``Accept-Encoding: gzip, deflate``); any other encoding is refused as
undecodable (``httpx.DecodingError``) rather than inflated without a bound.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx

__all__ = ["ACCEPT_ENCODING", "BodyTooLarge", "CappedTransport"]

#: What a client behind :class:`CappedTransport` should ask for: the encodings it decodes.
ACCEPT_ENCODING = "gzip, deflate"
_IDENTITY = frozenset({"", "identity"})
_GZIP = frozenset({"gzip", "x-gzip"})


@dataclass(eq=False)
class BodyTooLarge(Exception):
    """An answer's body went past the cap; reading stopped there."""

    limit: int
    #: Bytes read before stopping (decoded, or on the wire when that ran out first); 0 when
    #: a declared Content-Length refused the body before any of it was read.
    read: int
    http_status: int
    #: The body's size as its Content-Length declared it, if it did.
    declared: int | None = None

    def __str__(self) -> str:
        if self.declared is not None and self.read == 0:
            return (f"the answer declared {self.declared} bytes, more than the {self.limit}-byte "
                    "limit; none of it was read")
        return (f"the answer is larger than the {self.limit}-byte limit: reading stopped after "
                f"{self.read} bytes")


class _Inflater:
    """gzip or deflate, inflated at most ``room`` bytes at a time."""

    def __init__(self, encoding: str) -> None:
        self._deflate = encoding not in _GZIP
        self._first = True
        self._z = zlib.decompressobj(zlib.MAX_WBITS | (0 if self._deflate else 16))

    def inflate(self, data: bytes, room: int) -> bytes:
        """At most ``room`` (>= 1) bytes of output; more output pending means the body is
        larger than the room, which is all the caller needs to know."""
        first, self._first = self._first, False
        try:
            return self._z.decompress(data, room)
        except zlib.error as exc:
            if first and self._deflate:
                # "deflate" is zlib-wrapped by the standard, raw by many servers.
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.inflate(data, room)
            raise httpx.DecodingError(f"undecodable {'deflate' if self._deflate else 'gzip'} "
                                      f"body: {exc}") from None

    def flush(self) -> bytes:
        try:
            return self._z.flush()
        except zlib.error as exc:
            raise httpx.DecodingError(f"undecodable compressed body: {exc}") from None


class _CappedStream(httpx.AsyncByteStream):
    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        *,
        limit: int,
        status: int,
        inflater: _Inflater | None,
    ) -> None:
        self._inner = inner
        self._limit = limit
        self._status = status
        self._inflater = inflater
        self.wire = 0
        self.plain = 0

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(self._limit, max(self.wire, self.plain), self._status)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            # Wire bytes are capped too: a compressed body that inflates to nothing must not
            # keep the client reading.
            self.wire += len(chunk)
            if self.wire > self._limit:
                raise self._too_large()
            if self._inflater is not None:
                chunk = self._inflater.inflate(chunk, self._limit - self.plain + 1)
            self.plain += len(chunk)
            if self.plain > self._limit:
                raise self._too_large()
            if chunk:
                yield chunk
        if self._inflater is not None:
            tail = self._inflater.flush()
            self.plain += len(tail)
            if self.plain > self._limit:
                raise self._too_large()
            if tail:
                yield tail

    async def aclose(self) -> None:
        await self._inner.aclose()


def _declared_length(response: httpx.Response) -> int | None:
    try:
        length = int(response.headers.get("content-length", "").strip())
    except ValueError:
        return None
    return length if length >= 0 else None


class CappedTransport(httpx.AsyncBaseTransport):
    """``inner``'s answers, each body capped at ``limit`` bytes (see the module docstring)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self._inner = inner
        self.limit = limit

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        try:
            return self._capped(response)
        except BaseException:
            await response.aclose()
            raise

    def _capped(self, response: httpx.Response) -> httpx.Response:
        status = response.status_code
        if isinstance(response.stream, httpx.ByteStream):
            # Already in memory (a mock transport's answer): only the verdict is left to give.
            if len(response.content) > self.limit:
                raise BodyTooLarge(self.limit, len(response.content), status)
            return response
        declared = _declared_length(response)
        encodings = [
            value.strip().lower()
            for value in response.headers.get_list("content-encoding", split_commas=True)
        ]
        encodings = [value for value in encodings if value not in _IDENTITY]
        # Content-Length counts wire bytes, which are capped whatever the encoding.
        if declared is not None and declared > self.limit:
            raise BodyTooLarge(self.limit, 0, status, declared)
        inflater: _Inflater | None = None
        if len(encodings) > 1 or (encodings and encodings[0] not in _GZIP | {"deflate"}):
            raise httpx.DecodingError(
                f"the answer is encoded as {', '.join(encodings)!r}; only gzip or deflate "
                "were asked for"
            )
        if encodings:
            inflater = _Inflater(encodings[0])
            # httpx must not decode the plain bytes again.
            del response.headers["content-encoding"]
        assert isinstance(response.stream, httpx.AsyncByteStream)
        response.stream = _CappedStream(
            response.stream, limit=self.limit, status=status, inflater=inflater
        )
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
