"""The simulated account: committed tasks, limits, counters. One lock guards it all.

A task's status is derived from the clock at each read (submitted for the first 20% of its
duration, then processing, then its final status), so the simulator runs no timer or thread per
task and a test can step through a lifecycle by moving an injected clock. Slots are released the
same way: a heap of finish times is drained lazily on the next create.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any

from orchestrator.providers.kling.catalogue import V2
from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.families import CreateSpec, Family
from orchestrator.simulator.faults import (
    AFTER_COMMIT_EFFECTS,
    OUTCOME_EFFECTS,
    FaultBook,
    FaultRule,
)
from orchestrator.simulator.wire import ApiError

#: Share of a task's duration spent "submitted" before it turns "processing".
SUBMITTED_SHARE = 0.2
#: Status reported in stats for a task that has not finished yet.
PENDING = "pending"
#: Ends an asset's file name for its watermarked copy (``/assets/<task>/0-wm.mp4``).
WATERMARK_MARK = "-wm"


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    family: Family
    spec: CreateSpec
    created_at_ms: int
    #: ``config.clock()`` at creation; status is derived from the clock relative to this.
    started: float
    duration: float
    #: How the task ends: "succeed" or "failed".
    outcome: str
    failure_message: str
    #: Assets the task returns when it succeeds (may be below spec.assets under a fault).
    assets: int
    asset_ids: tuple[str, ...]

    @property
    def finishes(self) -> float:
        return self.started + self.duration

    def status(self, now: float) -> str:
        elapsed = now - self.started
        if elapsed >= self.duration:
            return self.outcome
        if elapsed < SUBMITTED_SHARE * self.duration:
            return "submitted"
        return "processing"

    def visible(self, now: float, read_lag: float) -> bool:
        """Whether reads by external id (and lists) see the task yet: ``read_lag`` seconds
        after its creation (reads by task id see it at once)."""
        return now - self.started >= read_lag

    def charged(self, now: float) -> float | None:
        """Units the task reports as charged (``final_unit_deduction``): its price once it
        succeeded, 0 once it failed (a failed generation is not charged: the units it held
        go back to the pack), None before it ends or when no price is known."""
        status = self.status(now)
        if status == "failed":
            return 0.0
        return self.spec.units if status == "succeed" else None

    def asset_path(self, index: int, *, watermarked: bool = False) -> str:
        mark = WATERMARK_MARK if watermarked else ""
        return f"/assets/{self.task_id}/{index}{mark}.{self.family.asset_suffix}"

    def asset_url(
        self,
        base_url: str,
        index: int,
        sign: Callable[[str], str] | None = None,
        *,
        watermarked: bool = False,
    ) -> str:
        path = self.asset_path(index, watermarked=watermarked)
        return base_url + path + (sign(path) if sign is not None else "")


@dataclass(frozen=True)
class SimStats:
    """A snapshot of what the simulator saw; ``to_dict()`` is what ``GET /_sim/stats`` returns."""

    #: Every create, on either API, whatever its answer.
    create_requests: int = 0
    #: The creates among them sent to API 2.0 (``POST /<v2 path>/<model>``).
    v2_create_requests: int = 0
    #: Committed creates (a task exists and counts against the account).
    tasks_created: int = 0
    #: Legacy GETs of one task, by task id or external id.
    query_requests: int = 0
    #: Legacy list pages (``GET /v1/<family>?pageNum=``).
    list_requests: int = 0
    #: API 2.0 batch queries (``GET /tasks?task_ids=`` / ``?external_task_ids=``).
    batch_query_requests: int = 0
    #: API 2.0 time-window list pages (``POST /tasks``).
    window_list_requests: int = 0
    #: ``GET /account/costs``.
    account_requests: int = 0
    asset_requests: int = 0
    #: Most slots in use right after any committed create.
    peak_slots: int = 0
    #: Slots held by unfinished tasks at the time of the snapshot.
    slots_in_use: int = 0
    #: One entry per committed task, in creation order.
    tasks: tuple[dict[str, Any], ...] = ()
    #: Per external id: the creates that committed it, plus those refused because a task had
    #: it already (a refused create is counted too: the client did send the id twice).
    external_id_counts: dict[str, int] = field(default_factory=dict)
    #: External ids more than one create named (see external_id_counts).
    duplicate_external_ids: tuple[str, ...] = ()
    #: Creates naming an external id a task of the account already had, refused or not.
    creates_reusing_external_id: int = 0
    #: Those of them refused with 1201 "already exists" (SimConfig.reject_duplicate_external_ids).
    creates_refused_as_existing: int = 0
    #: Creates reusing a committed external id with no lookup by it (or list page showing it)
    #: since that commit, refused or not: the client resubmitted without checking, which pays
    #: twice wherever the server does not refuse it.
    creates_reusing_external_id_without_lookup: int = 0
    by_prompt: dict[str, int] = field(default_factory=dict)
    #: How creates were answered: Kling code as a string ("0", "1303", ...) or "dropped".
    create_answers: dict[str, int] = field(default_factory=dict)
    #: How often injected faults fired, by ``FaultRule.label`` (e.g. "query error 500/5000").
    faults_fired: dict[str, int] = field(default_factory=dict)
    #: How asset requests were answered: HTTP status as a string ("200", "403", "404", ...), or
    #: "truncated", "wrong_type", "dropped" for the asset faults of those effects.
    asset_answers: dict[str, int] = field(default_factory=dict)
    #: Body bytes sent in answers to asset requests (a truncated body counts what was sent).
    asset_bytes_served: int = 0
    #: Most asset requests being handled at the same time (injected delays included).
    asset_peak_in_flight: int = 0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name == "tasks":
                value = [dict(task) for task in value]
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, dict):
                value = dict(value)
            data[spec.name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimStats:
        """Rebuild a snapshot fetched from ``/_sim/stats`` by an out-of-process user (a field
        an older simulator did not send keeps its default)."""
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name not in data:
                continue
            value = data[spec.name]
            if spec.name == "tasks":
                value = tuple(dict(task) for task in value)
            elif isinstance(value, list):
                value = tuple(value)
            elif isinstance(value, dict):
                value = dict(value)
            else:
                value = int(value)
            values[spec.name] = value
        return cls(**values)


@dataclass(frozen=True)
class PackUsage:
    """What the account's resource pack has given, for ``GET /account/costs``."""

    #: Units held by unfinished video tasks or charged for succeeded ones (failed ones are
    #: given back).
    units: float
    #: Whether the billing stop (SimConfig.billing_after) is reached: creates answer 1102.
    exhausted: bool


class SimState:
    """Everything the simulated account remembers. Every method is safe from any thread."""

    def __init__(
        self,
        config: SimConfig,
        faults: FaultBook,
        *,
        on_commit: Callable[[TaskRecord], None] | None = None,
    ) -> None:
        """``on_commit`` runs for each new task, under the state lock, before it is recorded
        (and so before its create is answered); if it raises, the task is not committed."""
        self._config = config
        self._on_commit = on_commit
        self._clock = config.clock
        self._lag = config.read_lag
        self._faults = faults
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._billing_after = config.billing_after
        self._tasks: list[TaskRecord] = []
        self._by_id: dict[str, TaskRecord] = {}
        self._by_external: dict[str, list[TaskRecord]] = {}
        self._by_family: dict[str, list[TaskRecord]] = {}
        #: API 2.0 tasks in creation order: POST /tasks pages through them by position.
        self._v2_tasks: list[TaskRecord] = []
        # (finish time, slots, resource-pack type) of tasks that may still hold slots.
        self._holding: list[tuple[float, int, str]] = []
        self._slots_in_use = 0
        #: slots in use per resource-pack type ("video", "image"): each has its own limit
        self._pack_in_use: Counter[str] = Counter()
        self._peak_slots = 0
        self._recent_creates: deque[float] = deque()
        self._requests: Counter[str] = Counter()
        self._create_answers: Counter[str] = Counter()
        self._asset_answers: Counter[str] = Counter()
        self._asset_bytes = 0
        self._assets_in_flight = 0
        self._asset_peak = 0
        self._external_counts: Counter[str] = Counter()
        self._reuses = 0
        self._refused_existing = 0
        # Double-pay indicator: a sequence number orders commits, lookups and lists.
        self._seq = 0
        self._last_commit: dict[str, int] = {}  # external id -> seq of its latest commit
        self._last_lookup: dict[str, int] = {}  # id a GET named, or showed in a list -> seq
        self._reuse_without_lookup = 0
        # Requests an injected token error refused and not yet resent.
        self._token_rejections: Counter[Hashable] = Counter()

    def now(self) -> float:
        return self._clock()

    def count_request(self, op: str) -> None:
        with self._lock:
            self._requests[op] += 1

    def note_create_answer(self, label: str) -> None:
        with self._lock:
            self._create_answers[label] += 1

    def note_asset_answer(self, label: str, body_bytes: int = 0) -> None:
        with self._lock:
            self._asset_answers[label] += 1
            self._asset_bytes += body_bytes

    @contextmanager
    def asset_in_flight(self) -> Iterator[None]:
        """Count one asset request as being handled for the duration of the block."""
        with self._lock:
            self._assets_in_flight += 1
            self._asset_peak = max(self._asset_peak, self._assets_in_flight)
        try:
            yield
        finally:
            with self._lock:
                self._assets_in_flight -= 1

    def note_token_rejected(self, request: Hashable) -> None:
        """An injected 1003/1004 refused ``request``."""
        with self._lock:
            self._token_rejections[request] += 1

    def is_token_resend(self, request: Hashable) -> bool:
        """Whether ``request`` repeats one an injected token error refused (each refusal
        answers for one resend)."""
        with self._lock:
            left = self._token_rejections.get(request, 0)
            if left <= 1:
                self._token_rejections.pop(request, None)
            else:
                self._token_rejections[request] = left - 1
            return left > 0

    def new_request_id(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def set_billing_after(self, count: int | None) -> None:
        with self._lock:
            self._billing_after = count

    def commit(
        self, family: Family, spec: CreateSpec | ApiError
    ) -> tuple[TaskRecord, FaultRule | None]:
        """Admit and record one create, or raise the ApiError that rejects it.

        ``spec`` is the validation result (or its error), checked here rather than before so
        that billing and the rate limit take precedence over it, as on Kling, and so that every
        admission check and the commit happen atomically. Then an external id a task of the
        account already has is refused (any family, either API; reads may lag, this check does
        not), then the slot limit. Returns the task and the fault rule, if any, that decides how
        the create is answered.
        """
        with self._lock:
            now = self._clock()
            if self._billing_after is not None and len(self._tasks) >= self._billing_after:
                raise ApiError(1102, "resource pack depleted")
            self._admit_rate(now)
            if isinstance(spec, ApiError):
                raise spec
            external = spec.external_task_id
            if external is not None and external in self._by_external:
                self._note_reuse(external)
                if self._config.reject_duplicate_external_ids:
                    self._refused_existing += 1
                    self._external_counts[external] += 1
                    raise ApiError(1201, f"External_task_id {external} already exists")
            self._release_finished(now)
            pack = family.media
            limit = self._config.concurrency_slots
            if pack == "image" and self._config.image_concurrency_slots is not None:
                limit = self._config.image_concurrency_slots
            if limit is not None and self._pack_in_use[pack] + spec.slots > limit:
                raise ApiError(1303, "parallel task over resource pack limit")
            outcome_rule = self._faults.take("create", spec.prompt, OUTCOME_EFFECTS)
            answer_rule = self._faults.take("create", spec.prompt, AFTER_COMMIT_EFFECTS)
            task = self._new_task(family, spec, now, outcome_rule)
            if self._on_commit is not None:
                self._on_commit(task)
            self._record(task)
            return task, answer_rule

    def restore(self, tasks: Iterable[TaskRecord]) -> int:
        """Take back tasks an earlier simulator committed (see ``journal``); returns how many.
        Ids already known are skipped. The random stream is reseeded past them, so new task ids
        do not replay the earlier run's."""
        restored = 0
        with self._lock:
            for task in tasks:
                if task.task_id in self._by_id:
                    continue
                self._record(task)
                self._release_finished(self._clock())
                restored += 1
            if restored:
                self._rng = random.Random(f"kling-simulator:{self._config.seed}:{len(self._tasks)}")
        return restored

    def find(self, family: Family, ident: str, *, looked_up: bool) -> TaskRecord | None:
        """The legacy task a GET path id names: a task id, else (unless
        ``config.query_by_external_id`` is off) the newest task of the family with that
        external id that reads see yet (``config.read_lag``).

        ``looked_up`` records the GET for the double-pay indicator (only where the path can
        find the task by external id); pass False to peek (e.g. to match fault rules against
        the task's prompt before the request is served).
        """
        by_external = self._config.query_by_external_id
        with self._lock:
            now = self._clock()
            if looked_up and by_external:
                self._seq += 1
                self._last_lookup[ident] = self._seq
            task = self._by_id.get(ident)
            if task is not None and task.family.path == family.path:
                return task
            if not by_external:
                return None
            for candidate in reversed(self._by_external.get(ident, ())):
                if candidate.family.path == family.path and candidate.visible(now, self._lag):
                    return candidate
            return None

    def list_page(self, family: Family, page: int, size: int) -> list[TaskRecord]:
        """One page of the family's tasks that reads see yet, newest first."""
        with self._lock:
            self._seq += 1
            tasks = self._by_family.get(family.path, [])
            if self._lag:
                now = self._clock()
                tasks = [task for task in tasks if task.visible(now, self._lag)]
            end = len(tasks) - (page - 1) * size
            if end <= 0:
                return []
            shown = tasks[max(0, end - size) : end][::-1]
            self._note_shown(shown)
            return shown

    def find_v2(
        self, idents: Iterable[str], *, by_external: bool, looked_up: bool = True
    ) -> list[TaskRecord]:
        """The API 2.0 tasks a batch query names, in the order asked (by external id: each id's
        tasks that reads see yet, newest first), each once. ``looked_up`` as in :meth:`find`."""
        found: list[TaskRecord] = []
        seen: set[str] = set()
        with self._lock:
            now = self._clock()
            if looked_up and by_external:
                self._seq += 1
            for ident in idents:
                if by_external:
                    if looked_up:
                        self._last_lookup[ident] = self._seq
                    candidates = [
                        task
                        for task in reversed(self._by_external.get(ident, ()))
                        if task.family.api == V2 and task.visible(now, self._lag)
                    ]
                else:
                    task = self._by_id.get(ident)
                    candidates = [task] if task is not None and task.family.api == V2 else []
                for task in candidates:
                    if task.task_id not in seen:
                        seen.add(task.task_id)
                        found.append(task)
        return found

    def window_page(
        self,
        keep: Callable[[TaskRecord, float], bool],
        cursor: int | None,
        limit: int,
    ) -> tuple[list[TaskRecord], int | None]:
        """One page of the API 2.0 tasks ``keep(task, now)`` selects that reads see yet,
        newest first, from position ``cursor`` (None: the newest); returns the page and the
        position the next page starts at (None: this was the last). Positions only grow with
        new tasks, so a cursor stays valid while tasks are created."""
        with self._lock:
            now = self._clock()
            tasks = self._v2_tasks
            if cursor is not None and not 0 <= cursor < len(tasks):
                raise ApiError(1201, "cursor value is invalid")
            position = len(tasks) - 1 if cursor is None else cursor
            page: list[TaskRecord] = []
            while position >= 0:
                task = tasks[position]
                if task.visible(now, self._lag) and keep(task, now):
                    if len(page) == limit:
                        break
                    page.append(task)
                position -= 1
            self._seq += 1
            self._note_shown(page)
            return page, (position if position >= 0 else None)

    def pack_usage(self) -> PackUsage:
        with self._lock:
            now = self._clock()
            units = sum(
                task.spec.units or 0.0
                for task in self._tasks
                if task.family.media == "video" and task.status(now) != "failed"
            )
            limit = self._billing_after
            return PackUsage(units, limit is not None and len(self._tasks) >= limit)

    def asset_task(
        self, task_id: str, index: int, suffix: str, *, finished: bool = True
    ) -> TaskRecord | None:
        """The task whose asset ``index`` is served, if it exists and has succeeded.

        ``finished=False`` skips the status check (to match fault rules against the prompt of a
        task whose asset cannot be served yet).
        """
        now = self._clock()
        with self._lock:
            task = self._by_id.get(task_id)
        if task is None or task.family.asset_suffix != suffix or not 0 <= index < task.assets:
            return None
        return task if not finished or task.status(now) == "succeed" else None

    def stats(self) -> SimStats:
        with self._lock:
            now = self._clock()
            self._release_finished(now)
            tasks = list(self._tasks)
            external_counts = dict(self._external_counts)
            snapshot = SimStats(
                create_requests=self._requests["create"],
                v2_create_requests=self._requests["create_v2"],
                tasks_created=len(tasks),
                query_requests=self._requests["query"],
                list_requests=self._requests["list"],
                batch_query_requests=self._requests["batch_query"],
                window_list_requests=self._requests["window_list"],
                account_requests=self._requests["account"],
                asset_requests=self._requests["asset"],
                peak_slots=self._peak_slots,
                slots_in_use=self._slots_in_use,
                external_id_counts=external_counts,
                duplicate_external_ids=tuple(e for e, n in external_counts.items() if n > 1),
                creates_reusing_external_id=self._reuses,
                creates_refused_as_existing=self._refused_existing,
                creates_reusing_external_id_without_lookup=self._reuse_without_lookup,
                by_prompt=dict(Counter(task.spec.prompt for task in tasks)),
                create_answers=dict(self._create_answers),
                faults_fired=self._faults.fired_by_label(),
                asset_answers=dict(self._asset_answers),
                asset_bytes_served=self._asset_bytes,
                asset_peak_in_flight=self._asset_peak,
            )
        rows = tuple(_stats_row(task, now) for task in tasks)
        return replace(snapshot, tasks=rows)

    # The methods below run with self._lock held.

    def _note_reuse(self, external: str) -> None:
        """A create names ``external``, which a committed task has: count it, and whether the
        client looked the id up (or saw it listed) since that commit."""
        self._reuses += 1
        if self._last_lookup.get(external, -1) < self._last_commit.get(external, -1):
            self._reuse_without_lookup += 1

    def _note_shown(self, shown: Iterable[TaskRecord]) -> None:
        # A client that lists sees the external ids on the page, and only those: a resend
        # after a list that did not show the earlier task is still a blind one.
        for task in shown:
            if task.spec.external_task_id is not None:
                self._last_lookup[task.spec.external_task_id] = self._seq

    def _admit_rate(self, now: float) -> None:
        limit = self._config.requests_per_second
        if limit is None:
            return
        window = self._recent_creates
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= limit:
            raise ApiError(1302, "request rate too high")
        window.append(now)

    def _release_finished(self, now: float) -> None:
        while self._holding and self._holding[0][0] <= now:
            _, slots, pack = heapq.heappop(self._holding)
            self._slots_in_use -= slots
            self._pack_in_use[pack] -= slots

    def _new_task(
        self, family: Family, spec: CreateSpec, now: float, rule: FaultRule | None
    ) -> TaskRecord:
        task_id = str(self._rng.randrange(10**17, 10**18))
        while task_id in self._by_id:
            task_id = str(self._rng.randrange(10**17, 10**18))
        low, high = self._config.task_duration
        outcome, message, assets = "succeed", "", spec.assets
        if rule is not None and rule.effect == "task_failed":
            outcome, message = "failed", rule.message
        elif rule is not None and rule.effect == "fewer_assets":
            assets = min(rule.assets, spec.assets)
        return TaskRecord(
            task_id=task_id,
            family=family,
            spec=spec,
            created_at_ms=int(time.time() * 1000),
            started=now,
            duration=self._rng.uniform(low, high),
            outcome=outcome,
            failure_message=message,
            assets=assets,
            asset_ids=tuple(
                str(uuid.UUID(int=self._rng.getrandbits(128), version=4)) for _ in range(assets)
            ),
        )

    def _record(self, task: TaskRecord) -> None:
        self._tasks.append(task)
        self._by_id[task.task_id] = task
        self._by_family.setdefault(task.family.path, []).append(task)
        if task.family.api == V2:
            self._v2_tasks.append(task)
        heapq.heappush(self._holding, (task.finishes, task.spec.slots, task.family.media))
        self._slots_in_use += task.spec.slots
        self._pack_in_use[task.family.media] += task.spec.slots
        self._peak_slots = max(self._peak_slots, self._slots_in_use)
        external = task.spec.external_task_id
        if external is None:
            return
        self._seq += 1
        self._last_commit[external] = self._seq
        self._external_counts[external] += 1
        self._by_external.setdefault(external, []).append(task)


def _stats_row(task: TaskRecord, now: float) -> dict[str, Any]:
    status = task.status(now)
    return {
        "task_id": task.task_id,
        "external_task_id": task.spec.external_task_id,
        "api": task.family.api,
        "family": task.family.path,
        "model_name": task.spec.model_name,
        "prompt": task.spec.prompt,
        "n": task.spec.assets,
        "status": status if status in ("succeed", "failed") else PENDING,
        "outcome": task.outcome,
        "assets": task.assets,
        "created_at": task.created_at_ms,
    }
