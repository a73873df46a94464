"""The simulated LTX account: committed jobs, uploads, limits, counters. One lock guards it all.

A job's status is derived from the clock at each read (``pending`` for the first fifth of its run,
then ``processing``, then how it ends), so the simulator runs no timer or thread per job and a
test steps through a lifecycle by moving an injected clock. Slots are released the same way: a
heap of end times drained lazily. A job, and its video, is gone ``result_ttl`` seconds after it
ends.

A submit is admitted in :meth:`LtxState.commit`, atomically: the request rate first (the
gateway counts every submit), then the validation result, the safety filter, the credits, the
concurrency slots; then the job is written (``on_commit``: the journal) and recorded.
"""

from __future__ import annotations

import heapq
import math
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, Final

from orchestrator.providers.ltx.catalogue import catalogue
from orchestrator.providers.ltx.simulator.config import LtxSimConfig
from orchestrator.providers.ltx.simulator.faults import (
    AFTER_COMMIT_EFFECTS,
    OUTCOME_EFFECTS,
    LtxFaultBook,
    LtxFaultRule,
)
from orchestrator.providers.ltx.simulator.stats import LtxSimStats
from orchestrator.providers.ltx.simulator.validation import STORAGE_PREFIX, JobSpec
from orchestrator.providers.ltx.simulator.wire import COMPLETED, FAILED, LtxError

#: Share of a job's run spent ``pending`` before it turns ``processing``.
PENDING_SHARE: Final = 0.2


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    spec: JobSpec
    #: Wall-clock creation time (Unix ms): ``created_at`` on the wire.
    created_at_ms: int
    #: ``config.clock()`` at creation; the status derives from the clock relative to this.
    started: float
    #: Seconds from creation to the end.
    run: float
    #: How the job ends: "completed" or "failed" (with error_type and error_message).
    outcome: str = COMPLETED
    error_type: str = ""
    error_message: str = ""
    #: What the job cost at list price.
    usd: float = 0.0

    @property
    def ends(self) -> float:
        return self.started + self.run

    @property
    def completed_at(self) -> float:
        """Wall-clock end (Unix seconds)."""
        return self.created_at_ms / 1000 + self.run

    def status(self, now: float) -> str:
        elapsed = now - self.started
        if elapsed >= self.run:
            return self.outcome
        return "pending" if elapsed < PENDING_SHARE * self.run else "processing"

    def expired(self, now: float, ttl: float) -> bool:
        return now >= self.ends + ttl


@dataclass(frozen=True)
class Upload:
    """An upload URL handed out by ``POST /v1/upload``, and the file PUT to it, if any."""

    token: str
    content_type: str
    #: ``config.clock()`` when the URL was issued.
    issued: float
    #: Wall-clock expiry of the URL (Unix seconds), for ``expires_at``.
    expires_at: float
    #: ``config.clock()`` of the last PUT; None: nothing uploaded yet.
    stored: float | None = None
    size: int = 0

    @property
    def storage_uri(self) -> str:
        return STORAGE_PREFIX + self.token


def price_usd(spec: JobSpec) -> float:
    per_second = catalogue().price_per_second(spec.model, spec.resolution)
    return spec.duration * per_second if per_second is not None else 0.0


def credits_for(spec: JobSpec) -> int:
    """Credits a job needs: one per US cent of its list price; one per second where no price is
    published."""
    usd = price_usd(spec)
    return math.ceil(round(usd * 100, 6)) if usd > 0 else spec.duration


class LtxState:
    """Everything the simulated account remembers. Every method is safe from any thread."""

    def __init__(
        self,
        config: LtxSimConfig,
        faults: LtxFaultBook,
        *,
        on_commit: Callable[[JobRecord], None] | None = None,
    ) -> None:
        """``on_commit`` runs for each new job, under the lock, before it is recorded (and so
        before its submit is answered); if it raises, the job is not committed."""
        self._config = config
        self._clock = config.clock
        self._faults = faults
        self._on_commit = on_commit
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._billing_after = config.billing_after
        self._jobs: list[JobRecord] = []
        self._by_id: dict[str, JobRecord] = {}
        self._uploads: dict[str, Upload] = {}
        self._holding: list[float] = []  # end times of jobs that may hold a slot
        self._slots_in_use = 0
        self._peak_slots = 0
        self._recent_submits: deque[float] = deque()
        self._requests: Counter[str] = Counter()
        self._answers: Counter[str] = Counter()
        self._asset_answers: Counter[str] = Counter()

    def now(self) -> float:
        return self._clock()

    def new_request_id(self) -> str:
        with self._lock:
            return f"req_{self._rng.getrandbits(96):024x}"

    def count(self, kind: str) -> None:
        """One request of ``kind``: submit, status, upload, upload_put or asset."""
        with self._lock:
            self._requests[kind] += 1

    def note_answer(self, label: str) -> None:
        with self._lock:
            self._answers[label] += 1

    def note_asset_answer(self, label: str) -> None:
        with self._lock:
            self._asset_answers[label] += 1

    def set_billing_after(self, count: int | None) -> None:
        with self._lock:
            self._billing_after = count

    def commit(self, spec: JobSpec | LtxError) -> tuple[JobRecord, LtxFaultRule | None]:
        """Admit and record one submit, or raise the LtxError that refuses it. ``spec`` is the
        validation result (or its refusal), checked here so that the rate limit comes first.
        Returns the job and the fault rule, if any, that decides how the submit is answered."""
        config = self._config
        with self._lock:
            now = self._clock()
            self._admit_rate(now)
            if isinstance(spec, LtxError):
                raise spec
            if config.filtered_marker in spec.prompt:
                raise LtxError(
                    "content_filtered_error", "The prompt was blocked by our safety filters"
                )
            if self._billing_after is not None and len(self._jobs) >= self._billing_after:
                raise LtxError(
                    "insufficient_funds_error",
                    f"Insufficient funds. Required: {credits_for(spec)} credits",
                )
            self._release_finished(now)
            limit = config.concurrency_slots
            if limit is not None and self._slots_in_use >= limit:
                raise LtxError(
                    "concurrency_limit_error",
                    f"Concurrency limit reached: {limit} generations at a time",
                    retry_after=config.retry_after,
                )
            outcome = self._faults.take("submit", spec.prompt, OUTCOME_EFFECTS)
            answer = self._faults.take("submit", spec.prompt, AFTER_COMMIT_EFFECTS)
            job = self._new_job(spec, now, outcome)
            if self._on_commit is not None:
                self._on_commit(job)
            self._record(job)
            return job, answer

    def restore(self, jobs: Iterable[JobRecord]) -> int:
        """Take back jobs an earlier simulator committed (see ``journal``); returns how many.
        The random stream is reseeded past them, so new ids do not replay the earlier run's."""
        restored = 0
        with self._lock:
            for job in jobs:
                if job.job_id in self._by_id:
                    continue
                self._record(job)
                restored += 1
            self._release_finished(self._clock())
            if restored:
                self._rng = random.Random(f"ltx-simulator:{self._config.seed}:{len(self._jobs)}")
        return restored

    def job(self, job_id: str) -> JobRecord | None:
        """The job with this id, whatever its endpoint or age (to match fault rules)."""
        with self._lock:
            return self._by_id.get(job_id)

    def lookup(self, endpoint: str, job_id: str) -> JobRecord | None:
        """The job a status query names, if it was submitted to ``endpoint`` and has not
        expired."""
        with self._lock:
            job = self._by_id.get(job_id)
        if job is None or job.spec.endpoint != endpoint:
            return None
        return None if job.expired(self._clock(), self._config.result_ttl) else job

    def asset_job(self, job_id: str) -> JobRecord | None:
        """The job whose video is served: completed and not expired."""
        with self._lock:
            job = self._by_id.get(job_id)
        now = self._clock()
        if job is None or job.status(now) != COMPLETED:
            return None
        return None if job.expired(now, self._config.result_ttl) else job

    def issue_upload(self, content_type: str) -> Upload:
        with self._lock:
            token = f"{self._rng.getrandbits(128):032x}"
            upload = Upload(
                token=token,
                content_type=content_type,
                issued=self._clock(),
                expires_at=time.time() + self._config.upload_url_ttl,
            )
            self._uploads[token] = upload
            return upload

    def store_upload(self, token: str, content_type: str | None, size: int) -> tuple[str, str]:
        """Keep a file PUT to an upload URL; ("", "") when stored, else the storage's refusal
        (an error code and message)."""
        with self._lock:
            upload = self._uploads.get(token)
            now = self._clock()
            if upload is None:
                return "SignatureDoesNotMatch", "The request signature does not match."
            if now >= upload.issued + self._config.upload_url_ttl:
                return "ExpiredToken", "The provided token has expired."
            if content_type != upload.content_type:
                return (
                    "SignatureDoesNotMatch",
                    f"Content-Type must be {upload.content_type} (see required_headers).",
                )
            self._uploads[token] = replace(upload, stored=now, size=size)
            return "", ""

    def uploaded(self, storage_uri: str) -> bool:
        """Whether a storage URI names a file PUT here that still lives."""
        token = storage_uri[len(STORAGE_PREFIX) :]
        with self._lock:
            upload = self._uploads.get(token)
            if upload is None or upload.stored is None:
                return False
            return self._clock() < upload.stored + self._config.upload_file_ttl

    def stats(self) -> LtxSimStats:
        with self._lock:
            now = self._clock()
            self._release_finished(now)
            jobs = list(self._jobs)
            snapshot = LtxSimStats(
                submit_requests=self._requests["submit"],
                jobs_created=len(jobs),
                status_requests=self._requests["status"],
                upload_requests=self._requests["upload"],
                upload_puts=self._requests["upload_put"],
                asset_requests=self._requests["asset"],
                peak_slots=self._peak_slots,
                slots_in_use=self._slots_in_use,
                by_prompt=dict(Counter(job.spec.prompt for job in jobs)),
                answers=dict(self._answers),
                asset_answers=dict(self._asset_answers),
                faults_fired=self._faults.fired_by_label(),
                billed_usd=round(sum(job.usd for job in jobs), 6),
            )
        ttl = self._config.result_ttl
        return replace(snapshot, jobs=tuple(_row(job, now, ttl) for job in jobs))

    # The methods below run with self._lock held.

    def _admit_rate(self, now: float) -> None:
        limit = self._config.requests_per_second
        if limit is None:
            return
        window = self._recent_submits
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= limit:
            raise LtxError(
                "rate_limit_error",
                f"Rate limit exceeded: {limit:g} requests per second",
                retry_after=self._config.retry_after,
            )
        window.append(now)

    def _release_finished(self, now: float) -> None:
        while self._holding and self._holding[0] <= now:
            heapq.heappop(self._holding)
            self._slots_in_use -= 1

    def _new_job(self, spec: JobSpec, now: float, rule: LtxFaultRule | None) -> JobRecord:
        job_id = _uuid4(self._rng)
        while job_id in self._by_id:
            job_id = _uuid4(self._rng)
        low, high = self._config.task_duration
        job = JobRecord(
            job_id=job_id,
            spec=spec,
            created_at_ms=int(time.time() * 1000),
            started=now,
            run=self._rng.uniform(low, high),
            usd=price_usd(spec),
        )
        if rule is not None:
            job = replace(
                job, outcome=FAILED, error_type=rule.error_type, error_message=rule.message
            )
        return job

    def _record(self, job: JobRecord) -> None:
        self._jobs.append(job)
        self._by_id[job.job_id] = job
        heapq.heappush(self._holding, job.ends)
        self._slots_in_use += 1
        self._peak_slots = max(self._peak_slots, self._slots_in_use)


def _uuid4(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _row(job: JobRecord, now: float, ttl: float) -> dict[str, Any]:
    spec = job.spec
    return {
        "id": job.job_id,
        "endpoint": spec.endpoint,
        "model": spec.model,
        "prompt": spec.prompt,
        "duration": spec.duration,
        "resolution": spec.resolution,
        "fps": spec.fps,
        "status": job.status(now),
        "expired": job.expired(now, ttl),
        "usd": job.usd,
    }
