"""The provider interface the engine talks to.

A provider turns a :class:`TaskRequest` into its wire format, sends exactly one HTTP request per
call (no retries: the engine is the one retry layer), and translates every failure into a
:class:`~orchestrator.errors.ProviderError` carrying an :class:`~orchestrator.errors.ErrorInfo`.
It knows nothing about the ledger; the engine knows nothing about the wire format.
"""

from __future__ import annotations

import enum
from collections.abc import Container, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from orchestrator.errors import ErrorInfo, ProviderError


class Kind(enum.StrEnum):
    TEXT2VIDEO = "text2video"
    IMAGE2VIDEO = "image2video"
    #: a video from a prompt that may refer to images (first/end frames, references)
    OMNI_VIDEO = "omni_video"
    IMAGE = "image"

    @property
    def media(self) -> str:
        """What one asset of this kind is: "video" or "image"."""
        return "image" if self is Kind.IMAGE else "video"


@dataclass(frozen=True)
class ImageSource:
    """An input image: a local file (sent inline) or a public URL (sent as is)."""

    path: Path | None = None
    url: str | None = None

    def describe(self) -> str:
        return str(self.path) if self.path is not None else str(self.url)


@dataclass(frozen=True)
class TaskRequest:
    """One generation, validated and with defaults applied.

    ``fields`` uses the manifest's field names (``model``, ``prompt``, ``negative_prompt``,
    ``mode``, ``duration`` as int, ``aspect_ratio``, ``cfg_scale``, ``camera_control``, ``n``,
    ``resolution``, ...). Image-valued fields (``image``, ``image_tail``, ``static_mask``) hold
    an :class:`ImageSource`. The provider converts names and types for the wire.
    """

    kind: Kind
    fields: Mapping[str, Any]
    expected_assets: int


class TaskStatus(enum.StrEnum):
    SUBMITTED = "submitted"
    PROCESSING = "processing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED)


#: The highest asset index a provider may report (Kling's image tasks have at most 9 assets).
MAX_ASSET_INDEX = 999


@dataclass(frozen=True)
class Asset:
    #: Names the file (``<item-id>/<index>.<ext>``) and matches a fresh URL to an expired one:
    #: from 0 to MAX_ASSET_INDEX and unique within a task (see ``valid_asset_indexes``).
    index: int
    url: str
    media: str  # "video" | "image"


def valid_asset_indexes(indexes: Iterable[object]) -> bool:
    """Whether ``indexes`` can name one task's assets: ints (not bools) from 0 to
    ``MAX_ASSET_INDEX``, no two alike. Providers renumber assets by position otherwise."""
    seen: set[int] = set()
    for index in indexes:
        if type(index) is not int or not 0 <= index <= MAX_ASSET_INDEX or index in seen:
            return False
        seen.add(index)
    return True


@dataclass(frozen=True)
class Task:
    """What the provider knows about one task, in provider-neutral terms."""

    task_id: str
    status: TaskStatus
    external_task_id: str | None = None
    #: Provider's reason text, for failed tasks (Kling: task_status_msg).
    message: str | None = None
    assets: tuple[Asset, ...] = ()
    request_id: str | None = None
    #: Classification of a failed task (category, retryable, hint); None unless FAILED.
    failure: ErrorInfo | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    #: When the provider created the task and, once finished, when it ended (Unix seconds, the
    #: provider's clock); None when the provider does not say. They measure the concurrency
    #: the account really sustained.
    created_at: float | None = field(default=None, compare=False)
    ended_at: float | None = field(default=None, compare=False)
    #: Units the provider says it charged for the task (Kling: final_unit_deduction, API 2.0:
    #: billing), once it reports them; None when it does not say.
    charged_units: float | None = field(default=None, compare=False)


class Provider(Protocol):
    """Every call names the request its task was created for: a provider may serve one request
    on another API than the next (Kling: legacy /v1 or API 2.0, by model), and reads go where
    the create went."""

    name: str

    async def create(self, request: TaskRequest, external_task_id: str) -> Task:
        """Submit one paid task. Raises ProviderError (see .sent / .ambiguous / .exists).

        Usually the task is returned ``submitted`` and then polled. A synchronous API (LTX v1,
        Replicate with ``Prefer: wait``) returns it finished, with its assets: the engine
        verifies that answer at once and never polls it. Its task id then only names the
        result in the ledger and the report."""
        ...

    async def query(self, request: TaskRequest, task_id: str) -> Task:
        """Current state of a task by the provider's task id."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TaskFinder(Protocol):
    """A provider that can find a task by the external id its create carried (Kling's
    ``external_task_id``): a create whose answer was lost is settled by looking it up, and a
    batch whose state file was lost adopts its tasks instead of paying for them again. A
    provider without it cannot tell a lost create from one never made."""

    async def lookup(
        self, request: TaskRequest, external_task_id: str, *, sent_after: float | None = None
    ) -> Task | None:
        """Find a task by our external id. None only when its absence is proven: the engine
        then resends the create, so a None that is merely "not seen" pays twice.

        ``sent_after``: Unix time before which no create with this external id was sent (the
        ledger's intent); a provider that lists tasks by creation time may stop there. Raises
        ProviderError when the task can be neither found nor proven absent.
        """
        ...


@runtime_checkable
class TaskLister(Protocol):
    """A provider that can answer for many tasks with one request by listing them (Kling's
    /v1 list pages, newest first)."""

    def list_key(self, request: TaskRequest) -> Hashable | None:
        """The list this request's tasks appear on (Kling: its /v1 family), or None when they
        appear on none that ``list_matching`` reads."""
        ...

    async def list_matching(
        self, key: Hashable, page: int, task_ids: Container[str]
    ) -> tuple[dict[str, Task], int]:
        """Page ``page`` (1-based, newest first, full size) of list ``key``: the tasks of
        ``task_ids`` found on it, and how many entries the page had (a short page is the last
        one)."""
        ...


@runtime_checkable
class BatchReader(Protocol):
    """A provider that reads many tasks by id, or by external id, in one request (Kling's API
    2.0 ``GET /tasks?task_ids=`` / ``?external_task_ids=``)."""

    #: The most ids one read may name.
    batch_limit: int

    def batch_key(self, request: TaskRequest) -> Hashable | None:
        """Tasks whose requests share a key can be read together; None: this request's tasks
        are read one at a time."""
        ...

    async def query_many(self, key: Hashable, task_ids: Sequence[str]) -> dict[str, Task]:
        """The tasks of ``task_ids`` the provider reports, by task id, in one request (at most
        ``batch_limit`` ids); an id it does not report is left out. Raises ProviderError when
        the request fails."""
        ...

    async def lookup_many(
        self, key: Hashable, external_task_ids: Sequence[str], *, sent_after: float | None
    ) -> dict[str, Task | ProviderError | None]:
        """Each external id's task, None where its absence is proven (as ``lookup``), or the
        ProviderError saying why neither could be established; as few requests as the provider
        allows. ``sent_after``: no create with any of these ids was sent before it."""
        ...


@runtime_checkable
class CapacityGroups(Protocol):
    """A provider whose account counts tasks against separate limits (Kling: one per
    resource-pack type, video and image): the engine finds and keeps each group's limit apart
    (``limits.concurrency`` still caps them together)."""

    def capacity_group(self, request: TaskRequest) -> str:
        """The group a task of ``request`` counts against (a short name, for the report)."""
        ...


@runtime_checkable
class AccountChecker(Protocol):
    """A provider that can tell, before a batch starts, that the account looks unable to pay."""

    async def account_warning(self) -> str | None:
        """One sentence worth showing before the batch starts (no resource pack left, say), or
        None when all looks well or the provider could not tell. Never raises."""
        ...
