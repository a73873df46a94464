"""Kling's error codes and failure messages as data, and the pure functions that read them.

These tables decide what a Kling failure means:

    CODES           envelope ``code`` -> category, retryable, scope, hint   (request rejected)
    STATUS_RULES    HTTP status -> the same, used only when the code is absent or unknown
    EXISTS / NOT_FOUND   message patterns that give an overloaded 1201 its meaning
    FAILURE_RULES   regexes over ``task_status_msg`` / API 2.0 ``message`` (task ran and failed)

The code wins over the HTTP status: Kling answers 429 for billing problems (1100-1102) as well as
for rate limits (1302/1303), so a decision on the status alone would retry a batch that cannot
succeed until someone pays. 1201 ("invalid parameter value") is also what Kling answers for a
reused external id (the task exists) and, on a legacy query, for an unknown task: only its
message tells them apart, and mistaking either for the other costs a paid task.

Decisions read Kling's RAW text: cleaning (masking credentials, cutting to 500 characters) is
for what is shown, and must not hide the words that decide.
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
    # Live: "api key not found" answers a key from the other region as well as a bogus one.
    1002: Rule(
        Category.AUTH, False,
        "Kling does not know these credentials on {host}: a key works only on its own region's "
        "host (https://api-singapore.klingai.com outside China, https://api-beijing.klingai.com "
        "in China), so set provider.base_url to the key's region; otherwise check "
        f"{_CREDENTIALS} (malformed or revoked).",
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


#: How a hint names the host when the caller does not say which.
_SOME_HOST = "the configured host"


def classify(
    http_status: int | None, code: int | None, message: str, *, host: str | None = None
) -> ErrorInfo:
    """What a rejected Kling request means. ``message`` is Kling's own text (may be empty);
    ``host`` (provider.base_url's) is named by the hints that depend on it (1002)."""
    rule = rule_for(http_status, code)
    return ErrorInfo(
        category=rule.category,
        message=message or rule.meaning,
        retryable=rule.retryable,
        hint=rule.hint.replace("{host}", host or _SOME_HOST),
        scope=rule.scope,
        code=code,
        http_status=http_status,
    )


def not_found(http_status: int | None, code: int | None, message: str) -> ErrorInfo:
    """A query for a task Kling does not know (404, 1203, or a 1201 saying so on a read)."""
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


#: The documented "no such resource" code: absence on a query whatever the message says.
NOT_FOUND_CODE = 1203
#: What a legacy query for an unknown id answers live: 400/1201 "Task not found by id/external
#: id: <id>". The same code answers request errors ("task_ids or external_task_ids is
#: required"), so it means absence only when the message says so.
NOT_FOUND_BY_MESSAGE_CODE = 1201
NOT_FOUND: re.Pattern[str] = re.compile(
    r"not\s*(?:be\s*)?found|does\s*not\s*exist|doesn'?t\s*exist|\bnot\s*exists?\b"
    r"|no\s+such\s+task"
    r"|不存在|未找到|找不到|查不到|查询不到",
    re.IGNORECASE,
)


def means_not_found(http_status: int | None, code: int | None, message: str) -> bool:
    """Whether a Kling envelope answering a query says the task does not exist.

    Absence makes the engine resend a create, so only an answer that says it counts: 1203,
    a 1201 whose (raw) message says "not found", or a 404 with no known code. The code wins
    over the status: a 404 carrying 1303 or 5000 is a rate limit or a server error.
    """
    if code == NOT_FOUND_CODE:
        return True
    if code == NOT_FOUND_BY_MESSAGE_CODE:
        return NOT_FOUND.search(message) is not None
    return http_status == 404 and (code is None or code not in CODES or code == 1202)


#: A create refused because its external id names a task already: 400/1201 "External_task_id
#: <id> already exists". Both halves must appear (the id and the verdict), in whatever words or
#: order, so that a reworded answer is still understood and "mode ... already set" is not.
EXISTS_SUBJECT: re.Pattern[str] = re.compile(
    r"external[\s_-]*(?:task[\s_-]*)?id|\btask\b|外部任务\s*id|外部\s*id|任务", re.IGNORECASE
)
EXISTS_VERDICT: re.Pattern[str] = re.compile(
    r"already\s*(?:been\s*)?(?:exist|used|in\s*use|taken|submitted)|\bexists\b|duplicat"
    r"|not\s*unique"
    r"|已存在|已经存在|已被使用|重复",
    re.IGNORECASE,
)

EXISTS_HINT = (
    "A task with this external_task_id already exists in the account (and is paid for): it is "
    "looked up by that id and polled, never resubmitted under a new id."
)


def means_exists(message: str) -> bool:
    """Whether a create's refusal (raw message) says its external id already names a task."""
    return (
        EXISTS_SUBJECT.search(message) is not None
        and EXISTS_VERDICT.search(message) is not None
        and NOT_FOUND.search(message) is None  # "external_task_id not exists" is not a yes
    )


def exists_info(http_status: int | None, code: int | None, message: str) -> ErrorInfo:
    """A create refused because the task exists: not an item failure, the task is found."""
    return ErrorInfo(
        category=Category.VALIDATION,
        message=message or "a task with this external_task_id already exists",
        retryable=False,
        hint=EXISTS_HINT,
        scope=Scope.ITEM,
        code=code,
        http_status=http_status,
    )


@dataclass(frozen=True)
class FailureRule:
    pattern: re.Pattern[str]
    category: Category
    retryable: bool
    hint: str


def _pattern(*alternatives: str) -> re.Pattern[str]:
    return re.compile("|".join(alternatives), re.IGNORECASE)


# Order matters: the first match wins, and the rules that must not be retried come first, because
# retrying a failed task is a new paid generation. Kling words its reasons in English or Chinese
# (seen live: "Failure to pass the risk control system", "prompt 含违规内容", "The resolution or
# aspect ratio of the input image is invalid. ...", "Internal generation error").
FAILURE_RULES: tuple[FailureRule, ...] = (
    FailureRule(
        _pattern(
            r"polic", r"safety", r"sensitive", r"violat", r"inappropriate", r"\brisk",
            r"moderat", r"prohibit", r"censor", r"nsfw", r"illegal content", r"copyright",
            r"违规", r"违禁", r"违法", r"敏感", r"风控", r"风险", r"审核", r"内容安全", r"安全策略",
            r"合规", r"涉黄", r"涉政", r"色情", r"暴力", r"侵权", r"屏蔽",
        ),
        Category.POLICY, False,
        "Rewrite the prompt or replace the image: Kling's content policy rejected the output.",
    ),
    FailureRule(
        _pattern(
            r"pixel", r"image format", r"resolution", r"too small", r"too large",
            r"aspect", r"image size", r"decode image", r"invalid image", r"input image",
            r"图片", r"图像", r"分辨率", r"宽高比", r"长宽比", r"比例", r"尺寸", r"像素",
            r"格式", r"过大", r"过小",
        ),
        Category.TASK_FAILED, False,
        "Fix the input image (jpg/png, at most 10 MB, at least 300 px per side, aspect ratio "
        "between 1:2.5 and 2.5:1), then rerun with a new item id.",
    ),
    FailureRule(
        _pattern(
            r"time\s*out", r"timed out", r"internal\s+(?:\w+\s+)?error", r"generation error",
            r"system error", r"server error", r"busy", r"try again", r"overload",
            r"service unavailable", r"temporar",
            r"超时", r"繁忙", r"内部错误", r"系统错误", r"系统异常", r"服务异常", r"服务器错误",
            r"稍后重试", r"稍后再试", r"请重试",
        ),
        Category.TASK_FAILED, True,
        "Kling failed for a transient reason; a new attempt may succeed.",
    ),
)

_FAILURE_DEFAULT_HINT = (
    "Read Kling's message for the reason; fix the item and rerun it with a new item id."
)


def classify_task_failure(message: str | None, *, shown: str | None = None) -> ErrorInfo:
    """What a task that ran and ended ``failed`` means, from Kling's ``task_status_msg`` (API
    2.0: ``message``), decided on that RAW text; ``shown`` is the text to report instead (the
    cleaned one), when the caller has it."""
    raw = message or ""
    text = (raw if shown is None else shown).strip()
    for rule in FAILURE_RULES:
        if rule.pattern.search(raw):
            return ErrorInfo(
                category=rule.category,
                message=text or "task failed without a reason",
                retryable=rule.retryable,
                hint=rule.hint,
            )
    return ErrorInfo(
        category=Category.TASK_FAILED,
        message=text or "task failed without a reason",
        retryable=False,
        hint=_FAILURE_DEFAULT_HINT,
    )


# -- what the provider says about answers that are not Kling's codes ---------------------------

MALFORMED_HINT = (
    "Kling's answer did not have the documented shape; the item is retried. If this persists, "
    "check provider.base_url."
)
UNPROVEN_HINT = (
    "Nothing was resubmitted. Rerun the manifest to look the task up again; if this persists, "
    "search the Kling console for this external_task_id before resubmitting the item under a "
    "new id."
)
#: Shown before a batch starts when /account/costs lists no pack with units left.
NO_PACK_WARNING = (
    "The Kling account shows no resource pack with units left (none online with a remaining "
    "quantity), so the run may stop at once with code 1102: buy or renew a pack in the Kling "
    "console first, or expect the batch to stop and rerun it afterwards (finished items are "
    "not resubmitted)."
)
