"""Backoff policy as data and the pure function that turns it into a delay.

The delay before retry number ``attempt`` (1 for the first retry) is full jitter
(AWS Architecture Blog, "Exponential Backoff And Jitter")::

    delay = uniform(0, min(max_delay, base_delay * 2 ** (attempt - 1)))

unless the server asked for a wait (Retry-After), in which case that wait is honoured, capped at
``max_retry_after`` so a hostile or broken header cannot park the batch for a day.

Every operation that retries (creates, lookups by external id, polls, downloads) runs the same
loop, :class:`RetryLoop`: it counts the tries, charges failures of the "provider is failing"
kind to the batch's :class:`RetryBudget`, and after each failure says, by the pure
:func:`next_step`, whether to wait (and how long) or to give up (and why). What each operation
does with a verdict (fail its item, leave it unresolved, raise) stays with the operation.
"""

from __future__ import annotations

import email.utils
import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.errors import Category, ErrorInfo

#: Longest server-requested wait we honour (openai-python uses 120 s, ComfyUI 150 s).
MAX_RETRY_AFTER = 120.0
#: Failures that mean "the provider is failing": charged to the retry budget.
BUDGETED = (Category.SERVER, Category.NETWORK, Category.TIMEOUT)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = MAX_RETRY_AFTER


def backoff_delay(
    policy: RetryPolicy,
    attempt: int,
    retry_after: float | None = None,
    rand: Callable[[], float] = lambda: 0.5,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    ``rand`` returns a float in [0, 1); pass ``random.random`` in production and a constant in
    tests. A Retry-After, when given, replaces the jittered delay (capped).
    """
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, policy.max_retry_after)
    exponent = min(max(attempt - 1, 0), 62)  # 2**62 already dwarfs any max_delay
    ceiling = min(policy.max_delay, policy.base_delay * math.pow(2, exponent))
    return rand() * ceiling


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Parse a Retry-After header: delta seconds or an HTTP date. ``now`` is Unix time.

    Returns None when absent or unparseable; never negative.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if math.isnan(seconds) or math.isinf(seconds):
            return None
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - now, 0.0)


def parse_retry_after_ms(value: str | None) -> float | None:
    """Parse the non-standard ``retry-after-ms`` header into seconds."""
    if value is None:
        return None
    try:
        ms = float(value.strip())
    except ValueError:
        return None
    if math.isnan(ms) or math.isinf(ms):
        return None
    return max(ms / 1000.0, 0.0)


class RetryBudget:
    """Retry throttling (gRPC A6; the AWS SDK's retry quota is the same idea).

    Every failed request of the "provider is failing" kind (server errors, network errors,
    timeouts) costs ``failure_cost`` tokens; every successful request refunds ``refund``. A retry
    is allowed only while more than half of ``capacity`` remains. A provider that fails
    everything therefore gets about ``capacity / 2`` retries in total, then each item fails
    fast (retryable: a later rerun picks them up) instead of the batch storming the provider.
    Rate limits are not charged: backoff, Retry-After and adaptive concurrency handle those.
    """

    def __init__(self, capacity: float = 100.0, *, failure_cost: float = 1.0, refund: float = 0.1):
        self.capacity = capacity
        self.tokens = capacity
        self._cost = failure_cost
        self._refund = refund
        self.denied = 0

    def on_failure(self) -> None:
        self.tokens = max(0.0, self.tokens - self._cost)

    def charge(self, info: ErrorInfo) -> None:
        """A failed request: paid for when it is of the kind the budget meters (BUDGETED)."""
        if info.category in BUDGETED:
            self.on_failure()

    def on_success(self) -> None:
        self.tokens = min(self.capacity, self.tokens + self._refund)

    def allow(self) -> bool:
        if self.tokens > self.capacity / 2:
            return True
        self.denied += 1
        return False


class GiveUp(enum.StrEnum):
    """Why a retry loop stops trying."""

    #: the failure will not change by trying again (a refusal, a policy failure)
    FINAL = "final"
    #: ``max_attempts`` tries were made
    EXHAUSTED = "exhausted"
    #: the retry budget is spent: the provider keeps failing
    DENIED = "denied"


@dataclass(frozen=True)
class Retry:
    """Wait ``delay`` seconds, then try again."""

    delay: float


def next_step(
    policy: RetryPolicy,
    tries: int,
    info: ErrorInfo,
    retry_after: float | None,
    rand: Callable[[], float],
    *,
    budget: RetryBudget | None = None,
    may_succeed: bool | None = None,
) -> Retry | GiveUp:
    """After the ``tries``-th failed try (1-based), ending with ``info``: try again after a
    delay, or give up and why. ``may_succeed`` overrides ``info.retryable`` (a create proven
    absent may be sent again whatever its answer said). The budget is asked only when the
    failure is of the kind it meters, and only once nothing else stops the loop."""
    if not (info.retryable if may_succeed is None else may_succeed):
        return GiveUp.FINAL
    if tries >= policy.max_attempts:
        return GiveUp.EXHAUSTED
    if budget is not None and info.category in BUDGETED and not budget.allow():
        return GiveUp.DENIED
    return Retry(backoff_delay(policy, tries, retry_after, rand))


class RetryLoop:
    """The state of one operation's retries (see the module docstring).

    ``charge`` a failure when it happens (the budget sees failures in the order they come,
    whatever the operation then does first), ``failed`` when the operation would try again,
    ``succeeded`` when it got its answer.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        rand: Callable[[], float],
        budget: RetryBudget | None = None,
    ) -> None:
        self.policy = policy
        self.tries = 0
        self._rand = rand
        self._budget = budget

    def charge(self, info: ErrorInfo) -> None:
        """A failed request: the budget pays for it when it is of the kind it meters."""
        if self._budget is not None:
            self._budget.charge(info)

    def succeeded(self) -> None:
        """An answered request: the budget gets its refund."""
        if self._budget is not None:
            self._budget.on_success()

    def failed(
        self,
        info: ErrorInfo,
        retry_after: float | None = None,
        *,
        may_succeed: bool | None = None,
    ) -> Retry | GiveUp:
        """One more failed try: what to do next (see :func:`next_step`)."""
        self.tries += 1
        return next_step(
            self.policy,
            self.tries,
            info,
            retry_after,
            self._rand,
            budget=self._budget,
            may_succeed=may_succeed,
        )
