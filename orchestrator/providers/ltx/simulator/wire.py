"""LTX's v2 wire format as the simulator answers it: the error envelope and its types, times,
the job body discriminated on ``status``, the upload answer, and the pages that do not come from
the API (the infrastructure's 413, the storage's 403).

Every API error is ``{"type": "error", "error": {"type": ..., "message": ...}}`` with the HTTP
status its type goes with; the 413 for an oversized body comes from the proxy in front of the
API, so it is an HTML page.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from orchestrator.providers.ltx.simulator.state import JobRecord

#: HTTP status by error type (ltx-api.md, "Errors").
STATUS_BY_TYPE: Final[Mapping[str, int]] = MappingProxyType(
    {
        "invalid_request_error": 400,
        "authentication_error": 401,
        "insufficient_funds_error": 402,
        "not_found_error": 404,
        "request_too_large": 413,
        "content_filtered_error": 422,
        "rate_limit_error": 429,
        "concurrency_limit_error": 429,
        "api_error": 500,
        "service_unavailable": 503,
        "overloaded_error": 529,
    }
)

#: What nginx answers to a body over its limit, before the API sees the request.
TOO_LARGE_PAGE: Final = (
    b"<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n"
    b"<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
HTML_TYPE: Final = "text/html"
XML_TYPE: Final = "application/xml; charset=utf-8"
JSON_TYPE: Final = "application/json"
MP4_TYPE: Final = "video/mp4"
#: How a job ends.
COMPLETED: Final = "completed"
FAILED: Final = "failed"


class LtxError(Exception):
    """An LTX error answer. Raised anywhere below the handler, turned into a reply in one place."""

    def __init__(
        self,
        error_type: str,
        message: str,
        *,
        http_status: int | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.http_status = http_status if http_status is not None else STATUS_BY_TYPE[error_type]
        self.retry_after = retry_after

    @property
    def label(self) -> str:
        """How ``LtxSimStats.answers`` counts this answer: ``"429 concurrency_limit_error"``."""
        return f"{self.http_status} {self.error_type}"


def invalid(message: str) -> LtxError:
    return LtxError("invalid_request_error", message)


def not_found(message: str) -> LtxError:
    return LtxError("not_found_error", message)


def envelope(error: LtxError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error.error_type, "message": error.message}}


def iso(unix: float) -> str:
    """ISO-8601 in UTC with milliseconds and a ``Z``: ``2026-08-20T09:15:02.120Z``."""
    moment = dt.datetime.fromtimestamp(unix, tz=dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def storage_error(code: str, message: str) -> bytes:
    """A signed-URL refusal as object storage words it (XML, not LTX's envelope)."""
    return (
        "<?xml version='1.0' encoding='UTF-8'?>"
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()


def job_body(job: JobRecord, now: float, base_url: str) -> dict[str, Any]:
    """The job as ``GET /v2/<endpoint>/<id>`` answers it, discriminated on ``status``."""
    status = job.status(now)
    body: dict[str, Any] = {
        "id": job.job_id,
        "status": status,
        "created_at": iso(job.created_at_ms / 1000),
    }
    if status == COMPLETED:
        body["completed_at"] = iso(job.completed_at)
        body["result"] = {"video_url": f"{base_url}/assets/{job.job_id}.mp4"}
    elif status == FAILED:
        body["completed_at"] = iso(job.completed_at)
        body["error"] = {"type": job.error_type, "message": job.error_message}
    return body
