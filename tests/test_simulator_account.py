"""The simulated account as Kling keeps it: external ids unique in the account (and the switch
that lets a test prove a client never relies on that), reads by external id that lag behind a
create, finished tasks reporting units and watermarked copies, resource packs, the failure
texts seen in the wild, and the command-line switches for all of it.
"""

from __future__ import annotations

import argparse
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.cli.simulate import add_simulate_parser, cmd_simulate
from orchestrator.providers.base import Kind
from orchestrator.providers.kling.catalogue import catalogue
from orchestrator.simulator import TASK_FAILURE_MESSAGES, FaultRule
from tests.simulator_support import (
    API_KEY,
    DAY_MS,
    I2V,
    IMAGE_URL,
    IMG,
    T2V,
    FakeClock,
    Launch,
    assert_no_simulator_threads,
    data_of,
    http_client,
    invalid,
    launcher,
    refusal,
)


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


def video(**extra: Any) -> dict[str, Any]:
    return {"model_name": "kling-v2-6", "mode": "pro", "prompt": "a harbour", **extra}


def image(**extra: Any) -> dict[str, Any]:
    return {"model_name": "kling-v2-1", "prompt": "a mug", **extra}


# --- external ids are unique in the account ------------------------------------------------


def test_a_reused_external_id_is_refused_in_any_family(launch: Launch) -> None:
    sim, client = launch()
    first = data_of(client.post(T2V, json=video(external_task_id="item-1")))
    for path, body in ((T2V, video()), (IMG, image()), (I2V, video(image=IMAGE_URL))):
        again = client.post(path, json={**body, "external_task_id": "item-1"})
        assert refusal(again) == invalid("External_task_id item-1 already exists")
    stats = sim.stats()
    assert stats.tasks_created == 1
    assert stats.tasks[0]["task_id"] == first["task_id"]
    assert (stats.creates_reusing_external_id, stats.creates_refused_as_existing) == (3, 3)
    assert stats.external_id_counts == {"item-1": 4}
    assert stats.duplicate_external_ids == ("item-1",)
    # None of them looked the id up first: each resend would have paid twice elsewhere.
    assert stats.creates_reusing_external_id_without_lookup == 3
    assert stats.create_answers == {"0": 1, "1201": 3}


def test_a_reuse_after_a_lookup_is_counted_but_not_as_blind(launch: Launch) -> None:
    sim, client = launch()
    data_of(client.post(T2V, json=video(external_task_id="item-1")))
    data_of(client.get(f"{T2V}/item-1"))
    assert refusal(client.post(T2V, json=video(external_task_id="item-1")))[1] == 1201
    stats = sim.stats()
    assert stats.creates_reusing_external_id == 1
    assert stats.creates_reusing_external_id_without_lookup == 0


def test_validation_comes_before_the_uniqueness_check(launch: Launch) -> None:
    sim, client = launch()
    data_of(client.post(T2V, json=video(external_task_id="item-1")))
    std = client.post(T2V, json=video(external_task_id="item-1", mode="std"))
    assert refusal(std) == invalid("mode value 'std' is invalid")
    assert sim.stats().creates_reusing_external_id == 0  # it never got as far as the id


def test_accepting_reused_ids_shows_what_a_blind_resend_pays(launch: Launch) -> None:
    sim, client = launch(reject_duplicate_external_ids=False)
    ids = [data_of(client.post(T2V, json=video(external_task_id="item-1")))["task_id"]
           for _ in range(2)]
    stats = sim.stats()
    assert stats.tasks_created == 2 and len(set(ids)) == 2
    assert (stats.creates_reusing_external_id, stats.creates_refused_as_existing) == (1, 0)
    assert stats.creates_reusing_external_id_without_lookup == 1
    assert stats.duplicate_external_ids == ("item-1",)
    # The newest answers a lookup by external id.
    assert data_of(client.get(f"{T2V}/item-1"))["task_id"] == ids[1]


# --- read lag ------------------------------------------------------------------------------


def test_read_lag_hides_a_new_task_from_reads_by_external_id_only(
    launch: Launch, clock: FakeClock
) -> None:
    sim, client = launch(read_lag=5.0, task_duration=(60.0, 60.0))
    task = data_of(client.post(T2V, json=video(external_task_id="lagging")))
    by_id = f"{T2V}/{task['task_id']}"
    assert data_of(client.get(by_id))["task_id"] == task["task_id"]  # at once
    assert refusal(client.get(f"{T2V}/lagging")) == invalid(
        "Task not found by id/external id: lagging"
    )
    assert data_of(client.get(T2V)) == []
    # The create reusing its id is refused at once, lag or not.
    assert refusal(client.post(T2V, json=video(external_task_id="lagging"))) == invalid(
        "External_task_id lagging already exists"
    )
    clock.advance(4.99)
    assert refusal(client.get(f"{T2V}/lagging"))[1] == 1201
    assert data_of(client.get(T2V)) == []
    clock.advance(0.01)
    assert data_of(client.get(f"{T2V}/lagging"))["task_id"] == task["task_id"]
    assert [t["task_id"] for t in data_of(client.get(T2V))] == [task["task_id"]]
    assert sim.stats().tasks_created == 1


def test_read_lag_pages_lists_over_what_reads_see(launch: Launch, clock: FakeClock) -> None:
    _, client = launch(read_lag=2.0, task_duration=(60.0, 60.0))
    old = [data_of(client.post(T2V, json=video(prompt=f"old {i}")))["task_id"] for i in range(3)]
    clock.advance(2.0)
    data_of(client.post(T2V, json=video(prompt="new")))
    page = data_of(client.get(T2V, params={"pageNum": 1, "pageSize": 2}))
    assert [t["task_id"] for t in page] == [old[2], old[1]]


def test_read_lag_must_be_a_number_of_seconds(launch: Launch) -> None:
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="read_lag"):
            launch(read_lag=bad)


# --- what finished tasks report ------------------------------------------------------------


def units(model: str, kind: Kind, **asked: Any) -> str:
    value = catalogue().indicative_units(model, kind, **asked)
    assert value is not None
    return f"{value:g}"


@pytest.mark.parametrize(
    ("body", "seconds", "kind_asked"),
    [
        (video(), 5, {"mode": "pro", "duration": 5}),
        (video(duration="10", sound="on"), 10, {"mode": "pro", "duration": 10, "sound": True}),
        ({"model_name": "kling-v3", "prompt": "a bay", "duration": "7", "mode": "4k"}, 7,
         {"mode": "4k", "duration": 7}),
        ({"model_name": "kling-v2-5-turbo", "prompt": "a bay"}, 5, {"mode": "std", "duration": 5}),
    ],
)
def test_a_finished_video_reports_its_units_its_watermark_and_a_tenth_more_seconds(
    launch: Launch, clock: FakeClock, body: dict[str, Any], seconds: int, kind_asked: Any
) -> None:
    _, client = launch()
    task_id = data_of(client.post(T2V, json=body))["task_id"]
    pending = data_of(client.get(f"{T2V}/{task_id}"))
    assert "final_unit_deduction" not in pending  # charged once it has ended
    clock.advance(1.0)
    done = data_of(client.get(f"{T2V}/{task_id}"))
    expected = units(body["model_name"], Kind.TEXT2VIDEO, **kind_asked)
    assert done["final_unit_deduction"] == expected
    assert isinstance(done["final_unit_deduction"], str)
    assert done["watermark_info"] == {"enabled": False}
    (asset,) = done["task_result"]["videos"]
    assert asset["duration"] == f"{seconds}.1"  # Kling reports 5 s as "5.1"
    file, marked = client.get(asset["url"]), client.get(asset["watermark_url"])
    assert (file.status_code, marked.status_code) == (200, 200)
    assert marked.headers["Content-Type"] == "video/mp4"
    assert file.content != marked.content


def test_image_tasks_report_units_per_image_and_each_watermark(
    launch: Launch, clock: FakeClock
) -> None:
    _, client = launch()
    task_id = data_of(client.post(IMG, json=image(n=3)))["task_id"]
    clock.advance(1.0)
    done = data_of(client.get(f"{IMG}/{task_id}"))
    assert done["final_unit_deduction"] == units("kling-v2-1", Kind.IMAGE, n=3) == "3"
    images = done["task_result"]["images"]
    assert [i["index"] for i in images] == [0, 1, 2]
    assert all(client.get(i["watermark_url"]).status_code == 200 for i in images)
    # No price in the catalogue (kling-v3 images): the field is left out, not made up.
    unpriced = data_of(client.post(IMG, json=image(model_name="kling-v3")))["task_id"]
    clock.advance(1.0)
    assert "final_unit_deduction" not in data_of(client.get(f"{IMG}/{unpriced}"))


def test_a_failed_task_reports_nothing_charged(launch: Launch, clock: FakeClock) -> None:
    rule = FaultRule(op="create", effect="task_failed", message="Internal generation error")
    _, client = launch(faults=(rule,))
    task_id = data_of(client.post(T2V, json=video()))["task_id"]
    clock.advance(1.0)
    failed = data_of(client.get(f"{T2V}/{task_id}"))
    assert (failed["task_status"], failed["task_status_msg"]) == (
        "failed", "Internal generation error")
    assert failed["final_unit_deduction"] == "0"
    assert "task_result" not in failed


# --- failure texts seen in the wild --------------------------------------------------------


def test_failure_catalogue_has_the_texts_seen_in_the_wild(
    launch: Launch, clock: FakeClock
) -> None:
    texts = set(TASK_FAILURE_MESSAGES.values())
    assert {
        "Internal generation error",
        "prompt 含违规内容",
        "The resolution or aspect ratio of the input image is invalid. Please ensure it meets "
        "the required specifications.",
        "Failure to pass the risk control system",
        "Image pixel is invalid",
    } <= texts
    chinese = TASK_FAILURE_MESSAGES["policy_chinese"]
    _, client = launch(faults=(FaultRule(op="create", effect="task_failed", message=chinese),))
    task_id = data_of(client.post(T2V, json=video()))["task_id"]
    clock.advance(1.0)
    response = client.get(f"{T2V}/{task_id}")
    assert "含违规内容".encode() in response.content  # UTF-8 on the wire, not \u escapes
    assert data_of(response)["task_status_msg"] == "prompt 含违规内容"


# --- resource packs ------------------------------------------------------------------------


def costs(client: Any, days: int = 400) -> Any:
    now = int(time.time() * 1000)
    return client.get(
        "/account/costs", params={"start_time": now - days * DAY_MS, "end_time": now}
    )


def the_pack(client: Any) -> dict[str, Any]:
    data = data_of(costs(client))
    assert (data["code"], data["msg"]) == (0, "success")
    (pack,) = data["resource_pack_subscribe_infos"]
    assert set(pack) == {
        "resource_pack_name", "resource_pack_id", "resource_pack_type", "total_quantity",
        "remaining_quantity", "purchase_time", "effective_time", "invalid_time", "status",
    }
    assert pack["resource_pack_type"] == "video"
    assert pack["purchase_time"] <= pack["effective_time"] < pack["invalid_time"]
    return dict(pack)


def test_the_video_pack_falls_as_tasks_are_committed_and_runs_out_at_the_billing_stop(
    launch: Launch, clock: FakeClock
) -> None:
    failing = FaultRule(op="create", effect="task_failed", match="doomed")
    sim, client = launch(billing_after=4, faults=(failing,))
    fresh = the_pack(client)
    assert (fresh["status"], fresh["remaining_quantity"]) == ("online", fresh["total_quantity"])
    total = fresh["total_quantity"]
    data_of(client.post(T2V, json=video()))  # 2.5 units
    data_of(client.post(T2V, json=video(prompt="doomed", duration="10")))  # 5, until it fails
    assert the_pack(client)["remaining_quantity"] == total - 7.5
    data_of(client.post(IMG, json=image()))  # an image task draws on another pack
    assert the_pack(client)["remaining_quantity"] == total - 7.5
    clock.advance(1.0)  # the failed task gives its units back
    assert the_pack(client)["remaining_quantity"] == total - 2.5
    data_of(client.post(T2V, json=video()))
    pack = the_pack(client)
    assert (pack["status"], pack["remaining_quantity"]) == ("runOut", 0)  # 4 tasks: the stop
    assert refusal(client.post(T2V, json=video()))[:2] == (429, 1102)
    sim.set_billing_after(None)
    assert the_pack(client) == {**pack, "status": "online", "remaining_quantity": total - 5}


def test_packs_are_filtered_by_purchase_time(launch: Launch) -> None:
    _, client = launch()
    assert data_of(costs(client, days=7)) == {"code": 0, "msg": "success"}
    assert the_pack(client)["status"] == "online"


def test_an_account_without_packs_answers_the_live_body(launch: Launch) -> None:
    _, client = launch(resource_packs=False)
    response = costs(client)
    assert response.status_code == 200
    assert response.json() == {"code": 0, "message": "SUCCEED", "data": {"code": 0,
                                                                         "msg": "success"}}


def test_account_costs_needs_its_window_auth_and_counts_and_faults(launch: Launch) -> None:
    rule = FaultRule(op="account", effect="error", http_status=503, code=5001, times=1)
    sim, client = launch(faults=(rule,))
    assert refusal(costs(client))[:2] == (503, 5001)
    assert refusal(client.get("/account/costs")) == invalid(
        "start_time and end_time are required (Unix ms)"
    )
    assert refusal(client.get("/account/costs", params={"start_time": "x", "end_time": "1"})) == (
        invalid("start_time value 'x' is invalid")
    )
    with http_client(sim.url) as anonymous:
        assert refusal(costs(anonymous))[:2] == (401, 1001)
    assert the_pack(client)["status"] == "online"
    stats = sim.stats()
    assert stats.account_requests == 5
    assert stats.faults_fired == {"account error 503/5001": 1}


# --- the command line ----------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orchestrator")
    sub = parser.add_subparsers(dest="command", required=True)
    add_simulate_parser(sub)
    return parser.parse_args(argv)


def test_simulate_options_for_lag_models_and_packs() -> None:
    defaults = parse("simulate")
    assert (defaults.read_lag, defaults.extra_models, defaults.resource_packs) == (0.0, [], True)
    args = parse("simulate", "--read-lag", "2.5", "--accept-model", "kling-v4",
                 "--accept-model", "kling-v5", "--no-resource-packs")
    assert (args.read_lag, args.extra_models, args.resource_packs) == (
        2.5, ["kling-v4", "kling-v5"], False)
    with pytest.raises(SystemExit):
        parse("simulate", "--read-lag", "-1")


def test_simulate_serves_what_the_options_ask() -> None:
    out = io.StringIO()
    stop = threading.Event()
    result: list[int] = []
    args = parse("simulate", "--read-lag", "30", "--accept-model", "kling-v4",
                 "--no-resource-packs")
    thread = threading.Thread(target=lambda: result.append(cmd_simulate(args, out, stop=stop)))
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while "Ctrl-C" not in out.getvalue():
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        lines = out.getvalue().splitlines()
        assert "reads by external id lag 30 s" in lines[1]
        assert "also accepts kling-v4" in lines[1] and "no resource packs" in lines[1]
        with http_client(lines[0].split()[-1], headers=API_KEY) as client:
            body = {"model_name": "kling-v4", "prompt": "x", "external_task_id": "cli-1"}
            data_of(client.post(T2V, json=body))
            assert refusal(client.get(f"{T2V}/cli-1"))[1] == 1201  # lagging
            assert "resource_pack_subscribe_infos" not in costs(client).json()["data"]
    finally:
        stop.set()
        thread.join(5)
    assert result == [0]


def test_simulate_refuses_to_accept_a_catalogue_model() -> None:
    out = io.StringIO()
    assert cmd_simulate(parse("simulate", "--accept-model", "kling-v1"), out) == 2
    assert "kling-v1 is in the catalogue" in out.getvalue()
