"""The Kling adapter against httpx.MockTransport: bodies, parsing, errors, lookup."""

from __future__ import annotations

import base64
import email.utils
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.errors import Category, ProviderError, Scope
from orchestrator.providers.base import (
    Asset,
    ImageSource,
    Kind,
    Provider,
    TaskRequest,
    TaskStatus,
)
from orchestrator.providers.kling import FAMILIES, KlingProvider
from orchestrator.providers.kling import client as kling
from orchestrator.providers.kling.auth import ApiKeyAuth, JwtAuth
from tests.conftest import request_of

API_KEY = "apikey-test-0123456789abcdefghijkl"
AK = "ak-test-0123456789abcdef"
SK = "sk-test-secret-0123456789abcdefghijkl"
NOW = 1_700_000_000.0
EXT = "batch1-item7-a1"

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Server:
    """Answers queued in order; every request the provider sends is recorded."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer

    def body(self, index: int = -1) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.requests[index].content)
        return parsed


def ok(data: object, request_id: str = "req-ok") -> httpx.Response:
    return httpx.Response(
        200, json={"code": 0, "message": "SUCCEED", "request_id": request_id, "data": data}
    )


def fail(status: int, code: int, message: str = "no", **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        json={"code": code, "message": message, "request_id": "req-err", "data": None},
        headers=headers,
    )


def task(
    task_id: str = "t1", status: str = "submitted", external: str | None = EXT, **extra: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {"task_id": task_id, "task_status": status, **extra}
    if external is not None:
        data["task_info"] = {"external_task_id": external}
    return data


def provider_for(server: Server, *, auth: httpx.Auth | None = None, **kwargs: Any) -> KlingProvider:
    return KlingProvider(
        "https://kling.test",
        auth or ApiKeyAuth(API_KEY),
        transport=httpx.MockTransport(server),
        clock=lambda: NOW,
        **kwargs,
    )


def assert_clean(error: ProviderError) -> None:
    for secret in (API_KEY, AK, SK):
        assert secret not in str(error) and secret not in repr(error)
    assert "Authorization" not in str(error) and "Authorization" not in repr(error)


async def raises(call: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await call
    assert_clean(caught.value)
    return caught.value


T2V = TaskRequest(
    Kind.TEXT2VIDEO,
    {
        "model": "kling-v2-5-turbo",
        "prompt": "a red fox in snow",
        "negative_prompt": None,
        "duration": 5,
        "mode": "std",
        "aspect_ratio": "16:9",
        "cfg_scale": 0.5,
        "camera_control": {"type": "simple", "config": {"zoom": 5, "pan": None}},
    },
    expected_assets=1,
)


def test_provider_satisfies_the_protocol() -> None:
    provider: Provider = provider_for(Server())
    assert provider.name == "kling"


def test_families_are_data() -> None:
    assert {kind: family.path for kind, family in FAMILIES.items()} == {
        Kind.TEXT2VIDEO: "videos/text2video",
        Kind.IMAGE2VIDEO: "videos/image2video",
        Kind.OMNI_VIDEO: "videos/omni-video",
        Kind.IMAGE: "images/generations",
    }


# -- create bodies -----------------------------------------------------------------------------

@pytest.mark.anyio
async def test_text2video_body() -> None:
    server = Server(ok(task()))
    async with provider_for(server) as provider:
        created = await provider.create(T2V, EXT)
    request = server.requests[0]
    assert (request.method, request.url.path) == ("POST", "/v1/videos/text2video")
    assert request.headers["Content-Type"] == "application/json"
    assert server.body() == {
        "model_name": "kling-v2-5-turbo",
        "prompt": "a red fox in snow",
        "duration": "5",
        "mode": "std",
        "aspect_ratio": "16:9",
        "cfg_scale": 0.5,
        "camera_control": {"type": "simple", "config": {"zoom": 5}},
        "external_task_id": EXT,
    }
    assert created.task_id == "t1" and created.status is TaskStatus.SUBMITTED
    assert created.external_task_id == EXT and created.request_id == "req-ok"
    assert created.failure is None


@pytest.mark.anyio
async def test_image2video_body_inlines_local_files_as_raw_base64(tmp_path: Path) -> None:
    first = tmp_path / "first.png"
    first.write_bytes(b"\x89PNG\r\n\x1a\nfirst-frame")
    mask = tmp_path / "mask.png"
    mask.write_bytes(b"\x89PNG\r\n\x1a\nmask")
    request = TaskRequest(
        Kind.IMAGE2VIDEO,
        {
            "model": "kling-v2-5-turbo",
            "prompt": "the fox turns",
            "image": ImageSource(path=first),
            "image_tail": None,
            "dynamic_masks": [
                {"mask": ImageSource(path=mask), "trajectories": [{"x": 1, "y": 2}]},
            ],
            "duration": 10,
        },
        expected_assets=1,
    )
    server = Server(ok(task()))
    async with provider_for(server) as provider:
        await provider.create(request, EXT)
    body = server.body()
    assert server.requests[0].url.path == "/v1/videos/image2video"
    assert body["image"] == base64.b64encode(first.read_bytes()).decode()
    assert not body["image"].startswith("data:")
    assert body["dynamic_masks"] == [
        {"mask": base64.b64encode(mask.read_bytes()).decode(), "trajectories": [{"x": 1, "y": 2}]}
    ]
    assert body["duration"] == "10" and "image_tail" not in body
    assert body["external_task_id"] == EXT


@pytest.mark.anyio
async def test_image_body_passes_urls_through() -> None:
    request = TaskRequest(
        Kind.IMAGE,
        {
            "model": "kling-v2-1",
            "prompt": "a lighthouse",
            "image": ImageSource(url="https://example.test/ref.jpg"),
            "image_reference": "subject",
            "n": 4,
            "resolution": "2k",
            "aspect_ratio": "3:2",
        },
        expected_assets=4,
    )
    server = Server(ok(task()))
    async with provider_for(server) as provider:
        await provider.create(request, EXT)
    assert server.requests[0].url.path == "/v1/images/generations"
    assert server.body() == {
        "model_name": "kling-v2-1",
        "prompt": "a lighthouse",
        "image": "https://example.test/ref.jpg",
        "image_reference": "subject",
        "n": 4,
        "resolution": "2k",
        "aspect_ratio": "3:2",
        "external_task_id": EXT,
    }


@pytest.mark.anyio
async def test_field_the_family_does_not_accept_is_refused_before_sending() -> None:
    server = Server()
    request = TaskRequest(Kind.IMAGE, {"prompt": "x", "duration": 5}, expected_assets=1)
    async with provider_for(server) as provider:
        error = await raises(provider.create(request, EXT))
    assert error.info.category is Category.VALIDATION and not error.sent
    assert "duration" in error.info.message
    assert server.requests == []


@pytest.mark.anyio
async def test_unreadable_image_is_a_validation_error_before_sending(tmp_path: Path) -> None:
    server = Server()
    request = TaskRequest(
        Kind.IMAGE2VIDEO, {"image": ImageSource(path=tmp_path / "missing.png")}, 1
    )
    async with provider_for(server) as provider:
        error = await raises(provider.create(request, EXT))
    assert error.info.category is Category.VALIDATION and not error.sent
    assert "missing.png" in error.info.message
    assert server.requests == []


# -- parsing -----------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_query_parses_video_results() -> None:
    result = {"videos": [{"id": "v1", "url": "https://cdn.test/v1.mp4", "duration": "5.1"}]}
    server = Server(ok(task(status="succeed", task_result=result, task_status_msg="")))
    async with provider_for(server) as provider:
        got = await provider.query(request_of(Kind.TEXT2VIDEO), "t1")
    assert server.requests[0].method == "GET"
    assert server.requests[0].url.path == "/v1/videos/text2video/t1"
    assert got.status is TaskStatus.SUCCEEDED and got.status.finished
    assert got.assets == (Asset(0, "https://cdn.test/v1.mp4", "video"),)
    assert got.message is None and got.failure is None
    assert got.raw["task_result"] == result


@pytest.mark.anyio
async def test_query_parses_image_results_with_their_index() -> None:
    result = {"images": [{"index": 0, "url": "https://cdn.test/0.png"},
                         {"index": 2, "url": "https://cdn.test/2.png"}]}
    server = Server(ok(task(status="succeed", task_result=result)))
    async with provider_for(server) as provider:
        got = await provider.query(request_of(Kind.IMAGE), "t1")
    assert got.assets == (
        Asset(0, "https://cdn.test/0.png", "image"),
        Asset(2, "https://cdn.test/2.png", "image"),
    )


@pytest.mark.anyio
@pytest.mark.parametrize(
    "indexes",
    [[-1, 0, 1], [1, 1, 2], [0, "x", 1], [0, 1, 10**100], [True, 0, 1]],
    ids=["negative", "duplicate", "missing-duplicates-a-position", "huge", "bool"],
)
async def test_unusable_image_indexes_are_renumbered_by_position(indexes: list[object]) -> None:
    # Was: any int was kept; -1 crashed the download, duplicates wrote one file twice.
    result = {"images": [{"index": i, "url": f"https://cdn.test/{n}.png"}
                         for n, i in enumerate(indexes)]}
    server = Server(ok(task(status="succeed", task_result=result)))
    async with provider_for(server) as provider:
        got = await provider.query(request_of(Kind.IMAGE), "t1")
    assert got.assets == tuple(Asset(n, f"https://cdn.test/{n}.png", "image") for n in range(3))


@pytest.mark.anyio
@pytest.mark.parametrize("status", ["submitted", "processing"])
async def test_query_in_progress(status: str) -> None:
    server = Server(ok(task(status=status)))
    async with provider_for(server) as provider:
        got = await provider.query(request_of(Kind.TEXT2VIDEO), "t1")
    assert got.status == TaskStatus(status) and not got.status.finished and got.assets == ()


@pytest.mark.anyio
async def test_failed_task_is_an_answer_not_an_error() -> None:
    server = Server(ok(task(status="failed", task_status_msg="Image pixel is invalid")))
    async with provider_for(server) as provider:
        got = await provider.query(request_of(Kind.IMAGE2VIDEO), "t1")
    assert got.status is TaskStatus.FAILED
    assert got.message == "Image pixel is invalid"
    assert got.failure is not None
    assert got.failure.category is Category.TASK_FAILED and not got.failure.retryable


@pytest.mark.anyio
async def test_ids_are_escaped_in_the_path() -> None:
    server = Server(ok(task(task_id="a/b c")))
    async with provider_for(server) as provider:
        await provider.query(request_of(Kind.TEXT2VIDEO), "a/b c")
    assert server.requests[0].url.raw_path == b"/v1/videos/text2video/a%2Fb%20c"


@pytest.mark.anyio
async def test_list_tasks() -> None:
    server = Server(ok([task("t2", "processing", "e2"), task("t1", "succeed", "e1")]))
    async with provider_for(server) as provider:
        tasks = await provider.list_tasks(Kind.IMAGE, 3, 50)
    assert [t.task_id for t in tasks] == ["t2", "t1"]
    assert server.requests[0].url.path == "/v1/images/generations"
    assert dict(server.requests[0].url.params) == {"pageNum": "3", "pageSize": "50"}


@pytest.mark.anyio
async def test_list_matching_parses_only_the_wanted_tasks() -> None:
    entries = [
        task("t3", "processing", "e3"),
        {"task_id": "t2", "task_status": "no-such-status"},  # wanted, malformed: left out
        task("t1", "succeed", "e1"),
        "junk",
        {"task_id": 7, "task_status": "failed", "task_status_msg": "x"},
    ]
    server = Server(ok(entries))
    async with provider_for(server) as provider:
        found, count = await provider.list_matching(Kind.TEXT2VIDEO, 2, {"t1", "t2", "7"})
    assert count == 5
    assert sorted(found) == ["7", "t1"]
    assert found["t1"].status is TaskStatus.SUCCEEDED
    assert found["7"].status is TaskStatus.FAILED
    assert dict(server.requests[0].url.params) == {"pageNum": "2", "pageSize": "500"}


# -- Kling's error answers ---------------------------------------------------------------------

@pytest.mark.anyio
async def test_error_answer_carries_code_status_and_request_id() -> None:
    server = Server(fail(429, 1303, "parallel task over resource pack limit"))
    async with provider_for(server) as provider:
        error = await raises(provider.create(T2V, EXT))
    assert error.info.category is Category.RATE_LIMIT and error.info.retryable
    assert (error.info.code, error.info.http_status) == (1303, 429)
    assert error.request_id == "req-err"
    assert error.sent and not error.ambiguous and not error.not_found and error.over_capacity
    assert "parallel task over resource pack limit" in str(error) and "1303" in str(error)
    assert len(server.requests) == 1  # the engine is the only retry layer


@pytest.mark.anyio
async def test_429_with_billing_code_stops_the_batch() -> None:
    server = Server(fail(429, 1102, "resource pack exhausted", **{"Retry-After": "5"}))
    async with provider_for(server) as provider:
        error = await raises(provider.create(T2V, EXT))
    assert error.info.category is Category.BILLING
    assert error.info.scope is Scope.ACCOUNT and not error.info.retryable


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "code", "ambiguous"),
    [(500, 5000, True), (503, 5001, True), (504, 5002, True), (502, 0, True),
     (400, 1201, False), (400, 1301, False), (429, 1302, False), (401, 1000, False)],
)
async def test_create_ambiguity(status: int, code: int, ambiguous: bool) -> None:
    server = Server(fail(status, code))
    async with provider_for(server) as provider:
        error = await raises(provider.create(T2V, EXT))
    assert error.ambiguous is ambiguous and error.sent


@pytest.mark.anyio
async def test_create_with_unknown_code_on_2xx_is_ambiguous() -> None:
    server = Server(fail(200, 4242, "surprise"))
    async with provider_for(server) as provider:
        error = await raises(provider.create(T2V, EXT))
    assert error.info.category is Category.SERVER and error.ambiguous


@pytest.mark.anyio
async def test_reads_are_never_ambiguous() -> None:
    server = Server(fail(500, 5000), httpx.ReadTimeout("slow"))
    async with provider_for(server) as provider:
        assert not (await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))).ambiguous
        assert not (await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))).ambiguous


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": email.utils.formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"retry-after-ms": "1500", "Retry-After": "7"}, 1.5),
        ({"retry-after-ms": "garbage", "Retry-After": "7"}, 7.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
@pytest.mark.anyio
async def test_retry_after(headers: dict[str, str], expected: float | None) -> None:
    server = Server(fail(429, 1302, "too fast", **headers))
    async with provider_for(server) as provider:
        error = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
    assert error.retry_after == expected


@pytest.mark.anyio
async def test_maintenance_waits_longer_without_retry_after() -> None:
    server = Server(fail(503, 5001, "maintenance"), fail(503, 5001, "maintenance",
                                                         **{"Retry-After": "3"}))
    async with provider_for(server) as provider:
        assert (await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))).retry_after == 30.0
        assert (await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))).retry_after == 3.0


# -- not found ---------------------------------------------------------------------------------

@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "code"), [(404, 1203), (400, 1201), (404, 1202), (404, 0), (200, 1203)]
)
async def test_query_not_found(status: int, code: int) -> None:
    server = Server(fail(status, code, "Task not found"))
    async with provider_for(server) as provider:
        error = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "nope"))
    assert error.not_found
    assert error.info.category is Category.VALIDATION and not error.info.retryable


@pytest.mark.anyio
async def test_1201_on_create_is_a_bad_value_not_absence() -> None:
    server = Server(fail(400, 1201, "duration invalid"))
    async with provider_for(server) as provider:
        error = await raises(provider.create(T2V, EXT))
    assert not error.not_found and error.info.category is Category.VALIDATION


@pytest.mark.anyio
async def test_bare_404_page_is_not_proof_of_absence() -> None:
    server = Server(httpx.Response(404, text="<html>Not Found</html>"))
    async with provider_for(server) as provider:
        error = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
    assert not error.not_found


# -- malformed answers -------------------------------------------------------------------------

MALFORMED = [
    pytest.param(httpx.Response(502, html="<html><body>Bad Gateway</body></html>"), id="html-502"),
    pytest.param(httpx.Response(200, content=b""), id="empty-200"),
    pytest.param(httpx.Response(500, content=b""), id="empty-500"),
    pytest.param(httpx.Response(200, html="<html>hi</html>"), id="html-200"),
    pytest.param(httpx.Response(200, json=[1, 2]), id="json-list"),
    pytest.param(httpx.Response(500, json=[1, 2]), id="json-list-500"),
    pytest.param(httpx.Response(200, content=b"\xff\xfe\x00garbage"), id="binary"),
    pytest.param(ok(None), id="no-data"),
    pytest.param(ok("t1"), id="data-string"),
    pytest.param(ok({"task_status": "submitted"}), id="no-task-id"),
    pytest.param(ok({"task_id": "", "task_status": "submitted"}), id="empty-task-id"),
    pytest.param(ok({"task_id": "t1", "task_status": "exploded"}), id="unknown-status"),
    pytest.param(ok({"task_id": "t1"}), id="no-status"),
    pytest.param(ok({"task_id": "t1", "task_status": ["succeed"]}), id="status-list"),
    pytest.param(ok(task(status="succeed", task_result=[])), id="result-list"),
    pytest.param(ok(task(status="succeed", task_result={"videos": {}})), id="videos-dict"),
    pytest.param(ok(task(status="succeed", task_result={"videos": [{"id": "v"}]})),
                 id="video-no-url"),
    pytest.param(ok(task(status="succeed", task_result={"videos": ["u"]})), id="video-str"),
]


@pytest.mark.anyio
@pytest.mark.parametrize("answer", MALFORMED)
async def test_malformed_answers_become_server_errors(answer: httpx.Response) -> None:
    for call in ("create", "query"):
        server = Server(answer)
        async with provider_for(server) as provider:
            if call == "create":
                error = await raises(provider.create(T2V, EXT))
            else:
                error = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
        assert error.info.category is Category.SERVER, error
        assert error.info.message
        if call == "create":
            assert error.ambiguous  # a task may exist: look it up, never resubmit blindly
        if call == "query":
            assert not error.ambiguous


@pytest.mark.anyio
async def test_html_error_page_is_described_not_quoted() -> None:
    server = Server(httpx.Response(502, html="<html><body>Bad Gateway nginx</body></html>"))
    async with provider_for(server) as provider:
        error = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
    assert error.info.retryable and error.info.http_status == 502
    assert "non-JSON" in error.info.message and "text/html" in error.info.message
    assert "nginx" not in error.info.message


@pytest.mark.anyio
async def test_list_with_non_array_data_is_a_server_error() -> None:
    server = Server(ok({"task_id": "t1"}))
    async with provider_for(server) as provider:
        error = await raises(provider.list_tasks(Kind.TEXT2VIDEO, 1, 10))
    assert error.info.category is Category.SERVER


# -- transport failures ------------------------------------------------------------------------

TRANSPORT = [
    # (exception, category, sent, ambiguous on create)
    (httpx.ConnectError("connection refused"), Category.NETWORK, False, False),
    (httpx.ConnectTimeout("connect timed out"), Category.NETWORK, False, False),
    (httpx.PoolTimeout("no free connection"), Category.NETWORK, False, False),
    (httpx.ProxyError("proxy refused"), Category.NETWORK, False, False),
    (httpx.UnsupportedProtocol("ftp?"), Category.NETWORK, False, False),
    (httpx.ReadTimeout("read timed out"), Category.TIMEOUT, True, True),
    (httpx.WriteTimeout("write timed out"), Category.TIMEOUT, True, True),
    (httpx.RemoteProtocolError("Server disconnected"), Category.NETWORK, True, True),
    (httpx.ReadError("reset by peer"), Category.NETWORK, True, True),
    (httpx.WriteError("broken pipe"), Category.NETWORK, True, True),
    (httpx.CloseError("close failed"), Category.NETWORK, True, True),
    (httpx.LocalProtocolError("bad"), Category.NETWORK, True, True),
    (httpx.DecodingError("bad gzip"), Category.NETWORK, True, True),
]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("exc", "category", "sent", "ambiguous"),
    TRANSPORT,
    ids=[type(row[0]).__name__ for row in TRANSPORT],
)
async def test_transport_failures(
    exc: Exception, category: Category, sent: bool, ambiguous: bool
) -> None:
    server = Server(exc, exc)
    async with provider_for(server) as provider:
        created = await raises(provider.create(T2V, EXT))
        queried = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
    assert created.info.category is category
    assert (created.sent, created.ambiguous) == (sent, ambiguous)
    assert (queried.sent, queried.ambiguous) == (sent, False)
    assert type(exc).__name__ in created.info.message
    assert len(server.requests) == 2


def _name(cls: type[Exception]) -> str:
    return cls.__name__


def _all_subclasses(cls: type[Exception]) -> Iterator[type[Exception]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


_HTTPX_ERRORS: list[type[Exception]] = sorted(
    {*_all_subclasses(httpx.RequestError), httpx.InvalidURL}, key=_name
)
_NEVER_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.ProxyError,
               httpx.UnsupportedProtocol, httpx.InvalidURL)


@pytest.mark.anyio
@pytest.mark.parametrize("exc_type", _HTTPX_ERRORS, ids=_name)
async def test_no_httpx_request_error_slips_through(exc_type: type[Exception]) -> None:
    server = Server(exc_type("boom"))
    async with provider_for(server) as provider:
        error = await raises(provider.create(T2V, EXT))
    assert error.info.category in (Category.NETWORK, Category.TIMEOUT)
    # Only failures that provably never reached Kling may claim sent=False; anything else on a
    # create must send the engine to look the task up before resubmitting.
    if issubclass(exc_type, _NEVER_SENT):
        assert not error.sent and not error.ambiguous
    else:
        assert error.sent and error.ambiguous


@pytest.mark.anyio
async def test_unsupported_protocol_is_a_configuration_error() -> None:
    server = Server(httpx.UnsupportedProtocol("Request URL has an unsupported protocol"))
    async with provider_for(server) as provider:
        error = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
    assert not error.info.retryable and error.info.scope is Scope.ACCOUNT
    assert "base_url" in error.info.hint


# -- lookup by external id ---------------------------------------------------------------------

@pytest.mark.anyio
async def test_lookup_via_path() -> None:
    server = Server(ok(task("t9", "processing", EXT)))
    async with provider_for(server) as provider:
        found = await provider.lookup(request_of(Kind.TEXT2VIDEO), EXT)
    assert found is not None and found.task_id == "t9"
    assert server.requests[0].url.path == f"/v1/videos/text2video/{EXT}"
    assert len(server.requests) == 1


@pytest.mark.anyio
async def test_lookup_via_path_without_task_info() -> None:
    server = Server(ok(task("t9", "processing", external=None)))
    async with provider_for(server) as provider:
        found = await provider.lookup(request_of(Kind.TEXT2VIDEO), EXT)
    assert found is not None and found.task_id == "t9"


@pytest.mark.anyio
async def test_lookup_falls_back_to_the_list() -> None:
    server = Server(
        fail(400, 1201, "Task not found"),
        ok([task("t3", "processing", "other"), task("t2", "succeed", EXT), "junk", {"x": 1}],
           request_id="req-list"),
    )
    async with provider_for(server) as provider:
        found = await provider.lookup(request_of(Kind.IMAGE), EXT)
    assert found is not None
    assert (found.task_id, found.status, found.request_id) == ("t2", TaskStatus.SUCCEEDED,
                                                               "req-list")
    listing = server.requests[1]
    assert listing.url.path == "/v1/images/generations"
    assert dict(listing.url.params) == {"pageNum": "1", "pageSize": "500"}


@pytest.mark.anyio
async def test_lookup_scans_further_pages_when_the_first_is_full() -> None:
    full_page = [task(f"x{i}", "succeed", f"other-{i}") for i in range(500)]
    server = Server(
        fail(404, 1203, "not found"), ok(full_page), ok([task("t1", "processing", EXT)])
    )
    async with provider_for(server) as provider:
        found = await provider.lookup(request_of(Kind.TEXT2VIDEO), EXT)
    assert found is not None and found.task_id == "t1"
    assert server.requests[2].url.params["pageNum"] == "2"


@pytest.mark.anyio
async def test_lookup_path_returning_another_task_is_confirmed_by_the_list() -> None:
    server = Server(ok(task("t5", "processing", "someone-else")), ok([]))
    async with provider_for(server) as provider:
        assert await provider.lookup(request_of(Kind.TEXT2VIDEO), EXT) is None
    assert len(server.requests) == 2


def page_of(first_ms: float, *, size: int = 500, step_ms: float = 1000) -> list[dict[str, Any]]:
    """A list page of other clients' tasks, newest first, from ``first_ms`` back."""
    return [task(f"x{first_ms}-{i}", "succeed", f"other-{i}", created_at=first_ms - i * step_ms)
            for i in range(size)]


@pytest.mark.anyio
async def test_lookup_that_reads_every_page_allowed_cannot_claim_absence() -> None:
    # Was: None after lookup_pages (2) full pages: a task older than the 1000 newest looked
    # absent and the engine resent it, a second paid task.
    later_ms = (NOW + 3600) * 1000
    server = Server(
        fail(404, 1203, "not found"), ok(page_of(later_ms)), ok(page_of(later_ms - 500_000))
    )
    async with provider_for(server, lookup_pages=2) as provider:
        error = await raises(provider.lookup(request_of(Kind.TEXT2VIDEO), EXT, sent_after=NOW))
    assert len(server.requests) == 3  # path + lookup_pages pages, no more
    assert not error.not_found and not error.info.retryable
    assert "cannot prove" in error.info.message and "1000 newest" in error.info.message


@pytest.mark.anyio
async def test_lookup_reads_past_the_thousand_newest_to_find_an_older_task() -> None:
    later_ms = (NOW + 3600) * 1000  # a busy hour of other tasks after ours
    ours = task("t-old", "succeed", EXT, created_at=NOW * 1000 + 200)
    server = Server(
        fail(400, 1201, "Task not found"),
        ok(page_of(later_ms)),
        ok(page_of(later_ms - 500_000)),
        ok([*page_of(later_ms - 1_000_000, size=10), ours, *page_of(NOW * 1000, size=489)]),
    )
    async with provider_for(server) as provider:
        found = await provider.lookup(request_of(Kind.TEXT2VIDEO), EXT, sent_after=NOW)
    assert found is not None and found.task_id == "t-old"
    assert [r.url.params["pageNum"] for r in server.requests[1:]] == ["1", "2", "3"]


@pytest.mark.anyio
async def test_lookup_absent_once_the_list_reaches_tasks_created_well_before_the_send() -> None:
    margin_ms = kling.LOOKUP_CLOCK_MARGIN * 1000
    server = Server(
        fail(404, 1203, "not found"),
        ok(page_of((NOW + 900) * 1000)),
        # Created before the send, but within the clock margin: not proof yet.
        ok(page_of(NOW * 1000, step_ms=margin_ms / 1000)),
        ok(page_of(NOW * 1000 - margin_ms - 1)),
        ok(page_of(0)),  # never read
    )
    async with provider_for(server) as provider:
        assert await provider.lookup(request_of(Kind.TEXT2VIDEO), EXT, sent_after=NOW) is None
    assert len(server.requests) == 4


@pytest.mark.anyio
async def test_lookup_without_a_send_time_reads_to_the_end_of_the_list() -> None:
    server = Server(
        fail(404, 1203, "not found"), ok(page_of(0)), ok(page_of(0)), ok(page_of(0, size=3))
    )
    async with provider_for(server) as provider:
        assert await provider.lookup(request_of(Kind.TEXT2VIDEO), EXT) is None
    assert len(server.requests) == 4


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("page", "reason"),
    [
        ([task(f"x{i}", "succeed", f"other-{i}") for i in range(500)], "no created_at"),
        ([*page_of(NOW * 1000, size=499), "junk"], "not a task object"),
        (list(reversed(page_of(NOW * 1000 - 10**9))), "not ordered newest first"),
    ],
    ids=["no-created-at", "junk-entry", "oldest-first"],
)
async def test_lookup_that_cannot_prove_absence_raises(page: list[Any], reason: str) -> None:
    server = Server(fail(404, 1203, "not found"), ok(page))
    async with provider_for(server) as provider:
        error = await raises(provider.lookup(request_of(Kind.TEXT2VIDEO), EXT, sent_after=NOW))
    assert reason in error.info.message
    assert error.info.category is Category.SERVER and not error.info.retryable
    assert len(server.requests) == 2


@pytest.mark.anyio
async def test_lookup_stops_at_a_short_page() -> None:
    server = Server(fail(400, 1201, "Task not found"), ok([task("x", "succeed", "other")]))
    async with provider_for(server, lookup_pages=5) as provider:
        assert await provider.lookup(request_of(Kind.TEXT2VIDEO), EXT) is None
    assert len(server.requests) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answers",
    [
        [fail(500, 5000, "internal")],
        [fail(429, 1302, "slow down")],
        [fail(400, 1201, "Task not found"), fail(500, 5000, "internal")],
        [httpx.Response(404, text="<html>Not Found</html>")],
        [httpx.ConnectError("refused")],
    ],
    ids=["path-5xx", "path-429", "list-5xx", "bare-404", "connect"],
)
async def test_lookup_errors_propagate_instead_of_claiming_absence(answers: list[Answer]) -> None:
    server = Server(*answers)
    async with provider_for(server) as provider:
        error = await raises(provider.lookup(request_of(Kind.TEXT2VIDEO), EXT))
    assert not error.not_found and not error.ambiguous


@pytest.mark.anyio
async def test_lookup_with_garbage_matching_entry_is_a_server_error() -> None:
    server = Server(
        fail(404, 1203, "not found"),
        ok([{"task_id": "t1", "task_status": "??", "task_info": {"external_task_id": EXT}}]),
    )
    async with provider_for(server) as provider:
        error = await raises(provider.lookup(request_of(Kind.TEXT2VIDEO), EXT))
    assert error.info.category is Category.SERVER


# -- secrets -----------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_credentials_echoed_back_never_reach_an_error() -> None:
    tokens: list[str] = []
    auth = JwtAuth(AK, SK, clock=lambda: NOW, on_token=tokens.append)

    def echo(request: httpx.Request) -> httpx.Response:
        header = request.headers["Authorization"]
        return fail(400, 1200, f"bad request; you sent {header} signed with {SK}")

    def echo_exc(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError(f"reset while sending {request.headers['Authorization']}")

    server = Server(echo, echo_exc)
    async with provider_for(server, auth=auth) as provider:
        first = await raises(provider.create(T2V, EXT))
        second = await raises(provider.create(T2V, EXT))
    for error in (first, second):
        for secret in (SK, *tokens):
            assert secret not in str(error) and secret not in repr(error)
    assert SK.encode() not in server.requests[0].content  # nor, of course, in the body


@pytest.mark.anyio
async def test_aclose_closes_the_client() -> None:
    server = Server(ok(task()))
    provider = provider_for(server)
    await provider.aclose()
    with pytest.raises(RuntimeError):
        await provider.query(request_of(Kind.TEXT2VIDEO), "t1")


# -- adaptive concurrency: 1303 -----------------------------------------------------------------

OVER = "parallel task over resource pack limit"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [fail(429, 1303, OVER), fail(200, 1303, OVER), fail(404, 1303, OVER), fail(503, 1303, OVER),
     httpx.Response(429, json={"code": "1303", "message": OVER})],
    ids=["429", "200", "404", "503", "code-as-string"],
)
@pytest.mark.parametrize("operation", ["create", "query", "list", "lookup-path", "lookup-list"])
async def test_1303_signals_over_capacity_on_every_operation(
    answer: httpx.Response, operation: str
) -> None:
    answers: list[Answer] = [answer]
    if operation == "lookup-list":
        answers.insert(0, fail(400, 1201, "Task not found"))
    server = Server(*answers)
    async with provider_for(server) as provider:
        if operation == "create":
            error = await raises(provider.create(T2V, EXT))
        elif operation == "query":
            error = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
        elif operation == "list":
            error = await raises(provider.list_tasks(Kind.TEXT2VIDEO, 1, 30))
        else:
            error = await raises(provider.lookup(request_of(Kind.TEXT2VIDEO), EXT))
    assert error.over_capacity
    assert error.info.category is Category.RATE_LIMIT and error.info.retryable
    assert error.info.code == 1303 and not error.not_found


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [fail(429, 1302, "too fast"), httpx.Response(429, text="Too Many Requests"),
     fail(429, 1102, "pack depleted"), fail(500, 5000), fail(400, 1201)],
    ids=["1302", "bare-429", "billing-429", "5000", "1201"],
)
async def test_other_answers_do_not_signal_over_capacity(answer: httpx.Response) -> None:
    server = Server(answer)
    async with provider_for(server) as provider:
        error = await raises(provider.create(T2V, EXT))
    assert not error.over_capacity


# -- regressions found by tests/test_properties_provider.py --------------------------------------

@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "code", "category"),
    [(404, 1303, Category.RATE_LIMIT), (404, 5000, Category.SERVER),
     (404, 1103, Category.PERMISSION), (404, 1000, Category.AUTH)],
)
async def test_404_with_a_known_code_is_that_code_not_absence(
    status: int, code: int, category: Category
) -> None:
    # Was: any 404 envelope on a query meant "not found", whatever its code, so a lookup
    # answered by 404/5000 went on to report the task absent (and the engine could resubmit).
    server = Server(fail(status, code, "no"))
    async with provider_for(server) as provider:
        error = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
    assert not error.not_found and error.info.category is category
    server = Server(fail(status, code, "no"))
    async with provider_for(server) as provider:
        error = await raises(provider.lookup(request_of(Kind.TEXT2VIDEO), EXT))
    assert error.info.category is category and len(server.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "code", ["²", "--5", "9" * 5000], ids=["superscript", "double-minus", "5000-digits"]
)
async def test_code_with_digit_lookalikes_is_classified_by_status(code: str) -> None:
    # Was: ValueError from int() escaped the provider.
    server = Server(httpx.Response(429, json={"code": code, "message": "slow"}))
    async with provider_for(server) as provider:
        error = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
    assert error.info.category is Category.RATE_LIMIT and error.info.code is None


@pytest.mark.anyio
@pytest.mark.parametrize("message", [" ", "\n\t", ""])
async def test_blank_kling_message_falls_back_to_the_code_meaning(message: str) -> None:
    # Was: message " " became the error's whole message.
    server = Server(fail(400, 1200, message))
    async with provider_for(server) as provider:
        error = await raises(provider.create(T2V, EXT))
    assert error.info.message == "invalid request parameters"


def _raw(status: int, document: object) -> httpx.Response:
    # ensure_ascii keeps a lone surrogate as the escape "\ud800", which json.loads turns back
    # into a str that cannot be encoded to UTF-8.
    return httpx.Response(status, content=json.dumps(document).encode())


@pytest.mark.anyio
async def test_lone_surrogates_never_reach_errors_or_tasks() -> None:
    # Was: such strings went into ErrorInfo.message / Task fields, and the report writer
    # (UTF-8) or the console would crash on them later.
    server = Server(
        _raw(400, {"code": 1200, "message": "bad \ud800 value", "request_id": "r\udfff"}),
        _raw(200, {"code": 0, "request_id": "\ud800", "data": task(
            status="failed", task_status_msg="pixel \udc00 invalid", external="e\ud800")}),
        _raw(200, {"code": 0, "data": task(task_id="t\ud800")}),
        _raw(200, {"code": 0, "data": task(task_id="t\ud800", status="??")}),
        _raw(200, {"code": 0, "data": task(status="succeed", task_result={
            "videos": [{"url": "https://cdn.test/\ud800.mp4"}]})}),
    )
    async with provider_for(server) as provider:
        rejected = await raises(provider.create(T2V, EXT))
        failed = await provider.query(request_of(Kind.TEXT2VIDEO), "t1")
        bad_id = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
        bad_both = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
        bad_url = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
    assert rejected.info.message == "bad ? value" and rejected.request_id == "r?"
    assert failed.message == "pixel ? invalid" and failed.failure is not None
    failed.failure.message.encode("utf-8")
    assert failed.request_id == "?" and failed.external_task_id is None
    for error in (bad_id, bad_both, bad_url):
        assert error.info.category is Category.SERVER
        error.info.message.encode("utf-8")
        str(error).encode("utf-8")


@pytest.mark.anyio
@pytest.mark.parametrize("ident", ["t\ud800", ""])
async def test_query_with_an_unsendable_id_fails_before_sending(ident: str) -> None:
    # Was: UnicodeEncodeError from quote() (and "" queried the list endpoint).
    server = Server()
    async with provider_for(server) as provider:
        error = await raises(provider.query(request_of(Kind.TEXT2VIDEO), ident))
    assert error.info.category is Category.VALIDATION and not error.sent
    error.info.message.encode("utf-8")
    assert server.requests == []


@pytest.mark.anyio
async def test_credentials_echoed_in_task_fields_never_reach_an_error() -> None:
    # Was: the "unexpected answer" message quoted task_id unredacted; request_id was kept raw
    # (repr(error) showed it); task_status_msg reached Task.message unredacted.
    tokens: list[str] = []
    auth = JwtAuth(AK, SK, clock=lambda: NOW, on_token=tokens.append)

    def echo(field: str, status: str = "??") -> Callable[[httpx.Request], httpx.Response]:
        def answer(request: httpx.Request) -> httpx.Response:
            header = request.headers["Authorization"]
            values = {"task_id": f"id {header}", "task_status": status}
            if field == "task_status":
                values["task_status"] = header.partition(" ")[2]
            if field == "task_status_msg":
                values["task_status_msg"] = f"failed for {header} / {SK}"
            envelope = {"code": 0, "request_id": f"req {header}", "data": values}
            return httpx.Response(200, json=envelope)
        return answer

    server = Server(echo("task_id"), echo("task_status"), echo("task_status_msg", "failed"))
    async with provider_for(server, auth=auth) as provider:
        by_id = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
        by_status = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
        failed = await provider.query(request_of(Kind.TEXT2VIDEO), "t1")
    assert tokens
    texts = [str(by_id), repr(by_id), str(by_status), repr(by_status), str(failed.message),
             str(failed.request_id), repr(failed.failure)]
    for text in texts:
        for secret in (SK, AK, *tokens):
            assert secret not in text


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("exc", "category"),
    [(ConnectionResetError("reset by peer"), Category.NETWORK),
     (BrokenPipeError("broken pipe"), Category.NETWORK),
     (OSError("no route"), Category.NETWORK),
     (TimeoutError("timed out"), Category.TIMEOUT)],
    ids=lambda value: type(value).__name__ if isinstance(value, Exception) else str(value),
)
async def test_raw_os_errors_from_the_transport(exc: OSError, category: Category) -> None:
    # Was: escaped as is (httpx maps OSError to ConnectError only while connecting).
    server = Server(exc, exc)
    async with provider_for(server) as provider:
        created = await raises(provider.create(T2V, EXT))
        queried = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
    assert created.info.category is category and queried.info.category is category
    assert (created.sent, created.ambiguous) == (True, True)  # may have reached Kling
    assert (queried.sent, queried.ambiguous) == (True, False)
    assert type(exc).__name__ in created.info.message


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [httpx.Response(100, content=b""), httpx.Response(303, headers={"Location": "/v1/t/9"}),
     httpx.Response(302, json={"code": 0, "message": "moved"}), httpx.Response(304)],
    ids=["100", "303-see-other", "302-envelope", "304"],
)
async def test_create_answered_by_1xx_or_3xx_is_ambiguous(answer: httpx.Response) -> None:
    # Was: ambiguous=False, so the engine could resubmit a create that a 303 ("done, see
    # there") had just confirmed.
    server = Server(answer)
    async with provider_for(server) as provider:
        error = await raises(provider.create(T2V, EXT))
    assert error.sent and error.ambiguous


# -- the current legacy fields ---------------------------------------------------------------------

def _request(kind: Kind, **fields: Any) -> TaskRequest:
    return TaskRequest(kind, fields, expected_assets=int(fields.get("n", 1)))


@pytest.mark.anyio
@pytest.mark.parametrize(("sound", "wire"), [(True, "on"), (False, "off")])
async def test_sound_travels_as_on_or_off(sound: bool, wire: str) -> None:
    server = Server(ok(task()), ok(task()))
    async with provider_for(server) as provider:
        await provider.create(_request(Kind.TEXT2VIDEO, model="kling-v3", prompt="p",
                                       sound=sound, mode="4k", duration=7), EXT)
        await provider.create(_request(Kind.IMAGE2VIDEO, model="kling-v3", prompt="p",
                                       image=ImageSource(url="https://example.test/a.png"),
                                       sound=sound), EXT)
    assert server.body(0) == {"model_name": "kling-v3", "prompt": "p", "sound": wire,
                              "mode": "4k", "duration": "7", "external_task_id": EXT}
    assert server.body(1)["sound"] == wire


@pytest.mark.anyio
async def test_sound_is_left_out_unless_the_item_set_it() -> None:
    server = Server(ok(task()))
    async with provider_for(server) as provider:
        await provider.create(_request(Kind.TEXT2VIDEO, model="kling-v3", prompt="p",
                                       sound=None), EXT)
    assert "sound" not in server.body()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", [Kind.TEXT2VIDEO, Kind.IMAGE2VIDEO])
async def test_multi_shot_numbers_its_shots_from_one_with_durations_as_text(kind: Kind) -> None:
    extra: dict[str, Any] = (
        {"image": ImageSource(url="https://example.test/a.png")}
        if kind is Kind.IMAGE2VIDEO else {}
    )
    request = _request(
        kind, model="kling-v3", duration=8, multi_shot=True, shot_type="customize",
        multi_prompt=[{"prompt": "a fox wakes", "duration": 3},
                      {"prompt": "it runs", "duration": 5}],
        **extra,
    )
    server = Server(ok(task()))
    async with provider_for(server) as provider:
        await provider.create(request, EXT)
    body = server.body()
    assert body["multi_shot"] is True and body["shot_type"] == "customize"
    assert body["multi_prompt"] == [
        {"index": 1, "prompt": "a fox wakes", "duration": "3"},
        {"index": 2, "prompt": "it runs", "duration": "5"},
    ]
    assert body["duration"] == "8"


@pytest.mark.anyio
async def test_multi_prompt_entry_that_is_not_a_mapping_is_refused_unsent() -> None:
    server = Server()
    request = _request(Kind.TEXT2VIDEO, model="kling-v3", multi_shot=True,
                       multi_prompt=["just text"])
    async with provider_for(server) as provider:
        error = await raises(provider.create(request, EXT))
    assert error.info.category is Category.VALIDATION and not error.sent
    assert server.requests == []


@pytest.mark.anyio
async def test_omni_video_body_gathers_its_images_into_image_list(tmp_path: Path) -> None:
    tail = tmp_path / "tail.png"
    tail.write_bytes(b"\x89PNG\r\n\x1a\ntail")
    request = _request(
        Kind.OMNI_VIDEO, model="kling-v3-omni", prompt="<<<image_1>>> meets <<<image_2>>>",
        mode="pro", duration=7, aspect_ratio="9:16", sound=True,
        image=ImageSource(url="https://example.test/first.png"),
        image_tail=ImageSource(path=tail),
        reference_images=[ImageSource(url="https://example.test/r1.png"),
                          ImageSource(url="https://example.test/r2.png")],
        callback_url="https://hooks.test/kling",
    )
    server = Server(ok(task()))
    async with provider_for(server) as provider:
        await provider.create(request, EXT)
    assert server.requests[0].url.path == "/v1/videos/omni-video"
    assert server.body() == {
        "model_name": "kling-v3-omni",
        "prompt": "<<<image_1>>> meets <<<image_2>>>",
        "mode": "pro",
        "duration": "7",
        "aspect_ratio": "9:16",
        "sound": "on",
        "callback_url": "https://hooks.test/kling",
        "image_list": [
            {"image_url": "https://example.test/first.png", "type": "first_frame"},
            {"image_url": base64.b64encode(tail.read_bytes()).decode(), "type": "end_frame"},
            {"image_url": "https://example.test/r1.png"},
            {"image_url": "https://example.test/r2.png"},
        ],
        "external_task_id": EXT,
    }


@pytest.mark.anyio
async def test_omni_video_without_images_sends_no_image_list() -> None:
    server = Server(ok(task()))
    async with provider_for(server) as provider:
        await provider.create(_request(Kind.OMNI_VIDEO, model="kling-video-o1", prompt="p",
                                       duration=5), EXT)
    assert "image_list" not in server.body()


@pytest.mark.anyio
@pytest.mark.parametrize("name", ["negative_prompt", "cfg_scale", "camera_control"])
async def test_omni_video_refuses_what_its_family_does_not_take(name: str) -> None:
    server = Server()
    request = _request(Kind.OMNI_VIDEO, model="kling-v3-omni", prompt="p", **{name: 1})
    async with provider_for(server) as provider:
        error = await raises(provider.create(request, EXT))
    assert error.info.category is Category.VALIDATION and not error.sent
    assert name in error.info.message and server.requests == []


@pytest.mark.anyio
async def test_omni_video_is_queried_and_listed_on_its_family_path() -> None:
    server = Server(ok(task(status="processing")), ok([]))
    async with provider_for(server) as provider:
        await provider.query(request_of(Kind.OMNI_VIDEO, model="kling-v3-omni"), "t1")
        await provider.list_tasks(Kind.OMNI_VIDEO, 1, 10)
    assert [r.url.path for r in server.requests] == ["/v1/videos/omni-video/t1",
                                                     "/v1/videos/omni-video"]


# -- routing -------------------------------------------------------------------------------------

V2_ONLY = _request(Kind.TEXT2VIDEO, model="kling-3.0-turbo", prompt="p", duration=5)
BOTH = _request(Kind.TEXT2VIDEO, model="kling-v2-6", prompt="p", mode="pro", duration=5)
V2_OK = {"id": "n1", "status": "submitted", "external_id": EXT}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("api", "request_", "path"),
    [
        ("auto", BOTH, "/v1/videos/text2video"),
        ("v1", BOTH, "/v1/videos/text2video"),
        ("v2", BOTH, "/text-to-video/kling-2.6"),
        ("auto", V2_ONLY, "/text-to-video/kling-3.0-turbo"),
        ("v2", V2_ONLY, "/text-to-video/kling-3.0-turbo"),
        # a model the catalogue does not know (allow_unknown_models) goes where api says
        ("auto", _request(Kind.TEXT2VIDEO, model="kling-v9", prompt="p"),
         "/v1/videos/text2video"),
        ("v2", _request(Kind.TEXT2VIDEO, model="kling-v9", prompt="p"),
         "/text-to-video/kling-v9"),
    ],
    ids=["auto-both", "v1-both", "v2-both", "auto-v2-only", "v2-v2-only", "auto-unknown",
         "v2-unknown"],
)
async def test_each_request_goes_to_the_api_the_catalogue_names(
    api: str, request_: TaskRequest, path: str
) -> None:
    server = Server(ok(V2_OK if not path.startswith("/v1/") else task()))
    async with provider_for(server, api=api) as provider:
        created = await provider.create(request_, EXT)
    assert server.requests[0].url.path == path
    body = server.body()
    if path.startswith("/v1/"):
        assert body["model_name"] == request_.fields["model"]
    else:
        assert "model_name" not in body and body["options"]["external_task_id"] == EXT
    assert created.external_task_id == EXT


@pytest.mark.anyio
async def test_a_model_not_served_on_the_api_named_is_refused_unsent() -> None:
    server = Server()
    async with provider_for(server, api="v1") as provider:
        error = await raises(provider.create(V2_ONLY, EXT))
        read = await raises(provider.query(V2_ONLY, "t1"))
    for refused in (error, read):
        assert refused.info.category is Category.VALIDATION and not refused.sent
        assert "kling-3.0-turbo" in refused.info.message and "provider.api" in refused.info.hint
    assert server.requests == []


def test_an_unknown_api_choice_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="api must be one of"):
        provider_for(Server(), api="v3")


@pytest.mark.anyio
async def test_reads_go_where_the_create_went() -> None:
    server = Server(ok(task(status="processing")), ok([{**V2_OK, "id": "t1"}]),
                    fail(404, 1203, "not found"), ok([]), ok([]),
                    ok({"result": [], "has_more": False, "next_cursor": None}))
    async with provider_for(server, api="auto") as provider:
        await provider.query(BOTH, "t1")
        await provider.query(V2_ONLY, "t1")
        assert await provider.lookup(BOTH, EXT) is None
        assert await provider.lookup(V2_ONLY, EXT, sent_after=NOW) is None
    assert [(r.method, r.url.path) for r in server.requests] == [
        ("GET", "/v1/videos/text2video/t1"),
        ("GET", "/tasks"),
        ("GET", f"/v1/videos/text2video/{EXT}"),
        ("GET", "/v1/videos/text2video"),
        ("GET", "/tasks"),
        ("POST", "/tasks"),
    ]


def test_list_and_batch_keys_follow_the_route() -> None:
    provider = provider_for(Server())
    assert provider.list_key(BOTH) is Kind.TEXT2VIDEO and provider.batch_key(BOTH) is None
    assert provider.list_key(V2_ONLY) is None and provider.batch_key(V2_ONLY) is not None
    assert provider.batch_key(V2_ONLY) == provider.batch_key(
        _request(Kind.IMAGE2VIDEO, model="kling-3.0-turbo"))
    # not routable at all: neither a list nor a batch (its create is refused unsent)
    refusing = provider_for(Server(), api="v1")
    assert refusing.list_key(V2_ONLY) is None and refusing.batch_key(V2_ONLY) is None


def test_provider_is_a_task_lister_a_batch_reader_and_an_account_checker() -> None:
    from orchestrator.providers.base import AccountChecker, BatchReader, TaskLister

    provider = provider_for(Server())
    assert isinstance(provider, TaskLister) and isinstance(provider, BatchReader)
    assert isinstance(provider, AccountChecker)
    assert provider.batch_limit == 50


# -- 1201, as Kling means it -----------------------------------------------------------------------

EXISTS = "External_task_id orc-0123456789abcdef0123-1 already exists"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [fail(400, 1201, EXISTS), fail(400, 1201, "external_task_id ALREADY EXISTS"),
     httpx.Response(400, json={"code": 1201, "message": EXISTS})],
    ids=["fixture", "shouting", "no-request-id"],
)
@pytest.mark.parametrize("request_", [T2V, V2_ONLY], ids=["v1", "v2"])
async def test_create_refused_as_already_existing_says_the_task_exists(
    answer: httpx.Response, request_: TaskRequest
) -> None:
    server = Server(answer)
    async with provider_for(server) as provider:
        error = await raises(provider.create(request_, EXT))
    assert error.exists and error.sent
    assert not error.ambiguous and not error.not_found and not error.over_capacity
    assert not error.info.retryable
    assert "exists" in error.info.hint and "looked up" in error.info.hint
    assert error.info.code == 1201 and error.info.http_status == 400


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [fail(400, 1201, "mode value 'std' is invalid"), fail(500, 5000, EXISTS),
     fail(429, 1303, EXISTS), httpx.Response(400, text=EXISTS)],
    ids=["other-1201", "5xx", "1303", "not-an-envelope"],
)
async def test_only_a_refusal_that_says_so_means_exists(answer: httpx.Response) -> None:
    server = Server(answer)
    async with provider_for(server) as provider:
        error = await raises(provider.create(T2V, EXT))
    assert not error.exists


@pytest.mark.anyio
async def test_exists_is_decided_only_on_creates() -> None:
    server = Server(fail(400, 1201, EXISTS))
    async with provider_for(server) as provider:
        error = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
    assert not error.exists and not error.not_found


@pytest.mark.anyio
@pytest.mark.parametrize(
    "message",
    ["Task not found by id/external id: mf-auth-probe-nonexistent", "task not found",
     "任务不存在"],
)
async def test_legacy_query_1201_is_absence_when_the_message_says_so(message: str) -> None:
    server = Server(fail(400, 1201, message))
    async with provider_for(server) as provider:
        error = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "nope"))
    assert error.not_found


@pytest.mark.anyio
@pytest.mark.parametrize(
    "message", ["task_ids or external_task_ids is required", "contents cannot be empty", ""]
)
async def test_other_1201_on_a_query_is_a_request_error_never_absence(message: str) -> None:
    server = Server(fail(400, 1201, message), fail(400, 1201, message))
    async with provider_for(server) as provider:
        queried = await raises(provider.query(request_of(Kind.TEXT2VIDEO), "t1"))
        looked = await raises(provider.lookup(request_of(Kind.TEXT2VIDEO), EXT, sent_after=NOW))
    for error in (queried, looked):
        assert not error.not_found and error.info.category is Category.VALIDATION
    assert len(server.requests) == 2  # the lookup did not go on to "prove" absence


# -- 1002: the region ------------------------------------------------------------------------------

@pytest.mark.anyio
@pytest.mark.parametrize(
    "base_url", ["https://api-beijing.klingai.com", "https://api-singapore.klingai.com/"]
)
async def test_1002_hint_names_the_host_and_the_region_rule(base_url: str) -> None:
    server = Server(httpx.Response(401, json={"code": 1002, "message": "api key not found"}))
    provider = KlingProvider(base_url, ApiKeyAuth(API_KEY),
                             transport=httpx.MockTransport(server))
    async with provider:
        error = await raises(provider.create(T2V, EXT))
    host = base_url.split("//")[1].rstrip("/")
    assert error.info.category is Category.AUTH and error.info.scope is Scope.ACCOUNT
    assert f"on {host}:" in error.info.hint
    assert "api-singapore.klingai.com outside China" in error.info.hint
    assert "api-beijing.klingai.com in China" in error.info.hint


# -- charged units ---------------------------------------------------------------------------------

@pytest.mark.anyio
@pytest.mark.parametrize(
    ("value", "units"),
    [("2.5", 2.5), (" 5 ", 5.0), (3, 3.0), (0, 0.0), ("0", 0.0), (1.25, 1.25),
     ("string", None), ("", None), ("-1", None), (-2, None), ("nan", None), ("inf", None),
     (True, None), (None, None), ([1], None), ({"units": 1}, None), (10**400, None)],
)
async def test_charged_units_from_final_unit_deduction(value: object, units: float | None) -> None:
    data = task(status="succeed")
    if value is not None:
        data["final_unit_deduction"] = value
    server = Server(ok(data))
    async with provider_for(server) as provider:
        got = await provider.query(request_of(Kind.TEXT2VIDEO), "t1")
    assert got.charged_units == units


# -- failure texts: decided raw, shown clean -------------------------------------------------------

@pytest.mark.anyio
async def test_failure_is_classified_on_the_raw_text_and_reported_cleaned() -> None:
    # The deciding word lies past the 500 characters a cleaned message keeps.
    raw = f"{API_KEY} " + "x" * 600 + " 含违规内容"
    server = Server(ok(task(status="failed", task_status_msg=raw)))
    async with provider_for(server) as provider:
        got = await provider.query(request_of(Kind.TEXT2VIDEO), "t1")
    assert got.failure is not None and got.failure.category is Category.POLICY
    assert not got.failure.retryable
    assert got.message is not None and API_KEY not in got.message and len(got.message) <= 500
    assert got.failure.message == got.message


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("message", "category", "retryable"),
    [("Failure to pass the risk control system", Category.POLICY, False),
     ("prompt 含违规内容", Category.POLICY, False),
     ("The resolution or aspect ratio of the input image is invalid. Please ensure it meets the "
      "required specifications.", Category.TASK_FAILED, False),
     ("图片分辨率过低", Category.TASK_FAILED, False),
     ("Internal generation error", Category.TASK_FAILED, True),
     ("服务繁忙, 请稍后重试", Category.TASK_FAILED, True)],
)
async def test_failed_tasks_in_english_and_chinese(
    message: str, category: Category, retryable: bool
) -> None:
    server = Server(ok(task(status="failed", task_status_msg=message)))
    async with provider_for(server) as provider:
        got = await provider.query(request_of(Kind.IMAGE2VIDEO), "t1")
    assert got.failure is not None
    assert (got.failure.category, got.failure.retryable) == (category, retryable)
    assert got.message == message


# -- Set-Cookie ------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_a_set_cookie_with_a_non_ascii_byte_does_not_break_later_requests() -> None:
    # Was (without _CookieFree): httpx stored the cookie, and every later request failed to
    # encode its Cookie header (UnicodeEncodeError, escaping the provider).
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers=[(b"Set-Cookie", b"sid=caf\xe9; Path=/")],
            json={"code": 0, "data": task(status="processing")},
        )

    server = Server(answer, answer, answer)
    async with provider_for(server) as provider:
        await provider.query(request_of(Kind.TEXT2VIDEO), "t1")
        await provider.create(T2V, EXT)
        await provider.query(request_of(Kind.TEXT2VIDEO), "t1")
    assert len(server.requests) == 3
    assert all("cookie" not in r.headers for r in server.requests)
