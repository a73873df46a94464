"""LTX's v2 client, one piece at a time: what it sends, and how each answer becomes ours.

The answers are LTX's documented shapes (reference/ltx-api.md), served by httpx's mock
transport; the client against the LTX simulator over real HTTP is in the provider contract
tests.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.errors import Category, ProviderError, Scope
from orchestrator.providers.base import (
    BatchReader,
    ImageSource,
    Kind,
    TaskFinder,
    TaskLister,
    TaskRequest,
    TaskStatus,
)
from orchestrator.providers.bearer import BearerAuth
from orchestrator.providers.ltx.client import LtxProvider
from tests.conftest import png_bytes

pytestmark = pytest.mark.anyio

KEY = "ltx-secret-key-123"
BASE = "https://api.ltx.video"
T2V = TaskRequest(
    Kind.TEXT2VIDEO,
    {"model": "ltx-2-3-fast", "prompt": "a fox", "duration": 8, "resolution": "1920x1080",
     "fps": 25, "generate_audio": False},
    1,
)
Handler = Callable[[httpx.Request], httpx.Response]


def provider(handler: Handler, **options: Any) -> LtxProvider:
    return LtxProvider(BASE, BearerAuth(KEY), transport=httpx.MockTransport(handler), **options)


def error(status: int, kind: str | None, message: str = "nope", **headers: str) -> httpx.Response:
    body = {"type": "error", "error": {"type": kind, "message": message}}
    return httpx.Response(status, json=body, headers={"x-request-id": "req-1", **headers})


def accepted(request: httpx.Request) -> httpx.Response:
    return httpx.Response(202, json={"id": "job-1", "created_at": "2026-12-02T10:00:00Z"})


def job(status: str, **extra: Any) -> Handler:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"id": "job-1", "status": status, "created_at": "2026-12-02T10:00:00Z",
                       **extra},
        )

    return answer


def test_it_has_none_of_the_lookup_capabilities() -> None:
    ltx = provider(accepted)
    assert not isinstance(ltx, TaskFinder)
    assert not isinstance(ltx, TaskLister) and not isinstance(ltx, BatchReader)


async def test_a_text2video_submit_sends_the_fields_and_no_client_id() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return accepted(request)

    async with provider(handler) as ltx:
        task = await ltx.create(T2V, "ext-id-never-sent")
    assert task.task_id == "job-1" and task.status is TaskStatus.SUBMITTED
    assert task.created_at == 1796205600.0
    (request,) = seen
    assert request.method == "POST" and request.url.path == "/v2/text-to-video"
    assert request.headers["Authorization"] == f"Bearer {KEY}"
    assert json.loads(request.content) == {
        "prompt": "a fox", "model": "ltx-2-3-fast", "duration": 8, "resolution": "1920x1080",
        "fps": 25, "generate_audio": False,
    }
    assert b"ext-id-never-sent" not in request.content


async def test_reads_go_to_the_endpoint_of_the_submit() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return job("processing")(request)

    image = ImageSource(url="https://x/a.png")
    i2v = TaskRequest(Kind.IMAGE2VIDEO, {"prompt": "p", "image": image}, 1)
    async with provider(handler) as ltx:
        assert (await ltx.query(T2V, "job-1")).status is TaskStatus.PROCESSING
        await ltx.query(i2v, "job-2")
    assert seen == ["/v2/text-to-video/job-1", "/v2/image-to-video/job-2"]


async def test_a_small_local_image_travels_inline_and_a_url_as_is(tmp_path: Path) -> None:
    image = tmp_path / "cat.png"
    image.write_bytes(png_bytes(320, 320))
    bodies: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(json.loads(request.content))
        return accepted(request)

    request = TaskRequest(
        Kind.IMAGE2VIDEO,
        {"prompt": "p", "image": ImageSource(path=image),
         "last_frame": ImageSource(url="https://cdn.example/end.png")},
        1,
    )
    async with provider(handler) as ltx:
        await ltx.create(request, "ext")
    (body,) = bodies
    assert body["image_uri"] == "data:image/png;base64," + base64.b64encode(
        image.read_bytes()).decode()
    assert body["last_frame_uri"] == "https://cdn.example/end.png"
    assert "image" not in body and "last_frame" not in body


async def test_a_large_local_image_is_uploaded_first_without_the_key(tmp_path: Path) -> None:
    image = tmp_path / "big.png"
    image.write_bytes(png_bytes(640, 640))
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/upload":
            return httpx.Response(200, json={
                "upload_url": "https://storage.example/put/abc?sig=1",
                "storage_uri": "ltx://uploads/abc",
                "expires_at": "2026-12-02T11:00:00Z",
                "required_headers": {"Content-Type": "image/png"},
            })
        if request.method == "PUT":
            return httpx.Response(200)
        return accepted(request)

    request = TaskRequest(Kind.IMAGE2VIDEO, {"prompt": "p", "image": ImageSource(path=image)}, 1)
    async with provider(handler, inline_image_bytes=100) as ltx:
        await ltx.create(request, "ext")
    upload, put, submit = seen
    assert upload.url.path == "/v1/upload"
    assert put.method == "PUT" and put.url.host == "storage.example"
    assert "Authorization" not in put.headers  # the storage host never sees the key
    assert put.content == image.read_bytes() and put.headers["Content-Type"] == "image/png"
    assert json.loads(submit.content)["image_uri"] == "ltx://uploads/abc"


async def test_a_failed_upload_is_unsent_and_retryable(tmp_path: Path) -> None:
    image = tmp_path / "big.png"
    image.write_bytes(png_bytes(640, 640))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/upload":
            return httpx.Response(200, json={"upload_url": "https://storage.example/p",
                                             "storage_uri": "ltx://uploads/p"})
        return httpx.Response(503)

    request = TaskRequest(Kind.IMAGE2VIDEO, {"prompt": "p", "image": ImageSource(path=image)}, 1)
    async with provider(handler, inline_image_bytes=100) as ltx:
        with pytest.raises(ProviderError) as caught:
            await ltx.create(request, "ext")
    assert not caught.value.sent and not caught.value.ambiguous
    assert caught.value.info.retryable


@pytest.mark.parametrize(
    ("answer", "category", "retryable", "scope"),
    [
        (error(400, "invalid_request_error", "duration must be even"), Category.VALIDATION,
         False, Scope.ITEM),
        (error(401, "authentication_error"), Category.AUTH, False, Scope.ACCOUNT),
        (error(402, "insufficient_funds_error", "Insufficient funds. Required: 120 credits"),
         Category.BILLING, False, Scope.ACCOUNT),
        (httpx.Response(413, text="<html>413 Request Entity Too Large</html>",
                        headers={"Content-Type": "text/html"}), Category.VALIDATION, False,
         Scope.ITEM),
        (error(422, "content_filtered_error"), Category.POLICY, False, Scope.ITEM),
        (error(429, "rate_limit_error", **{"Retry-After": "7"}), Category.RATE_LIMIT, True,
         Scope.ITEM),
        (error(418, "teapot_error"), Category.VALIDATION, False, Scope.ITEM),
    ],
)
async def test_a_refused_submit_is_classified_and_not_ambiguous(
    answer: httpx.Response, category: Category, retryable: bool, scope: Scope
) -> None:
    async with provider(lambda request: answer) as ltx:
        with pytest.raises(ProviderError) as caught:
            await ltx.create(T2V, "ext")
    err = caught.value
    assert err.info.category is category
    assert err.info.retryable is retryable and err.info.scope is scope
    assert err.sent and not err.ambiguous  # a 4xx refuses the submit for sure
    assert err.info.http_status == answer.status_code
    assert err.info.hint


async def test_codes_are_ltx_error_types_and_messages_are_kept() -> None:
    answer = error(402, "insufficient_funds_error", "Insufficient funds. Required: 120 credits")
    async with provider(lambda request: answer) as ltx:
        with pytest.raises(ProviderError) as caught:
            await ltx.create(T2V, "ext")
    assert caught.value.info.code == "insufficient_funds_error"
    assert caught.value.info.message == "Insufficient funds. Required: 120 credits"
    assert caught.value.request_id == "req-1"


async def test_a_413_without_an_envelope_says_what_came_back() -> None:
    answer = httpx.Response(413, text="<html>too large</html>",
                            headers={"Content-Type": "text/html"})
    async with provider(lambda request: answer) as ltx:
        with pytest.raises(ProviderError) as caught:
            await ltx.create(T2V, "ext")
    assert caught.value.info.code == "request_too_large"
    assert "non-JSON body (text/html" in caught.value.info.message


async def test_retry_after_is_honoured_and_a_concurrency_429_lowers_the_cap() -> None:
    answers = {
        "rate": error(429, "rate_limit_error", **{"Retry-After": "7"}),
        "slots": error(429, "concurrency_limit_error", **{"Retry-After": "3"}),
    }
    for name, answer in answers.items():

        def handler(request: httpx.Request, answer: httpx.Response = answer) -> httpx.Response:
            return answer

        async with provider(handler) as ltx:
            with pytest.raises(ProviderError) as caught:
                await ltx.create(T2V, "ext")
        assert caught.value.retry_after == (7.0 if name == "rate" else 3.0)
        assert caught.value.over_capacity is (name == "slots")


@pytest.mark.parametrize(
    "answer",
    [error(500, "api_error"), error(503, "service_unavailable"), error(529, "overloaded_error"),
     httpx.Response(502, text="bad gateway"), httpx.Response(200, json=["not", "an", "object"]),
     httpx.Response(202, json={"created_at": "x"})],
)
async def test_a_submit_that_may_have_made_the_job_is_ambiguous(answer: httpx.Response) -> None:
    async with provider(lambda request: answer) as ltx:
        with pytest.raises(ProviderError) as caught:
            await ltx.create(T2V, "ext")
    assert caught.value.ambiguous and caught.value.info.retryable


async def test_a_dropped_connection_after_sending_is_ambiguous_before_it_is_not() -> None:
    def dropped(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.")

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    async with provider(dropped) as ltx:
        with pytest.raises(ProviderError) as caught:
            await ltx.create(T2V, "ext")
    assert caught.value.ambiguous and caught.value.info.category is Category.NETWORK
    async with provider(refused) as ltx:
        with pytest.raises(ProviderError) as caught:
            await ltx.create(T2V, "ext")
    assert not caught.value.sent and not caught.value.ambiguous


async def test_a_5xx_on_a_read_is_retried_and_a_404_means_gone() -> None:
    async with provider(lambda request: error(503, "service_unavailable")) as ltx:
        with pytest.raises(ProviderError) as caught:
            await ltx.query(T2V, "job-1")
    assert caught.value.info.retryable and not caught.value.ambiguous
    assert caught.value.retry_after == 5.0  # no Retry-After: a longer wait than the default
    async with provider(lambda request: error(404, "not_found_error", "Job not found")) as ltx:
        with pytest.raises(ProviderError) as caught:
            await ltx.query(T2V, "job-1")
    assert caught.value.not_found and not caught.value.info.retryable
    assert "24 hours" in caught.value.info.hint


@pytest.mark.parametrize(
    ("status", "expected"),
    [("pending", TaskStatus.SUBMITTED), ("processing", TaskStatus.PROCESSING)],
)
async def test_unfinished_jobs(status: str, expected: TaskStatus) -> None:
    async with provider(job(status)) as ltx:
        task = await ltx.query(T2V, "job-1")
    assert task.status is expected and task.assets == ()


async def test_a_completed_job_has_its_video() -> None:
    handler = job("completed", completed_at="2026-12-02T10:01:00Z",
                  result={"video_url": "https://cdn.ltx.video/job-1.mp4?sig=a"})
    async with provider(handler) as ltx:
        task = await ltx.query(T2V, "job-1")
    assert task.status is TaskStatus.SUCCEEDED
    assert [(a.index, a.url, a.media) for a in task.assets] == [
        (0, "https://cdn.ltx.video/job-1.mp4?sig=a", "video")
    ]
    assert task.ended_at is not None and task.created_at is not None
    assert task.ended_at - task.created_at == 60


@pytest.mark.parametrize(
    ("kind", "category", "retryable"),
    [("content_filtered_error", Category.POLICY, False),
     ("invalid_request_error", Category.VALIDATION, False),
     ("api_error", Category.TASK_FAILED, True),
     (None, Category.TASK_FAILED, True)],
)
async def test_a_failed_job_is_classified_by_its_error(
    kind: str | None, category: Category, retryable: bool
) -> None:
    handler = job("failed", completed_at="2026-12-02T10:01:00Z",
                  error={"type": kind, "message": "stopped"})
    async with provider(handler) as ltx:
        task = await ltx.query(T2V, "job-1")
    assert task.status is TaskStatus.FAILED and task.failure is not None
    assert task.failure.category is category and task.failure.retryable is retryable
    assert task.failure.code == kind


@pytest.mark.parametrize(
    "body",
    [{"id": "job-1", "status": "exploded"}, {"id": "job-1"},
     {"id": "job-1", "status": "completed", "result": {}},
     {"id": "job-1", "status": "completed", "result": {"video_url": 7}}],
)
async def test_a_status_answer_we_cannot_read_says_so(body: dict[str, Any]) -> None:
    async with provider(lambda request: httpx.Response(200, json=body)) as ltx:
        with pytest.raises(ProviderError) as caught:
            await ltx.query(T2V, "job-1")
    info = caught.value.info
    assert info.category is Category.SERVER and info.retryable
    assert "unexpected answer from LTX" in info.message
    assert "poll.timeout" not in info.hint


async def test_the_key_never_reaches_an_error_message() -> None:
    answer = error(401, "authentication_error", f"invalid key {KEY} (Bearer {KEY})")
    async with provider(lambda request: answer) as ltx:
        with pytest.raises(ProviderError) as caught:
            await ltx.create(T2V, "ext")
    assert KEY not in str(caught.value) and KEY not in caught.value.info.message
    assert KEY not in repr(BearerAuth(KEY))
