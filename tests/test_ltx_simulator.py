"""The LTX Video v2 simulator over real loopback HTTP: submit, poll and download; every refusal
of the request fields and model rules; 404s (another endpoint, expiry); uploads; the 413 from the
infrastructure; the account (401, 402, 422, slots, rate); every fault effect; the journal that
outlives a process; the stats; and ``simulate --provider ltx``. A fake clock drives lifecycles:
nothing here sleeps, except the one test of an injected delay.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.cli.simulate import add_simulate_parser, cmd_simulate
from orchestrator.providers.ltx.simulator import (
    LtxFaultRule,
    LtxSimConfig,
    LtxSimStats,
    LtxSimulator,
)
from tests.simulator_support import PLAIN_HTTP, FakeClock

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
KEY = {"Authorization": "Bearer sim-ltx-key"}
T2V = "/v2/text-to-video"
I2V = "/v2/image-to-video"
PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()
DATA_URI = f"data:image/png;base64,{PNG}"
IMAGE_URL = "https://example.com/frame.png"
#: Marks a key a case deletes from the body.
DROP = object()

Launch = Callable[..., tuple[LtxSimulator, httpx.Client]]


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    yield
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("ltx-simulator")]
    assert leftover == []


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def launch(clock: FakeClock) -> Iterator[Launch]:
    """Start simulators (``clock``, 1 s jobs unless overridden) with a keyed client each."""
    running: list[tuple[LtxSimulator, httpx.Client]] = []

    def start(**fields: Any) -> tuple[LtxSimulator, httpx.Client]:
        fields.setdefault("clock", clock)
        fields.setdefault("task_duration", (1.0, 1.0))
        sim = LtxSimulator(LtxSimConfig(**fields))
        sim.start()
        client = httpx.Client(base_url=sim.url, headers=KEY, verify=PLAIN_HTTP, timeout=5.0)
        running.append((sim, client))
        return sim, client

    try:
        yield start
    finally:
        for sim, client in running:
            client.close()
            sim.stop()


def body(prompt: Any = "a cat", **changes: Any) -> dict[str, Any]:
    """A valid text-to-video body (ltx-2-3-fast, 1080p, 6 s) with ``changes`` applied."""
    result: dict[str, Any] = {
        "prompt": prompt,
        "model": "ltx-2-3-fast",
        "duration": 6,
        "resolution": "1920x1080",
    }
    for name, value in {"prompt": prompt, **changes}.items():
        if value is DROP:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def i2v(prompt: Any = "a cat", **changes: Any) -> dict[str, Any]:
    return body(prompt, **{"image_uri": IMAGE_URL, **changes})


def error_of(response: httpx.Response) -> tuple[int, str, str]:
    """HTTP status, error type and message of an error answer (LTX's envelope, exactly)."""
    payload = response.json()
    assert set(payload) == {"type", "error"} and payload["type"] == "error", payload
    assert set(payload["error"]) == {"type", "message"}, payload
    assert response.headers["x-request-id"]
    return response.status_code, payload["error"]["type"], payload["error"]["message"]


def submit(client: httpx.Client, payload: dict[str, Any], path: str = T2V) -> str:
    response = client.post(path, json=payload)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def parse_iso(text: str) -> dt.datetime:
    assert text.endswith("Z"), text
    return dt.datetime.fromisoformat(text[:-1] + "+00:00")


# --- the happy path -------------------------------------------------------------------------


def test_submit_poll_to_completion_and_download(launch: Launch, clock: FakeClock) -> None:
    sim, client = launch()
    response = client.post(T2V, json=body(generate_audio=False, fps=25, camera_motion="jib_up"))
    assert response.status_code == 202
    assert response.headers["x-request-id"].startswith("req_")
    created = response.json()
    assert set(created) == {"id", "created_at"}
    assert abs(parse_iso(created["created_at"]).timestamp() - time.time()) < 60
    job = created["id"]

    def poll() -> dict[str, Any]:
        answer = client.get(f"{T2V}/{job}")
        assert answer.status_code == 200
        return dict(answer.json())

    assert poll() == {"id": job, "status": "pending", "created_at": created["created_at"]}
    clock.advance(0.5)
    assert poll() == {"id": job, "status": "processing", "created_at": created["created_at"]}
    clock.advance(0.5)
    done = poll()
    assert done["status"] == "completed"
    assert set(done) == {"id", "status", "created_at", "completed_at", "result"}
    assert parse_iso(done["completed_at"]) > parse_iso(done["created_at"])
    url = done["result"]["video_url"]
    assert url == f"{sim.url}/assets/{job}.mp4"
    # No key: a video URL works as a CDN link does.
    video = httpx.get(url, verify=PLAIN_HTTP)
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    assert int(video.headers["content-length"]) == len(video.content)
    assert video.content[4:8] == b"ftyp"
    stats = sim.stats()
    assert (stats.submit_requests, stats.jobs_created, stats.status_requests) == (1, 1, 3)
    assert stats.asset_requests == 1 and stats.asset_answers == {"200": 1}
    assert stats.answers == {"202": 1}
    assert stats.jobs[0]["status"] == "completed" and stats.jobs[0]["fps"] == 25


async def test_an_async_client_sees_the_same_lifecycle(launch: Launch, clock: FakeClock) -> None:
    sim, _ = launch()
    async with httpx.AsyncClient(base_url=sim.url, headers=KEY, verify=PLAIN_HTTP) as client:
        job = (await client.post(I2V, json=i2v(image_uri=DATA_URI))).json()["id"]
        assert (await client.get(f"{I2V}/{job}")).json()["status"] == "pending"
        clock.advance(1.0)
        assert (await client.get(f"{I2V}/{job}")).json()["status"] == "completed"


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        (I2V, i2v()),
        (I2V, i2v(image_uri=DATA_URI)),
        (I2V, i2v(image_uri="data:image/webp;base64," + PNG)),
        (I2V, i2v(model="ltx-2-3-pro", duration=10, last_frame_uri=DATA_URI)),
        (T2V, body(resolution="1080x1920", duration=20)),
        (T2V, body(resolution="2560x1440", fps=50, duration=10)),
        (T2V, body(model="ltx-2-3-pro", resolution="3840x2160", fps=30, duration=8)),
        (T2V, body(model="ltx-2-5-fast", resolution="1280x720", fps=48, duration=10)),
        (T2V, body(model="ltx-2-5-pro", resolution="720x1280", fps=50, duration=6)),
    ],
)
def test_accepted_requests(launch: Launch, path: str, payload: dict[str, Any]) -> None:
    _, client = launch(concurrency_slots=None)
    assert client.post(path, json=payload).status_code == 202


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "payload", "field", "words"),
    [
        (T2V, body(prompt=DROP), "prompt", "required"),
        (T2V, body(""), "prompt", "non-empty"),
        (T2V, body("   "), "prompt", "non-empty"),
        (T2V, body(prompt=7), "prompt", "string"),
        (T2V, body(model=DROP), "model", "required"),
        (T2V, body(model=3), "model", "string"),
        (T2V, body(model="ltx-2-3-fats"), "model", "did you mean ltx-2-3-fast"),
        (T2V, body(model="ltx-2-fast"), "model", "removed on 2026-08-15; use ltx-2-3-fast"),
        (T2V, body(model="ltx-2-pro"), "model", "removed on 2026-08-15; use ltx-2-3-pro"),
        (T2V, body(duration=DROP), "duration", "required"),
        (T2V, body(duration=True), "duration", "integer"),
        (T2V, body(duration=6.0), "duration", "integer"),
        (T2V, body(duration="6"), "duration", "integer"),
        (T2V, body(resolution=DROP), "resolution", "required"),
        (T2V, body(resolution="1080p"), "resolution", "WxH"),
        (T2V, body(resolution=1920), "resolution", "WxH"),
        (T2V, body(fps=True), "fps", "integer"),
        (T2V, body(fps="24"), "fps", "integer"),
        (T2V, body(generate_audio="yes"), "generate_audio", "boolean"),
        (T2V, body(generate_audio=1), "generate_audio", "boolean"),
        (T2V, body(camera_motion="zoom"), "camera_motion", "dolly_in"),
        (T2V, body(camera_motion=None), "camera_motion", "one of"),
        (T2V, body(seed=1), "seed", "unknown field"),
        (T2V, body(image_uri=IMAGE_URL), "image_uri", "unknown field for text-to-video"),
        (T2V, body(fps=30), "fps", "takes fps 24, 25, not 30"),
        (T2V, body(duration=7), "duration", "6 to 20 in steps of 2"),
        (T2V, body(duration=22), "duration", "not 22"),
        (T2V, body(resolution="2560x1440", duration=12), "duration", "6, 8, 10"),
        (T2V, body(resolution="1280x720"), "resolution", "does not make 1280x720"),
        (T2V, body(resolution="1000x1000"), "resolution", "does not make"),
        (T2V, body(model="ltx-2-3-pro", duration=12), "duration", "not 12"),
        (T2V, body(model="ltx-2-5-pro", resolution="1280x720", fps=48), "fps", "not 48"),
        (T2V, body(model="ltx-2-5-fast", resolution="1280x720", fps=50, duration=12),
         "duration", "not 12"),
        (I2V, body(), "image_uri", "required"),
        (I2V, i2v(image_uri="http://example.com/a.png"), "image_uri", "https://"),
        (I2V, i2v(image_uri="ftp://example.com/a.png"), "image_uri", "https://"),
        (I2V, i2v(image_uri="https://"), "image_uri", "https://"),
        (I2V, i2v(image_uri=""), "image_uri", "non-empty"),
        (I2V, i2v(image_uri=["https://example.com/a.png"]), "image_uri", "string"),
        (I2V, i2v(image_uri="data:image/gif;base64," + PNG), "image_uri", "png|jpeg|webp"),
        (I2V, i2v(image_uri="data:image/png;base64,!!!"), "image_uri", "decode"),
        (I2V, i2v(image_uri="data:image/png;base64,"), "image_uri", "decode"),
        (I2V, i2v(image_uri="ltx://uploads/nope"), "image_uri", "no uploaded file"),
        (I2V, i2v(model="ltx-2-5-fast", last_frame_uri=IMAGE_URL), "last_frame_uri",
         "ltx-2-5-fast does not take a last frame"),
        (I2V, i2v(last_frame_uri="http://x/y.png"), "last_frame_uri", "https://"),
    ],
)
def test_refused_requests_name_the_field(
    launch: Launch, path: str, payload: dict[str, Any], field: str, words: str
) -> None:
    sim, client = launch(concurrency_slots=None)
    status, kind, message = error_of(client.post(path, json=payload))
    assert (status, kind) == (400, "invalid_request_error")
    assert message.startswith(f"{field}:"), message
    assert words in message, message
    stats = sim.stats()
    assert stats.jobs_created == 0 and stats.answers == {"400 invalid_request_error": 1}


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b'"text"', b""])
def test_a_body_that_is_not_a_json_object_is_400(launch: Launch, raw: bytes) -> None:
    sim, client = launch()
    response = client.post(T2V, content=raw, headers={"Content-Type": "application/json"})
    assert error_of(response)[:2] == (400, "invalid_request_error")
    assert sim.stats().jobs_created == 0


# --- not found ------------------------------------------------------------------------------


def test_the_query_must_name_the_endpoint_of_the_submit(launch: Launch) -> None:
    _, client = launch()
    t2v, image = submit(client, body()), submit(client, i2v(), I2V)
    assert client.get(f"{T2V}/{t2v}").status_code == 200
    assert client.get(f"{I2V}/{image}").status_code == 200
    for path in (f"{I2V}/{t2v}", f"{T2V}/{image}", f"/v2/retake/{t2v}", f"{T2V}/no-such-job"):
        assert error_of(client.get(path))[:2] == (404, "not_found_error"), path
    assert error_of(client.get("/v2/extend"))[:2] == (404, "not_found_error")
    assert httpx.get(client.base_url.join("/assets/nope.mp4"), verify=PLAIN_HTTP).status_code == 404


def test_a_job_and_its_video_expire_result_ttl_after_it_ends(
    launch: Launch, clock: FakeClock
) -> None:
    sim, client = launch(result_ttl=100.0)
    job = submit(client, body())
    video = f"/assets/{job}.mp4"
    clock.advance(0.5)
    assert client.get(video).status_code == 404  # not completed yet
    clock.advance(0.5 + 100.0 - 0.01)
    assert client.get(f"{T2V}/{job}").json()["status"] == "completed"
    assert client.get(video).status_code == 200
    clock.advance(0.01)
    assert error_of(client.get(f"{T2V}/{job}"))[:2] == (404, "not_found_error")
    assert error_of(client.get(video))[:2] == (404, "not_found_error")
    assert sim.stats().jobs[0]["expired"] is True
    assert sim.stats().asset_answers == {"404": 2, "200": 1}


def test_the_default_result_ttl_is_24_hours(launch: Launch, clock: FakeClock) -> None:
    _, client = launch()
    job = submit(client, body())
    clock.advance(1.0 + 86_400 - 1)
    assert client.get(f"{T2V}/{job}").status_code == 200
    clock.advance(1)
    assert client.get(f"{T2V}/{job}").status_code == 404


# --- uploads --------------------------------------------------------------------------------


def test_an_uploaded_file_is_usable_as_image_uri(launch: Launch, clock: FakeClock) -> None:
    sim, client = launch()
    answer = client.post("/v1/upload", json={"content_type": "image/png"})
    assert answer.status_code == 200
    upload = answer.json()
    assert set(upload) == {"upload_url", "storage_uri", "expires_at", "required_headers"}
    token = upload["upload_url"].rsplit("/", 1)[1]
    assert upload["upload_url"] == f"{sim.url}/uploads/{token}"
    assert upload["storage_uri"] == f"ltx://uploads/{token}"
    assert upload["required_headers"] == {"Content-Type": "image/png"}
    expires = parse_iso(upload["expires_at"]).timestamp()
    assert 3500 < expires - time.time() <= 3600
    uri = upload["storage_uri"]
    # Not PUT yet: not a file.
    assert error_of(client.post(I2V, json=i2v(image_uri=uri)))[0] == 400
    # A PUT without the required header is refused as a signed URL refuses it.
    refused = httpx.put(upload["upload_url"], content=b"png", verify=PLAIN_HTTP)
    assert refused.status_code == 403 and b"SignatureDoesNotMatch" in refused.content
    stored = httpx.put(
        upload["upload_url"], content=b"png", headers=upload["required_headers"],
        verify=PLAIN_HTTP,
    )
    assert stored.status_code == 200 and stored.headers["x-request-id"]
    assert client.post(I2V, json=i2v(image_uri=uri)).status_code == 202
    assert client.post(I2V, json=i2v(last_frame_uri=uri)).status_code == 202
    stats = sim.stats()
    assert (stats.upload_requests, stats.upload_puts, stats.jobs_created) == (1, 2, 2)
    # The stored file lives 24 h.
    clock.advance(86_400)
    assert error_of(client.post(I2V, json=i2v(image_uri=uri)))[0] == 400


def test_an_upload_url_takes_its_put_for_one_hour(launch: Launch, clock: FakeClock) -> None:
    _, client = launch()
    upload = client.post("/v1/upload", json={}).json()
    assert upload["required_headers"] == {"Content-Type": "application/octet-stream"}
    clock.advance(3600)
    late = httpx.put(
        upload["upload_url"], content=b"x", headers=upload["required_headers"], verify=PLAIN_HTTP
    )
    assert late.status_code == 403 and b"ExpiredToken" in late.content
    assert error_of(client.post(I2V, json=i2v(image_uri=upload["storage_uri"])))[0] == 400
    unknown = httpx.put(client.base_url.join("/uploads/forged"), content=b"x", verify=PLAIN_HTTP)
    assert unknown.status_code == 403


@pytest.mark.parametrize(
    "payload", [{"content_type": 5}, {"content_type": "png"}, {"name": "a.png"}, [1]]
)
def test_a_bad_upload_request_is_400(launch: Launch, payload: Any) -> None:
    _, client = launch()
    assert error_of(client.post("/v1/upload", json=payload))[:2] == (400, "invalid_request_error")


# --- the infrastructure's 413 and authentication ---------------------------------------------


def test_a_body_over_the_limit_is_an_html_413_from_the_infrastructure(launch: Launch) -> None:
    sim, client = launch(max_body_bytes=2000)
    padded = body("x" * 1950)
    assert len(json.dumps(padded)) > 2000
    # Before authentication: the proxy in front of the API answers.
    response = client.post(T2V, json=padded, headers={"Authorization": ""})
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")
    assert b"413 Request Entity Too Large" in response.content
    with pytest.raises(ValueError):
        response.json()
    assert client.post(T2V, json=body("x" * 1800)).status_code == 202
    stats = sim.stats()
    assert stats.submit_requests == 2 and stats.jobs_created == 1
    assert stats.answers == {"413 request_too_large": 1, "202": 1}


def test_a_client_still_sending_an_oversized_body_reads_the_413(launch: Launch) -> None:
    """The body is read away before the answer: closing on unread data would reset the
    connection, and a client blocked sending would never see the 413."""
    sim, _ = launch(max_body_bytes=1000)
    size = 8 * 1024 * 1024  # more than the socket buffers hold
    host, port = sim.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as raw:
        raw.sendall(
            f"POST {T2V} HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
        )
        raw.sendall(b"x" * size)
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"413 Request Entity Too Large" in answer and b"x-request-id: req_" in answer


def test_the_default_limit_is_10_mib(launch: Launch) -> None:
    _, client = launch()
    big = i2v(image_uri="data:image/png;base64," + "A" * (10 * 1024 * 1024))
    assert client.post(I2V, json=big).status_code == 413
    fits = i2v(image_uri="data:image/png;base64," + "A" * (10 * 1024 * 1024 - 400))
    assert client.post(I2V, json=fits).status_code == 202


@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", "Basic sim-ltx-key", "sim-ltx-key", "Bearer"]
)
def test_without_the_key_every_api_request_is_401(
    launch: Launch, authorization: str | None
) -> None:
    sim, client = launch()
    job = submit(client, body())
    headers = {} if authorization is None else {"Authorization": authorization}
    with httpx.Client(base_url=sim.url, headers=headers, verify=PLAIN_HTTP) as anonymous:
        for response in (
            anonymous.post(T2V, json=body("again")),
            anonymous.get(f"{T2V}/{job}"),
            anonymous.post("/v1/upload", json={}),
        ):
            assert error_of(response)[:2] == (401, "authentication_error")
    assert sim.stats().jobs_created == 1


# --- the account: credits, safety filters, slots, rate -----------------------------------------


def test_after_billing_after_jobs_every_submit_is_402(launch: Launch) -> None:
    sim, client = launch(billing_after=2, concurrency_slots=None)
    submit(client, body("one"))
    submit(client, body("two"))
    assert error_of(client.post(T2V, json=body("three"))) == (
        402, "insufficient_funds_error", "Insufficient funds. Required: 36 credits"
    )
    big = body("four", model="ltx-2-3-pro", resolution="3840x2160", duration=10)
    assert error_of(client.post(T2V, json=big))[2] == "Insufficient funds. Required: 320 credits"
    sim.set_billing_after(None)
    submit(client, body("five"))
    stats = sim.stats()
    assert stats.jobs_created == 3 and "three" not in stats.by_prompt
    assert stats.answers == {"202": 3, "402 insufficient_funds_error": 2}


def test_a_prompt_with_the_marker_is_filtered_at_submit(launch: Launch) -> None:
    sim, client = launch()
    status, kind, _ = error_of(client.post(T2V, json=body("a [blocked] scene")))
    assert (status, kind) == (422, "content_filtered_error")
    assert sim.stats().jobs_created == 0
    _, other_client = launch(filtered_marker="NSFW")
    assert other_client.post(T2V, json=body("a [blocked] scene")).status_code == 202
    assert error_of(other_client.post(T2V, json=body("NSFW")))[0] == 422


def test_a_job_holds_its_slot_from_its_202_until_it_ends(
    launch: Launch, clock: FakeClock
) -> None:
    sim, client = launch()  # LTX's default: 2 slots
    first, _ = submit(client, body("one")), submit(client, body("two"))
    assert client.get(f"{T2V}/{first}").json()["status"] == "pending"
    refused = client.post(T2V, json=body("three"))
    assert error_of(refused)[:2] == (429, "concurrency_limit_error")
    assert refused.headers["retry-after"] == "1"
    assert sim.stats().slots_in_use == 2
    clock.advance(0.99)
    assert client.post(T2V, json=body("three")).status_code == 429
    clock.advance(0.01)
    submit(client, body("three"))
    stats = sim.stats()
    assert (stats.peak_slots, stats.slots_in_use, stats.jobs_created) == (2, 1, 3)
    assert stats.answers == {"202": 3, "429 concurrency_limit_error": 2}


def test_a_failed_job_releases_its_slot_too(launch: Launch, clock: FakeClock) -> None:
    _, client = launch(
        concurrency_slots=1, faults=(LtxFaultRule("submit", "job_failed", times=1),)
    )
    submit(client, body())
    assert client.post(T2V, json=body()).status_code == 429
    clock.advance(1.0)
    submit(client, body())


def test_submits_over_the_rate_are_429(launch: Launch, clock: FakeClock) -> None:
    sim, client = launch(requests_per_second=2, concurrency_slots=None, retry_after="3")
    submit(client, body("one"))
    clock.advance(0.5)
    submit(client, body("two"))
    refused = client.post(T2V, json=body("three"))
    assert error_of(refused)[:2] == (429, "rate_limit_error")
    assert refused.headers["retry-after"] == "3"
    clock.advance(0.5)  # "one" left the window
    submit(client, body("three"))
    assert sim.stats().jobs_created == 3


# --- faults ---------------------------------------------------------------------------------


def test_an_error_before_commit_creates_nothing(launch: Launch) -> None:
    rule = LtxFaultRule(
        "submit", "error", times=1, http_status=503, error_type="service_unavailable",
        message="maintenance", retry_after="7",
    )
    sim, client = launch(faults=(rule,))
    response = client.post(T2V, json=body())
    assert error_of(response) == (503, "service_unavailable", "maintenance")
    assert response.headers["retry-after"] == "7"
    submit(client, body())
    stats = sim.stats()
    assert stats.jobs_created == 1 and stats.by_prompt == {"a cat": 1}
    assert stats.faults_fired == {"submit error 503/service_unavailable": 1}
    assert stats.answers == {"503 service_unavailable": 1, "202": 1}


def test_a_drop_before_commit_creates_nothing(launch: Launch) -> None:
    sim, client = launch(faults=(LtxFaultRule("submit", "drop_before_commit", times=1),))
    with pytest.raises(httpx.TransportError):
        client.post(T2V, json=body())
    submit(client, body())
    stats = sim.stats()
    assert stats.jobs_created == 1 and stats.answers == {"dropped": 1, "202": 1}


def test_an_error_after_commit_hides_a_paid_job(launch: Launch, clock: FakeClock) -> None:
    sim, client = launch(faults=(LtxFaultRule("submit", "error_after_commit", times=1),))
    assert error_of(client.post(T2V, json=body()))[:2] == (500, "api_error")
    stats = sim.stats()
    assert stats.jobs_created == 1 and stats.by_prompt == {"a cat": 1}
    assert stats.answers == {"500 api_error": 1}
    # The job exists and runs (and holds its slot): only its id was never told.
    clock.advance(1.0)
    job = stats.jobs[0]["id"]
    assert client.get(f"{T2V}/{job}").json()["status"] == "completed"


def test_a_drop_after_commit_hides_a_paid_job(launch: Launch) -> None:
    sim, client = launch(faults=(LtxFaultRule("submit", "drop_after_commit", times=1),))
    with pytest.raises(httpx.TransportError):
        client.post(T2V, json=body())
    stats = sim.stats()
    assert stats.jobs_created == 1 and stats.answers == {"dropped": 1}
    assert stats.slots_in_use == 1
    assert stats.faults_fired == {"submit drop_after_commit": 1}


def test_after_commit_rules_are_not_used_up_by_refused_submits(launch: Launch) -> None:
    sim, client = launch(faults=(LtxFaultRule("submit", "error_after_commit", times=1),))
    assert error_of(client.post(T2V, json=body(duration=7)))[0] == 400
    assert error_of(client.post(T2V, json=body()))[0] == 500
    assert sim.stats().jobs_created == 1


def test_a_job_failed_rule_ends_the_job_failed(launch: Launch, clock: FakeClock) -> None:
    rule = LtxFaultRule(
        "submit", "job_failed", match="doomed", error_type="content_filtered_error",
        message="Output blocked by safety filters",
    )
    sim, client = launch(concurrency_slots=None, faults=(rule,))
    doomed, fine = submit(client, body("doomed cat")), submit(client, body("fine cat"))
    clock.advance(0.5)
    assert client.get(f"{T2V}/{doomed}").json()["status"] == "processing"
    clock.advance(0.5)
    failed = client.get(f"{T2V}/{doomed}").json()
    assert set(failed) == {"id", "status", "created_at", "completed_at", "error"}
    assert failed["status"] == "failed"
    assert failed["error"] == {
        "type": "content_filtered_error", "message": "Output blocked by safety filters"
    }
    assert client.get(f"{T2V}/{fine}").json()["status"] == "completed"
    assert client.get(f"/assets/{doomed}.mp4").status_code == 404
    stats = sim.stats()
    assert [job["status"] for job in stats.jobs] == ["failed", "completed"]
    assert stats.faults_fired == {"submit job_failed content_filtered_error": 1}


def test_a_delay_rule_waits_before_answering(launch: Launch) -> None:
    sim, client = launch(faults=(LtxFaultRule("status", "delay", delay=0.15, times=1),))
    job = submit(client, body())
    started = time.monotonic()
    assert client.get(f"{T2V}/{job}").status_code == 200
    assert time.monotonic() - started >= 0.15
    assert sim.stats().faults_fired == {"status delay 0.15s": 1}


def test_status_faults_match_the_prompt_of_the_job(launch: Launch) -> None:
    rule = LtxFaultRule("status", "error", match="flaky", http_status=529,
                        error_type="overloaded_error", message="overloaded")
    _, client = launch(concurrency_slots=None, faults=(rule,))
    flaky, calm = submit(client, body("flaky")), submit(client, body("calm"))
    assert error_of(client.get(f"{T2V}/{flaky}")) == (529, "overloaded_error", "overloaded")
    assert client.get(f"{T2V}/{calm}").status_code == 200


def test_status_and_upload_drops(launch: Launch) -> None:
    _, client = launch(faults=(
        LtxFaultRule("status", "drop_before_commit", times=1),
        LtxFaultRule("upload", "error", times=1, http_status=503, error_type="service_unavailable"),
    ))
    job = submit(client, body())
    with pytest.raises(httpx.TransportError):
        client.get(f"{T2V}/{job}")
    assert client.get(f"{T2V}/{job}").status_code == 200
    assert error_of(client.post("/v1/upload", json={}))[:2] == (503, "service_unavailable")
    assert client.post("/v1/upload", json={}).status_code == 200


@pytest.mark.parametrize("effect", ["truncate", "wrong_type", "drop_before_commit", "error"])
def test_asset_faults(launch: Launch, clock: FakeClock, effect: str) -> None:
    sim, client = launch(faults=(LtxFaultRule("asset", effect, times=1, http_status=503,
                                              error_type="service_unavailable"),))
    job = submit(client, body())
    clock.advance(1.0)
    url = f"/assets/{job}.mp4"
    if effect in ("truncate", "drop_before_commit"):
        with pytest.raises(httpx.TransportError):
            client.get(url)
    elif effect == "wrong_type":
        page = client.get(url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    else:
        assert error_of(client.get(url))[:2] == (503, "service_unavailable")
    again = client.get(url)
    assert again.status_code == 200 and again.content[4:8] == b"ftyp"
    expected = {"truncate": "truncated", "wrong_type": "wrong_type",
                "drop_before_commit": "dropped", "error": "503"}[effect]
    assert sim.stats().asset_answers == {expected: 1, "200": 1}


def test_probability_draws_are_seeded(clock: FakeClock) -> None:
    def pattern(seed: int) -> list[int]:
        rule = LtxFaultRule("status", "error", probability=0.5)
        config = LtxSimConfig(clock=clock, seed=seed, faults=(rule,), task_duration=(1.0, 1.0))
        with LtxSimulator(config) as sim, httpx.Client(
            base_url=sim.url, headers=KEY, verify=PLAIN_HTTP
        ) as client:
            job = submit(client, body())
            return [client.get(f"{T2V}/{job}").status_code for _ in range(24)]

    first = pattern(1)
    assert first == pattern(1)
    assert set(first) == {200, 500}
    assert first != pattern(2)


@pytest.mark.parametrize(
    "fields",
    [
        {"op": "query", "effect": "error"},
        {"op": "submit", "effect": "explode"},
        {"op": "status", "effect": "job_failed"},
        {"op": "upload", "effect": "drop_after_commit"},
        {"op": "submit", "effect": "truncate"},
        {"op": "submit", "effect": "error", "probability": 1.5},
        {"op": "submit", "effect": "error", "http_status": 200},
        {"op": "submit", "effect": "delay", "delay": -1},
    ],
)
def test_a_misspelt_rule_fails_where_it_is_written(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LtxFaultRule(**fields)


@pytest.mark.parametrize(
    "fields",
    [
        {"task_duration": (2.0, 1.0)},
        {"concurrency_slots": -1},
        {"requests_per_second": 0},
        {"result_ttl": 0},
        {"billing_after": -1},
    ],
)
def test_a_bad_config_fails_where_it_is_written(fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LtxSimConfig(**fields)


# --- the journal ----------------------------------------------------------------------------


def test_a_restarted_simulator_takes_its_jobs_back(tmp_path: Path, clock: FakeClock) -> None:
    state = tmp_path / "ltx-state.jsonl"
    config = LtxSimConfig(clock=clock, task_duration=(100.0, 100.0), state_file=state)
    first = LtxSimulator(config)
    url = first.start()
    with httpx.Client(base_url=url, headers=KEY, verify=PLAIN_HTTP) as client:
        job = submit(client, body("kept"))
        # On disk before the 202 was sent.
        assert job in state.read_text()
    first.stop()
    with state.open("a") as handle:
        handle.write('{"task": {"provider": "kling"}}\nnot json\n{"task": {"provider"')
    second = LtxSimulator(config)
    assert second.start() == url  # its last port, free again
    try:
        with httpx.Client(base_url=url, headers=KEY, verify=PLAIN_HTTP) as client:
            assert client.get(f"{T2V}/{job}").json()["status"] == "pending"
            assert error_of(client.get(f"{I2V}/{job}"))[0] == 404
            stats = second.stats()
            assert (stats.jobs_created, stats.slots_in_use) == (1, 1)
            assert stats.by_prompt == {"kept": 1}
            newer = submit(client, body("new"))
            assert newer != job
            clock.advance(100.0)
            video = client.get(client.get(f"{T2V}/{job}").json()["result"]["video_url"])
            assert video.status_code == 200
    finally:
        second.stop()
    assert state.read_bytes().endswith(b"\n")  # the torn line was cut off


def test_a_job_answered_by_a_drop_is_in_the_journal(tmp_path: Path, clock: FakeClock) -> None:
    state = tmp_path / "ltx.jsonl"
    faults = (LtxFaultRule("submit", "drop_after_commit"),)
    config = LtxSimConfig(clock=clock, state_file=state, faults=faults)
    with LtxSimulator(config) as sim, pytest.raises(httpx.TransportError):
        httpx.post(sim.url + T2V, json=body("lost"), headers=KEY, verify=PLAIN_HTTP)
    with LtxSimulator(LtxSimConfig(clock=clock, state_file=state)) as again:
        assert again.stats().by_prompt == {"lost": 1}


# --- stats ----------------------------------------------------------------------------------


def test_stats_over_http_and_billed_usd(launch: Launch) -> None:
    sim, client = launch(concurrency_slots=None)
    submit(client, body("one"))  # 6 s of 1080p fast: 0.36
    submit(client, body("two", model="ltx-2-3-pro", resolution="3840x2160", duration=10))  # 3.2
    submit(client, body("two", model="ltx-2-5-fast", resolution="1280x720"))  # no price
    client.post(T2V, json=body(duration=True))
    fetched = client.get("/_sim/stats")
    assert fetched.status_code == 200 and fetched.headers["x-request-id"]
    data = fetched.json()
    assert data == sim.stats().to_dict()
    assert data["billed_usd"] == pytest.approx(3.56)
    assert data["by_prompt"] == {"one": 1, "two": 2}
    assert data["answers"] == {"202": 3, "400 invalid_request_error": 1}
    assert [job["model"] for job in data["jobs"]] == ["ltx-2-3-fast", "ltx-2-3-pro", "ltx-2-5-fast"]
    assert set(data["jobs"][0]) >= {"id", "endpoint", "model", "prompt", "duration",
                                    "resolution", "status"}
    assert LtxSimStats.from_dict(data) == sim.stats()
    assert (data["submit_requests"], data["jobs_created"], data["peak_slots"]) == (4, 3, 3)


def test_the_simulator_object(clock: FakeClock) -> None:
    sim = LtxSimulator(LtxSimConfig(clock=clock))
    with pytest.raises(RuntimeError):
        _ = sim.url
    sim.start()
    try:
        with pytest.raises(RuntimeError):
            sim.start()
        # An idle keep-alive connection does not hold stop() up.
        client = httpx.Client(base_url=sim.url, headers=KEY, verify=PLAIN_HTTP)
        assert client.get("/_sim/stats").status_code == 200
    finally:
        sim.stop()
    sim.stop()
    with pytest.raises(httpx.TransportError):
        client.get("/_sim/stats")
    client.close()


# --- the simulate command -------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_simulate_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(list(argv))


def test_simulate_provider_ltx_serves_and_stops_on_sigterm() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "orchestrator", "simulate", "--provider", "ltx",
            "--port", "0", "--billing-after", "1", "--task-duration", "5", "5"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env) as process:
        try:
            assert process.stdout is not None
            lines = [process.stdout.readline() for _ in range(5)]
            url = lines[0].split()[-1]
            assert lines[0].startswith("LTX simulator listening on http://127.0.0.1:")
            assert not url.endswith(":0")
            assert "after 1 jobs" in lines[1] and "jobs take 5-5 s" in lines[1]
            assert "export LTX_API_KEY=sim-ltx-key\n" in lines
            with httpx.Client(base_url=url, headers=KEY, verify=PLAIN_HTTP, timeout=5) as client:
                codes = [client.post(T2V, json=body(str(i))).status_code for i in range(2)]
        finally:
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=5) == 0
        assert codes == [202, 402]
        assert "jobs created: 1;" in process.stdout.read()


def test_simulate_keeps_each_simulators_options_to_it() -> None:
    out = io.StringIO()
    assert cmd_simulate(parse("simulate", "--state-file", "x.jsonl"), out) == 2
    assert "--state-file: only with --provider ltx" in out.getvalue()
    out = io.StringIO()
    assert cmd_simulate(parse("simulate", "--provider", "ltx", "--read-lag", "2"), out) == 2
    assert "--read-lag: only with --provider kling" in out.getvalue()
    out = io.StringIO()  # a profile of Kling's the LTX simulator has not
    assert cmd_simulate(parse("simulate", "--provider", "ltx", "--profile", "clock-skew"), out) == 2
    assert "unknown LTX simulator profile 'clock-skew'; known: clean, flaky" in out.getvalue()
    out = io.StringIO()
    assert cmd_simulate(parse("simulate", "--profile", "content-filter"), out) == 2
    assert "unknown simulator profile 'content-filter'" in out.getvalue()
    assert parse("simulate").provider == "kling"
    with pytest.raises(SystemExit):
        parse("simulate", "--provider", "runway")


def test_simulate_ltx_in_a_thread_serves_until_stopped() -> None:
    out, stop, result = io.StringIO(), threading.Event(), []
    args = parse("simulate", "--provider", "ltx", "--concurrency-slots", "1", "--seed", "3")
    thread = threading.Thread(target=lambda: result.append(cmd_simulate(args, out, stop=stop)))
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while "Ctrl-C" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        url = out.getvalue().split()[4]
        assert "1 concurrent jobs" in out.getvalue() and "seed 3" in out.getvalue()
        with httpx.Client(base_url=url, headers=KEY, verify=PLAIN_HTTP) as client:
            assert [client.post(T2V, json=body()).status_code for _ in range(2)] == [202, 429]
    finally:
        stop.set()
        thread.join(5)
    assert result == [0]
    assert "submits: 2 (202: 1, 429 concurrency_limit_error: 1); jobs created: 1" in out.getvalue()
