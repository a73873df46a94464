"""Named fault profiles: what ``python -m orchestrator simulate --profile NAME`` serves.

A :class:`Profile` is data: SimConfig settings plus a tuple of :class:`FaultRule`. Probabilistic
rules draw from RNGs seeded by ``seed``, so a profile with the same seed and the same sequence of
requests answers the same way (concurrent clients make the sequence, and so the answers, vary).

Slow replies are delay rules that outlast the client's HTTP timeout (``provider.timeout`` in the
manifest, 60 s by default): each profile states its delay, and ``make_config(slow_reply=...)``
(``--slow-reply`` on the command line) sets it to suit another timeout. A slow create comes in
two kinds: answered late after its task was committed (``delay_after_commit``: a lookup after the
timeout finds the task), or held before the commit (``delay``: the task appears only when the
delay ends, ``slow_reply - timeout`` seconds after the client gave up, so a lookup made sooner
finds nothing and a resubmission pays twice; no client can rule that out without waiting).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.faults import TASK_FAILURE_MESSAGES, FaultRule

__all__ = [
    "CLOCK_SKEW_TRIPPING_NBF",
    "DELAY_EFFECTS",
    "PROFILES",
    "TASK_FAILURE_MESSAGES",
    "Profile",
    "make_config",
    "profile_names",
]

#: A skew that makes every fresh JWT "not yet valid" (401/1003). The orchestrator's JwtAuth sets
#: ``nbf = int(now - 5)``, so the server rejects its tokens when its clock is more than 5-6 s
#: behind the client's: any skew of -7 s or below trips nbf every time, -5 s or above never does,
#: and between the two it depends on the sub-second part of the mint time.
CLOCK_SKEW_TRIPPING_NBF = -30.0

#: Slow replies in the profiles meant for people rehearsing with the default manifest
#: (provider.timeout 60 s): a little longer than that.
_SLOW_FOR_DEFAULT_TIMEOUT = 65.0
#: Slow replies in "chaos", meant for test runs with provider.timeout 1 s.
_SLOW_FOR_TESTS = 2.0
#: The effects whose ``delay`` is a profile's slow reply.
DELAY_EFFECTS = frozenset({"delay", "delay_after_commit"})


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    faults: tuple[FaultRule, ...] = ()
    #: SimConfig overrides; None keeps SimConfig's default.
    task_duration: tuple[float, float] | None = None
    concurrency_slots: int | None = None
    requests_per_second: float | None = None
    billing_after: int | None = None
    clock_skew: float = 0.0
    #: Seconds every delay rule of the profile waits (None: the profile has no slow replies).
    slow_reply: float | None = None

    def __post_init__(self) -> None:
        delays = {rule.delay for rule in self.faults if rule.effect in DELAY_EFFECTS}
        if delays and delays != {self.slow_reply}:
            raise ValueError(f"profile {self.name!r}: delay rules must all wait slow_reply")
        if not delays and self.slow_reply is not None:
            raise ValueError(f"profile {self.name!r}: slow_reply set without delay rules")

    def config(
        self,
        *,
        seed: int,
        port: int = 0,
        task_duration: tuple[float, float] | None = None,
        slow_reply: float | None = None,
        concurrency_slots: int | None = None,
        query_by_external_id: bool = True,
        billing_after: int | None = None,
        read_lag: float = 0.0,
        extra_models: tuple[str, ...] = (),
        resource_packs: bool = True,
        image_concurrency_slots: int | None = None,
    ) -> SimConfig:
        """The SimConfig serving this profile; keyword arguments override the profile's."""
        faults = self.faults
        if slow_reply is not None:
            if slow_reply < 0:
                raise ValueError("slow_reply must be >= 0")
            faults = tuple(
                replace(rule, delay=slow_reply) if rule.effect in DELAY_EFFECTS else rule
                for rule in faults
            )
        duration = task_duration or self.task_duration
        return SimConfig(
            port=port,
            seed=seed,
            task_duration=duration if duration is not None else SimConfig.task_duration,
            concurrency_slots=(
                concurrency_slots if concurrency_slots is not None else self.concurrency_slots
            ),
            requests_per_second=self.requests_per_second,
            billing_after=billing_after if billing_after is not None else self.billing_after,
            clock_skew=self.clock_skew,
            faults=faults,
            query_by_external_id=query_by_external_id,
            read_lag=read_lag,
            extra_models=extra_models,
            resource_packs=resource_packs,
            image_concurrency_slots=image_concurrency_slots,
        )


def profile_names() -> tuple[str, ...]:
    return tuple(PROFILES)


def make_config(
    profile_name: str,
    *,
    seed: int,
    port: int = 0,
    task_duration: tuple[float, float] | None = None,
    slow_reply: float | None = None,
    concurrency_slots: int | None = None,
    query_by_external_id: bool = True,
    billing_after: int | None = None,
    read_lag: float = 0.0,
    extra_models: tuple[str, ...] = (),
    resource_packs: bool = True,
    image_concurrency_slots: int | None = None,
) -> SimConfig:
    """The SimConfig for a named profile. Unknown names raise ValueError listing the known ones."""
    profile = PROFILES.get(profile_name)
    if profile is None:
        raise ValueError(
            f"unknown simulator profile {profile_name!r}; known: {', '.join(PROFILES)}"
        )
    return profile.config(
        seed=seed,
        port=port,
        task_duration=task_duration,
        slow_reply=slow_reply,
        concurrency_slots=concurrency_slots,
        query_by_external_id=query_by_external_id,
        billing_after=billing_after,
        read_lag=read_lag,
        extra_models=extra_models,
        resource_packs=resource_packs,
        image_concurrency_slots=image_concurrency_slots,
    )


# --- rule builders -------------------------------------------------------------------------

_SERVER_ERRORS = {
    500: (5000, "internal error"),
    503: (5001, "service unavailable: under maintenance"),
    504: (5002, "internal timeout: the server is busy"),
}


def _server_error(
    op: str, status: int, p: float, *, after_commit: bool = False, retry_after: str | None = None
) -> FaultRule:
    code, message = _SERVER_ERRORS[status]
    effect = "error_after_commit" if after_commit else "error"
    return FaultRule(
        op=op,
        effect=effect,
        http_status=status,
        code=code,
        message=message,
        probability=p,
        retry_after=retry_after,
    )


def _rate_limited(
    p: float, *, retry_after: str | None = None, retry_after_date: float | None = None
) -> FaultRule:
    return FaultRule(
        op="create",
        effect="error",
        http_status=429,
        code=1302,
        message="request rate too high",
        retry_after=retry_after,
        retry_after_date=retry_after_date,
        probability=p,
    )


def _slots_exceeded(p: float) -> FaultRule:
    return FaultRule(
        op="create",
        effect="error",
        http_status=429,
        code=1303,
        message="parallel task over resource pack limit",
        probability=p,
    )


def _expired_token(op: str, p: float) -> FaultRule:
    return FaultRule(
        op=op,
        effect="error",
        http_status=401,
        code=1004,
        message="token has expired",
        probability=p,
    )


def _task_failures(p: float) -> tuple[FaultRule, ...]:
    return tuple(
        FaultRule(op="create", effect="task_failed", message=message, probability=p)
        for message in TASK_FAILURE_MESSAGES.values()
    )


def _short_results(fewer: float, zero: float) -> tuple[FaultRule, ...]:
    # assets=1 shows on image tasks with n > 1 (a video has one asset); assets=0 on any task.
    return (
        FaultRule(op="create", effect="fewer_assets", assets=1, probability=fewer),
        FaultRule(op="create", effect="fewer_assets", assets=0, probability=zero),
    )


def _slow(op: str, p: float, seconds: float, *, after_commit: bool = False) -> FaultRule:
    effect = "delay_after_commit" if after_commit else "delay"
    return FaultRule(op=op, effect=effect, delay=seconds, probability=p)


# --- the profiles --------------------------------------------------------------------------

_FAILURE_KINDS = ", ".join(TASK_FAILURE_MESSAGES)

_PROFILES = (
    Profile(
        name="clean",
        description="No faults, no limits: every request answers as a healthy Kling would.",
    ),
    Profile(
        name="flaky",
        description=(
            "An unreliable network and backend. Creates: 500/503/504 before the task is "
            "committed (2% each), 500/503/504 after it is committed (2.5% each), connections "
            "dropped after commit (5%) and before (1%), slow replies after commit (1%) and "
            "before it (1%: the task appears when the delay ends). Queries: "
            "500/503/504 (2% each), dropped (1%), slow (1%). Lists: 500 (3%). Slow replies "
            f"wait {_SLOW_FOR_DEFAULT_TIMEOUT:g} s, longer than the default provider.timeout "
            "(60 s); use --slow-reply to beat another timeout."
        ),
        faults=(
            _server_error("create", 500, 0.02),
            _server_error("create", 503, 0.02),
            _server_error("create", 504, 0.02),
            FaultRule(op="create", effect="drop_before_commit", probability=0.01),
            _server_error("create", 500, 0.025, after_commit=True),
            _server_error("create", 503, 0.025, after_commit=True),
            _server_error("create", 504, 0.025, after_commit=True),
            FaultRule(op="create", effect="drop_after_commit", probability=0.05),
            _slow("create", 0.01, _SLOW_FOR_DEFAULT_TIMEOUT),
            _slow("create", 0.01, _SLOW_FOR_DEFAULT_TIMEOUT, after_commit=True),
            _server_error("query", 500, 0.02),
            _server_error("query", 503, 0.02),
            _server_error("query", 504, 0.02),
            FaultRule(op="query", effect="drop_before_commit", probability=0.01),
            _slow("query", 0.01, _SLOW_FOR_DEFAULT_TIMEOUT),
            _server_error("list", 500, 0.03),
        ),
        slow_reply=_SLOW_FOR_DEFAULT_TIMEOUT,
    ),
    Profile(
        name="rate-limited",
        description=(
            "Account limits. At most 2 creates per second (429/1302 without Retry-After past "
            "that) and 5 concurrency slots (429/1303 past that; image tasks hold n slots). On "
            "top, creates answer 429/1302 at random: with Retry-After: 2 (5%), with an "
            "HTTP-date 2 s ahead (5%), without Retry-After (5%). --concurrency-slots sets "
            "another slot limit."
        ),
        faults=(
            _rate_limited(0.05, retry_after="2"),
            _rate_limited(0.05, retry_after_date=2.0),
            _rate_limited(0.05),
        ),
        concurrency_slots=5,
        requests_per_second=2.0,
    ),
    Profile(
        name="task-failures",
        description=(
            "Tasks that are created but end badly. Each kind of failure message "
            f"({_FAILURE_KINDS}) ends 3% of the tasks as failed (HTTP 200, task_status "
            "failed, the reason in task_status_msg); 5% succeed with one asset only (image "
            "tasks with n > 1) and 4% with no asset at all."
        ),
        faults=(*_task_failures(0.03), *_short_results(0.05, 0.04)),
    ),
    Profile(
        name="billing",
        description=(
            "The resource pack runs out: after 20 committed tasks (--billing-after sets "
            "another count, for any profile) every create answers 429/1102 (the batch must "
            "stop, not retry). Queries keep working."
        ),
        billing_after=20,
    ),
    Profile(
        name="auth",
        description=(
            "Tokens rejected as expired: 401/1004 on 5% of creates, queries and lists (a JWT "
            "client mints a new token and resends once, and that resend is never refused "
            "again: a fresh token cannot have expired; meant for AK/SK credentials, since an "
            "API key cannot be renewed and a client stops on the first refusal). For "
            "the clock-skew variant use the 'clock-skew' profile: the server's clock "
            f"{-CLOCK_SKEW_TRIPPING_NBF:g} s behind the client's, so a fresh token's "
            "nbf (now - 5 s) lies in the server's future and every JWT gets 401/1003."
        ),
        faults=(
            _expired_token("create", 0.05),
            _expired_token("query", 0.05),
            _expired_token("list", 0.05),
        ),
    ),
    Profile(
        name="clock-skew",
        description=(
            f"The server's clock runs {-CLOCK_SKEW_TRIPPING_NBF:g} s behind the client's "
            "(SimConfig.clock_skew = "
            f"{CLOCK_SKEW_TRIPPING_NBF:g}): every JWT minted with nbf = now - 5 s is "
            "rejected with 401/1003, a fresh one too. Any skew of -7 s or less does it; -5 s "
            "or more never does. The plain API key has no nbf and still works."
        ),
        clock_skew=CLOCK_SKEW_TRIPPING_NBF,
    ),
    Profile(
        name="chaos",
        description=(
            "Every per-request fault at a low rate, tasks of 0.1-0.3 s, no billing stop: a "
            "batch of a few hundred items with retries should succeed for most items. "
            "Creates: 500/503/504 before commit and after (1% each), dropped before "
            "(0.5%) and after commit (1%), 429/1302 with Retry-After seconds, with an "
            "HTTP-date and without (1% each, 1 s), 429/1303 (1%), 401/1004 (1%), slow replies "
            f"(1%), task failures ({_FAILURE_KINDS}: 0.5% each), one asset (1%) or none "
            "(0.5%). Queries: 500/503/504 (1% each), dropped (0.5%), 401/1004 (0.5%), slow "
            "(0.5%). Lists: 500 (1%). The 503s carry Retry-After: 1 (without it a client may "
            "wait long for maintenance). Slow replies wait "
            f"{_SLOW_FOR_TESTS:g} s: run with provider.timeout below that (tests use 1 s). Slow "
            "creates are answered late after the commit, so a client that looks the task up "
            "after its timeout can avoid paying twice; the held-before-commit kind is in "
            "'flaky'."
        ),
        faults=(
            _expired_token("create", 0.01),
            _rate_limited(0.01, retry_after="1"),
            _rate_limited(0.01, retry_after_date=1.0),
            _rate_limited(0.01),
            _slots_exceeded(0.01),
            _server_error("create", 500, 0.01),
            _server_error("create", 503, 0.01, retry_after="1"),
            _server_error("create", 504, 0.01),
            FaultRule(op="create", effect="drop_before_commit", probability=0.005),
            *_task_failures(0.005),
            *_short_results(0.01, 0.005),
            _server_error("create", 500, 0.01, after_commit=True),
            _server_error("create", 503, 0.01, after_commit=True, retry_after="1"),
            _server_error("create", 504, 0.01, after_commit=True),
            FaultRule(op="create", effect="drop_after_commit", probability=0.01),
            _slow("create", 0.01, _SLOW_FOR_TESTS, after_commit=True),
            _slow("query", 0.005, _SLOW_FOR_TESTS),
            _expired_token("query", 0.005),
            _server_error("query", 500, 0.01),
            _server_error("query", 503, 0.01, retry_after="1"),
            _server_error("query", 504, 0.01),
            FaultRule(op="query", effect="drop_before_commit", probability=0.005),
            _server_error("list", 500, 0.01),
        ),
        task_duration=(0.1, 0.3),
        slow_reply=_SLOW_FOR_TESTS,
    ),
)

#: Every profile by name, in the order ``--list`` shows them.
PROFILES: Mapping[str, Profile] = MappingProxyType({p.name: p for p in _PROFILES})
