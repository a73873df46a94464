"""Kling's response envelope and error codes, as the simulator puts them on the wire.

Every answer under ``/v1`` is ``{"code", "message", "request_id"[, "data"]}``; an error is the same
envelope with a non-zero code and no ``data``, sent with the HTTP status Kling pairs with that code.
"""

from __future__ import annotations

from typing import Any

#: HTTP status per Kling code (shared/reference/kling-api.md, "Error codes").
HTTP_STATUS_BY_CODE: dict[int, int] = {
    1000: 401,
    1001: 401,
    1002: 401,
    1003: 401,
    1004: 401,
    1100: 429,
    1101: 429,
    1102: 429,
    1103: 403,
    1200: 400,
    1201: 400,
    1202: 404,
    1203: 404,
    1300: 400,
    1301: 400,
    1302: 429,
    1303: 429,
    1304: 429,
    5000: 500,
    5001: 503,
    5002: 504,
}


class ApiError(Exception):
    """A Kling error answer. Raised anywhere below the handler, turned into a reply in one place."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = http_status if http_status is not None else HTTP_STATUS_BY_CODE[code]
        self.retry_after = retry_after


def invalid(message: str) -> ApiError:
    """The answer to a well-formed request with a bad value (what Kling uses for most checks)."""
    return ApiError(1201, message)


def success(request_id: str, data: Any) -> dict[str, Any]:
    return {"code": 0, "message": "SUCCEED", "request_id": request_id, "data": data}


def failure(request_id: str, error: ApiError) -> dict[str, Any]:
    return {"code": error.code, "message": error.message, "request_id": request_id}
