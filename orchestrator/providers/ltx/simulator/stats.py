"""What the LTX simulator saw, as a frozen snapshot: request counts, the jobs the account paid
for, how submits were answered, which faults fired. ``to_dict()`` is what ``GET /_sim/stats``
returns and ``from_dict()`` reads it back (for out-of-process users)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class LtxSimStats:
    #: Every ``POST /v2/<endpoint>``, whatever its answer (a 413 included).
    submit_requests: int = 0
    #: Committed submits: a job exists and was paid for, answered or not.
    jobs_created: int = 0
    #: Every ``GET /v2/<endpoint>/<id>``.
    status_requests: int = 0
    #: Every ``POST /v1/upload``.
    upload_requests: int = 0
    #: Every ``PUT /uploads/<token>``.
    upload_puts: int = 0
    #: Every ``GET /assets/...``.
    asset_requests: int = 0
    #: Most slots held at once (right after a commit).
    peak_slots: int = 0
    #: Slots held by unfinished jobs at the time of the snapshot.
    slots_in_use: int = 0
    #: One row per committed job, in creation order: id, endpoint, model, prompt, duration,
    #: resolution, fps, status (pending, processing, completed, failed), expired, usd.
    jobs: tuple[dict[str, Any], ...] = ()
    #: Committed jobs per prompt: a value above 1 is a prompt paid for more than once.
    by_prompt: dict[str, int] = field(default_factory=dict)
    #: How submits were answered: ``"202"``, ``"<status> <error type>"`` or ``"dropped"``.
    answers: dict[str, int] = field(default_factory=dict)
    #: How asset requests were answered: ``"200"``, ``"404"``, ..., ``"truncated"``,
    #: ``"wrong_type"``, ``"dropped"``.
    asset_answers: dict[str, int] = field(default_factory=dict)
    #: How often injected faults fired, by ``LtxFaultRule.label``.
    faults_fired: dict[str, int] = field(default_factory=dict)
    #: USD the committed jobs cost at list price (duration x price per second; 0 where the
    #: catalogue publishes no price).
    billed_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if spec.name == "jobs":
                value = [dict(job) for job in value]
            elif isinstance(value, dict):
                value = dict(value)
            data[spec.name] = value
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LtxSimStats:
        values: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name not in data:
                continue
            value = data[spec.name]
            if spec.name == "jobs":
                value = tuple(dict(job) for job in value)
            elif spec.name == "billed_usd":
                value = float(value)
            elif isinstance(value, dict):
                value = {str(k): int(v) for k, v in value.items()}
            else:
                value = int(value)
            values[spec.name] = value
        return cls(**values)
