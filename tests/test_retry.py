"""Backoff delays are a pure function of policy, attempt, Retry-After and a random draw."""

from __future__ import annotations

import email.utils

import pytest

from orchestrator.retry import RetryPolicy, backoff_delay, parse_retry_after, parse_retry_after_ms

POLICY = RetryPolicy(max_attempts=5, base_delay=1.0, max_delay=60.0)


@pytest.mark.parametrize(
    ("attempt", "rand", "expected"),
    [
        (1, 0.999, 0.999),  # first retry: uniform(0, base)
        (2, 0.5, 1.0),  # uniform(0, 2)
        (3, 0.5, 2.0),  # uniform(0, 4)
        (7, 1.0, 60.0),  # 64 capped at max_delay
        (500, 1.0, 60.0),  # huge attempt numbers do not overflow
        (3, 0.0, 0.0),  # full jitter reaches zero
    ],
)
def test_full_jitter_exponential(attempt: int, rand: float, expected: float) -> None:
    assert backoff_delay(POLICY, attempt, None, lambda: rand) == pytest.approx(expected)


def test_retry_after_replaces_jitter_and_is_capped() -> None:
    assert backoff_delay(POLICY, 1, 7.5, lambda: 0.0) == 7.5
    assert backoff_delay(POLICY, 1, 10_000, lambda: 0.0) == POLICY.max_retry_after


def test_parse_retry_after_seconds_and_http_date() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after("3", now) == 3.0
    assert parse_retry_after(" 2.5 ", now) == 2.5
    assert parse_retry_after("-4", now) == 0.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now) == pytest.approx(30.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "inf", "Mon, 99 Foo 2020"])
def test_parse_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, 0.0) is None


def test_parse_retry_after_ms() -> None:
    assert parse_retry_after_ms("1500") == 1.5
    assert parse_retry_after_ms("x") is None
    assert parse_retry_after_ms(None) is None


def test_retry_budget_throttles_a_failing_provider_and_recovers() -> None:
    from orchestrator.retry import RetryBudget

    budget = RetryBudget(10, refund=0.5)
    allowed = 0
    for _ in range(100):  # everything fails
        budget.on_failure()
        if budget.allow():
            allowed += 1
    assert allowed == 4  # tokens 9..6 allow; from 5 on (not > half) retries stop
    assert budget.denied == 96
    assert budget.tokens == 0
    for _ in range(10):
        budget.on_success()
    assert not budget.allow()  # 5 tokens: exactly half is not enough
    budget.on_success()
    assert budget.allow()  # successes earn retries back
