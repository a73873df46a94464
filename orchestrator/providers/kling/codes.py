"""Kling's error codes and failure messages as data, and the pure functions that read them.

Two tables decide what a Kling failure means:

    CODES           envelope ``code`` -> category, retryable, scope, hint   (request rejected)
    STATUS_RULES    HTTP status -> the same, used only when the code is absent or unknown
    FAILURE_RULES   regexes over ``task_status_msg`` -> the same           (task ran and failed)

The code wins over the HTTP status: Kling answers 429 for billing problems (1100-1102) as well as
for rate limits (1302/1303), so a decision on the status alone would retry a batch that cannot
succeed until someone pays.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator.errors import Category, ErrorInfo, Scope

#: Codes after which a freshly minted JWT may succeed where the old one failed.
RENEW_CODES = frozenset({1003, 1004})


@dataclass(frozen=True)
class Rule:
    category: Category
    retryable: bool
    hint: str
    scope: Scope = Scope.ITEM
    #: What Kling's code means, used when Kling sends no message of its own.
    meaning: str = ""
    #: A create answered with this code may still have produced a task: look it up first.
    may_have_committed: bool = False
    #: Seconds to wait before a retry when the server sends no Retry-After.
    min_wait: float | None = None
    #: The account is over its concurrency allowance: the engine lowers its in-flight cap.
    over_capacity: bool = False


_CREDENTIALS = "KLING_ACCESS_KEY/KLING_SECRET_KEY or KLING_API_KEY"
#: 1003/1004 reach the code table only when a token was refused even freshly minted (JwtAuth
#: renews once and resends) or came from an API key (nothing to renew): the machine's clock or
#: the credentials are wrong, and every further request would be refused the same way.
_CLOCK = (
    "sync this machine's clock (NTP: Kling checks a token's validity times against its own "
    f"clock) and check {_CREDENTIALS}, then rerun; finished items are not resubmitted."
)

CODES: Mapping[int, Rule] = {
    1000: Rule(
        Category.AUTH, False, f"Check {_CREDENTIALS}: Kling rejected the credentials.",
        Scope.ACCOUNT, "authentication failed",
    ),
    1001: Rule(
        Category.AUTH, False,
        f"Set {_CREDENTIALS}: the request reached Kling without credentials.",
        Scope.ACCOUNT, "Authorization header empty",
    ),
    1002: Rule(
        Category.AUTH, False,
        f"Check {_CREDENTIALS}: Kling says the credentials are malformed or revoked.",
        Scope.ACCOUNT, "Authorization header invalid",
    ),
    1003: Rule(
        Category.AUTH, False,
        "Kling refused the token as not yet valid, even a freshly minted one (this machine's "
        f"clock is probably ahead of Kling's): {_CLOCK}",
        Scope.ACCOUNT, "token not yet valid",
    ),
    1004: Rule(
        Category.AUTH, False,
        "Kling refused the token as expired, even a freshly minted one (this machine's clock "
        f"is probably behind Kling's, or the API key has expired): {_CLOCK}",
        Scope.ACCOUNT, "token expired",
    ),
    1100: Rule(
        Category.BILLING, False,
        "Account exception: check the account status in the Kling console, then rerun.",
        Scope.ACCOUNT, "account exception",
    ),
    1101: Rule(
        Category.BILLING, False,
        "The account is in arrears: pay the outstanding bill in the Kling console, then rerun.",
        Scope.ACCOUNT, "account in arrears",
    ),
    1102: Rule(
        Category.BILLING, False,
        "The resource pack is depleted or expired: buy or renew a pack in the Kling console, "
        "then rerun the manifest (finished items are not resubmitted).",
        Scope.ACCOUNT, "resource pack depleted or expired",
    ),
    1103: Rule(
        Category.PERMISSION, False,
        "This account has no access to this API or model: enable it in the Kling console or "
        "choose another `model`.",
        Scope.ACCOUNT, "no access to this API or model",
    ),
    1200: Rule(
        Category.VALIDATION, False,
        "Fix the item's fields as the message says: Kling rejected the request parameters.",
        Scope.ITEM, "invalid request parameters",
    ),
    1201: Rule(
        Category.VALIDATION, False,
        "Fix the field value the message names (duration, mode, aspect_ratio and cfg_scale "
        "differ between models).",
        Scope.ITEM, "invalid parameter value",
    ),
    1202: Rule(
        Category.VALIDATION, False,
        "Check provider.base_url; if it is right, report this as an orchestrator bug with the "
        "request id.",
        Scope.ITEM, "invalid method",
    ),
    1203: Rule(
        Category.VALIDATION, False,
        "The model or resource does not exist: check `model` and pin an exact version such as "
        "kling-v2-5-turbo.",
        Scope.ITEM, "resource does not exist",
    ),
    1300: Rule(
        Category.POLICY, False,
        "Rewrite the prompt or replace the image: Kling's platform policy rejected it.",
        Scope.ITEM, "platform policy triggered",
    ),
    1301: Rule(
        Category.POLICY, False,
        "Rewrite the prompt or replace the image: it triggered Kling's content safety check.",
        Scope.ITEM, "content safety policy triggered",
    ),
    1302: Rule(
        Category.RATE_LIMIT, True,
        "Kling throttled the request rate; the item is retried with backoff. Lower "
        "limits.requests_per_minute if this repeats.",
        Scope.ITEM, "request rate too high",
    ),
    1303: Rule(
        Category.RATE_LIMIT, True,
        "More tasks are running than the resource pack allows; the item is retried with backoff. "
        "Lower limits.concurrency to avoid it.",
        Scope.ITEM, "concurrency over the resource pack limit", over_capacity=True,
    ),
    1304: Rule(
        Category.PERMISSION, False,
        "Kling's IP whitelist blocks this machine: add its public IP address in the Kling "
        "console, then rerun.",
        Scope.ACCOUNT, "IP whitelist policy",
    ),
    5000: Rule(
        Category.SERVER, True,
        "Kling had an internal error; the item is retried (a create is looked up first).",
        Scope.ITEM, "internal server error", may_have_committed=True,
    ),
    5001: Rule(
        Category.SERVER, True,
        "Kling is unavailable for maintenance; the item is retried with longer waits. If the "
        "batch stops, rerun it later.",
        Scope.ITEM, "service unavailable (maintenance)", may_have_committed=True, min_wait=30.0,
    ),
    5002: Rule(
        Category.SERVER, True,
        "Kling is backlogged; the task may exist and is looked up before any resubmission.",
        Scope.ITEM, "internal timeout (backlog)", may_have_committed=True,
    ),
}

STATUS_RULES: Mapping[int, Rule] = {
    401: Rule(
        Category.AUTH, False, f"Check {_CREDENTIALS}: Kling refused the credentials.",
        Scope.ACCOUNT, "unauthorized",
    ),
    403: Rule(
        Category.PERMISSION, False,
        "Kling refused access: check the account's permissions and IP whitelist in the console.",
        Scope.ACCOUNT, "forbidden",
    ),
    404: Rule(
        Category.VALIDATION, False,
        "Check provider.base_url (it should be the host, e.g. https://api-singapore.klingai.com) "
        "and the item's `model`.",
        Scope.ITEM, "not found",
    ),
    # A proxy's answer, not Kling's: whether a create got through is unknown.
    408: Rule(
        Category.TIMEOUT, True,
        "A proxy timed the request out; the task is looked up before any resubmission.",
        Scope.ITEM, "request timeout", may_have_committed=True,
    ),
    413: Rule(
        Category.VALIDATION, False,
        "The request is too large: use a smaller input image (at most 10 MB) or pass it as a URL.",
        Scope.ITEM, "request too large",
    ),
    429: Rule(
        Category.RATE_LIMIT, True,
        "Kling throttled the request; the item is retried with backoff. Lower limits.concurrency "
        "or limits.requests_per_minute if this repeats.",
        Scope.ITEM, "too many requests",
    ),
}

_SERVER_5XX = Rule(
    Category.SERVER, True,
    "Kling or a proxy in front of it failed; the item is retried (a create is looked up first).",
    Scope.ITEM, "server error", may_have_committed=True,
)
_OTHER_4XX = Rule(
    Category.VALIDATION, False,
    "Kling rejected the request: fix the item as the message says.",
    Scope.ITEM, "request rejected",
)
_UNKNOWN = Rule(
    Category.SERVER, False,
    "Kling answered with an error this orchestrator does not know: read the message, and report "
    "it with the request id if it is unclear.",
    Scope.ITEM, "unexpected answer",
)


def rule_for(http_status: int | None, code: int | None) -> Rule:
    """The rule for an answer: by Kling code first, by HTTP status only when the code is unknown."""
    if code is not None and code in CODES:
        return CODES[code]
    if http_status is None:
        return _UNKNOWN
    if http_status in STATUS_RULES:
        return STATUS_RULES[http_status]
    if 500 <= http_status <= 599:
        return _SERVER_5XX
    if 400 <= http_status <= 499:
        return _OTHER_4XX
    # 2xx with a non-zero code, or a redirect we do not follow.
    return _UNKNOWN


def classify(http_status: int | None, code: int | None, message: str) -> ErrorInfo:
    """What a rejected Kling request means. ``message`` is Kling's own text (may be empty)."""
    rule = rule_for(http_status, code)
    return ErrorInfo(
        category=rule.category,
        message=message or rule.meaning,
        retryable=rule.retryable,
        hint=rule.hint,
        scope=rule.scope,
        code=code,
        http_status=http_status,
    )


def not_found(http_status: int | None, code: int | None, message: str) -> ErrorInfo:
    """A query for a task Kling does not know (404, 1203, or 1201 on a read)."""
    return ErrorInfo(
        category=Category.VALIDATION,
        message=message or "task not found",
        retryable=False,
        hint=(
            "Kling does not know this task; if it was created moments ago, look again after a "
            "short wait, since reads can lag behind creates."
        ),
        scope=Scope.ITEM,
        code=code,
        http_status=http_status,
    )


#: A code sent as a string: ASCII digits only (``str.isdigit`` also accepts "²", which ``int``
#: refuses) and short enough for ``int`` (Python refuses more than 4300 digits).
_CODE_TEXT = re.compile(r"[+-]?[0-9]{1,18}")


def parse_code(value: object) -> int | None:
    """Kling's ``code`` as an int; tolerates a numeric string, rejects bools and garbage."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _CODE_TEXT.fullmatch(value.strip()):
        return int(value.strip())
    return None


#: Codes that answer a query with "no such task" (live probes: 400/1201; docs: 404/1203).
NOT_FOUND_CODES = frozenset({1201, 1203})


def means_not_found(http_status: int | None, code: int | None) -> bool:
    """Whether a Kling envelope answering a query says the task does not exist.

    The code wins over the status here too: a 404 carrying 1303 or 5000 is a rate limit or a
    server error, and calling it absence could make the engine resubmit a task that exists.
    """
    if code in NOT_FOUND_CODES:
        return True
    return http_status == 404 and (code is None or code not in CODES or code == 1202)


@dataclass(frozen=True)
class FailureRule:
    pattern: re.Pattern[str]
    category: Category
    retryable: bool
    hint: str


def _pattern(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(alternatives), re.IGNORECASE)


# Order matters: the first match wins, and the rules that must not be retried come first, because
# retrying a failed task is a new paid generation.
FAILURE_RULES: tuple[FailureRule, ...] = (
    FailureRule(
        _pattern(
            r"polic", r"safety", r"sensitive", r"violat", r"inappropriate", r"\brisk",
            r"moderat", r"prohibit",
        ),
        Category.POLICY, False,
        "Rewrite the prompt or replace the image: Kling's content policy rejected the output.",
    ),
    FailureRule(
        _pattern(
            r"pixel", r"image format", r"resolution", r"too small", r"too large",
            r"aspect", r"image size", r"decode image", r"invalid image",
        ),
        Category.TASK_FAILED, False,
        "Fix the input image (jpg/png, at most 10 MB, at least 300 px per side, aspect ratio "
        "between 1:2.5 and 2.5:1), then rerun with a new item id.",
    ),
    FailureRule(
        _pattern(
            r"time\s*out", r"timed out", r"internal error", r"system error", r"server error",
            r"busy", r"try again",
        ),
        Category.TASK_FAILED, True,
        "Kling failed for a transient reason; a new attempt may succeed.",
    ),
)

_FAILURE_DEFAULT_HINT = (
    "Read Kling's message for the reason; fix the item and rerun it with a new item id."
)


def classify_task_failure(message: str | None) -> ErrorInfo:
    """What a task that ran and ended ``failed`` means, from Kling's ``task_status_msg``."""
    text = (message or "").strip()
    for rule in FAILURE_RULES:
        if rule.pattern.search(text):
            return ErrorInfo(
                category=rule.category,
                message=text,
                retryable=rule.retryable,
                hint=rule.hint,
            )
    return ErrorInfo(
        category=Category.TASK_FAILED,
        message=text or "task failed without a reason",
        retryable=False,
        hint=_FAILURE_DEFAULT_HINT,
    )
