"""Every real Kling body in tests/fixtures/kling-responses/ (a copy of the shared reference, with
SOURCES.md: CI runs from a fresh clone) runs through the provider as the operation it answers,
with the HTTP status SOURCES.md gives, and reaches the conclusion its row below states.

A body without a row fails ``test_every_body_has_a_row``: a new capture is a new expectation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.errors import Category, ProviderError, Scope
from orchestrator.providers.base import Kind, Task, TaskRequest, TaskStatus
from orchestrator.providers.kling import KlingProvider
from orchestrator.providers.kling.auth import ApiKeyAuth
from orchestrator.providers.kling.codes import NO_PACK_WARNING

CORPUS = Path(__file__).parent / "fixtures" / "kling-responses"
HOST = "https://api-singapore.klingai.com"
EXT = "orc-0123456789abcdef0123-1"
NOW = 1_790_000_000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def statuses() -> dict[str, int | None]:
    """file -> the HTTP status SOURCES.md gives it (None: "n/a", a callback body)."""
    found: dict[str, int | None] = {}
    for line in (CORPUS / "SOURCES.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].endswith(".json"):
            status = cells[2]
            found[cells[0]] = int(status) if re.fullmatch(r"\d{3}", status) else None
    return found


# -- the expectations ------------------------------------------------------------------------------

S = TaskStatus
C = Category


@dataclass(frozen=True)
class IsTask:
    task_id: str
    status: TaskStatus
    external_task_id: str | None = None
    assets: tuple[str, ...] = ()
    #: (category, retryable) of a failed task
    failure: tuple[Category, bool] | None = None
    charged_units: float | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class IsError:
    category: Category
    code: int | None
    retryable: bool
    scope: Scope = Scope.ITEM
    exists: bool = False
    not_found: bool = False
    ambiguous: bool = False
    over_capacity: bool = False
    request_id: str | None = None
    #: words the hint must contain
    hint: str = ""


@dataclass(frozen=True)
class IsList:
    tasks: tuple[IsTask, ...]


@dataclass(frozen=True)
class IsWarning:
    text: str | None


Expect = IsTask | IsError | IsList | IsWarning


@dataclass(frozen=True)
class Row:
    #: create | v2_create | query | v2_query | list | account | callback
    op: str
    kind: Kind
    expect: Expect
    model: str = "kling-v3"


CDN = "https://cdn.klingai.com/bs2/upload-kling-api"
DOC_IMAGE = IsTask("string", S.SUCCEEDED, "string", ("string",), request_id="string")
LEGACY_CREATE = "CjI17WevH1IAAAAAAHmgsw"

ROWS: dict[str, Row] = {
    "account_costs_no_packs_live.json": Row("account", Kind.TEXT2VIDEO,
                                            IsWarning(NO_PACK_WARNING)),
    "callback_legacy_doc.json": Row(
        "callback", Kind.TEXT2VIDEO, IsTask("string", S.SUCCEEDED, "string", ("string",))),
    "callback_test_newstyle_doc.json": Row(
        "callback", Kind.TEXT2VIDEO, IsTask("913827032734642185", S.SUBMITTED)),
    "create_i2v_no_task_info_2025_live.json": Row(
        "create", Kind.IMAGE2VIDEO,
        IsTask(LEGACY_CREATE, S.SUBMITTED, request_id=LEGACY_CREATE)),
    "create_image_kling_v1_5.json": Row(
        "create", Kind.IMAGE,
        IsTask("CjMT7WdSwWcAAAAAALvB3g", S.SUBMITTED, request_id="CjMT7WdSwWcAAAAAALvB3g")),
    "create_t2v_empty_task_info.json": Row(
        "create", Kind.TEXT2VIDEO,
        IsTask("831922345719271433", S.SUBMITTED,
               request_id="603e2a28-fb89-4146-ae33-412d74012a6d")),
    "create_t2v_kling_v1_live.json": Row(
        "create", Kind.TEXT2VIDEO,
        IsTask("866889456698785798", S.SUBMITTED, "text_probe_1",
               request_id="3d67a2e2-cec7-4571-ba0d-556668ff7e82")),
    "create_t2v_kling_v3_live.json": Row(
        "create", Kind.TEXT2VIDEO,
        IsTask("867283741759111202", S.SUBMITTED, "text2video_kling_v3_final-1774805076",
               request_id="c0656403-1e6e-4b7e-b8f8-2cdd2595f2b9")),
    "doc_list_images.json": Row("list", Kind.IMAGE, IsList((DOC_IMAGE,)), "kling-v2-1"),
    "doc_query_image_with_watermark_and_deduction.json": Row(
        "query", Kind.IMAGE, DOC_IMAGE, "kling-v2-1"),
    "doc_query_t2v_with_watermark.json": Row("query", Kind.TEXT2VIDEO, DOC_IMAGE),
    "error_1001_authorization_empty_live.json": Row(
        "create", Kind.TEXT2VIDEO,
        IsError(C.AUTH, 1001, False, Scope.ACCOUNT, hint="KLING_API_KEY")),
    "error_1002_api_key_not_found_live.json": Row(
        "create", Kind.TEXT2VIDEO,
        IsError(C.AUTH, 1002, False, Scope.ACCOUNT,
                hint="api-singapore.klingai.com: a key works only on its own region's host")),
    "error_1102_balance_live.json": Row(
        "create", Kind.TEXT2VIDEO,
        IsError(C.BILLING, 1102, False, Scope.ACCOUNT, hint="pack")),
    "error_1102_balance_with_request_id.json": Row(
        "create", Kind.IMAGE,
        IsError(C.BILLING, 1102, False, Scope.ACCOUNT, request_id="abc-123")),
    "error_1201_contents_empty_newapi_live.json": Row(
        "v2_create", Kind.TEXT2VIDEO, IsError(C.VALIDATION, 1201, False), "kling-3.0-turbo"),
    "error_1201_external_id_exists_fixture.json": Row(
        "create", Kind.OMNI_VIDEO,
        IsError(C.VALIDATION, 1201, False, exists=True, hint="looked up"), "kling-video-o1"),
    "error_1201_mode_std_invalid_live.json": Row(
        "create", Kind.IMAGE2VIDEO, IsError(C.VALIDATION, 1201, False), "kling-v2-6"),
    "error_1201_o1_duration_live.json": Row(
        "v2_create", Kind.OMNI_VIDEO, IsError(C.VALIDATION, 1201, False), "kling-video-o1"),
    "error_1201_task_ids_required_newapi_live.json": Row(
        "v2_query", Kind.TEXT2VIDEO, IsError(C.VALIDATION, 1201, False), "kling-3.0-turbo"),
    "error_1201_task_not_found_live.json": Row(
        "query", Kind.TEXT2VIDEO,
        IsError(C.VALIDATION, 1201, False, not_found=True,
                request_id="13fef8e2-f5a0-4ee0-a81f-f40872d96095")),
    "error_1303_parallel_doc.json": Row(
        "create", Kind.TEXT2VIDEO,
        IsError(C.RATE_LIMIT, 1303, True, over_capacity=True,
                request_id="9984d27b-a408-4073-ae28-17ca6a13622d")),
    "failed_chinese_violation_fixture.json": Row(
        "query", Kind.TEXT2VIDEO, IsTask("k-1", S.FAILED, failure=(C.POLICY, False))),
    # A Go test's fixture without task_id: no task can be made of it, so it is an
    # unexpected answer (retried), never a guess at which task it describes.
    "failed_content_risk_control_fixture.json": Row(
        "query", Kind.TEXT2VIDEO, IsError(C.SERVER, None, True)),
    "failed_image_resolution_msg_real.json": Row(
        "query", Kind.IMAGE2VIDEO,
        IsTask(LEGACY_CREATE, S.FAILED, failure=(C.TASK_FAILED, False),
               request_id="reconstructed-2")),
    "failed_internal_generation_error_fixture.json": Row(
        "query", Kind.TEXT2VIDEO,
        IsTask("860912345", S.FAILED, failure=(C.TASK_FAILED, True), request_id="r4")),
    "failed_risk_control_msg_real.json": Row(
        "query", Kind.TEXT2VIDEO,
        IsTask("866889456698785798", S.FAILED, "text_probe_1", failure=(C.POLICY, False),
               request_id="reconstructed-1")),
    "fixture_query_image_processing.json": Row(
        "query", Kind.IMAGE, IsTask("860912345", S.PROCESSING, request_id="r2"), "kling-v2-1"),
    "fixture_query_image_result_type_single.json": Row(
        "query", Kind.IMAGE,
        IsTask("860912345", S.SUCCEEDED, assets=(f"{CDN}/x/image.png",), request_id="r3"),
        "kling-v2-1"),
    "list_empty_live.json": Row("list", Kind.TEXT2VIDEO, IsList(())),
    "newapi_create_doc.json": Row(
        "v2_create", Kind.TEXT2VIDEO,
        IsTask("893605946402811985", S.SUBMITTED, "string", request_id="string"),
        "kling-3.0-turbo"),
    # billing's amount is the docs' placeholder "string": no units are claimed from it
    "newapi_tasks_query_doc.json": Row(
        "v2_query", Kind.IMAGE2VIDEO,
        IsTask("893605946402811985", S.SUCCEEDED, "string", ("string",), request_id="string"),
        "kling-3.0-turbo"),
    # a read by task id does not lag: an empty answer says the task does not exist
    "newapi_tasks_query_empty_live.json": Row(
        "v2_query", Kind.TEXT2VIDEO, IsError(C.VALIDATION, None, False, not_found=True),
        "kling-3.0-turbo"),
    "query_i2v_succeed_live.json": Row(
        "query", Kind.IMAGE2VIDEO,
        IsTask(LEGACY_CREATE, S.SUCCEEDED,
               assets=(f"{CDN}/5739745938/image2video/CjI17WevH1IAAAAAAHmgsw-0_raw_video_1.mp4",),
               request_id="CjnVU2evHRAAAAAAAKDHAg")),
    "query_image_succeed_proxy_doc.json": Row(
        "query", Kind.IMAGE,
        IsTask("CjNQtmctxFMAAAAAAGZ1Vw", S.SUCCEEDED, assets=("https://cdn.klingai.com/...",),
               request_id="Cji7cGctxFMAAAAAAGj3vA"),
        "kling-v2-1"),
}

#: The task id a query names (v2: the id the answer is read for).
QUERIED: dict[str, str] = {"newapi_tasks_query_doc.json": "893605946402811985"}


def test_every_body_has_a_row() -> None:
    bodies = {path.name for path in CORPUS.glob("*.json")}
    assert bodies, f"no bodies in {CORPUS}"
    assert bodies - set(ROWS) == set(), "bodies without an expected conclusion"
    assert set(ROWS) - bodies == set(), "rows without a body"


def test_sources_give_every_body_a_status() -> None:
    given = statuses()
    assert set(given) == set(ROWS)
    for name, row in ROWS.items():
        assert (given[name] is None) is (row.op == "callback"), name


# -- running one body ------------------------------------------------------------------------------

def request_for(row: Row) -> TaskRequest:
    fields: dict[str, Any] = {"model": row.model, "prompt": "a red fox in snow"}
    if row.kind is Kind.IMAGE:
        fields["n"] = 1
    else:
        fields["duration"] = 5
    return TaskRequest(row.kind, fields, expected_assets=1)


async def outcome(name: str, row: Row) -> tuple[object, list[httpx.Request]]:
    body = (CORPUS / name).read_bytes()
    status = statuses()[name]
    seen: list[httpx.Request] = []
    api = "v2" if row.op.startswith("v2_") else "auto"
    provider = KlingProvider(
        HOST, ApiKeyAuth("corpus-key-0123456789"), clock=lambda: NOW, api=api,
        transport=httpx.MockTransport(lambda r: _answer(r, seen, status, body)),
    )
    request = request_for(row)
    async with provider:
        try:
            if row.op in ("create", "v2_create"):
                return await provider.create(request, EXT), seen
            if row.op in ("query", "v2_query"):
                return await provider.query(request, QUERIED.get(name, "t-queried")), seen
            if row.op == "list":
                return await provider.list_tasks(row.kind, 1, 30), seen
            if row.op == "account":
                return await provider.account_warning(), seen
            assert row.op == "callback", row.op
            return provider.task_from_callback(request, body), seen
        except ProviderError as exc:
            return exc, seen


def _answer(request: httpx.Request, seen: list[httpx.Request], status: int | None,
            body: bytes) -> httpx.Response:
    seen.append(request)
    assert status is not None, "a callback body answers no request"
    return httpx.Response(status, content=body, headers={"Content-Type": "application/json"})


#: Where each operation is sent: the body answers that request.
ROUTES = {
    "create": {Kind.TEXT2VIDEO: "/v1/videos/text2video", Kind.IMAGE2VIDEO: "/v1/videos/image2video",
               Kind.OMNI_VIDEO: "/v1/videos/omni-video", Kind.IMAGE: "/v1/images/generations"},
    "v2_create": {Kind.TEXT2VIDEO: "/text-to-video/", Kind.OMNI_VIDEO: "/omni-video/"},
    "query": {Kind.TEXT2VIDEO: "/v1/videos/text2video/", Kind.IMAGE2VIDEO:
              "/v1/videos/image2video/", Kind.IMAGE: "/v1/images/generations/"},
    "v2_query": {kind: "/tasks" for kind in Kind},
    "list": {Kind.IMAGE: "/v1/images/generations", Kind.TEXT2VIDEO: "/v1/videos/text2video"},
    "account": {kind: "/account/costs" for kind in Kind},
}


def check_task(task: object, expect: IsTask) -> None:
    assert isinstance(task, Task), task
    assert (task.task_id, task.status, task.external_task_id) == (
        expect.task_id, expect.status, expect.external_task_id)
    assert tuple(asset.url for asset in task.assets) == expect.assets
    assert task.request_id == expect.request_id
    assert task.charged_units == expect.charged_units
    if expect.failure is None:
        assert task.failure is None
    else:
        assert task.failure is not None
        assert (task.failure.category, task.failure.retryable) == expect.failure
        assert task.failure.message == task.message  # Kling's reason, as shown


@pytest.mark.anyio
@pytest.mark.parametrize("name", sorted(ROWS))
async def test_body(name: str) -> None:
    row = ROWS[name]
    result, seen = await outcome(name, row)
    if row.op == "callback":
        assert seen == []
    else:
        assert len(seen) == 1, seen  # one request, one answer
        assert seen[0].url.path.startswith(ROUTES[row.op][row.kind]), seen[0].url.path
    expect = row.expect
    if isinstance(expect, IsTask):
        check_task(result, expect)
    elif isinstance(expect, IsList):
        assert isinstance(result, list)
        assert len(result) == len(expect.tasks)
        for task, wanted in zip(result, expect.tasks, strict=True):
            check_task(task, wanted)
    elif isinstance(expect, IsWarning):
        assert result == expect.text
    else:
        assert isinstance(result, ProviderError), result
        info = result.info
        assert (info.category, info.code, info.retryable, info.scope) == (
            expect.category, expect.code, expect.retryable, expect.scope)
        assert (result.exists, result.not_found, result.ambiguous, result.over_capacity) == (
            expect.exists, expect.not_found, expect.ambiguous, expect.over_capacity)
        assert result.request_id == expect.request_id
        assert expect.hint in info.hint
        assert info.message and info.http_status == statuses()[name]
