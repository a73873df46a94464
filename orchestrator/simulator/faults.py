"""Fault injection: rules as data, and a thread-safe book that decides which rule fires.

A rule fires for requests of its ``op`` whose prompt contains ``match`` (``None`` matches every
request, including one whose prompt is unknown), at most ``times`` times. Effects fall in three
groups that combine on one create:

- ``delay``: every matching delay rule fires and its delay is added, then handling goes on;
- before commit, ``error`` / ``drop_before_commit``: the first matching rule answers, nothing is
  created;
- at commit, ``task_failed`` / ``fewer_assets`` decide how the task ends, and
  ``error_after_commit`` / ``drop_after_commit`` how the create is answered. They are picked only
  when a task is really committed, so a ``times=1`` rule is not used up by a create that a limit or
  validation rejected.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

OPS = frozenset({"create", "query", "list"})
PRE_COMMIT_EFFECTS = frozenset({"error", "drop_before_commit"})
OUTCOME_EFFECTS = frozenset({"task_failed", "fewer_assets"})
AFTER_COMMIT_EFFECTS = frozenset({"error_after_commit", "drop_after_commit"})
EFFECTS = PRE_COMMIT_EFFECTS | OUTCOME_EFFECTS | AFTER_COMMIT_EFFECTS | {"delay"}
_CREATE_ONLY_EFFECTS = OUTCOME_EFFECTS | AFTER_COMMIT_EFFECTS


@dataclass(frozen=True)
class FaultRule:
    op: str
    effect: str
    match: str | None = None
    times: int | None = None
    http_status: int = 500
    code: int = 5000
    message: str = "internal error"
    retry_after: str | None = None
    delay: float = 0.0
    assets: int = 0

    def __post_init__(self) -> None:
        # Fail where the rule is written: a misspelt rule that never fires would make a fault
        # test pass for the wrong reason.
        if self.op not in OPS:
            raise ValueError(f"FaultRule.op must be one of {sorted(OPS)}, got {self.op!r}")
        if self.effect not in EFFECTS:
            raise ValueError(
                f"FaultRule.effect must be one of {sorted(EFFECTS)}, got {self.effect!r}"
            )
        if self.effect in _CREATE_ONLY_EFFECTS and self.op != "create":
            raise ValueError(f"FaultRule effect {self.effect!r} only applies to op 'create'")
        if self.times is not None and self.times < 0:
            raise ValueError("FaultRule.times must be >= 0 or None")
        if self.delay < 0 or self.assets < 0:
            raise ValueError("FaultRule.delay and FaultRule.assets must be >= 0")

    def matches(self, op: str, prompt: str | None) -> bool:
        if op != self.op:
            return False
        return self.match is None or (prompt is not None and self.match in prompt)


class FaultBook:
    """The active rules and how often each has fired; safe to use from many handler threads."""

    def __init__(self, rules: Iterable[FaultRule] = ()) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = list(rules)
        self._fired: list[int] = [0] * len(self._rules)

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)
            self._fired.append(0)

    def take(self, op: str, prompt: str | None, effects: frozenset[str]) -> FaultRule | None:
        """Fire and return the first rule with one of ``effects`` that applies, if any."""
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.effect in effects and self._try_fire(index, op, prompt):
                    return rule
        return None

    def total_delay(self, op: str, prompt: str | None) -> float:
        """Fire every applicable delay rule; return the seconds to wait before handling."""
        delay = 0.0
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.effect == "delay" and self._try_fire(index, op, prompt):
                    delay += rule.delay
        return delay

    def fired(self) -> tuple[int, ...]:
        with self._lock:
            return tuple(self._fired)

    def _try_fire(self, index: int, op: str, prompt: str | None) -> bool:
        rule = self._rules[index]
        if not rule.matches(op, prompt):
            return False
        if rule.times is not None and self._fired[index] >= rule.times:
            return False
        self._fired[index] += 1
        return True
