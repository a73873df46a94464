"""What a run needs of a ledger, whatever keeps it (SQLite on this machine today; a shared
database when several workers run one batch): the item records it reads, and the protocol the
engine writes through. See :mod:`orchestrator.ledger` for the state machine and the
durability contract every implementation keeps (an intent is durable before its create is sent).
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from orchestrator.errors import ErrorInfo

__all__ = [
    "RUN_COLUMNS",
    "AssetRecord",
    "BatchLedger",
    "ItemRecord",
    "ItemState",
    "RunRecord",
    "Verdicts",
    "assets_from_text",
    "run_record",
    "to_text",
]


class ItemState(enum.StrEnum):
    PENDING = "pending"
    SUBMITTING = "submitting"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (ItemState.SUCCEEDED, ItemState.PARTIAL, ItemState.FAILED)


_T = TypeVar("_T")


def _typed(data: dict[str, Any], key: str, kind: type[_T]) -> _T | None:
    value = data.get(key)
    # bool is an int to Python, never to a record
    return value if type(value) is kind else None


@dataclass(frozen=True)
class AssetRecord:
    """One asset of a finished task as the ledger keeps it: where the provider put it, and,
    once it is downloaded, where it is on disk and what it holds."""

    #: the provider's index (names the file); -1 when a stored record had none usable
    index: int
    url: str
    media: str = ""
    #: relative to the output directory, POSIX form (``<item-id>/<index>.<ext>``)
    path: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    content_type: str | None = None
    #: the file's modification time when it was verified (the cheap check of a rerun)
    mtime_ns: int | None = None

    @property
    def downloaded(self) -> bool:
        """Whether a verified file was recorded for it (it may have gone since)."""
        return self.path is not None and self.sha256 is not None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"index": self.index, "url": self.url}
        if self.media:
            data["media"] = self.media
        for key in ("path", "bytes", "sha256", "content_type", "mtime_ns"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        return data

    @classmethod
    def from_json(cls, data: object) -> AssetRecord:
        """A stored record, whatever an older version or a damaged file left: a field of the
        wrong type reads as absent (a file not known to be on disk is fetched again)."""
        fields = data if isinstance(data, dict) else {}
        index = _typed(fields, "index", int)
        return cls(
            index=-1 if index is None else index,
            url=_typed(fields, "url", str) or "",
            media=_typed(fields, "media", str) or "",
            path=_typed(fields, "path", str),
            bytes=_typed(fields, "bytes", int),
            sha256=_typed(fields, "sha256", str),
            content_type=_typed(fields, "content_type", str),
            mtime_ns=_typed(fields, "mtime_ns", int),
        )


#: The columns of a run's row, in the order :func:`run_record` reads them.
RUN_COLUMNS = "run, started_at, finished_at, exit_code, exit_reason, requests, retries"


def run_record(row: Sequence[Any]) -> RunRecord:
    """A run's row (``RUN_COLUMNS``) as a record."""
    return RunRecord(
        run=row[0],
        started_at=row[1],
        finished_at=row[2],
        exit_code=row[3],
        exit_reason=row[4],
        requests={str(k): int(v) for k, v in json.loads(row[5] or "{}").items()},
        retries=int(row[6] or 0),
    )


def assets_from_text(stored: str | None) -> list[AssetRecord]:
    """Asset records as a ledger stores them (a JSON array; NULL: none)."""
    found = json.loads(stored) if stored else []
    return [AssetRecord.from_json(a) for a in found] if isinstance(found, list) else []


def to_text(value: Any) -> str:
    """JSON as every ledger stores it: compact, keys sorted."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True)
class ItemRecord:
    id: str
    kind: str
    state: ItemState
    attempt: int
    external_task_id: str | None
    task_id: str | None
    expected_assets: int
    assets: list[AssetRecord]
    error: ErrorInfo | None
    submitted_at: float | None
    finished_at: float | None
    #: attempts that provably created a task (have a task id)
    tasks_created: int = 0
    #: why the files of a finished task are not (all) on disk yet; None when they are
    download_error: ErrorInfo | None = None
    #: units the provider says it charged for the item's tasks (summed over its attempts);
    #: None while no task reported a charge
    charged_units: float | None = None
    #: the request fingerprint of the current attempt (None: none sent, or an older ledger)
    fingerprint: str | None = None


@dataclass(frozen=True)
class RunRecord:
    """One run of the batch: written when it starts, updated as it goes, closed when it ends
    (a run that never closed its row was killed)."""

    run: int
    started_at: float
    finished_at: float | None
    exit_code: int | None
    exit_reason: str | None
    requests: dict[str, int]
    retries: int



class Verdicts:
    """An attempt's end, as every ledger records it: on top of the backend's ``_end_attempt``
    (the attempt's state and error, the item's state, error, assets and download error)."""

    def _end_attempt(
        self,
        item_id: str,
        state: ItemState,
        error: ErrorInfo | None,
        assets: list[AssetRecord] | None,
        download_error: ErrorInfo | None = None,
    ) -> None:
        raise NotImplementedError

    def record_retry(self, item_id: str, error: ErrorInfo) -> None:
        """The attempt's task failed retryably: pending again; the next attempt is a new task."""
        self._end_attempt(item_id, ItemState.PENDING, error, None)

    def finish(
        self,
        item_id: str,
        state: ItemState,
        *,
        assets: list[AssetRecord] | None = None,
        error: ErrorInfo | None = None,
        download_error: ErrorInfo | None = None,
    ) -> None:
        """The attempt's verdict. ``download_error``: why the files of a finished task are not
        on disk yet (written with the verdict, so no crash can leave a succeeded item whose
        files are silently missing); every verdict replaces the previous one."""
        if not state.terminal:
            raise ValueError(f"finish() needs a terminal state, got {state}")
        self._end_attempt(item_id, state, error, assets, download_error)


class BatchLedger(Protocol):
    """The ledger as the engine uses it. Every write is recorded before the side effect it
    announces; ``durable`` returns once every earlier write is on disk."""

    def sync_items(self, items: Iterable[tuple[str, str, int]]) -> None: ...
    def get(self, item_id: str) -> ItemRecord: ...
    def all(self) -> list[ItemRecord]: ...
    def iter_items(
        self, ids: Iterable[str] | None = None, *, chunk: int = 500
    ) -> Iterator[ItemRecord]: ...
    def commit(self) -> None: ...
    async def durable(self) -> None: ...
    def attached(self) -> AbstractAsyncContextManager[Any]:
        """Entered by the engine while the event loop runs (a ledger that talks to a server
        opens its async connections here)."""
        ...
    def lock_still_held(self) -> bool: ...
    #: what losing the run's lock means, in words (the log and the console say it)
    lock_lost_reason: str

    # -- identities and what was paid ----------------------------------------------------
    def external_task_id(self, item_id: str, seq: int, fingerprint: str = "") -> str: ...
    def next_seq(self, item_id: str, fingerprint: str) -> int: ...
    def paid_for(self, item_id: str, fingerprint: str | None) -> int: ...
    def paid_attempts(self) -> dict[str, int]: ...
    def intent_time(self, external_task_id: str) -> float | None: ...
    def file_hashes(self) -> dict[str, tuple[tuple[int, int], str]]: ...
    def remember_file_hashes(self, learnt: dict[str, tuple[tuple[int, int], str]]) -> None: ...

    # -- transitions ----------------------------------------------------------------------
    def record_intent(
        self,
        item_id: str,
        attempt: int,
        external_task_id: str,
        fingerprint: str | None = None,
        seq: int | None = None,
    ) -> None: ...
    def record_submitted(self, item_id: str, task_id: str) -> None: ...
    def record_not_created(self, item_id: str, error: ErrorInfo | None) -> None: ...
    def record_unresolved(self, item_id: str, error: ErrorInfo) -> None: ...
    def record_charge(self, item_id: str, units: float) -> None: ...
    def record_retry(self, item_id: str, error: ErrorInfo) -> None: ...
    def finish(
        self,
        item_id: str,
        state: ItemState,
        *,
        assets: list[AssetRecord] | None = None,
        error: ErrorInfo | None = None,
        download_error: ErrorInfo | None = None,
    ) -> None: ...
    def record_assets(
        self, item_id: str, assets: list[AssetRecord], download_error: ErrorInfo | None
    ) -> None: ...
    def reopen(self, item_id: str, state: ItemState) -> None: ...
