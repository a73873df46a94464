"""Kling's code table and task-failure table: every documented code means what the docs say."""

from __future__ import annotations

import pytest

from orchestrator.errors import Category, Scope
from orchestrator.providers.kling.codes import (
    CODES,
    FAILURE_RULES,
    STATUS_RULES,
    FailureRule,
    Rule,
    classify,
    classify_task_failure,
    exists_info,
    means_exists,
    means_not_found,
    not_found,
    parse_code,
    rule_for,
)

C = Category
ACCOUNT = Scope.ACCOUNT
ITEM = Scope.ITEM

# (http status Kling documents, code, category, retryable, scope, words the hint must contain)
DOCUMENTED = [
    (401, 1000, C.AUTH, False, ACCOUNT, "KLING_ACCESS_KEY"),
    (401, 1001, C.AUTH, False, ACCOUNT, "KLING_API_KEY"),
    (401, 1002, C.AUTH, False, ACCOUNT, "KLING_SECRET_KEY"),
    # Reaching the table means a freshly minted token (or an API key) was refused: the clock or
    # the credentials are wrong for every request, so the batch stops (JwtAuth renews once).
    (401, 1003, C.AUTH, False, ACCOUNT, "NTP"),
    (401, 1004, C.AUTH, False, ACCOUNT, "NTP"),
    (429, 1100, C.BILLING, False, ACCOUNT, "account status in the Kling console"),
    (429, 1101, C.BILLING, False, ACCOUNT, "pay"),
    (429, 1102, C.BILLING, False, ACCOUNT, "finished items are not resubmitted"),
    (403, 1103, C.PERMISSION, False, ACCOUNT, "no access"),
    (400, 1200, C.VALIDATION, False, ITEM, "fields"),
    (400, 1201, C.VALIDATION, False, ITEM, "value"),
    (404, 1202, C.VALIDATION, False, ITEM, "base_url"),
    (404, 1203, C.VALIDATION, False, ITEM, "`model`"),
    (400, 1300, C.POLICY, False, ITEM, "Rewrite the prompt"),
    (400, 1301, C.POLICY, False, ITEM, "Rewrite the prompt"),
    (429, 1302, C.RATE_LIMIT, True, ITEM, "backoff"),
    (429, 1303, C.RATE_LIMIT, True, ITEM, "limits.concurrency"),
    (429, 1304, C.PERMISSION, False, ACCOUNT, "IP address"),
    (500, 5000, C.SERVER, True, ITEM, "looked up"),
    (503, 5001, C.SERVER, True, ITEM, "maintenance"),
    (504, 5002, C.SERVER, True, ITEM, "looked up"),
]


@pytest.mark.parametrize(("status", "code", "category", "retryable", "scope", "words"), DOCUMENTED)
def test_documented_code_classifies_as_documented(
    status: int, code: int, category: Category, retryable: bool, scope: Scope, words: str
) -> None:
    info = classify(status, code, "kling says no")
    assert (info.category, info.retryable, info.scope) == (category, retryable, scope)
    assert words in info.hint
    assert (info.code, info.http_status, info.message) == (code, status, "kling says no")


@pytest.mark.parametrize(("status", "code", "category", "retryable", "scope", "words"), DOCUMENTED)
def test_code_wins_over_an_inconsistent_status(
    status: int, code: int, category: Category, retryable: bool, scope: Scope, words: str
) -> None:
    assert classify(200, code, "").category is category
    assert classify(500, code, "").retryable is retryable


def test_table_covers_exactly_the_documented_codes() -> None:
    assert set(CODES) == {row[1] for row in DOCUMENTED}


def test_every_hint_is_an_actionable_sentence() -> None:
    rules: list[Rule | FailureRule] = [*CODES.values(), *STATUS_RULES.values(), *FAILURE_RULES]
    for rule in rules:
        assert rule.hint[0].isupper() and rule.hint.endswith("."), rule.hint


def test_429_with_billing_code_is_billing_not_rate_limit() -> None:
    info = classify(429, 1102, "resource pack exhausted")
    assert info.category is Category.BILLING
    assert info.scope is Scope.ACCOUNT
    assert not info.retryable


def test_empty_message_falls_back_to_the_code_meaning() -> None:
    assert classify(429, 1303, "").message == "concurrency over the resource pack limit"


@pytest.mark.parametrize(
    ("status", "category", "retryable", "scope"),
    [
        (401, C.AUTH, False, ACCOUNT),
        (403, C.PERMISSION, False, ACCOUNT),
        (429, C.RATE_LIMIT, True, ITEM),
        (500, C.SERVER, True, ITEM),
        (502, C.SERVER, True, ITEM),
        (503, C.SERVER, True, ITEM),
        (599, C.SERVER, True, ITEM),
        (400, C.VALIDATION, False, ITEM),
        (404, C.VALIDATION, False, ITEM),
        (422, C.VALIDATION, False, ITEM),
        (413, C.VALIDATION, False, ITEM),
        (408, C.TIMEOUT, True, ITEM),
        (200, C.SERVER, False, ITEM),
        (302, C.SERVER, False, ITEM),
    ],
)
@pytest.mark.parametrize("code", [None, 9999])
def test_unknown_code_falls_back_to_http_status(
    status: int, category: Category, retryable: bool, scope: Scope, code: int | None
) -> None:
    info = classify(status, code, "")
    assert (info.category, info.retryable, info.scope) == (category, retryable, scope)
    assert info.message  # never empty: the user sees something


def test_no_status_and_no_code_is_an_unknown_server_answer() -> None:
    info = classify(None, None, "")
    assert info.category is Category.SERVER and not info.retryable


def test_not_found_info() -> None:
    info = not_found(400, 1201, "Task not found")
    assert info.category is Category.VALIDATION and not info.retryable
    assert (info.code, info.http_status, info.message) == (1201, 400, "Task not found")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0, 0), (1303, 1303), ("1303", 1303), (" 5000 ", 5000), (True, None), (None, None),
     ("abc", None), (1.5, None), ([1], None), ("-1", -1), ("+7", 7)],
)
def test_parse_code(value: object, expected: int | None) -> None:
    assert parse_code(value) == expected


# Found by tests/test_properties_provider.py: str.isdigit() accepts these, int() refuses them,
# and the ValueError escaped the provider (and JwtAuth's flow) as a traceback.
@pytest.mark.parametrize(
    "value", ["²", "¹²³", "--5", "-", "9" * 5000, "1_303", "١٢٠٣", "1303.0", " "],
    ids=["superscript", "superscripts", "double-minus", "minus", "5000-digits", "underscore",
         "arabic-indic", "float-text", "blank"],
)
def test_parse_code_never_raises_on_digit_lookalikes(value: str) -> None:
    assert parse_code(value) is None


def test_only_1303_signals_over_capacity() -> None:
    assert [code for code, rule in CODES.items() if rule.over_capacity] == [1303]
    assert rule_for(404, 1303).over_capacity  # the code wins over any status
    assert not rule_for(429, None).over_capacity  # a bare 429 may be 1302: no signal


@pytest.mark.parametrize(
    ("status", "code", "absent"),
    [
        (400, 1201, True), (404, 1203, True), (200, 1203, True), (404, None, True),
        (404, 0, True), (404, 1202, True), (404, 4242, True),
        # the code wins: these say "slow down", "server broken", "no access", not "absent"
        (404, 1303, False), (404, 1302, False), (404, 5000, False), (404, 1103, False),
        (404, 1000, False), (400, 1200, False), (500, None, False), (410, None, False),
    ],
)
def test_means_not_found(status: int, code: int | None, absent: bool) -> None:
    assert means_not_found(status, code, "Task not found") is absent


@pytest.mark.parametrize(
    ("message", "absent"),
    [
        ("Task not found by id/external id: mf-auth-probe-nonexistent", True),
        ("Task not found", True),
        ("task NOT FOUND", True),
        ("task does not exist", True),
        ("Task not exists: t1", True),
        ("任务不存在", True),
        ("未找到任务", True),
        # the same code answers request errors: never "absent", which would resend a create
        ("task_ids or external_task_ids is required", False),
        ("contents cannot be empty", False),
        ("mode value 'std' is invalid", False),
        ("", False),
    ],
)
def test_1201_means_not_found_only_when_the_message_says_so(message: str, absent: bool) -> None:
    assert means_not_found(400, 1201, message) is absent


@pytest.mark.parametrize("message", ["", "invalid", "Task not found"])
def test_1203_means_not_found_whatever_the_message(message: str) -> None:
    assert means_not_found(404, 1203, message)


@pytest.mark.parametrize(
    "message",
    [
        "External_task_id orc-0123456789abcdef0123-1 already exists",
        "external_task_id already exists",
        "EXTERNAL_TASK_ID abc ALREADY EXISTS",
        "external task id abc has already been used",
        "duplicate external_task_id: abc",
        "Task with external id abc already exists",
        "task abc already exists",
        "external_task_id abc exists",
        "外部任务ID已存在",
        "external_task_id 重复",
    ],
)
def test_exists_is_read_from_the_message_whatever_its_wording(message: str) -> None:
    assert means_exists(message)


@pytest.mark.parametrize(
    "message",
    [
        "mode value 'std' is invalid",
        "external_task_id is invalid",
        "external_task_id abc does not exist",
        "external_task_id not exists",
        "image already uploaded",
        "",
    ],
)
def test_other_refusals_do_not_mean_exists(message: str) -> None:
    assert not means_exists(message)


def test_exists_info_says_the_task_is_looked_up() -> None:
    info = exists_info(400, 1201, "External_task_id x already exists")
    assert not info.retryable and info.scope is Scope.ITEM
    assert "already exists" in info.hint and "looked up" in info.hint
    assert info.hint != classify(400, 1201, "").hint
    assert (info.code, info.http_status) == (1201, 400)


def test_1002_hint_names_the_host_and_the_region_rule() -> None:
    hint = classify(401, 1002, "api key not found", host="api-beijing.klingai.com").hint
    assert "api-beijing.klingai.com" in hint
    assert "api-singapore.klingai.com outside China" in hint
    assert "api-beijing.klingai.com in China" in hint
    assert "region" in hint and "provider.base_url" in hint
    assert "{host}" not in classify(401, 1002, "").hint


@pytest.mark.parametrize(
    ("message", "category", "retryable"),
    [
        ("The content violates our content policy", C.POLICY, False),
        ("Failure to pass the risk control system", C.POLICY, False),
        ("sensitive content detected", C.POLICY, False),
        ("Inappropriate image", C.POLICY, False),
        ("SAFETY check failed", C.POLICY, False),
        ("Image pixel is invalid", C.TASK_FAILED, False),
        ("unsupported image format", C.TASK_FAILED, False),
        ("image resolution too small", C.TASK_FAILED, False),
        ("The image is too large", C.TASK_FAILED, False),
        ("aspect ratio out of range", C.TASK_FAILED, False),
        ("generation timeout", C.TASK_FAILED, True),
        ("Request timed out", C.TASK_FAILED, True),
        ("internal error", C.TASK_FAILED, True),
        ("System error, please try again later", C.TASK_FAILED, True),
        ("server busy", C.TASK_FAILED, True),
        # seen in the wild (kling-api.md)
        ("Failure to pass the risk control system", C.POLICY, False),
        ("content risk control", C.POLICY, False),
        ("prompt 含违规内容", C.POLICY, False),
        ("The resolution or aspect ratio of the input image is invalid. Please ensure it meets "
         "the required specifications.", C.TASK_FAILED, False),
        ("Internal generation error", C.TASK_FAILED, True),
        # Chinese
        ("内容涉及敏感信息", C.POLICY, False),
        ("触发风控", C.POLICY, False),
        ("内容审核未通过", C.POLICY, False),
        ("内容安全检测不通过", C.POLICY, False),
        ("图片分辨率过低", C.TASK_FAILED, False),
        ("输入图片宽高比不符合要求", C.TASK_FAILED, False),
        ("图片尺寸不合要求", C.TASK_FAILED, False),
        ("图片格式不支持", C.TASK_FAILED, False),
        ("生成超时", C.TASK_FAILED, True),
        ("服务繁忙\uff0c请稍后重试", C.TASK_FAILED, True),
        ("内部错误", C.TASK_FAILED, True),
        ("系统错误", C.TASK_FAILED, True),
        ("something odd happened", C.TASK_FAILED, False),
        ("", C.TASK_FAILED, False),
        (None, C.TASK_FAILED, False),
    ],
)
def test_task_failure_messages(message: str | None, category: Category, retryable: bool) -> None:
    info = classify_task_failure(message)
    assert (info.category, info.retryable) == (category, retryable)
    assert info.scope is Scope.ITEM
    assert info.message  # the user always sees a reason


def test_task_failure_hints() -> None:
    assert "Rewrite the prompt" in classify_task_failure("policy").hint
    assert "input image" in classify_task_failure("Image pixel is invalid").hint
    assert "new attempt may succeed" in classify_task_failure("busy").hint
    assert "message" in classify_task_failure("weird").hint
    assert classify_task_failure(None).message == "task failed without a reason"


def test_non_retryable_failure_wins_over_transient_words() -> None:
    # A retry of a failed task is a new paid generation: a doomed one must not be retried.
    assert not classify_task_failure("image too large, please try again").retryable
    assert not classify_task_failure("risk control busy").retryable
    assert classify_task_failure("内容违规\uff0c系统繁忙").category is C.POLICY
    assert not classify_task_failure("图片格式错误\uff0c请稍后重试").retryable
    assert classify_task_failure("Internal error: sensitive content").category is C.POLICY


def test_task_failure_is_decided_on_the_raw_text_and_shows_the_cleaned_one() -> None:
    # The deciding words after 500 characters of noise: a cleaned (cut) text would lose them.
    raw = "x" * 600 + " risk control"
    info = classify_task_failure(raw, shown="x" * 500)
    assert info.category is C.POLICY and info.message == "x" * 500
    assert classify_task_failure("Internal generation error", shown="").message == (
        "task failed without a reason")
