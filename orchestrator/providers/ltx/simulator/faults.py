"""Fault injection for the LTX simulator: rules as data, and a thread-safe book that fires them.

A rule applies to requests of its ``op`` whose prompt contains ``match`` (``None`` matches every
request, including one without a prompt), and fires on an applicable request with
``probability``, at most ``times`` times in total. Each rule draws from its own
``random.Random``, seeded from the simulator's seed and the rule's position, and only for
requests it applies to: the same seed and the same requests give the same faults.

Ops:

- ``submit``: ``POST /v2/text-to-video`` and ``POST /v2/image-to-video``, matched against the
  prompt of the body;
- ``status``: ``GET /v2/{endpoint}/{id}``, matched against the prompt of the job it names;
- ``upload``: ``POST /v1/upload`` and the ``PUT`` of the file to its upload URL (no prompt);
- ``asset``: ``GET /assets/<id>.mp4``, matched against the prompt of the job that made it.

Effects:

- ``delay`` (any op): every applicable delay rule fires and its seconds are waited, then the
  request is handled as usual;
- ``error`` (any op): answered with the rule's HTTP status, error type and message (and
  ``Retry-After`` when ``retry_after`` is set); on a submit nothing is created;
- ``drop_before_commit`` (any op): the connection closes without an answer;
- ``error_after_commit`` / ``drop_after_commit`` (submit): the job is created and paid for, then
  the answer is the rule's error, or no answer at all: the client cannot know the job exists;
- ``job_failed`` (submit): the job is created and ends ``failed`` with the rule's error type and
  message;
- ``truncate`` / ``wrong_type`` (asset): the real ``Content-Length`` with half the body, then the
  connection closes; or a 200 HTML page instead of the video.

The submit effects that need a job (``job_failed``, ``error_after_commit``,
``drop_after_commit``) are drawn only when a job is really committed, so a ``times=1`` rule is not
used up by a submit that validation or a limit refused.
"""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

OPS: Final = frozenset({"submit", "status", "upload", "asset"})
PRE_COMMIT_EFFECTS: Final = frozenset({"error", "drop_before_commit"})
OUTCOME_EFFECTS: Final = frozenset({"job_failed"})
AFTER_COMMIT_EFFECTS: Final = frozenset({"error_after_commit", "drop_after_commit"})
ASSET_BODY_EFFECTS: Final = frozenset({"truncate", "wrong_type"})
EFFECTS: Final = (
    PRE_COMMIT_EFFECTS | OUTCOME_EFFECTS | AFTER_COMMIT_EFFECTS | ASSET_BODY_EFFECTS | {"delay"}
)
_SUBMIT_ONLY: Final = OUTCOME_EFFECTS | AFTER_COMMIT_EFFECTS
_ERRORS: Final = frozenset({"error", "error_after_commit", "job_failed"})


@dataclass(frozen=True)
class LtxFaultRule:
    op: str
    effect: str
    #: Fires only on requests whose prompt contains this; None: on every request of the op.
    match: str | None = None
    #: Fires at most this many times in total; None: without limit.
    times: int | None = None
    #: The answer of ``error`` / ``error_after_commit``; for ``job_failed`` only the type and
    #: message count (they become the job's ``error``).
    http_status: int = 500
    error_type: str = "api_error"
    message: str = "Internal server error"
    #: ``Retry-After`` sent verbatim with an error answer.
    retry_after: str | None = None
    #: Seconds a ``delay`` rule waits.
    delay: float = 0.0
    #: Chance (0..1) that the rule fires on an applicable request; drawn from a seeded RNG.
    probability: float = 1.0

    def __post_init__(self) -> None:
        # Fail where the rule is written: a misspelt rule that never fires would make a fault
        # test pass for the wrong reason.
        if self.op not in OPS:
            raise ValueError(f"LtxFaultRule.op must be one of {sorted(OPS)}, got {self.op!r}")
        if self.effect not in EFFECTS:
            raise ValueError(
                f"LtxFaultRule.effect must be one of {sorted(EFFECTS)}, got {self.effect!r}"
            )
        if self.effect in _SUBMIT_ONLY and self.op != "submit":
            raise ValueError(f"LtxFaultRule effect {self.effect!r} only applies to op 'submit'")
        if self.effect in ASSET_BODY_EFFECTS and self.op != "asset":
            raise ValueError(f"LtxFaultRule effect {self.effect!r} only applies to op 'asset'")
        if self.times is not None and self.times < 0:
            raise ValueError("LtxFaultRule.times must be >= 0 or None")
        if not (math.isfinite(self.delay) and self.delay >= 0):
            raise ValueError("LtxFaultRule.delay must be a number of seconds >= 0")
        if not (math.isfinite(self.probability) and 0 <= self.probability <= 1):
            raise ValueError(
                f"LtxFaultRule.probability must be from 0 to 1, got {self.probability}"
            )
        if not 400 <= self.http_status <= 599:
            raise ValueError(f"LtxFaultRule.http_status must be 4xx or 5xx, got {self.http_status}")
        if not self.error_type:
            raise ValueError("LtxFaultRule.error_type must not be empty")

    @property
    def label(self) -> str:
        """A short name of what the rule does (``submit error 503/service_unavailable``): what
        ``LtxSimStats.faults_fired`` counts by."""
        label = f"{self.op} {self.effect}"
        if self.effect == "job_failed":
            label += f" {self.error_type}"
        elif self.effect in _ERRORS:
            label += f" {self.http_status}/{self.error_type}"
        elif self.effect == "delay":
            label += f" {self.delay:g}s"
        return label

    def matches(self, op: str, prompt: str | None) -> bool:
        if op != self.op:
            return False
        return self.match is None or (prompt is not None and self.match in prompt)


class LtxFaultBook:
    """The active rules and how often each fired; safe to use from many handler threads."""

    def __init__(self, rules: Iterable[LtxFaultRule] = (), *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._rules: list[LtxFaultRule] = []
        self._fired: list[int] = []
        self._rngs: list[random.Random] = []
        for rule in rules:
            self._append(rule)

    def add(self, rule: LtxFaultRule) -> None:
        with self._lock:
            self._append(rule)

    def take(self, op: str, prompt: str | None, effects: frozenset[str]) -> LtxFaultRule | None:
        """Fire and return the first applicable rule with one of ``effects``, if any."""
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

    def fired_by_label(self) -> dict[str, int]:
        """How often rules fired, summed by :attr:`LtxFaultRule.label`; idle rules omitted."""
        counts: dict[str, int] = {}
        with self._lock:
            for rule, fired in zip(self._rules, self._fired, strict=True):
                if fired:
                    counts[rule.label] = counts.get(rule.label, 0) + fired
        return counts

    # The methods below run with self._lock held.

    def _append(self, rule: LtxFaultRule) -> None:
        # One stream per rule (a string seed hashes the same in every process).
        self._rngs.append(random.Random(f"ltx-simulator-fault:{self._seed}:{len(self._rules)}"))
        self._rules.append(rule)
        self._fired.append(0)

    def _try_fire(self, index: int, op: str, prompt: str | None) -> bool:
        rule = self._rules[index]
        if not rule.matches(op, prompt):
            return False
        if rule.times is not None and self._fired[index] >= rule.times:
            return False
        # 0 and 1 draw nothing: certain rules leave the streams as they were.
        if rule.probability < 1 and (
            rule.probability == 0 or self._rngs[index].random() >= rule.probability
        ):
            return False
        self._fired[index] += 1
        return True
