"""Fault injection: rules as data, and a thread-safe book that decides which rule fires.

A rule applies to requests of its ``op`` whose prompt contains ``match`` (``None`` matches every
request, including one whose prompt is unknown; a query is matched against its task's prompt, a
list has none), and fires on an applicable request with ``probability``, at most ``times`` times
in total. The draws come from one ``random.Random`` per rule, seeded from the simulator's seed and
the rule's position, and are made only for applicable requests: the same seed and the same
sequence of requests give the same faults, whatever the task ids or other rules drew. Effects
fall in three groups that combine on one create:

- ``delay``: every matching delay rule fires and its delay is added, then handling goes on;
- before commit, ``error`` / ``drop_before_commit``: the first matching rule answers, nothing is
  created;
- at commit, ``task_failed`` / ``fewer_assets`` decide how the task ends, and
  ``error_after_commit`` / ``drop_after_commit`` / ``delay_after_commit`` how the create is
  answered (the last: a success sent ``delay`` seconds late, for a task that already exists; a
  ``delay`` rule on a create, by contrast, commits only once it has waited). They are picked only
  when a task is really committed, so a ``times=1`` rule is not used up by a create that a limit or
  validation rejected.

Ops name what a request does, on either API: ``create`` (a legacy create or an API 2.0 one),
``query`` (a legacy query of one task, or an API 2.0 batch query ``GET /tasks``, matched against
the prompts of the tasks it names, one per line), ``list`` (a legacy list page, or an API 2.0
time-window page ``POST /tasks``), ``account`` (``GET /account/costs``) and ``asset``.

Op ``asset`` covers downloads of generated files (``GET /assets/...``), matched against the
prompt of the task that made the file. Besides ``delay``, ``error`` (e.g. 500/503, or 403 as a
hotlink refusal) and ``drop_before_commit`` (the connection closes without an answer), two effects
apply to assets only: ``truncate`` sends the real ``Content-Length`` but only half the body, then
closes the connection; ``wrong_type`` answers 200 with an HTML page (``text/html``), what a CDN's
hotlink protection or a captive portal serves instead of the file.

Errors are answered with the rule's HTTP status, code and message, plus ``Retry-After`` when the
rule sets ``retry_after`` (sent verbatim: seconds or a date) or ``retry_after_date`` (an HTTP-date
that many seconds after the reply, computed when the reply is sent). ``error`` applies to every
op, so a 401/1004 rule is how "token rejected as expired" is injected (a JWT client mints a new
token and resends once).
"""

from __future__ import annotations

import email.utils
import math
import random
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

OPS = frozenset({"create", "query", "list", "account", "asset"})
PRE_COMMIT_EFFECTS = frozenset({"error", "drop_before_commit"})
OUTCOME_EFFECTS = frozenset({"task_failed", "fewer_assets"})
AFTER_COMMIT_EFFECTS = frozenset({"error_after_commit", "drop_after_commit", "delay_after_commit"})
#: Effects on the body of an asset download (op ``asset`` only).
ASSET_BODY_EFFECTS = frozenset({"truncate", "wrong_type"})
EFFECTS = (
    PRE_COMMIT_EFFECTS | OUTCOME_EFFECTS | AFTER_COMMIT_EFFECTS | ASSET_BODY_EFFECTS | {"delay"}
)
_CREATE_ONLY_EFFECTS = OUTCOME_EFFECTS | AFTER_COMMIT_EFFECTS
_ERROR_EFFECTS = frozenset({"error", "error_after_commit"})
#: Kling's codes for a token refused as not yet valid (nbf) or expired (exp).
TOKEN_CODES = frozenset({1003, 1004})

#: Representative ``task_status_msg`` texts of failed Kling tasks, by kind, for ``task_failed``
#: rules. "Image pixel is invalid" is verbatim from a live answer; "Internal generation error"
#: (transient: a new attempt may succeed), "prompt 含违规内容" (policy, in Chinese: 违规 is
#: "violation") and the image resolution text (input) were seen in the wild
#: (shared/reference/kling-responses/failed_*.json); the others follow the wording public clients
#: report ("no_reason" is a failure with an empty message). Kling answers in English or Chinese.
TASK_FAILURE_MESSAGES: Mapping[str, str] = MappingProxyType(
    {
        "risk_control": "Failure to pass the risk control system",
        "content_policy": "The content violates the content safety policy",
        "generation_timeout": "Generation timeout, please try again",
        "internal_error": "Internal error, please try again later",
        "image_invalid": "Image pixel is invalid",
        "internal_generation_error": "Internal generation error",
        "policy_chinese": "prompt 含违规内容",
        "image_resolution": (
            "The resolution or aspect ratio of the input image is invalid. Please ensure it "
            "meets the required specifications."
        ),
        "no_reason": "",
    }
)


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
    #: Chance (0..1) that the rule fires on an applicable request; drawn from a seeded RNG.
    probability: float = 1.0
    #: Send ``Retry-After`` as an HTTP-date this many seconds after the reply (exclusive with
    #: ``retry_after``, which is sent verbatim).
    retry_after_date: float | None = None

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
        if self.effect in ASSET_BODY_EFFECTS and self.op != "asset":
            raise ValueError(f"FaultRule effect {self.effect!r} only applies to op 'asset'")
        if self.times is not None and self.times < 0:
            raise ValueError("FaultRule.times must be >= 0 or None")
        if self.delay < 0 or self.assets < 0:
            raise ValueError("FaultRule.delay and FaultRule.assets must be >= 0")
        if not (math.isfinite(self.probability) and 0 <= self.probability <= 1):
            raise ValueError(f"FaultRule.probability must be from 0 to 1, got {self.probability}")
        if self.retry_after_date is not None:
            if not (math.isfinite(self.retry_after_date) and self.retry_after_date >= 0):
                raise ValueError("FaultRule.retry_after_date must be a number of seconds >= 0")
            if self.retry_after is not None:
                raise ValueError("FaultRule.retry_after and retry_after_date are exclusive")

    @property
    def label(self) -> str:
        """A short name of what the rule does, e.g. ``create error 429/1302 retry_after_date``;
        what ``SimStats.faults_fired`` counts by."""
        label = f"{self.op} {self.effect}"
        if self.effect in _ERROR_EFFECTS:
            label += f" {self.http_status}/{self.code}"
            if self.retry_after is not None:
                label += " retry_after"
            elif self.retry_after_date is not None:
                label += " retry_after_date"
        elif self.effect == "task_failed":
            label += f" {self.message!r}"
        elif self.effect == "fewer_assets":
            label += f" assets={self.assets}"
        elif self.effect in ("delay", "delay_after_commit"):
            label += f" {self.delay:g}s"
        return label

    @property
    def rejects_token(self) -> bool:
        """An injected "token not yet valid / expired" (401 with 1003/1004) before commit."""
        return self.effect == "error" and self.code in TOKEN_CODES

    def retry_after_header(self, now: float) -> str | None:
        """The ``Retry-After`` value to send with a reply at Unix time ``now``, if any."""
        if self.retry_after_date is not None:
            # Rounded up: HTTP-dates have whole seconds and the wait must not come out shorter.
            return email.utils.formatdate(math.ceil(now + self.retry_after_date), usegmt=True)
        return self.retry_after

    def matches(self, op: str, prompt: str | None) -> bool:
        if op != self.op:
            return False
        return self.match is None or (prompt is not None and self.match in prompt)


class FaultBook:
    """The active rules and how often each has fired; safe to use from many handler threads."""

    def __init__(self, rules: Iterable[FaultRule] = (), *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._seed = seed
        self._rules: list[FaultRule] = []
        self._fired: list[int] = []
        self._rngs: list[random.Random] = []
        for rule in rules:
            self._append(rule)

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._append(rule)

    def take(
        self,
        op: str,
        prompt: str | None,
        effects: frozenset[str],
        *,
        spare_token_errors: bool = False,
    ) -> FaultRule | None:
        """Fire and return the first rule with one of ``effects`` that applies, if any.

        ``spare_token_errors``: rules that reject the token (:attr:`FaultRule.rejects_token`)
        do not apply to this request (and draw nothing).
        """
        with self._lock:
            for index, rule in enumerate(self._rules):
                if rule.effect not in effects or (spare_token_errors and rule.rejects_token):
                    continue
                if self._try_fire(index, op, prompt):
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

    def fired_by_label(self) -> dict[str, int]:
        """How often rules fired, summed by :attr:`FaultRule.label`; rules yet to fire omitted."""
        counts: dict[str, int] = {}
        with self._lock:
            for rule, fired in zip(self._rules, self._fired, strict=True):
                if fired:
                    counts[rule.label] = counts.get(rule.label, 0) + fired
        return counts

    # The methods below run with self._lock held.

    def _append(self, rule: FaultRule) -> None:
        # One stream per rule (a string seed hashes the same in every process), so a rule's
        # draws depend only on the requests it applied to.
        self._rngs.append(random.Random(f"kling-simulator-fault:{self._seed}:{len(self._rules)}"))
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
