"""The LTX simulator's settings: one frozen dataclass, every field defaulted to the demo setup
(an account with LTX's default of two concurrent generations, no rate limit, credits that never
run out, nothing injected)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.providers.ltx.simulator.faults import LtxFaultRule

MIB = 1024 * 1024
DAY = 86_400.0


def _seconds(value: float, name: str, *, positive: bool = False) -> None:
    if not (math.isfinite(value) and (value > 0 if positive else value >= 0)):
        raise ValueError(f"{name} must be a number of seconds {'>' if positive else '>='} 0")


@dataclass(frozen=True)
class LtxSimConfig:
    #: The only key accepted, as ``Authorization: Bearer <api_key>``.
    api_key: str = "sim-ltx-key"
    host: str = "127.0.0.1"
    port: int = 0
    #: Seeds the one random.Random behind job ids, run times, upload tokens and request ids.
    seed: int = 0
    #: Seconds from the 202 to the job's end, drawn uniformly per job; the first fifth of it
    #: ``pending``, the rest ``processing``.
    task_duration: tuple[float, float] = (0.3, 0.8)
    #: Jobs that may run at once, each holding its slot from its 202 until it ends (pending
    #: included); None: unlimited. LTX's default is 2.
    concurrency_slots: int | None = 2
    #: Submits admitted per sliding second; None: unlimited.
    requests_per_second: float | None = None
    #: ``Retry-After`` (seconds) on the rate and concurrency 429s.
    retry_after: str = "1"
    #: After this many committed jobs, every further submit answers 402; None: never.
    billing_after: int | None = None
    #: A prompt containing this is refused by the "safety filters" (422) at submit.
    filtered_marker: str = "[blocked]"
    #: Request bodies above this answer 413 from "the infrastructure" (an HTML page).
    max_body_bytes: int = 10 * MIB
    #: Files above this PUT to an upload URL answer 413.
    max_upload_bytes: int = 64 * MIB
    #: Seconds a job (its status and its video) lives after it ends; then 404.
    result_ttl: float = DAY
    #: Seconds an upload URL accepts its PUT, from ``POST /v1/upload``; then 403.
    upload_url_ttl: float = 3600.0
    #: Seconds an uploaded file stays usable as ``image_uri``, from its PUT.
    upload_file_ttl: float = DAY
    faults: tuple[LtxFaultRule, ...] = ()
    #: Drives job lifecycles, slots, expiry and the rate window; inject a fake one in tests.
    clock: Callable[[], float] = field(default=time.monotonic)
    #: Keep the account (committed jobs) in this JSON-lines file: each job is written before its
    #: submit is answered, and a simulator started on the file takes its jobs back (they go on
    #: by wall-clock time) and listens on its last port if free. None: the account lives as long
    #: as the simulator object. Uploads are not kept.
    state_file: Path | None = None

    def __post_init__(self) -> None:
        low, high = self.task_duration
        if not (math.isfinite(high) and 0 <= low <= high):
            raise ValueError("task_duration must be (low, high) with 0 <= low <= high")
        if self.concurrency_slots is not None and self.concurrency_slots < 0:
            raise ValueError("concurrency_slots must be >= 0 or None")
        rate = self.requests_per_second
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise ValueError("requests_per_second must be > 0 or None")
        if self.billing_after is not None and self.billing_after < 0:
            raise ValueError("billing_after must be >= 0 or None")
        if not self.api_key:
            raise ValueError("api_key must not be empty")
        if not self.filtered_marker:
            raise ValueError("filtered_marker must not be empty")
        if self.max_body_bytes < 0 or self.max_upload_bytes < 0:
            raise ValueError("max_body_bytes and max_upload_bytes must be >= 0")
        _seconds(self.result_ttl, "result_ttl", positive=True)
        _seconds(self.upload_url_ttl, "upload_url_ttl", positive=True)
        _seconds(self.upload_file_ttl, "upload_file_ttl", positive=True)
