"""Kling API 2.0 against httpx.MockTransport: bodies, refusals, task objects, batch reads and
lookups (chunks of 50, the time-window absence proof and when it cannot be given)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from orchestrator.errors import Category, ProviderError
from orchestrator.providers.base import Asset, ImageSource, Kind, Task, TaskRequest, TaskStatus
from orchestrator.providers.kling import client as kling
from tests.test_kling_provider import API_KEY, EXT, NOW, Server, fail, ok, provider_for, raises


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def request(kind: Kind = Kind.TEXT2VIDEO, model: str = "kling-3.0-turbo",
            **fields: Any) -> TaskRequest:
    return TaskRequest(kind, {"model": model, **fields}, expected_assets=1)


def v2task(ident: str = "n1", status: str = "submitted", external: str | None = EXT,
           **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {"id": ident, "status": status, "create_time": NOW * 1000,
                            "update_time": NOW * 1000 + 5000, **extra}
    if external is not None:
        data["external_id"] = external
    return data


def window(result: list[Any], has_more: bool = False,
           next_cursor: str | None = None) -> httpx.Response:
    return ok({"result": result, "count": len(result), "next_cursor": next_cursor,
               "has_more": has_more})


def ids_of(sent: httpx.Request, param: str) -> list[str]:
    # The ids travel comma-separated, commas as commas (not %2C).
    raw = sent.url.query.decode()
    assert raw.startswith(f"{param}=") and "%2C" not in raw, raw
    return parse_qs(raw)[param][0].split(",")


def window_body(sent: httpx.Request) -> dict[str, Any]:
    assert (sent.method, sent.url.path) == ("POST", "/tasks")
    body: dict[str, Any] = json.loads(sent.content)
    return body


T2V = request(prompt="a red fox in snow", mode="pro", duration=5, aspect_ratio="16:9",
              sound=True, callback_url="https://hooks.test/k")


# -- create --------------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_text2video_body_and_answer() -> None:
    server = Server(ok({"id": "893605946402811985", "status": "submitted",
                        "create_time": 1781080778802, "update_time": 1781080794151,
                        "external_id": EXT}))
    async with provider_for(server) as provider:
        created = await provider.create(T2V, EXT)
    sent = server.requests[0]
    assert (sent.method, sent.url.path) == ("POST", "/text-to-video/kling-3.0-turbo")
    assert sent.headers["Content-Type"] == "application/json"
    assert server.body() == {
        "contents": [{"type": "prompt", "text": "a red fox in snow"}],
        "settings": {"resolution": "1080p", "aspect_ratio": "16:9", "duration": 5,
                     "audio": "native"},
        "options": {"external_task_id": EXT, "callback_url": "https://hooks.test/k"},
    }
    assert (created.task_id, created.status, created.external_task_id) == (
        "893605946402811985", TaskStatus.SUBMITTED, EXT)
    assert created.created_at == 1781080778.802 and created.ended_at is None
    assert created.request_id == "req-ok"


@pytest.mark.anyio
async def test_image2video_body_with_frames(tmp_path: Path) -> None:
    last = tmp_path / "last.png"
    last.write_bytes(b"\x89PNG\r\n\x1a\nlast")
    server = Server(ok(v2task()))
    async with provider_for(server) as provider:
        await provider.create(request(Kind.IMAGE2VIDEO, prompt="it turns", mode="std",
                                      duration=7, sound=False,
                                      image=ImageSource(url="https://example.test/a.png"),
                                      image_tail=ImageSource(path=last)), EXT)
    assert server.requests[0].url.path == "/image-to-video/kling-3.0-turbo"
    assert server.body() == {
        "contents": [
            {"type": "prompt", "text": "it turns"},
            {"type": "first_frame", "url": "https://example.test/a.png"},
            {"type": "last_frame", "url": base64.b64encode(last.read_bytes()).decode()},
        ],
        "settings": {"resolution": "720p", "duration": 7, "audio": "off"},
        "options": {"external_task_id": EXT},
    }


@pytest.mark.anyio
async def test_omni_body_with_reference_images() -> None:
    server = Server(ok(v2task()))
    omni = request(Kind.OMNI_VIDEO, "kling-video-o1", prompt="<<<image_1>>> dances",
                   duration=5, mode="std", aspect_ratio="1:1",
                   reference_images=[ImageSource(url="https://example.test/r1.png"),
                                     ImageSource(url="https://example.test/r2.png")])
    async with provider_for(server, api="v2") as provider:
        await provider.create(omni, EXT)
    assert server.requests[0].url.path == "/omni-video/kling-o1"
    assert server.body()["contents"] == [
        {"type": "prompt", "text": "<<<image_1>>> dances"},
        {"type": "refer_image", "url": "https://example.test/r1.png"},
        {"type": "refer_image", "url": "https://example.test/r2.png"},
    ]
    assert server.body()["settings"] == {"resolution": "720p", "aspect_ratio": "1:1",
                                         "duration": 5}


@pytest.mark.anyio
async def test_4k_mode_travels_as_the_catalogue_resolution() -> None:
    server = Server(ok(v2task()))
    async with provider_for(server, api="v2") as provider:
        await provider.create(request(model="kling-v2-6", mode="4k"), EXT)
    assert server.body()["settings"] == {"resolution": "4k"}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("name", "value"),
    [("negative_prompt", "blurry"), ("cfg_scale", 0.5),
     ("camera_control", {"type": "simple", "config": {"zoom": 5}}),
     ("static_mask", ImageSource(url="https://example.test/m.png")),
     ("dynamic_masks", [{"mask": ImageSource(url="https://example.test/m.png"),
                         "trajectories": [{"x": 1, "y": 2}]}]),
     ("multi_shot", True), ("shot_type", "customize"),
     ("multi_prompt", [{"prompt": "a", "duration": 5}]),
     ("n", 2), ("image_reference", "subject")],
)
async def test_what_api_2_cannot_carry_is_refused_unsent(name: str, value: object) -> None:
    server = Server()
    async with provider_for(server) as provider:
        item = TaskRequest(Kind.IMAGE2VIDEO,
                           {"model": "kling-3.0-turbo", "prompt": "p", name: value}, 1)
        error = await raises(provider.create(item, EXT))
    assert error.info.category is Category.VALIDATION and not error.sent
    assert not error.info.retryable and name in error.info.message
    assert server.requests == []


@pytest.mark.anyio
async def test_multi_shot_false_asks_for_nothing_and_is_sent() -> None:
    server = Server(ok(v2task()))
    async with provider_for(server) as provider:
        await provider.create(request(prompt="p", multi_shot=False), EXT)
    assert len(server.requests) == 1 and "multi_shot" not in json.dumps(server.body())


@pytest.mark.anyio
@pytest.mark.parametrize(
    "request_",
    [request(mode="8k"), request(duration="five"), request(duration=True),
     TaskRequest(Kind.TEXT2VIDEO, {"prompt": "no model"}, 1)],
    ids=["mode", "duration-text", "duration-bool", "no-model"],
)
async def test_values_api_2_cannot_express_are_refused_unsent(request_: TaskRequest) -> None:
    server = Server()
    async with provider_for(server, api="v2") as provider:
        error = await raises(provider.create(request_, EXT))
    assert error.info.category is Category.VALIDATION and not error.sent
    assert server.requests == []


@pytest.mark.anyio
async def test_a_kind_api_2_does_not_serve_is_refused_unsent() -> None:
    server = Server()
    async with provider_for(server, api="v2") as provider:
        image = await raises(provider.create(request(Kind.IMAGE, "kling-v3", prompt="p"), EXT))
        unknown = await raises(provider.create(request(Kind.IMAGE, "kling-v9", prompt="p"),
                                               EXT))
    assert not image.sent and not unknown.sent and server.requests == []
    assert "API 2.0" in unknown.info.message


@pytest.mark.anyio
async def test_an_unknown_model_name_is_escaped_in_the_path() -> None:
    server = Server(ok(v2task()))
    async with provider_for(server, api="v2") as provider:
        await provider.create(request(model="my model?"), EXT)
    assert server.requests[0].url.raw_path == b"/text-to-video/my%20model%3F"


@pytest.mark.anyio
async def test_legacy_style_refusal_of_a_v2_create_is_a_request_error() -> None:
    server = Server(fail(400, 1201, "contents cannot be empty"))
    async with provider_for(server) as provider:
        error = await raises(provider.create(T2V, EXT))
    assert error.info.category is Category.VALIDATION and not error.info.retryable
    assert not error.exists and not error.ambiguous


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [ok(None), ok({"status": "submitted"}), ok({"id": "n1", "status": "queued"}),
     ok([v2task()]), httpx.Response(200, text="<html/>")],
    ids=["no-data", "no-id", "unknown-status", "list", "html"],
)
async def test_malformed_create_answer_is_ambiguous(answer: httpx.Response) -> None:
    server = Server(answer)
    async with provider_for(server) as provider:
        error = await raises(provider.create(T2V, EXT))
    assert error.info.category is Category.SERVER and error.ambiguous and not error.exists


# -- task objects ----------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_query_is_a_batch_read_of_one_id() -> None:
    outputs = [
        {"type": "video", "id": "o1", "url": "https://cdn.test/a.mp4",
         "watermark_url": "https://cdn.test/a_wm.mp4", "duration": "5.1"},
        {"type": "image", "id": "cover", "url": "https://cdn.test/cover.png"},
        {"id": "o2", "url": "https://cdn.test/b.mp4"},
    ]
    billing = [{"charge_type": "unit", "amount": "2.5", "package_type": "video"},
               {"charge_type": "unit", "amount": 1, "package_type": "image"},
               {"charge_type": "money", "amount": "9.99"}]
    server = Server(ok([v2task("other", "processing"),
                        v2task("n1", "succeeded", outputs=outputs, billing=billing,
                               message="")]))
    async with provider_for(server) as provider:
        got = await provider.query(T2V, "n1")
    assert ids_of(server.requests[0], "task_ids") == ["n1"]
    assert server.requests[0].url.path == "/tasks"
    assert got.status is TaskStatus.SUCCEEDED and got.failure is None and got.message is None
    assert got.assets == (Asset(0, "https://cdn.test/a.mp4", "video"),
                          Asset(1, "https://cdn.test/b.mp4", "video"))
    assert got.charged_units == 3.5
    assert got.created_at == NOW and got.ended_at == NOW + 5


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("billing", "units"),
    [([{"charge_type": "unit", "amount": "string", "package_type": "video"}], None),
     ([], None), (None, None), ("2", None), ([{"charge_type": "money", "amount": "2"}], None),
     ([{"amount": "4"}], 4.0), ([{"charge_type": "unit", "amount": "-1"}], None),
     ([{"charge_type": "unit", "amount": "1"}, {"charge_type": "unit", "amount": "x"}], None),
     ([{"charge_type": "unit", "amount": "1"}, "junk"], None)],
    ids=["doc-placeholder", "empty", "absent", "not-a-list", "other-charge", "no-type",
         "negative", "one-unreadable", "junk-entry"],
)
async def test_charged_units_from_billing(billing: object, units: float | None) -> None:
    server = Server(ok([v2task("n1", "succeeded", billing=billing)]))
    async with provider_for(server) as provider:
        got = await provider.query(T2V, "n1")
    assert got.charged_units == units


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("message", "category", "retryable"),
    [("Failure to pass the risk control system", Category.POLICY, False),
     ("内容涉及敏感信息", Category.POLICY, False),
     ("The resolution or aspect ratio of the input image is invalid.", Category.TASK_FAILED,
      False),
     ("Internal generation error", Category.TASK_FAILED, True),
     ("生成超时", Category.TASK_FAILED, True)],
)
async def test_failed_v2_task_message_is_classified(
    message: str, category: Category, retryable: bool
) -> None:
    server = Server(ok([v2task("n1", "failed", message=message)]))
    async with provider_for(server) as provider:
        got = await provider.query(T2V, "n1")
    assert got.status is TaskStatus.FAILED and got.message == message
    assert got.failure is not None
    assert (got.failure.category, got.failure.retryable) == (category, retryable)


@pytest.mark.anyio
async def test_v2_failure_message_is_cleaned_after_the_decision() -> None:
    raw = f"risk control for Bearer {API_KEY}"
    server = Server(ok([v2task("n1", "failed", message=raw)]))
    async with provider_for(server) as provider:
        got = await provider.query(T2V, "n1")
    assert got.failure is not None and got.failure.category is Category.POLICY
    assert got.message is not None and API_KEY not in got.message
    assert API_KEY not in got.failure.message


@pytest.mark.anyio
@pytest.mark.parametrize("data", [[], [v2task("someone-else", "succeeded")]],
                         ids=["empty", "other-task"])
async def test_v2_query_answer_without_the_task_means_not_found(data: list[Any]) -> None:
    server = Server(ok(data))
    async with provider_for(server) as provider:
        error = await raises(provider.query(T2V, "n1"))
    assert error.not_found and not error.ambiguous and error.sent
    assert error.info.category is Category.VALIDATION and "n1" in error.info.message


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [fail(400, 1201, "task_ids or external_task_ids is required"),
     fail(404, 1203, "not found"), fail(400, 1201, "Task not found"),
     httpx.Response(404, text="<html>Not Found</html>"), fail(500, 5000, "internal")],
    ids=["ids-required", "404-1203", "1201-not-found", "bare-404", "5xx"],
)
async def test_v2_read_errors_are_never_absence(answer: httpx.Response) -> None:
    # Absence on API 2.0 is an answer that leaves the task out, never an error answer.
    server = Server(answer)
    async with provider_for(server) as provider:
        error = await raises(provider.query(T2V, "n1"))
    assert not error.not_found and not error.ambiguous


@pytest.mark.anyio
@pytest.mark.parametrize(
    "data",
    [{"id": "n1"}, [{"id": "n1", "status": "exploded"}],
     [v2task("n1", "succeeded", outputs=[{"type": "video"}])],
     [v2task("n1", "succeeded", outputs={"url": "x"})]],
    ids=["not-a-list", "unknown-status", "output-no-url", "outputs-dict"],
)
async def test_malformed_v2_reads_are_server_errors(data: object) -> None:
    server = Server(ok(data))
    async with provider_for(server) as provider:
        error = await raises(provider.query(T2V, "n1"))
    assert error.info.category is Category.SERVER and error.info.retryable
    assert not error.not_found and not error.ambiguous


@pytest.mark.anyio
@pytest.mark.parametrize("ident", ["", "a,b", "t\ud800"])
async def test_v2_query_of_an_unsendable_id_fails_before_sending(ident: str) -> None:
    server = Server()
    async with provider_for(server) as provider:
        error = await raises(provider.query(T2V, ident))
    assert error.info.category is Category.VALIDATION and not error.sent
    assert server.requests == []


# -- batch reads -----------------------------------------------------------------------------------

@pytest.mark.anyio
async def test_query_many_reads_the_ids_in_one_request() -> None:
    server = Server(ok([v2task("a", "processing"), v2task("c", "succeeded"),
                        {"id": "b", "status": "??"}, "junk", v2task("zz", "failed")]))
    async with provider_for(server) as provider:
        key = provider.batch_key(T2V)
        assert key is not None
        found = await provider.query_many(key, ["a", "b", "c", "d", "a"])
    assert ids_of(server.requests[0], "task_ids") == ["a", "b", "c", "d"]
    # b is malformed and d absent: left out (queried alone, each gets its own answer)
    assert sorted(found) == ["a", "c"]
    assert found["c"].status is TaskStatus.SUCCEEDED


@pytest.mark.anyio
async def test_query_many_of_integer_ids() -> None:
    server = Server(ok([{**v2task(), "id": 913827032734642185}]))
    async with provider_for(server) as provider:
        found = await provider.query_many(provider.batch_key(T2V) or "", ["913827032734642185"])
    assert list(found) == ["913827032734642185"]


@pytest.mark.anyio
async def test_query_many_limits() -> None:
    server = Server()
    async with provider_for(server) as provider:
        key = provider.batch_key(T2V)
        assert key is not None
        assert await provider.query_many(key, []) == {}
        assert await provider.query_many(key, ["", "a,b"]) == {}
        with pytest.raises(ValueError, match="at most 50"):
            await provider.query_many(key, [f"t{i}" for i in range(51)])
        with pytest.raises(TypeError):
            await provider.query_many("someone else's", ["a"])
    assert server.requests == []


@pytest.mark.anyio
async def test_query_many_errors_are_raised() -> None:
    server = Server(fail(429, 1303, "parallel task over resource pack limit"))
    async with provider_for(server) as provider:
        error = await raises(provider.query_many(provider.batch_key(T2V) or "", ["a"]))
    assert error.over_capacity and not error.not_found


# -- lookups ---------------------------------------------------------------------------------------

SENT = NOW - 3600.0


@pytest.mark.anyio
async def test_lookup_many_chunks_at_fifty_and_proves_the_rest_absent_in_one_window() -> None:
    ids = [f"ext-{i:03}" for i in range(120)]
    server = Server(
        ok([v2task("t-000", "processing", "ext-000"), v2task("t-x", "succeeded", "not-ours")]),
        ok([v2task("t-077", "succeeded", "ext-077")]),
        ok([]),
        window([v2task("t-100", "processing", "ext-100"), v2task("o", "failed", "other")],
               has_more=True, next_cursor="c2"),
        window([v2task("t-119", "submitted", "ext-119")]),
    )
    async with provider_for(server) as provider:
        key = provider.batch_key(T2V)
        assert key is not None
        found = await provider.lookup_many(key, ids, sent_after=SENT)
    reads = server.requests[:3]
    assert [len(ids_of(r, "external_task_ids")) for r in reads] == [50, 50, 20]
    assert [i for r in reads for i in ids_of(r, "external_task_ids")] == ids
    first, second = (window_body(r) for r in server.requests[3:])
    margin_ms = kling.LOOKUP_CLOCK_MARGIN * 1000
    assert first == {"start_time": int(SENT * 1000 - margin_ms),
                     "end_time": int(NOW * 1000 + margin_ms), "cursor": None, "limit": 500}
    assert second == {**first, "cursor": "c2"}
    assert len(server.requests) == 5
    assert set(found) == set(ids)
    tasks = {ext: t.task_id for ext, t in found.items() if isinstance(t, Task)}
    assert tasks == {"ext-000": "t-000", "ext-077": "t-077", "ext-100": "t-100",
                     "ext-119": "t-119"}
    assert all(found[i] is None for i in ids if i not in tasks)


@pytest.mark.anyio
async def test_lookup_many_without_a_send_time_cannot_prove_absence() -> None:
    server = Server(ok([v2task("t1", "processing", "found")]))
    async with provider_for(server) as provider:
        key = provider.batch_key(T2V)
        assert key is not None
        found = await provider.lookup_many(key, ["found", "missing"], sent_after=None)
    assert isinstance(found["found"], Task)
    missing = found["missing"]
    assert isinstance(missing, ProviderError) and not missing.not_found
    assert missing.info.category is Category.SERVER and not missing.info.retryable
    assert "cannot prove" in missing.info.message and "send time" in missing.info.message
    assert len(server.requests) == 1  # no window read without a window


@pytest.mark.anyio
async def test_lookup_many_stops_reading_once_every_id_is_found() -> None:
    server = Server(ok([]), window([v2task("t1", "processing", "a")], has_more=True,
                                   next_cursor="c2"))
    async with provider_for(server) as provider:
        found = await provider.lookup_many(provider.batch_key(T2V) or "", ["a"],
                                           sent_after=SENT)
    assert isinstance(found["a"], Task) and len(server.requests) == 2


@pytest.mark.anyio
async def test_a_failed_chunk_gives_its_ids_the_error_and_the_others_go_on() -> None:
    ids = [f"e{i}" for i in range(60)]
    server = Server(fail(500, 5000, "internal"), ok([v2task("t59", "processing", "e59")]),
                    window([]))
    async with provider_for(server) as provider:
        found = await provider.lookup_many(provider.batch_key(T2V) or "", ids,
                                           sent_after=SENT)
    for ident in ids[:50]:
        error = found[ident]
        assert isinstance(error, ProviderError) and error.info.category is Category.SERVER
        assert error.info.retryable and not error.ambiguous
    assert len({id(found[i]) for i in ids[:50]}) == 50  # one error object per id
    assert isinstance(found["e59"], Task)
    assert all(found[i] is None for i in ids[50:59])
    assert len(server.requests) == 3


@pytest.mark.anyio
async def test_a_malformed_entry_with_our_external_id_is_an_error_not_absence() -> None:
    server = Server(ok([{"id": "t1", "status": "??", "external_id": "a"}]))
    async with provider_for(server) as provider:
        found = await provider.lookup_many(provider.batch_key(T2V) or "", ["a"],
                                           sent_after=SENT)
    error = found["a"]
    assert isinstance(error, ProviderError) and error.info.category is Category.SERVER
    assert len(server.requests) == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("pages", "words", "retryable"),
    [
        ([fail(500, 5000, "internal")], "internal", True),
        ([fail(429, 1303, "parallel task over resource pack limit")], "parallel", True),
        ([ok([])], "not an object", True),
        ([ok({"result": [], "has_more": "no"})], "has_more", True),
        ([ok({"result": {}, "has_more": False})], "result", True),
        ([window([], has_more=True)], "no next_cursor", True),
        ([window([], has_more=True, next_cursor="c"), window([], has_more=True, next_cursor="c")],
         "repeats a cursor", False),
        ([window(["junk"])], "not a task object", False),
        ([window([], has_more=True, next_cursor="c2"), window([], has_more=True,
                                                              next_cursor="c3")],
         "more than 2 pages", False),
    ],
    ids=["5xx", "1303", "data-list", "has-more-text", "result-dict", "no-cursor",
         "cursor-loop", "junk-entry", "too-many-pages"],
)
async def test_a_window_that_cannot_be_read_to_its_end_proves_nothing(
    pages: list[httpx.Response], words: str, retryable: bool
) -> None:
    server = Server(ok([]), *pages)
    async with provider_for(server, lookup_pages=2) as provider:
        found = await provider.lookup_many(provider.batch_key(T2V) or "", ["a", "b"],
                                           sent_after=SENT)
    for ident in ("a", "b"):
        error = found[ident]
        assert isinstance(error, ProviderError), error
        assert words in error.info.message and error.info.retryable is retryable
        assert not error.not_found and not error.ambiguous
    assert len(server.requests) == 1 + len(pages)


@pytest.mark.anyio
async def test_lookup_of_a_v2_request_takes_the_same_path() -> None:
    server = Server(
        ok([v2task("t1", "processing", EXT)]),
        ok([]), window([]),
        ok([]),
    )
    async with provider_for(server) as provider:
        found = await provider.lookup(T2V, EXT, sent_after=SENT)
        absent = await provider.lookup(T2V, EXT, sent_after=SENT)
        unprovable = await raises(provider.lookup(T2V, EXT))
    assert found is not None and found.task_id == "t1"
    assert absent is None
    assert "cannot prove" in unprovable.info.message and not unprovable.not_found
    assert all(not r.url.path.startswith("/v1/") for r in server.requests)
    assert len(server.requests) == 4


@pytest.mark.anyio
async def test_lookup_many_with_unsendable_ids() -> None:
    server = Server()
    async with provider_for(server) as provider:
        found = await provider.lookup_many(provider.batch_key(T2V) or "", ["", "a,b"],
                                           sent_after=SENT)
    for ident in ("", "a,b"):
        error = found[ident]
        assert isinstance(error, ProviderError) and not error.sent
    assert server.requests == []


@pytest.mark.anyio
async def test_a_readable_entry_wins_over_a_malformed_one_for_the_same_external_id() -> None:
    server = Server(ok([{"id": "t0", "status": "??", "external_id": "a"},
                        v2task("t1", "processing", "a")]))
    async with provider_for(server) as provider:
        found = await provider.lookup_many(provider.batch_key(T2V) or "", ["a"],
                                           sent_after=SENT)
    assert isinstance(found["a"], Task) and found["a"].task_id == "t1"


@pytest.mark.anyio
async def test_a_malformed_window_entry_is_never_turned_into_absence() -> None:
    server = Server(ok([]), window([{"id": "t0", "status": "??", "external_id": "a"}]))
    async with provider_for(server) as provider:
        found = await provider.lookup_many(provider.batch_key(T2V) or "", ["a", "b"],
                                           sent_after=SENT)
    error = found["a"]
    assert isinstance(error, ProviderError) and error.info.category is Category.SERVER
    assert found["b"] is None
