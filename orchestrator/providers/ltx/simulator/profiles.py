"""Named fault profiles for the LTX simulator: ``simulate --provider ltx --profile NAME``.

Each profile is data: the fault rules it injects (see :mod:`.faults`) and the account it serves
(slots, a submit rate, credits). The effects are LTX's own: its error types and statuses, a
submit that creates the job and then answers 5xx or nothing (LTX cannot be asked whether it
did), jobs that end ``failed``, a 402 once the credits run out, the 422 of its safety filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from orchestrator.providers.ltx.simulator.config import LtxSimConfig
from orchestrator.providers.ltx.simulator.faults import LtxFaultRule

#: LTX's default account: two generations at once.
_DEFAULT_SLOTS = 2


@dataclass(frozen=True)
class LtxProfile:
    name: str
    description: str
    faults: tuple[LtxFaultRule, ...] = ()
    concurrency_slots: int | None = _DEFAULT_SLOTS
    requests_per_second: float | None = None
    billing_after: int | None = None

    def config(
        self,
        base: LtxSimConfig,
        *,
        concurrency_slots: int | None = None,
        requests_per_second: float | None = None,
        billing_after: int | None = None,
    ) -> LtxSimConfig:
        """``base`` serving this profile: its faults added, and the account's limits the
        profile's unless given here (None: not given)."""
        return replace(
            base,
            faults=(*self.faults, *base.faults),
            concurrency_slots=(
                self.concurrency_slots if concurrency_slots is None else concurrency_slots
            ),
            requests_per_second=(
                self.requests_per_second if requests_per_second is None else requests_per_second
            ),
            billing_after=self.billing_after if billing_after is None else billing_after,
        )


def _error(op: str, status: int, error_type: str, message: str, p: float, *,
           after_commit: bool = False, retry_after: str | None = None) -> LtxFaultRule:
    return LtxFaultRule(
        op=op,
        effect="error_after_commit" if after_commit else "error",
        http_status=status,
        error_type=error_type,
        message=message,
        retry_after=retry_after,
        probability=p,
    )


def _job_failed(error_type: str, message: str, p: float) -> LtxFaultRule:
    return LtxFaultRule(
        op="submit", effect="job_failed", error_type=error_type, message=message, probability=p
    )


_FLAKY = (
    _error("submit", 500, "api_error", "Internal server error", 0.02),
    _error("submit", 503, "service_unavailable", "Service temporarily unavailable", 0.02),
    _error("submit", 529, "overloaded_error", "The service is overloaded", 0.02),
    LtxFaultRule(op="submit", effect="drop_before_commit", probability=0.01),
    _error("submit", 500, "api_error", "Internal server error", 0.02, after_commit=True),
    LtxFaultRule(op="submit", effect="drop_after_commit", probability=0.02),
    _error("status", 500, "api_error", "Internal server error", 0.03),
    _error("status", 503, "service_unavailable", "Service temporarily unavailable", 0.02),
    LtxFaultRule(op="status", effect="drop_before_commit", probability=0.01),
    LtxFaultRule(op="asset", effect="truncate", probability=0.02),
    _error("asset", 503, "service_unavailable", "Service temporarily unavailable", 0.02),
)
_RATE = (
    _error("submit", 429, "rate_limit_error", "Rate limit exceeded", 0.05, retry_after="2"),
    _error("submit", 429, "rate_limit_error", "Rate limit exceeded", 0.05),
)
_FAILURES = (
    _job_failed("api_error", "Generation failed due to an internal error", 0.05),
    _job_failed("content_filtered_error", "Output blocked by safety filters", 0.03),
    _job_failed("invalid_request_error", "Could not process the input image", 0.02),
)

_PROFILES = (
    LtxProfile(
        name="clean",
        description="No faults: every request answers as a healthy LTX account would (two "
        "generations at once; the third submit answers 429 concurrency_limit_error).",
    ),
    LtxProfile(
        name="flaky",
        description=(
            "An unreliable backend. Submits: 500 api_error, 503 and 529 overloaded_error "
            "before the job is created (2% each), dropped connections before (1%), 500 after "
            "the job was created and paid for (2%) and dropped connections after it (2%): "
            "the client cannot know the job exists, so the item is held unresolved. Status "
            "reads: 500 (3%), 503 (2%), dropped (1%). Videos: cut short (2%), 503 (2%)."
        ),
        faults=_FLAKY,
    ),
    LtxProfile(
        name="rate-limited",
        description=(
            "Account limits. At most 2 submits per second (429 rate_limit_error past that) and "
            "2 concurrent generations (429 concurrency_limit_error); on top, submits answer "
            "429 rate_limit_error at random, with Retry-After: 2 (5%) and without (5%). "
            "--concurrency-slots and --requests-per-second set other limits."
        ),
        faults=_RATE,
        requests_per_second=2.0,
    ),
    LtxProfile(
        name="task-failures",
        description=(
            "Jobs that are created (and paid for) but end failed: an internal error (5%, "
            "worth a new attempt), the safety filters on the output (3%, final), an input "
            "image LTX cannot use (2%, final)."
        ),
        faults=_FAILURES,
    ),
    LtxProfile(
        name="billing",
        description="Credits run out: after 20 jobs every submit answers 402 "
        "insufficient_funds_error (the batch stops, exit 3). --billing-after sets another "
        "count.",
        billing_after=20,
    ),
    LtxProfile(
        name="content-filter",
        description=(
            "The safety filters: submits answer 422 content_filtered_error (10%, final, never "
            "retried), beside the prompts marked [blocked], which are always refused."
        ),
        faults=(
            _error("submit", 422, "content_filtered_error",
                   "Prompt blocked by safety filters", 0.10),
        ),
    ),
    LtxProfile(
        name="chaos",
        description=(
            "Everything at once, at lower rates: the flaky backend, the random 429s under 2 "
            "submits per second, and the failed jobs; for rehearsing kills and reruns."
        ),
        faults=(
            *(replace(r, probability=r.probability / 2) for r in _FLAKY),
            *(replace(r, probability=r.probability / 2) for r in _RATE),
            *(replace(r, probability=r.probability / 2) for r in _FAILURES),
        ),
        requests_per_second=2.0,
    ),
)

PROFILES: Mapping[str, LtxProfile] = MappingProxyType({p.name: p for p in _PROFILES})


def profile(name: str) -> LtxProfile:
    """The profile called ``name``; ValueError naming the known ones otherwise."""
    found = PROFILES.get(name)
    if found is None:
        raise ValueError(f"unknown LTX simulator profile {name!r}; known: {', '.join(PROFILES)}")
    return found
