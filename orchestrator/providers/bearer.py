"""``Authorization: Bearer <key>``: the credential most providers take, kept out of every text.

The key never appears in ``repr``/``str`` (so not in a traceback or a log either); ``secrets()``
names it for the redaction that guards logs, reports and state files.
"""

from __future__ import annotations

from collections.abc import Generator

import httpx

__all__ = ["BearerAuth", "check_header_safe"]


def check_header_safe(value: str, what: str) -> None:
    """ValueError (naming ``what``, never the value) unless ``value`` can go in a header."""
    # httpx would reject a non-ASCII header later, mid-request, with the offending value attached
    # to the exception; refusing here keeps the value out of any traceback.
    if not value:
        raise ValueError(f"{what} is empty")
    if not value.isascii() or not value.isprintable() or any(c.isspace() for c in value):
        raise ValueError(f"{what} contains spaces or characters that cannot be sent in a header")


class BearerAuth(httpx.Auth):
    """``Authorization: Bearer <key>`` on every request."""

    #: where the key came from, for ``validate`` and ``run --dry-run`` (never the key)
    source = "an API key"

    def __init__(self, api_key: str) -> None:
        check_header_safe(api_key, "the API key")
        self._api_key = api_key

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<credentials hidden>)"

    __str__ = __repr__

    def secrets(self) -> tuple[str, ...]:
        return (self._api_key,)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._api_key}"
        yield request
