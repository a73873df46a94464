"""The bundled Kling simulator, exercised over real HTTP on loopback.

Task lifecycles run on an injected clock, so nothing here waits for a task to finish; the only
real waits are a client timeout against an injected delay and the CLI start-up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from orchestrator.simulator import FaultRule, SimConfig, SimStats, Simulator
from tests.simulator_support import (
    API_KEY,
    I2V,
    IMG,
    PLAIN_HTTP,
    PNG_B64,
    T2V,
    FakeClock,
    Launch,
    http_client,
)


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    yield
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("kling-simulator")]
    assert leftover == []


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def launch(clock: FakeClock) -> Iterator[Launch]:
    """Start a simulator (fake clock, 1 s tasks unless overridden) and an API-key client."""
    running: list[tuple[Simulator, httpx.Client]] = []

    def start(**fields: Any) -> tuple[Simulator, httpx.Client]:
        fields.setdefault("clock", clock)
        fields.setdefault("task_duration", (1.0, 1.0))
        sim = Simulator(SimConfig(**fields))
        sim.start()
        client = http_client(sim.url, headers=API_KEY)
        running.append((sim, client))
        return sim, client

    yield start
    for sim, client in running:
        client.close()
        sim.stop()


def body_for(path: str, **extra: Any) -> dict[str, Any]:
    if path == I2V:
        base: dict[str, Any] = {"model_name": "kling-v2-5-turbo", "image": PNG_B64}
    elif path == IMG:
        base = {"model_name": "kling-v2-1", "prompt": "a red mug"}
    else:
        base = {"model_name": "kling-v2-5-turbo", "prompt": "a cat", "duration": "5"}
    return {**base, **extra}


def create(client: httpx.Client, path: str = T2V, **extra: Any) -> dict[str, Any]:
    response = client.post(path, json=body_for(path, **extra))
    assert response.status_code == 200, response.text
    payload: dict[str, Any] = response.json()
    assert payload["code"] == 0
    data: dict[str, Any] = payload["data"]
    return data


def error_of(response: httpx.Response) -> tuple[int, int]:
    payload = response.json()
    assert "data" not in payload
    assert payload["request_id"]
    return response.status_code, int(payload["code"])


def sign(payload: dict[str, Any], key: str = "sim-secret-key", algorithm: str = "HS256") -> str:
    # The demo secret is short on purpose; PyJWT would warn about it on every signature.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", jwt.warnings.InsecureKeyLengthWarning)
        return jwt.encode(payload, key, algorithm=algorithm, headers={"typ": "JWT"})


def token(**claims: Any) -> str:
    now = time.time()
    return sign({"iss": "sim-access-key", "exp": now + 1800, "nbf": now - 5, **claims})


# --- round trips and lifecycle -------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "result_key", "count"),
    [(T2V, "videos", 1), (I2V, "videos", 1), (IMG, "images", 3)],
)
def test_create_query_list_round_trip(
    launch: Launch, clock: FakeClock, path: str, result_key: str, count: int
) -> None:
    sim, client = launch()
    extra = {"n": 3} if path == IMG else {}
    task = create(client, path, external_task_id="batch-item-1", **extra)
    assert task["task_status"] == "submitted"
    assert task["task_info"] == {"external_task_id": "batch-item-1"}
    assert task["task_id"].isdigit()
    assert "task_result" not in task

    by_id = client.get(f"{path}/{task['task_id']}").json()["data"]
    by_external = client.get(f"{path}/batch-item-1").json()["data"]
    assert by_id["task_id"] == by_external["task_id"] == task["task_id"]
    listed = client.get(path, params={"pageNum": 1, "pageSize": 10}).json()["data"]
    assert [t["task_id"] for t in listed] == [task["task_id"]]

    clock.advance(1.0)
    done = client.get(f"{path}/{task['task_id']}").json()["data"]
    assert done["task_status"] == "succeed"
    assets = done["task_result"][result_key]
    assert len(assets) == count
    for index, asset in enumerate(assets):
        assert asset["url"].startswith(sim.url + "/assets/")
        assert asset["watermark_url"].startswith(sim.url + "/assets/")
        if result_key == "images":
            assert asset["index"] == index
        else:
            assert asset["duration"] == "5.1"  # what Kling reports for a 5 s request
            assert asset["id"]


def test_query_path_can_refuse_external_ids(launch: Launch) -> None:
    # Accepting the reused id, as Kling does not, shows what a blind resubmission would pay.
    sim, client = launch(query_by_external_id=False, reject_duplicate_external_ids=False)
    task = create(client, external_task_id="batch-item-1")
    assert error_of(client.get(f"{T2V}/batch-item-1")) == (400, 1201)
    assert client.get(f"{T2V}/{task['task_id']}").json()["data"]["task_id"] == task["task_id"]
    listed = client.get(T2V).json()["data"]
    assert listed[0]["task_info"] == {"external_task_id": "batch-item-1"}
    create(client, external_task_id="batch-item-1")
    assert sim.stats().creates_reusing_external_id_without_lookup == 0  # the list showed it
    # A GET by the external id finds nothing here: it does not count as having looked.
    assert client.get(f"{T2V}/batch-item-1").status_code == 400
    create(client, external_task_id="batch-item-1")
    assert sim.stats().creates_reusing_external_id_without_lookup == 1




def test_status_is_derived_from_the_injected_clock(launch: Launch, clock: FakeClock) -> None:
    _, client = launch(task_duration=(2.0, 2.0))
    task_id = create(client)["task_id"]

    def seen() -> dict[str, Any]:
        data: dict[str, Any] = client.get(f"{T2V}/{task_id}").json()["data"]
        return data

    first = seen()
    assert first["task_status"] == "submitted"
    clock.advance(0.39)
    assert seen()["task_status"] == "submitted"
    clock.advance(0.02)
    processing = seen()
    assert processing["task_status"] == "processing"
    assert processing["updated_at"] == first["created_at"] + 400
    clock.advance(1.58)
    assert seen()["task_status"] == "processing"
    clock.advance(0.01)
    final = seen()
    assert final["task_status"] == "succeed"
    assert final["updated_at"] == first["created_at"] + 2000


def test_list_pages_newest_first_within_the_family(launch: Launch) -> None:
    _, client = launch()
    ids = [create(client, prompt=f"shot {i}")["task_id"] for i in range(5)]
    create(client, IMG)

    def page(num: int, size: int) -> list[str]:
        response = client.get(T2V, params={"pageNum": num, "pageSize": size})
        return [t["task_id"] for t in response.json()["data"]]

    assert page(1, 2) == [ids[4], ids[3]]
    assert page(3, 2) == [ids[0]]
    assert page(4, 2) == []
    assert [t["task_id"] for t in client.get(T2V).json()["data"]] == ids[::-1]
    for params in ({"pageSize": 0}, {"pageSize": 501}, {"pageNum": 1001}, {"pageNum": "x"}):
        assert error_of(client.get(T2V, params=params)) == (400, 1201)


def test_same_seed_gives_same_task_ids(launch: Launch) -> None:
    runs = []
    for _ in range(2):
        _, client = launch(seed=7)
        runs.append([create(client)["task_id"] for _ in range(3)])
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 3


# --- authentication ------------------------------------------------------------------------


def test_api_key_and_jwt_are_accepted(launch: Launch) -> None:
    sim, _ = launch()
    with http_client(sim.url) as client:
        for auth in ("Bearer sim-api-key", f"Bearer {token()}"):
            response = client.post(T2V, json=body_for(T2V), headers={"Authorization": auth})
            assert response.status_code == 200


@pytest.mark.parametrize(
    ("authorization", "expected"),
    [
        (None, (401, 1001)),
        ("", (401, 1001)),
        ("Bearer not-a-jwt", (401, 1002)),
        ("Basic sim-api-key", (401, 1002)),
        ("Bearer " + sign({"iss": "sim-access-key", "exp": 4e9}, "other-key"), (401, 1002)),
        ("Bearer " + sign({"iss": "sim-access-key", "exp": 4e9}, algorithm="HS512"), (401, 1002)),
        ("Bearer " + token(iss="someone-else"), (401, 1000)),
        ("Bearer " + token(exp=time.time() - 1), (401, 1004)),
        ("Bearer " + token(nbf=time.time() + 600), (401, 1003)),
    ],
)
def test_auth_errors(launch: Launch, authorization: str | None, expected: tuple[int, int]) -> None:
    sim, _ = launch()
    headers = {} if authorization is None else {"Authorization": authorization}
    with http_client(sim.url, headers=headers) as client:
        for response in (client.post(T2V, json=body_for(T2V)), client.get(f"{T2V}/1")):
            assert error_of(response) == expected
            if authorization:
                assert authorization.split()[-1] not in response.text
    assert sim.stats().tasks_created == 0


def test_clock_skew_applies_to_exp_and_nbf(launch: Launch) -> None:
    ahead, _ = launch(clock_skew=3600.0)
    behind, _ = launch(clock_skew=-60.0)
    fresh = {"Authorization": f"Bearer {token()}"}
    with http_client(headers=fresh) as client:
        assert error_of(client.get(f"{ahead.url}{T2V}")) == (401, 1004)
        assert error_of(client.get(f"{behind.url}{T2V}")) == (401, 1003)


def test_api_key_can_be_disabled(launch: Launch) -> None:
    _, client = launch(api_key=None)
    assert error_of(client.get(T2V)) == (401, 1002)


# --- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "extra", "fragment"),
    [
        (T2V, {"duration": 5}, "must be a string"),
        (T2V, {"duration": "7"}, "duration"),
        (T2V, {"model_name": "kling-latest"}, "model_name"),
        (T2V, {"prompt": "x" * 2501}, "2500"),
        (T2V, {"prompt": None}, "prompt is required"),
        (T2V, {"mode": "turbo"}, "mode"),
        (T2V, {"aspect_ratio": "4:3"}, "aspect_ratio"),
        (T2V, {"camera_control": {"type": "simple", "config": {"pan": 1, "zoom": 2}}}, "exactly"),
        (I2V, {"image": "data:image/png;base64," + PNG_B64}, "image format error"),
        (I2V, {"image": "not base64 !"}, "image format error"),
        (I2V, {"image": None}, "image is required"),
        (I2V, {"image_tail": PNG_B64, "camera_control": {"type": "down_back"}}, "together"),
        (I2V, {"aspect_ratio": "16:9"}, "aspect_ratio"),
        (IMG, {"n": 10}, "n must be"),
        (IMG, {"n": "2"}, "n must be"),
        (IMG, {"aspect_ratio": "5:4"}, "aspect_ratio"),
        (IMG, {"model_name": "kling-v2-master"}, "model_name"),
        (IMG, {"external_task_id": 12}, "external_task_id"),
    ],
)
def test_invalid_creates_are_rejected_with_1201(
    launch: Launch, path: str, extra: dict[str, Any], fragment: str
) -> None:
    sim, client = launch()
    response = client.post(path, json=body_for(path, **extra))
    assert error_of(response) == (400, 1201)
    assert fragment in response.json()["message"]
    assert sim.stats().tasks_created == 0


@pytest.mark.parametrize(
    ("path", "extra"),
    [
        (T2V, {"model_name": "kling-v3", "duration": "15"}),
        (T2V, {"duration": "10", "aspect_ratio": "9:16", "mode": "pro"}),
        (T2V, {"camera_control": {"type": "simple", "config": {"zoom": -3}}}),
        (I2V, {"image": "https://example.com/cat.png", "prompt": "turns its head"}),
        (I2V, {"image_tail": PNG_B64, "mode": "pro"}),  # an end frame needs pro on v2-5
        (IMG, {"n": 9, "aspect_ratio": "21:9", "resolution": "2k"}),
    ],
)
def test_valid_variants_are_accepted(launch: Launch, path: str, extra: dict[str, Any]) -> None:
    _, client = launch()
    create(client, path, **extra)


def test_body_must_be_a_json_object(launch: Launch) -> None:
    _, client = launch()
    for content in (b"{not json", b"[1, 2]", b""):
        response = client.post(T2V, content=content, headers={"Content-Type": "application/json"})
        assert error_of(response) == (400, 1201)


def test_unknown_routes_answer_1202(launch: Launch) -> None:
    _, client = launch()
    assert error_of(client.get("/v1/videos/lip-sync")) == (404, 1202)
    assert error_of(client.post(f"{T2V}/123", json={})) == (404, 1202)
    assert error_of(client.delete(T2V)) == (404, 1202)


# --- account limits ------------------------------------------------------------------------


def test_concurrency_slots_reject_with_1303_until_tasks_finish(
    launch: Launch, clock: FakeClock
) -> None:
    # Kling counts each resource-pack type apart: image tasks hold n slots of the image
    # pack, video tasks one of the video pack (kling-api.md, Limits).
    sim, client = launch(concurrency_slots=3)
    create(client, IMG, n=2)
    create(client, IMG, n=1)
    rejected = client.post(IMG, json=body_for(IMG, n=1))
    assert error_of(rejected) == (429, 1303)
    assert rejected.json()["message"] == "parallel task over resource pack limit"
    for _ in range(3):
        create(client)  # the video pack is not the image pack's
    assert error_of(client.post(T2V, json=body_for(T2V))) == (429, 1303)
    stats = sim.stats()
    assert (stats.tasks_created, stats.peak_slots, stats.slots_in_use) == (5, 6, 6)

    clock.advance(1.0)  # finished tasks, failed ones included, give their slots back
    create(client, IMG, n=3)
    stats = sim.stats()
    assert (stats.tasks_created, stats.peak_slots) == (6, 6)
    assert stats.create_answers == {"0": 6, "1303": 2}


def test_the_image_pack_may_have_a_limit_of_its_own(launch: Launch) -> None:
    _, client = launch(concurrency_slots=1, image_concurrency_slots=4)
    create(client, IMG, n=4)
    create(client)
    assert error_of(client.post(T2V, json=body_for(T2V))) == (429, 1303)
    assert error_of(client.post(IMG, json=body_for(IMG, n=1))) == (429, 1303)


def test_billing_after_k_creates(launch: Launch) -> None:
    sim, client = launch(billing_after=2)
    create(client)
    create(client)
    assert error_of(client.post(T2V, json=body_for(T2V))) == (429, 1102)
    sim.set_billing_after(None)
    create(client)
    sim.set_billing_after(3)
    assert error_of(client.post(IMG, json=body_for(IMG))) == (429, 1102)
    assert sim.stats().tasks_created == 3


def test_billing_takes_precedence_over_validation(launch: Launch) -> None:
    _, client = launch(billing_after=0)
    assert error_of(client.post(T2V, json=body_for(T2V, duration=5))) == (429, 1102)


def test_requests_per_second_sliding_window(launch: Launch, clock: FakeClock) -> None:
    _, client = launch(requests_per_second=2)
    create(client)
    clock.advance(0.5)
    create(client)
    assert error_of(client.post(T2V, json=body_for(T2V))) == (429, 1302)
    clock.advance(0.5)  # the first create leaves the window
    create(client)
    assert error_of(client.post(T2V, json=body_for(T2V))) == (429, 1302)


# --- faults --------------------------------------------------------------------------------


def test_error_fault_answers_before_commit_with_retry_after(launch: Launch) -> None:
    rule = FaultRule(
        op="create",
        effect="error",
        times=1,
        http_status=503,
        code=5001,
        message="under maintenance",
        retry_after="7",
    )
    sim, client = launch(faults=(rule,))
    response = client.post(T2V, json=body_for(T2V))
    assert error_of(response) == (503, 5001)
    assert response.headers["Retry-After"] == "7"
    assert sim.stats().tasks_created == 0
    create(client)  # times=1: spent
    assert sim.stats().tasks_created == 1


def test_error_after_commit_creates_the_task(launch: Launch) -> None:
    rule = FaultRule(op="create", effect="error_after_commit", http_status=504, code=5002)
    sim, client = launch(faults=(rule,))
    response = client.post(T2V, json=body_for(T2V, external_task_id="ext-504"))
    assert error_of(response) == (504, 5002)
    found = client.get(f"{T2V}/ext-504")
    assert found.status_code == 200
    assert found.json()["data"]["task_info"]["external_task_id"] == "ext-504"
    assert sim.stats().tasks_created == 1


def test_drop_before_commit_closes_without_a_task(launch: Launch) -> None:
    sim, client = launch(faults=(FaultRule(op="create", effect="drop_before_commit", times=1),))
    with pytest.raises(httpx.TransportError):
        client.post(T2V, json=body_for(T2V, external_task_id="lost"))
    assert error_of(client.get(f"{T2V}/lost")) == (400, 1201)
    stats = sim.stats()
    assert (stats.create_requests, stats.tasks_created) == (1, 0)
    assert stats.create_answers == {"dropped": 1}


def test_drop_after_commit_closes_but_the_task_exists(launch: Launch) -> None:
    sim, client = launch(faults=(FaultRule(op="create", effect="drop_after_commit", times=1),))
    with pytest.raises(httpx.TransportError):
        client.post(T2V, json=body_for(T2V, external_task_id="ambiguous"))
    stats = sim.stats()
    assert stats.tasks_created == 1
    assert stats.tasks[0]["external_task_id"] == "ambiguous"
    assert client.get(f"{T2V}/ambiguous").json()["data"]["task_id"] == stats.tasks[0]["task_id"]


def test_delay_fault_outlasts_a_client_timeout_then_commits(launch: Launch) -> None:
    sim, client = launch(faults=(FaultRule(op="create", effect="delay", delay=0.2, times=1),))
    with pytest.raises(httpx.TimeoutException):
        client.post(T2V, json=body_for(T2V), timeout=0.05)
    deadline = time.monotonic() + 2.0
    while sim.stats().tasks_created == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sim.stats().tasks_created == 1


def test_delay_after_commit_answers_late_for_a_task_that_exists(launch: Launch) -> None:
    rule = FaultRule(op="create", effect="delay_after_commit", delay=0.3, times=1)
    sim, client = launch(faults=(rule,))
    with pytest.raises(httpx.TimeoutException):
        client.post(T2V, json=body_for(T2V, external_task_id="late"), timeout=0.05)
    # Found at once: unlike a plain delay, the task was committed before the wait.
    assert client.get(f"{T2V}/late").status_code == 200
    assert sim.stats().tasks_created == 1
    assert sim.stats().faults_fired == {"create delay_after_commit 0.3s": 1}
    create(client)  # times=1: spent, answered at once


def test_task_failed_fault_matches_by_prompt(launch: Launch, clock: FakeClock) -> None:
    rule = FaultRule(
        op="create", effect="task_failed", match="doomed", message="Image pixel is invalid"
    )
    _, client = launch(faults=(rule,))
    doomed = create(client, prompt="a doomed ship")["task_id"]
    fine = create(client, prompt="a fine ship")["task_id"]
    clock.advance(0.5)
    assert client.get(f"{T2V}/{doomed}").json()["data"]["task_status"] == "processing"
    clock.advance(0.5)
    failed = client.get(f"{T2V}/{doomed}")
    assert failed.status_code == 200
    data = failed.json()["data"]
    assert (data["task_status"], data["task_status_msg"]) == ("failed", "Image pixel is invalid")
    assert "task_result" not in data
    assert client.get(f"{T2V}/{fine}").json()["data"]["task_status"] == "succeed"


def test_fewer_assets_fault(launch: Launch, clock: FakeClock) -> None:
    rules = (
        FaultRule(op="create", effect="fewer_assets", match="mug", assets=1),
        FaultRule(op="create", effect="fewer_assets", match="cat", assets=0),
    )
    sim, client = launch(faults=rules)
    images = create(client, IMG, n=4)["task_id"]
    video = create(client, prompt="a cat")["task_id"]
    clock.advance(1.0)
    image_data = client.get(f"{IMG}/{images}").json()["data"]
    assert image_data["task_status"] == "succeed"
    assert len(image_data["task_result"]["images"]) == 1
    assert client.get(f"{T2V}/{video}").json()["data"]["task_result"] == {"videos": []}
    assert [t["assets"] for t in sim.stats().tasks] == [1, 0]


def test_read_side_faults_and_times(launch: Launch) -> None:
    faults = (
        FaultRule(op="query", effect="error", times=2),
        FaultRule(op="list", effect="drop_before_commit", times=1),
    )
    _, client = launch(faults=faults)
    task_id = create(client)["task_id"]
    assert error_of(client.get(f"{T2V}/{task_id}")) == (500, 5000)
    assert error_of(client.get(f"{T2V}/{task_id}")) == (500, 5000)
    assert client.get(f"{T2V}/{task_id}").status_code == 200
    with pytest.raises(httpx.TransportError):
        client.get(T2V)
    assert client.get(T2V).status_code == 200


def test_faults_can_be_added_at_runtime(launch: Launch) -> None:
    sim, client = launch()
    create(client)
    sim.add_fault(FaultRule(op="create", effect="error", code=1303, http_status=429, times=1))
    assert error_of(client.post(T2V, json=body_for(T2V))) == (429, 1303)
    create(client)


def test_fault_rules_reject_typos() -> None:
    with pytest.raises(ValueError, match="effect"):
        FaultRule(op="create", effect="eror")
    with pytest.raises(ValueError, match="op"):
        FaultRule(op="get", effect="error")
    with pytest.raises(ValueError, match="only applies"):
        FaultRule(op="query", effect="task_failed")
    with pytest.raises(ValueError, match="only applies"):
        FaultRule(op="list", effect="delay_after_commit")


# --- not found, stats, assets --------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "expected"), [("400/1201", (400, 1201)), ("404/1203", (404, 1203))]
)
def test_not_found_styles(launch: Launch, style: str, expected: tuple[int, int]) -> None:
    _, client = launch(not_found_style=style)
    missing = client.get(f"{T2V}/999")
    assert error_of(missing) == expected
    if style == "400/1201":
        assert missing.json()["message"] == "Task not found by id/external id: 999"
    task_id = create(client, IMG)["task_id"]
    assert error_of(client.get(f"{T2V}/{task_id}")) == expected  # wrong family


def test_stats_count_requests_and_duplicate_external_ids(launch: Launch, clock: FakeClock) -> None:
    sim, client = launch(reject_duplicate_external_ids=False)
    create(client, external_task_id="dup", prompt="same")
    create(client, external_task_id="dup", prompt="same")  # resubmitted without looking
    client.get(f"{T2V}/dup")
    create(client, external_task_id="dup", prompt="same")  # looked first: not counted
    client.get(T2V)
    create(client, IMG, external_task_id="solo")
    clock.advance(1.0)
    asset = client.get(f"{IMG}/solo").json()["data"]["task_result"]["images"][0]["url"]
    client.get(asset)

    stats = sim.stats()
    assert stats.create_requests == 4
    assert stats.tasks_created == 4
    assert (stats.query_requests, stats.list_requests, stats.asset_requests) == (2, 1, 1)
    assert stats.external_id_counts == {"dup": 3, "solo": 1}
    assert stats.duplicate_external_ids == ("dup",)
    assert stats.creates_reusing_external_id_without_lookup == 1
    assert (stats.creates_reusing_external_id, stats.creates_refused_as_existing) == (2, 0)
    assert stats.by_prompt == {"same": 3, "a red mug": 1}
    assert {t["status"] for t in stats.tasks} == {"succeed"}
    assert stats.tasks[3]["family"] == "images/generations"
    # The newest of the duplicates answers a lookup by external id.
    assert client.get(f"{T2V}/dup").json()["data"]["task_id"] == stats.tasks[2]["task_id"]

    served = client.get("/_sim/stats").json()
    assert SimStats.from_dict(served) == sim.stats()


def test_assets_are_served_with_type_and_length(launch: Launch, clock: FakeClock) -> None:
    _, client = launch()
    video = create(client)["task_id"]
    image = create(client, IMG, n=2)["task_id"]
    assert client.get(f"/assets/{video}/0.mp4").status_code == 404  # not finished yet
    clock.advance(1.0)

    video_url = client.get(f"{T2V}/{video}").json()["data"]["task_result"]["videos"][0]["url"]
    response = client.get(video_url)
    assert response.headers["Content-Type"] == "video/mp4"
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.content[4:8] == b"ftyp"

    urls = [i["url"] for i in client.get(f"{IMG}/{image}").json()["data"]["task_result"]["images"]]
    pngs = [client.get(url) for url in urls]
    assert {r.headers["Content-Type"] for r in pngs} == {"image/png"}
    assert all(r.content.startswith(b"\x89PNG\r\n\x1a\n") for r in pngs)
    assert int(pngs[0].headers["Content-Length"]) == len(pngs[0].content)
    assert pngs[0].content != pngs[1].content

    for missing in (f"/assets/{image}/2.png", f"/assets/{video}/0.png", "/assets/1/0.mp4"):
        assert client.get(missing).status_code == 404


# --- asset faults and expiring URLs ---------------------------------------------------------


def finished_urls(
    client: httpx.Client, clock: FakeClock, path: str = T2V, **extra: Any
) -> tuple[str, list[str]]:
    """Create a task, let it finish, and return its id and asset URLs."""
    task_id = create(client, path, **extra)["task_id"]
    clock.advance(1.0)
    return task_id, query_urls(client, path, task_id)


def query_urls(client: httpx.Client, path: str, task_id: str) -> list[str]:
    result = client.get(f"{path}/{task_id}").json()["data"]["task_result"]
    return [asset["url"] for asset in result.get("videos", result.get("images", []))]


def test_asset_error_fault_matches_by_prompt(launch: Launch, clock: FakeClock) -> None:
    rule = FaultRule(
        op="asset", effect="error", match="flaky", http_status=503, code=5001, retry_after="3"
    )
    sim, client = launch(faults=(rule,))
    _, (flaky,) = finished_urls(client, clock, prompt="a flaky cat")
    _, (fine,) = finished_urls(client, clock, prompt="a fine cat")
    refused = client.get(flaky)
    assert (refused.status_code, refused.headers["Retry-After"]) == (503, "3")
    assert client.get(fine).status_code == 200
    stats = sim.stats()
    assert stats.asset_answers == {"503": 1, "200": 1}
    assert stats.faults_fired == {"asset error 503/5001 retry_after": 1}


def test_asset_truncate_sends_half_the_announced_body(launch: Launch, clock: FakeClock) -> None:
    sim, client = launch(faults=(FaultRule(op="asset", effect="truncate", times=1),))
    _, (url,) = finished_urls(client, clock)
    with client.stream("GET", url) as response:
        assert response.status_code == 200
        announced = int(response.headers["Content-Length"])
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    whole = client.get(url)  # times=1: spent
    assert len(whole.content) == announced
    stats = sim.stats()
    assert stats.asset_answers == {"truncated": 1, "200": 1}
    assert stats.asset_bytes_served == announced // 2 + announced


def test_asset_wrong_type_answers_an_html_page(launch: Launch, clock: FakeClock) -> None:
    sim, client = launch(faults=(FaultRule(op="asset", effect="wrong_type", times=1),))
    _, urls = finished_urls(client, clock, IMG, n=2)
    page = client.get(urls[0])
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.content.startswith(b"<!DOCTYPE html>")
    assert client.get(urls[0]).content.startswith(b"\x89PNG")
    assert sim.stats().asset_answers == {"wrong_type": 1, "200": 1}


def test_asset_drop_and_delay(launch: Launch, clock: FakeClock) -> None:
    faults = (
        FaultRule(op="asset", effect="drop_before_commit", times=1),
        FaultRule(op="asset", effect="delay", delay=0.2, times=1),
    )
    sim, client = launch(faults=faults)
    _, (url,) = finished_urls(client, clock)
    started = time.monotonic()
    with pytest.raises(httpx.TransportError):
        client.get(url)  # delayed, then dropped
    assert time.monotonic() - started >= 0.2
    assert client.get(url).status_code == 200
    assert sim.stats().asset_answers == {"dropped": 1, "200": 1}


def test_asset_faults_do_not_apply_to_api_requests(launch: Launch, clock: FakeClock) -> None:
    sim, client = launch(faults=(FaultRule(op="asset", effect="error", http_status=500),))
    task_id, (url,) = finished_urls(client, clock)
    assert client.get(f"{T2V}/{task_id}").status_code == 200
    assert client.get(url).status_code == 500
    assert sim.stats().faults_fired == {"asset error 500/5000": 1}


def test_asset_peak_in_flight_counts_concurrent_requests(launch: Launch, clock: FakeClock) -> None:
    sim, client = launch(faults=(FaultRule(op="asset", effect="delay", delay=0.2),))
    _, urls = finished_urls(client, clock, IMG, n=3)

    def fetch(url: str) -> None:
        with http_client() as own:
            assert own.get(url).status_code == 200

    threads = [threading.Thread(target=fetch, args=(url,)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sim.stats().asset_peak_in_flight == 3


def test_asset_fault_rules_are_checked() -> None:
    with pytest.raises(ValueError, match="only applies"):
        FaultRule(op="query", effect="truncate")
    with pytest.raises(ValueError, match="only applies"):
        FaultRule(op="create", effect="wrong_type")
    with pytest.raises(ValueError, match="only applies"):
        FaultRule(op="asset", effect="task_failed")
    assert FaultRule(op="asset", effect="truncate").label == "asset truncate"
    with pytest.raises(ValueError, match="asset_url_ttl"):
        SimConfig(asset_url_ttl=0)


def test_asset_urls_expire_and_each_query_signs_them_afresh(
    launch: Launch, clock: FakeClock
) -> None:
    sim, client = launch(asset_url_ttl=60.0)
    task_id, (url,) = finished_urls(client, clock)
    assert "?exp=" in url and "&sig=" in url
    assert client.get(url).status_code == 200
    clock.advance(59.0)
    assert client.get(url).status_code == 200
    clock.advance(1.0)
    expired = client.get(url)
    assert expired.status_code == 403
    assert expired.json()["message"] == "asset URL has expired"
    (fresh,) = query_urls(client, T2V, task_id)
    assert fresh != url
    assert client.get(fresh).status_code == 200
    # Listing signs URLs too.
    (listed,) = [t for t in client.get(T2V).json()["data"] if t["task_id"] == task_id]
    assert client.get(listed["task_result"]["videos"][0]["url"]).status_code == 200
    assert sim.stats().asset_answers == {"200": 4, "403": 1}


def test_asset_urls_refuse_a_bad_or_missing_signature(launch: Launch, clock: FakeClock) -> None:
    _, client = launch(asset_url_ttl=60.0)
    _, (url,) = finished_urls(client, clock)
    bare, _, query = url.partition("?")
    params = dict(pair.split("=", 1) for pair in query.split("&"))
    later = f"{bare}?exp={float(params['exp']) + 3600:.3f}&sig={params['sig']}"
    other_index = url.replace("/0.mp4?", "/1.mp4?")
    for bad, why in (
        (bare, "asset URL is not signed"),
        (later, "asset URL signature is invalid"),
        (f"{bare}?exp={params['exp']}&sig={'0' * 32}", "asset URL signature is invalid"),
    ):
        response = client.get(bad)
        assert response.status_code == 403
        assert response.json()["message"] == why
    assert client.get(other_index).status_code == 404  # no such asset: checked first


def test_without_ttl_asset_urls_are_plain(launch: Launch, clock: FakeClock) -> None:
    _, client = launch()
    _, (url,) = finished_urls(client, clock)
    assert "?" not in url
    clock.advance(10**6)
    assert client.get(url + "?exp=1&sig=x").status_code == 200


# --- lifecycle of the server itself --------------------------------------------------------


def test_stop_closes_idle_keep_alive_connections_and_the_port() -> None:
    sim = Simulator(SimConfig())
    with sim:
        url = sim.url
        client = http_client(url, headers=API_KEY)
        assert client.get(T2V).status_code == 200  # leaves an idle keep-alive connection
        started = time.monotonic()
    assert time.monotonic() - started < 1.0
    client.close()
    port = int(url.rsplit(":", 1)[1])
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    with pytest.raises(RuntimeError):
        _ = sim.url


def test_concurrent_creates_respect_the_slot_limit(launch: Launch) -> None:
    sim, _ = launch(concurrency_slots=5)
    answers: list[int] = []
    lock = threading.Lock()

    def submit() -> None:
        with http_client(sim.url, headers=API_KEY) as client:
            status = client.post(T2V, json=body_for(T2V)).status_code
        with lock:
            answers.append(status)

    threads = [threading.Thread(target=submit) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [200] * 5 + [429] * 15
    assert sim.stats().peak_slots == 5


def test_command_line_prints_url_and_credentials() -> None:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    with subprocess.Popen(
        [sys.executable, "-m", "orchestrator.simulator", "--seed", "3"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(6)]
            url = lines[0].split()[-1]
            assert url.startswith("http://127.0.0.1:")
            assert "export KLING_ACCESS_KEY=sim-access-key\n" in lines
            response = httpx.get(f"{url}{T2V}", headers=API_KEY, verify=PLAIN_HTTP)
            assert response.status_code == 200
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=5) == 0


# --- durable state (the demo's in-process simulator) ---------------------------------------


def test_state_file_brings_tasks_back_in_a_new_simulator(
    tmp_path: Path, launch: Launch, clock: FakeClock
) -> None:
    state = tmp_path / "out" / "simulator-state.jsonl"
    first, client = launch(state_file=state, task_duration=(10.0, 10.0))
    task = create(client, external_task_id="ext-kept")
    clock.advance(4.0)
    port = first.url.rsplit(":", 1)[1]
    first.stop()
    client.close()
    assert stat.S_IMODE(state.stat().st_mode) == 0o600

    # A new process: a new clock; the task goes on from its wall-clock creation time.
    later = FakeClock()
    second, client = launch(state_file=state, task_duration=(10.0, 10.0), clock=later)
    assert second.url.rsplit(":", 1)[1] == port  # its asset URLs still point here
    by_external = client.get(f"{T2V}/ext-kept").json()["data"]
    assert by_external["task_id"] == task["task_id"]
    assert by_external["task_status"] in ("submitted", "processing")
    later.advance(10.0)
    done = client.get(f"{T2V}/{task['task_id']}").json()["data"]
    assert done["task_status"] == "succeed"
    asset = client.get(done["task_result"]["videos"][0]["url"])
    assert asset.status_code == 200 and asset.content.startswith(b"\x00\x00\x00")
    # New tasks get new ids (the random stream does not replay the first run's), and the
    # account counts both.
    other = create(client, external_task_id="ext-new")
    assert other["task_id"] != task["task_id"]
    assert second.stats().tasks_created == 2


def test_state_file_torn_last_line_is_dropped(tmp_path: Path, launch: Launch) -> None:
    state = tmp_path / "simulator-state.jsonl"
    first, client = launch(state_file=state)
    kept = create(client, external_task_id="kept")
    first.stop()
    with state.open("a") as handle:
        handle.write('{"task": {"task_id": "99", "fam')  # killed mid-write
    second, client = launch(state_file=state)
    assert client.get(f"{T2V}/kept").json()["data"]["task_id"] == kept["task_id"]
    create(client, external_task_id="after")
    lines = state.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # the torn line is gone, not glued to
    assert second.stats().tasks_created == 2


def test_a_create_that_cannot_be_written_is_not_answered(tmp_path: Path, launch: Launch) -> None:
    state = tmp_path / "simulator-state.jsonl"
    sim, client = launch(state_file=state)
    state.unlink()
    state.mkdir()  # appends now fail
    with pytest.raises(httpx.TransportError):
        client.post(T2V, json=body_for(T2V, external_task_id="unwritten"))
    assert sim.stats().tasks_created == 0
