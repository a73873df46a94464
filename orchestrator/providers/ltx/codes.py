"""LTX's error types, and what each means for a batch: the one table where LTX's errors become
ours (category, scope, retry, hint).

LTX answers errors as ``{"type": "error", "error": {"type": "...", "message": "..."}}`` and a
failed job carries the same ``{type, message}``. The type is the code (a string, kept in
``ErrorInfo.code``); the HTTP status decides where the type is missing or unknown (a 413 from the
infrastructure has no envelope at all).

A submit LTX may have acted on (a 5xx, no answer) cannot be settled: LTX has no client id and
no list. Such a submit is "ambiguous" and the engine holds the item unresolved; it is never
resent on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from orchestrator.errors import Category, ErrorInfo, Scope


@dataclass(frozen=True)
class Rule:
    category: Category
    retryable: bool
    scope: Scope
    meaning: str
    hint: str
    #: A submit answered so may still have created the job.
    may_have_committed: bool = False
    #: Too many jobs at once: the engine lowers its in-flight cap.
    over_capacity: bool = False
    #: Seconds to wait at least before retrying when no Retry-After came.
    min_wait: float | None = None


_RERUN = "the batch stopped before sending more; rerun the manifest once it is fixed (it resumes)"

RULES: Final[Mapping[str, Rule]] = MappingProxyType(
    {
        "invalid_request_error": Rule(
            Category.VALIDATION, False, Scope.ITEM, "invalid request",
            "LTX refused the request's values (model, duration, resolution, fps, image): fix "
            "the item as the message says; `validate` checks the model matrix offline.",
        ),
        "authentication_error": Rule(
            Category.AUTH, False, Scope.ACCOUNT, "missing or invalid API key",
            f"Check LTX_API_KEY (a key from the LTX console); {_RERUN}.",
        ),
        "permission_error": Rule(
            Category.PERMISSION, False, Scope.ACCOUNT, "not allowed for this key",
            f"This key may not use the model or endpoint: check the LTX console; {_RERUN}.",
        ),
        "insufficient_funds_error": Rule(
            Category.BILLING, False, Scope.ACCOUNT, "insufficient funds",
            f"Add credits to the LTX account; {_RERUN}.",
        ),
        "not_found_error": Rule(
            Category.SERVER, False, Scope.ITEM, "job not found or expired",
            "LTX keeps a job and its files for 24 hours after it ends: this one expired or is "
            "unknown. Nothing is resubmitted (that would be a new paid job); give the item a new "
            "id to generate it again.",
        ),
        "request_too_large": Rule(
            Category.VALIDATION, False, Scope.ITEM, "request too large",
            "The request is too large for LTX: give the image as an https URL, or a smaller "
            "file.",
        ),
        "content_filtered_error": Rule(
            Category.POLICY, False, Scope.ITEM, "refused by the safety filters",
            "LTX's safety filters refused the prompt or image; it is never retried unchanged: "
            "change it (under a new item id) to try again.",
        ),
        "rate_limit_error": Rule(
            Category.RATE_LIMIT, True, Scope.ITEM, "too many requests",
            "LTX is limiting the request rate; waits are honoured and the item is retried. "
            "Lower limits.requests_per_minute if it persists.",
            min_wait=1.0,
        ),
        "concurrency_limit_error": Rule(
            Category.RATE_LIMIT, True, Scope.ITEM, "too many jobs at once",
            "The account runs fewer jobs at once than limits.concurrency (LTX's default is 2); "
            "the in-flight cap was lowered and the item is retried.",
            over_capacity=True, min_wait=1.0,
        ),
        "api_error": Rule(
            Category.SERVER, True, Scope.ITEM, "internal error",
            "LTX had an internal error; the request is retried. A submit answered so may have "
            "created the job: it is held unresolved, not resent.",
            may_have_committed=True,
        ),
        "service_unavailable": Rule(
            Category.SERVER, True, Scope.ITEM, "service unavailable",
            "LTX is overloaded or in maintenance; the request is retried with longer waits. A "
            "submit answered so is held unresolved, not resent.",
            may_have_committed=True, min_wait=5.0,
        ),
        "overloaded_error": Rule(
            Category.SERVER, True, Scope.ITEM, "overloaded",
            "LTX is overloaded; the request is retried with longer waits. A submit answered so "
            "is held unresolved, not resent.",
            may_have_committed=True, min_wait=5.0,
        ),
    }
)

#: The type each documented HTTP status stands for when the body names none (or an unknown one).
_BY_STATUS: Final[Mapping[int, str]] = MappingProxyType(
    {
        400: "invalid_request_error",
        401: "authentication_error",
        402: "insufficient_funds_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        422: "content_filtered_error",
        429: "rate_limit_error",
        500: "api_error",
        503: "service_unavailable",
        529: "overloaded_error",
    }
)

_UNKNOWN_CLIENT_ERROR = Rule(
    Category.VALIDATION, False, Scope.ITEM, "request refused",
    "LTX refused the request with an error this version does not know; the message says why.",
)
_UNKNOWN_SERVER_ERROR = Rule(
    Category.SERVER, True, Scope.ITEM, "server error",
    "LTX failed with an error this version does not know; the request is retried (a submit "
    "answered so is held unresolved, not resent).",
    may_have_committed=True,
)
MALFORMED_HINT = (
    "LTX answered in a shape this version does not know (a proxy, or a wrong "
    "provider.base_url?); reads are retried, and a submit answered so is held unresolved."
)


def rule_for(http_status: int, error_type: str | None) -> tuple[str | None, Rule]:
    """The type that decides (the body's when documented, else the status's) and its rule."""
    if error_type is not None and error_type in RULES:
        # A documented type on a status that contradicts it (a 5xx naming a client error) is
        # read by the status: only a 4xx refuses the request for sure.
        rule = RULES[error_type]
        if http_status >= 500 and not rule.may_have_committed:
            return error_type, _UNKNOWN_SERVER_ERROR
        return error_type, rule
    by_status = _BY_STATUS.get(http_status)
    if by_status is not None:
        return error_type or by_status, RULES[by_status]
    if 400 <= http_status <= 499:
        return error_type, _UNKNOWN_CLIENT_ERROR
    return error_type, _UNKNOWN_SERVER_ERROR


def classify(http_status: int, error_type: str | None, message: str) -> tuple[ErrorInfo, Rule]:
    """An error answer as ours: the category, scope and hint of its rule."""
    code, rule = rule_for(http_status, error_type)
    info = ErrorInfo(
        category=rule.category,
        message=message or rule.meaning,
        retryable=rule.retryable,
        hint=rule.hint,
        scope=rule.scope,
        code=code,
        http_status=http_status,
    )
    return info, rule


#: Failed jobs: what their error type says about a new attempt.
_JOB_FAILURES: Final[Mapping[str, tuple[Category, bool, str]]] = MappingProxyType(
    {
        "content_filtered_error": (
            Category.POLICY, False,
            "LTX's safety filters stopped the job; change the prompt or image (under a new item "
            "id) to try again.",
        ),
        "invalid_request_error": (
            Category.VALIDATION, False,
            "LTX could not generate from these inputs (often the image); fix the item and give "
            "it a new id.",
        ),
    }
)


def classify_job_failure(error_type: str | None, message: str) -> ErrorInfo:
    """A job that ended ``failed``: policy and input failures are final, others are worth a
    new attempt (a new paid job)."""
    found = _JOB_FAILURES.get(error_type or "")
    if found is not None:
        category, retryable, hint = found
    else:
        category, retryable = Category.TASK_FAILED, True
        hint = (
            "The job failed at LTX; a new attempt (a new paid job) is made within "
            "retry.max_attempts."
        )
    return ErrorInfo(
        category=category,
        message=message or "the job failed without a reason",
        retryable=retryable,
        hint=hint,
        code=error_type,
    )
