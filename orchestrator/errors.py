"""The error taxonomy: what went wrong, whether it is worth retrying, and who it affects.

Every failure the orchestrator reports is an :class:`ErrorInfo`. Providers translate their wire
errors into one in exactly one place (their code table); the engine branches only on its fields,
never on exception text.

    ErrorInfo
      category   validation | auth | billing | permission | policy | rate_limit | server
                 | network | timeout | task_failed | asset_mismatch
      retryable  a new try (of the request, or a new generation attempt) may succeed
      scope      item: only this item is affected
                 account: every further submission would fail the same way -> stop the batch
      hint       one sentence a user can act on

    ProviderError(Exception)        raised by a provider call; carries .info
      .sent = False                 provably failed before the request left (DNS, refused):
                                    safe to resend even a create
      .ambiguous = True             a create may have been committed (timeout after sending,
                                    connection dropped, 5xx): look the task up before resending
      .exists = True                a create refused because its external id already names a
                                    task: the task exists (and is paid for); find it, never
                                    resend under a new id
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Category(enum.StrEnum):
    VALIDATION = "validation"
    AUTH = "auth"
    BILLING = "billing"
    PERMISSION = "permission"
    POLICY = "policy"
    RATE_LIMIT = "rate_limit"
    SERVER = "server"
    NETWORK = "network"
    TIMEOUT = "timeout"
    TASK_FAILED = "task_failed"
    ASSET_MISMATCH = "asset_mismatch"


#: The code of the stop ``limits.max_units`` makes: the user's own cap, not the provider's.
MAX_UNITS = "max_units"


class Scope(enum.StrEnum):
    ITEM = "item"
    ACCOUNT = "account"


@dataclass(frozen=True)
class ErrorInfo:
    category: Category
    message: str
    retryable: bool
    hint: str
    scope: Scope = Scope.ITEM
    #: the provider's own error code: a number (Kling 1303) or a name (LTX content_filtered_error)
    code: int | str | None = None
    http_status: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The report/ledger shape (DESIGN.md): stable keys, JSON-safe values."""
        return {
            "category": str(self.category),
            "code": self.code,
            "http_status": self.http_status,
            "message": self.message,
            "retryable": self.retryable,
            "scope": str(self.scope),
            "hint": self.hint,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorInfo:
        return cls(
            category=Category(data["category"]),
            message=str(data.get("message", "")),
            retryable=bool(data.get("retryable", False)),
            hint=str(data.get("hint", "")),
            scope=Scope(data.get("scope", "item")),
            code=data.get("code"),
            http_status=data.get("http_status"),
        )


@dataclass(eq=False)
class ProviderError(Exception):
    """A provider call failed. The message never contains credentials or tokens."""

    info: ErrorInfo
    #: False only when the request provably never left this machine (connect failure).
    sent: bool = True
    #: True when a create may have been committed server-side despite the failure.
    ambiguous: bool = False
    #: Server-requested wait in seconds (Retry-After), already parsed.
    retry_after: float | None = None
    request_id: str | None = None
    #: True when the provider reports that the looked-up resource does not exist.
    not_found: bool = False
    #: True when the account is over its concurrency allowance (Kling 1303): the engine lowers
    #: its in-flight cap (adaptive concurrency).
    over_capacity: bool = False
    #: True when a create was refused because a task with its external id already exists
    #: (Kling: 1201 "External_task_id ... already exists"): the engine looks it up and polls it.
    exists: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        parts = [f"{self.info.category}"]
        if self.info.http_status is not None:
            parts.append(f"HTTP {self.info.http_status}")
        if self.info.code is not None:
            parts.append(f"code {self.info.code}")
        return f"{' '.join(parts)}: {self.info.message}"


# Failures that are not answers from the provider: built here so every module words them alike.

def network_error(message: str, *, sent: bool) -> ErrorInfo:
    return ErrorInfo(
        category=Category.NETWORK,
        message=message,
        retryable=True,
        hint=(
            "Check the network path to the provider (DNS, proxy, firewall); the item is retried."
            if not sent
            else "The connection failed mid-request; the task is looked up before any resubmission."
        ),
    )


def request_timeout(message: str) -> ErrorInfo:
    return ErrorInfo(
        category=Category.TIMEOUT,
        message=message,
        retryable=True,
        hint="The provider did not answer in time; the task is looked up before any resubmission.",
    )


def poll_timeout(seconds: float) -> ErrorInfo:
    return ErrorInfo(
        category=Category.TIMEOUT,
        message=f"task did not finish within poll.timeout ({seconds:g} s)",
        retryable=False,
        hint=(
            "The task may still finish: rerun the same manifest to poll it again (it is not "
            "resubmitted), or raise poll.timeout."
        ),
    )


def asset_mismatch(expected: int, got: int, noun: str) -> ErrorInfo:
    if got == 0:
        return ErrorInfo(
            category=Category.ASSET_MISMATCH,
            message=f"task succeeded but returned no {noun}s (expected {expected})",
            retryable=False,
            hint=(
                "Outputs were probably removed by the provider's safety filter; review the "
                "prompt/image, then rerun with a new item id to try again."
            ),
        )
    return ErrorInfo(
        category=Category.ASSET_MISMATCH,
        message=f"{got} of {expected} {noun}s returned",
        retryable=False,
        hint=(
            "Some outputs were withheld (often by the safety filter). The returned ones are "
            "kept; submit a new item for the missing count if you need them."
        ),
    )


#: The code of the marker a finished task carries until its files are on disk.
DOWNLOADS_PENDING = "downloads_pending"
_PENDING_MESSAGE = (
    "the task succeeded but its files are not all downloaded yet (the run ended, or had not "
    "finished downloading them)"
)


def downloads_pending() -> ErrorInfo:
    """A finished task whose files are not all safely on disk yet.

    Recorded with the task's verdict and cleared once every file is verified on disk, so that a
    run that ends before its downloads (interrupted, killed, a bug) never reports the item
    succeeded while its files are missing.
    """
    return ErrorInfo(
        category=Category.ASSET_MISMATCH,
        code=DOWNLOADS_PENDING,
        message=_PENDING_MESSAGE,
        retryable=True,
        hint="Rerun the same manifest: it downloads the missing files without resubmitting the "
        "task (soon: providers delete generated files after a while).",
    )


def is_downloads_pending(info: ErrorInfo | None) -> bool:
    """Whether ``info`` is :func:`downloads_pending`'s marker (as this version or an earlier
    one wrote it): the task is done, its files are still to be fetched."""
    return info is not None and (
        info.code == DOWNLOADS_PENDING or info.message.startswith(_PENDING_MESSAGE[:60])
    )
