"""Kling's API 2.0 served by the simulator beside /v1: creates with the model in the path, the
batch query by task ids or external ids, the time-window list and its cursor, with the live
error bodies; one account shared with the legacy API (slots, billing, rate, external ids,
faults); API 2.0 tasks journaled and taken back by a restarted simulator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.providers.base import Kind
from orchestrator.providers.kling.catalogue import V2, catalogue
from orchestrator.simulator import FaultRule
from tests.simulator_support import (
    IMAGE_URL,
    PNG_B64,
    T2V,
    FakeClock,
    Launch,
    assert_no_simulator_threads,
    data_of,
    http_client,
    invalid,
    launcher,
    refusal,
    v2_body,
    window_around_now,
)

KLING_26 = "/text-to-video/kling-2.6"
TURBO_T2V = "/text-to-video/kling-3.0-turbo"
TURBO_I2V = "/image-to-video/kling-3.0-turbo"
O1 = "/omni-video/kling-o1"


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    yield
    assert_no_simulator_threads()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def launch(clock: FakeClock) -> Iterator[Launch]:
    with launcher(clock) as start:
        yield start


def pro(
    prompt: str = "a cat",
    *,
    external: str | None = None,
    images: tuple[tuple[str, str], ...] = (),
    **settings: Any,
) -> dict[str, Any]:
    """A kling-2.6 body: pro only, so 1080p; 5 s unless ``settings`` say otherwise."""
    settings = {"resolution": "1080p", "duration": 5, **settings}
    return v2_body(prompt, external=external, images=images, **settings)


def create(client: httpx.Client, path: str = KLING_26, **body: Any) -> dict[str, Any]:
    task: dict[str, Any] = data_of(client.post(path, json=body or pro()))
    return task


def batch(client: httpx.Client, **params: str) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = data_of(client.get("/tasks", params=params))
    return tasks


def window(client: httpx.Client, **body: Any) -> dict[str, Any]:
    page: dict[str, Any] = data_of(client.post("/tasks", json={**window_around_now(), **body}))
    return page


def v1_video(**extra: Any) -> dict[str, Any]:
    return {"model_name": "kling-v2-5-turbo", "prompt": "a dog", **extra}


# --- creates -------------------------------------------------------------------------------


def test_a_create_answers_the_documented_shape(launch: Launch) -> None:
    sim, client = launch()
    body = pro(external="item-1", aspect_ratio="9:16", audio="native")
    body["options"]["callback_url"] = "https://example.com/hook"
    data = create(client, **body)
    assert set(data) == {"id", "status", "create_time", "update_time", "external_id"}
    assert (data["status"], data["external_id"]) == ("submitted", "item-1")
    assert data["id"].isdigit() and data["create_time"] == data["update_time"]
    stats = sim.stats()
    assert (stats.create_requests, stats.v2_create_requests, stats.tasks_created) == (1, 1, 1)
    assert stats.tasks[0]["api"] == "v2"
    assert stats.tasks[0]["family"] == "text-to-video"
    assert stats.tasks[0]["model_name"] == "kling-v2-6"  # the catalogue's name


def v2_served() -> list[tuple[str, Kind]]:
    return [
        (model.name, kind)
        for model in catalogue().models.values()
        for kind, rules in model.kinds.items()
        if rules.usable and V2 in rules.apis
    ]


@pytest.mark.parametrize(("model", "kind"), v2_served())
def test_every_model_the_catalogue_serves_on_v2_is_accepted_with_its_defaults(
    launch: Launch, model: str, kind: Kind
) -> None:
    cat = catalogue()
    rules = cat.rules(model, kind)
    path = cat.v2_path(kind, model)
    assert rules is not None and rules.default_mode is not None and path is not None
    images = (("first_frame", IMAGE_URL),) if kind is Kind.IMAGE2VIDEO else ()
    body = v2_body(
        images=images,
        resolution=cat.v2_resolution[rules.default_mode],
        duration=rules.default_duration,
    )
    _, client = launch()
    assert create(client, f"/{path}", **body)["status"] == "submitted"


def test_kling_o1_takes_frames_and_reference_images(launch: Launch) -> None:
    _, client = launch()
    images = (("first_frame", IMAGE_URL), ("last_frame", PNG_B64),
              *[("refer_image", IMAGE_URL)] * 4)
    create(client, O1, **v2_body("<<<image_1>>> at sea", images=images, duration=7))
    create(client, TURBO_I2V, **v2_body("", images=(("first_frame", PNG_B64),
                                                    ("last_frame", IMAGE_URL)), duration=7))


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        # Live: a legacy-style body sent to a model-in-path endpoint.
        (KLING_26, {"model_name": "kling-v2-6", "prompt": "a cat", "mode": "pro"},
         "contents cannot be empty"),
        (KLING_26, {"contents": []}, "contents cannot be empty"),
        # kling-2.6 is pro only: 720p is std; no resolution is Kling's default, std.
        (KLING_26, v2_body(resolution="720p"), "resolution value '720p' is invalid"),
        (KLING_26, v2_body(), "resolution value '720p' is invalid"),
        (KLING_26, pro(audio="on"), "audio value 'on' is invalid"),
        (KLING_26, pro(duration="5"), "duration must be an integer such as 5, got str '5'"),
        (KLING_26, pro(duration=7), "duration value '7' is invalid"),
        (KLING_26, pro(aspect_ratio="4:3"), "aspect_ratio value '4:3' is invalid"),
        (KLING_26, pro(resolution="8k"), "resolution value '8k' is invalid"),
        (KLING_26, {**pro(), "settings": {"resolution": "1080p", "negative_prompt": "blur"}},
         "settings.negative_prompt is not supported by API 2.0"),
        (KLING_26, {**pro(), "settings": {"resolution": "1080p", "cfg_scale": 0.5}},
         "settings.cfg_scale is not supported by API 2.0"),
        (KLING_26, {**pro(), "model_name": "kling-v2-6"},
         "model_name is not a field of an API 2.0 create (contents, settings, options)"),
        (KLING_26, pro(images=(("first_frame", IMAGE_URL),)),
         "first_frame is not supported by text-to-video"),
        (KLING_26, {**pro(), "contents": [{"type": "element", "id": "1"}]},
         "contents[0].type value 'element' is invalid"),
        (KLING_26, {**pro(), "contents": [{"type": "prompt", "text": "x" * 2501}]},
         "contents[0].text must be at most 2500 characters, got 2501"),
        (O1, v2_body("", images=(("refer_image", IMAGE_URL),)), "contents needs a prompt"),
        (TURBO_T2V, pro(audio="native"), "audio value 'native' is invalid"),  # no sound
        (TURBO_I2V, v2_body(resolution="1080p"), "contents needs a first_frame"),
        (TURBO_I2V, v2_body(images=(("first_frame", IMAGE_URL),), aspect_ratio="16:9"),
         "aspect_ratio is not supported by image-to-video: it follows the image"),
        (TURBO_I2V, v2_body(images=(("first_frame", "data:image/png;base64," + PNG_B64),)),
         "contents[1].url format error: send raw base64 without a 'data:' prefix"),
        (O1, v2_body(duration=7),
         "Duration only supports 5 or 10 seconds when no refer_image is provided"),
        (O1, v2_body(images=(("refer_image", IMAGE_URL),) * 5),
         "refer_image holds 5 reference images; kling-video-o1 takes at most 4"),
        (O1, v2_body(resolution="4k"), "resolution value '4k' is invalid"),
        (O1, {**v2_body(), "options": {"external_task_id": 7}},
         "external_task_id must be a string"),
    ],
)
def test_refused_creates_answer_1201_with_their_message(
    launch: Launch, path: str, body: dict[str, Any], expected: str
) -> None:
    sim, client = launch()
    assert refusal(client.post(path, json=body)) == invalid(expected)
    assert sim.stats().tasks_created == 0


@pytest.mark.parametrize(
    "path",
    [
        "/image-to-video/kling-2.6",  # kling-v2-6 image2video: legacy only
        "/text-to-video/kling-v2-6",  # the catalogue's name, not the API 2.0 one
        "/text-to-video/kling-o1",  # an omni model
        "/omni-video/kling-3.0-turbo",
        "/text-to-video/kling-v3",  # no API 2.0 name
        "/text-to-video/kling-9",
    ],
)
def test_a_model_not_served_on_v2_for_that_kind_is_refused(launch: Launch, path: str) -> None:
    _, client = launch()
    images = (("first_frame", IMAGE_URL),) if "image-to" in path else ()
    name = path.rsplit("/", 1)[1]
    assert refusal(client.post(path, json=pro(images=images))) == invalid(
        f"model_name value '{name}' is invalid"
    )


def test_a_model_the_catalogue_does_not_know_can_be_accepted_on_v2(launch: Launch) -> None:
    _, client = launch(extra_models=("kling-4.0",))
    create(client, "/text-to-video/kling-4.0", **v2_body(resolution="4k", duration=12,
                                                       audio="native"))


def test_routes_that_api_2_0_does_not_serve(launch: Launch) -> None:
    sim, client = launch()
    for method, path in (("GET", KLING_26), ("DELETE", "/tasks"), ("POST", "/text-to-video"),
                         ("POST", "/text-to-video/kling-2.6/x"), ("POST", "/account/costs")):
        assert refusal(client.request(method, path))[:2] == (404, 1202)
    with http_client(sim.url) as anonymous:
        assert refusal(anonymous.post(KLING_26, json=pro()))[:2] == (401, 1001)
        assert refusal(anonymous.get("/tasks", params={"task_ids": "1"}))[:2] == (401, 1001)
        assert refusal(anonymous.post("/tasks", json=window_around_now()))[:2] == (401, 1001)


# --- batch query ---------------------------------------------------------------------------


def test_batch_query_by_task_ids_and_by_external_ids(launch: Launch) -> None:
    sim, client = launch()
    ids = [create(client, **pro(f"shot {i}", external=f"ext-{i}"))["id"] for i in range(3)]
    assert [t["id"] for t in batch(client, task_ids=f"{ids[2]},{ids[0]},nope")] == [
        ids[2], ids[0]]
    found = batch(client, external_task_ids="ext-1,missing,ext-1")
    assert [(t["id"], t["external_id"]) for t in found] == [(ids[1], "ext-1")]
    assert batch(client, external_task_ids="missing") == []
    assert sim.stats().batch_query_requests == 3


def test_batch_query_answers_the_live_bodies(launch: Launch) -> None:
    _, client = launch()
    empty = client.get("/tasks", params={"external_task_ids": "none-such"})
    assert empty.status_code == 200
    payload = empty.json()
    assert (payload["code"], payload["message"], payload["data"]) == (0, "SUCCEED", [])
    for params in ({}, {"ids": "1"}, {"task_ids": ""}, {"task_ids": ",,"}):
        assert refusal(client.get("/tasks", params=params)) == invalid(
            "task_ids or external_task_ids is required"
        )
    both = {"task_ids": "1", "external_task_ids": "a"}
    assert refusal(client.get("/tasks", params=both)) == invalid(
        "task_ids and external_task_ids cannot be used together"
    )
    many = ",".join(str(i) for i in range(51))
    assert refusal(client.get("/tasks", params={"task_ids": many})) == invalid(
        "at most 50 ids per request, got 51"
    )
    assert data_of(client.get("/tasks", params={"task_ids": many.rsplit(",", 1)[0]})) == []


def test_a_v2_task_through_its_lifecycle(launch: Launch, clock: FakeClock) -> None:
    _, client = launch(task_duration=(2.0, 2.0))
    task_id = create(client, **pro(external="life"))["id"]
    (submitted,) = batch(client, task_ids=task_id)
    assert set(submitted) == {"id", "status", "message", "create_time", "update_time",
                              "external_id", "outputs", "billing"}
    assert (submitted["status"], submitted["outputs"], submitted["billing"]) == (
        "submitted", [], [])
    clock.advance(0.5)
    (processing,) = batch(client, task_ids=task_id)
    assert processing["status"] == "processing"
    assert processing["update_time"] == processing["create_time"] + 400
    clock.advance(1.5)
    (done,) = batch(client, external_task_ids="life")
    assert (done["status"], done["message"]) == ("succeeded", "")
    (output,) = done["outputs"]
    assert set(output) == {"type", "id", "url", "watermark_url", "duration"}
    assert (output["type"], output["duration"]) == ("video", "5.1")
    assert done["billing"] == [{"charge_type": "unit", "amount": "2.5", "package_type": "video"}]
    assert client.get(output["url"]).content[4:8] == b"ftyp"
    assert client.get(output["watermark_url"]).status_code == 200


def test_a_failed_v2_task_has_its_message_and_no_charge(launch: Launch, clock: FakeClock) -> None:
    rule = FaultRule(op="create", effect="task_failed", match="doomed",
                     message="Failure to pass the risk control system")
    _, client = launch(faults=(rule,))
    task_id = create(client, **pro("a doomed ship"))["id"]
    clock.advance(1.0)
    (failed,) = batch(client, task_ids=task_id)
    assert (failed["status"], failed["message"], failed["outputs"]) == (
        "failed", "Failure to pass the risk control system", [])
    assert failed["billing"] == [{"charge_type": "unit", "amount": "0", "package_type": "video"}]


def test_each_api_reads_its_own_tasks(launch: Launch) -> None:
    _, client = launch()
    legacy = data_of(client.post(T2V, json=v1_video(external_task_id="old")))["task_id"]
    new = create(client, **pro(external="new"))["id"]
    assert batch(client, task_ids=legacy) == []
    assert batch(client, external_task_ids="old") == []
    assert refusal(client.get(f"{T2V}/{new}")) == invalid(
        f"Task not found by id/external id: {new}"
    )
    assert refusal(client.get(f"{T2V}/new"))[1] == 1201
    assert [t["task_id"] for t in data_of(client.get(T2V))] == [legacy]
    assert [t["id"] for t in window(client)["result"]] == [new]


# --- time-window list ----------------------------------------------------------------------


def test_the_window_list_pages_newest_first_with_a_cursor(launch: Launch) -> None:
    sim, client = launch()
    ids = [create(client, **pro(f"shot {i}"))["id"] for i in range(7)]
    data_of(client.post(T2V, json=v1_video()))  # legacy: not listed here
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = window(client, limit=3, cursor=cursor)
        pages.append(page)
        assert set(page) == {"result", "count", "next_cursor", "has_more"}
        assert page["count"] == len(page["result"])
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
        assert isinstance(cursor, str)
    assert [p["count"] for p in pages] == [3, 3, 1]
    assert [t["id"] for p in pages for t in p["result"]] == ids[::-1]
    # A task created between two pages does not shift the pages already begun.
    first = window(client, limit=3)
    newer = create(client, **pro("newer"))["id"]
    second = window(client, limit=3, cursor=first["next_cursor"])
    assert [t["id"] for t in second["result"]] == ids[3::-1][:3]
    assert window(client, limit=1)["result"][0]["id"] == newer
    assert sim.stats().window_list_requests == 6


def test_the_window_list_filters_by_time_status_and_product_type(
    launch: Launch, clock: FakeClock
) -> None:
    _, client = launch()
    video = create(client, **pro())["id"]
    clock.advance(1.0)
    omni = create(client, O1, **v2_body(duration=5))["id"]
    assert [t["id"] for t in window(client)["result"]] == [omni, video]
    past = {"start_time": 0, "end_time": int(time.time() * 1000) - 3_600_000}
    assert window(client, **past) == {"result": [], "count": 0, "next_cursor": None,
                                      "has_more": False}
    done = [{"key": "status", "values": ["succeeded"]}]
    assert [t["id"] for t in window(client, filters=done)["result"]] == [video]
    running = [{"key": "status", "values": ["submitted", "processing"]}]
    assert [t["id"] for t in window(client, filters=running)["result"]] == [omni]
    kinds = [{"key": "product_type", "values": ["omni-video"]}]
    assert [t["id"] for t in window(client, filters=kinds)["result"]] == [omni]
    assert window(client, filters=kinds + done)["result"] == []


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"start_time": None}, "start_time and end_time are required (Unix ms)"),
        ({"end_time": "now"}, "end_time value 'now' is invalid"),
        ({"start_time": 10, "end_time": 5}, "start_time must not be after end_time"),
        ({"limit": 0}, "limit must be an integer from 1 to 500, got 0"),
        ({"limit": 501}, "limit must be an integer from 1 to 500, got 501"),
        ({"cursor": "not-ours"}, "cursor value 'not-ours' is invalid"),
        ({"cursor": 3}, "cursor value '3' is invalid"),
        ({"filters": [{"key": "model", "values": ["x"]}]}, "filters[0].key value 'model' is "
         "invalid"),
        ({"filters": [{"key": "status", "values": ["succeed"]}]},
         "filters[0].values value 'succeed' is invalid"),  # the legacy spelling
        ({"filters": [{"key": "status", "values": []}]},
         "filters[0].values must be a non-empty array"),
    ],
)
def test_malformed_window_lists_are_refused(
    launch: Launch, body: dict[str, Any], expected: str
) -> None:
    _, client = launch()
    request = {**window_around_now(), **body}
    assert refusal(client.post("/tasks", json={k: v for k, v in request.items()
                                               if v is not None})) == invalid(expected)


def test_a_cursor_past_the_tasks_is_refused(launch: Launch) -> None:
    _, client = launch()
    create(client)
    create(client)
    cursor = window(client, limit=1)["next_cursor"]
    assert cursor is not None
    _, other = launch()  # another account: the cursor names a position it does not have
    assert refusal(other.post("/tasks", json={**window_around_now(), "cursor": cursor})) == (
        invalid("cursor value is invalid")
    )


# --- read lag ------------------------------------------------------------------------------


def test_read_lag_on_v2_hides_reads_by_external_id_and_the_list_only(
    launch: Launch, clock: FakeClock
) -> None:
    _, client = launch(read_lag=3.0, task_duration=(60.0, 60.0))
    task_id = create(client, **pro(external="lag-2"))["id"]
    assert [t["id"] for t in batch(client, task_ids=task_id)] == [task_id]
    assert batch(client, external_task_ids="lag-2") == []
    assert window(client)["result"] == []
    assert refusal(client.post(KLING_26, json=pro(external="lag-2"))) == invalid(
        "External_task_id lag-2 already exists"
    )
    clock.advance(3.0)
    assert [t["id"] for t in batch(client, external_task_ids="lag-2")] == [task_id]
    assert [t["id"] for t in window(client)["result"]] == [task_id]


# --- one account for both APIs ------------------------------------------------------------


def test_slots_are_shared_by_both_apis(launch: Launch, clock: FakeClock) -> None:
    # One video pack for both APIs; the image pack is counted apart.
    sim, client = launch(concurrency_slots=3)
    data_of(client.post(T2V, json=v1_video()))
    create(client)
    data_of(client.post(T2V, json=v1_video()))
    assert refusal(client.post(KLING_26, json=pro())) == (
        429, 1303, "parallel task over resource pack limit")
    assert refusal(client.post(T2V, json=v1_video()))[:2] == (429, 1303)
    data_of(client.post("/v1/images/generations",
                        json={"model_name": "kling-v2-1", "prompt": "x"}))
    assert sim.stats().peak_slots == 4
    clock.advance(1.0)
    create(client)
    assert sim.stats().create_answers == {"0": 5, "1303": 2}


def test_billing_and_rate_are_shared_by_both_apis(launch: Launch, clock: FakeClock) -> None:
    _, client = launch(billing_after=2)
    data_of(client.post(T2V, json=v1_video()))
    create(client)
    assert refusal(client.post(KLING_26, json=pro()))[:2] == (429, 1102)
    assert refusal(client.post(T2V, json=v1_video()))[:2] == (429, 1102)
    _, client = launch(requests_per_second=2)
    create(client)
    data_of(client.post(T2V, json=v1_video()))
    assert refusal(client.post(KLING_26, json=pro())) == (429, 1302, "request rate too high")


def test_external_ids_are_unique_across_both_apis(launch: Launch) -> None:
    sim, client = launch()
    data_of(client.post(T2V, json=v1_video(external_task_id="shared-1")))
    assert refusal(client.post(KLING_26, json=pro(external="shared-1"))) == invalid(
        "External_task_id shared-1 already exists"
    )
    create(client, **pro(external="shared-2"))
    assert refusal(client.post(T2V, json=v1_video(external_task_id="shared-2"))) == invalid(
        "External_task_id shared-2 already exists"
    )
    stats = sim.stats()
    assert (stats.tasks_created, stats.creates_refused_as_existing) == (2, 2)


def test_faults_cover_the_v2_requests(launch: Launch, clock: FakeClock) -> None:
    faults = (
        FaultRule(op="create", effect="error", http_status=503, code=5001, times=1),
        FaultRule(op="query", effect="error", match="flaky", http_status=500, code=5000),
        FaultRule(op="list", effect="drop_before_commit", times=1),
        FaultRule(op="create", effect="error_after_commit", match="late", http_status=504,
                  code=5002),
    )
    sim, client = launch(faults=faults)
    assert refusal(client.post(KLING_26, json=pro()))[:2] == (503, 5001)
    flaky = create(client, **pro("a flaky cat"))["id"]
    fine = create(client, **pro("a fine cat"))["id"]
    assert refusal(client.get("/tasks", params={"task_ids": f"{fine},{flaky}"}))[:2] == (
        500, 5000)
    assert [t["id"] for t in batch(client, task_ids=fine)] == [fine]
    with pytest.raises(httpx.TransportError):
        client.post("/tasks", json=window_around_now())
    assert len(window(client)["result"]) == 2
    # Answered 504, yet the task exists: a lookup by external id finds it.
    assert refusal(client.post(KLING_26, json=pro("late", external="late-1")))[:2] == (504, 5002)
    assert [t["external_id"] for t in batch(client, external_task_ids="late-1")] == ["late-1"]
    stats = sim.stats()
    assert stats.faults_fired == {
        "create error 503/5001": 1,
        "query error 500/5000": 1,
        "list drop_before_commit": 1,
        "create error_after_commit 504/5002": 1,
    }
    assert (stats.v2_create_requests, stats.batch_query_requests,
            stats.window_list_requests) == (4, 3, 2)


# --- journaled --------------------------------------------------------------------------------


def test_v2_tasks_are_journaled_and_taken_back(
    tmp_path: Path, launch: Launch, clock: FakeClock
) -> None:
    state = tmp_path / "simulator-state.jsonl"
    first, client = launch(state_file=state, task_duration=(10.0, 10.0))
    task = create(client, **pro(external="kept-2", duration=10))
    legacy = data_of(client.post(T2V, json=v1_video(external_task_id="kept-1")))
    first.stop()
    lines = [json.loads(line) for line in state.read_text().splitlines()]
    written = [line["task"] for line in lines if "task" in line]
    assert [(t["api"], t["family"]) for t in written] == [
        ("v2", "text-to-video"), ("v1", "videos/text2video")]

    later = FakeClock()
    second, client = launch(state_file=state, task_duration=(10.0, 10.0), clock=later)
    (back,) = batch(client, external_task_ids="kept-2")
    assert back["id"] == task["id"]
    assert back["status"] in ("submitted", "processing")
    assert data_of(client.get(f"{T2V}/kept-1"))["task_id"] == legacy["task_id"]
    assert [t["id"] for t in window(client)["result"]] == [task["id"]]
    assert refusal(client.post(KLING_26, json=pro(external="kept-2"))) == invalid(
        "External_task_id kept-2 already exists"
    )
    later.advance(10.0)
    (done,) = batch(client, task_ids=task["id"])
    assert done["outputs"][0]["duration"] == "10.1"
    assert done["billing"][0]["amount"] == "5"
    assert second.stats().tasks_created == 2
