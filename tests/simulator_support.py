"""What the simulator's test modules share: a clock to step, loopback clients, simulators started
and stopped around a test, and readers of Kling's answers. Real HTTP throughout; nothing here
sleeps.
"""

from __future__ import annotations

import base64
import contextlib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from orchestrator.simulator import SimConfig, Simulator

API_KEY = {"Authorization": "Bearer sim-api-key"}
T2V = "/v1/videos/text2video"
I2V = "/v1/videos/image2video"
OMNI = "/v1/videos/omni-video"
IMG = "/v1/images/generations"
#: Every client here speaks plain HTTP to loopback; one context skips loading the CA bundle.
PLAIN_HTTP = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()
IMAGE_URL = "https://example.com/frame.png"
DAY_MS = 86_400_000


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def http_client(base_url: str = "", **options: Any) -> httpx.Client:
    options.setdefault("timeout", 5.0)
    return httpx.Client(base_url=base_url, verify=PLAIN_HTTP, **options)


Launch = Callable[..., tuple[Simulator, httpx.Client]]


@contextlib.contextmanager
def launcher(clock: FakeClock) -> Iterator[Launch]:
    """Start simulators (``clock``, 1 s tasks unless overridden) with an API-key client each;
    all stopped on exit."""
    running: list[tuple[Simulator, httpx.Client]] = []

    def start(**fields: Any) -> tuple[Simulator, httpx.Client]:
        fields.setdefault("clock", clock)
        fields.setdefault("task_duration", (1.0, 1.0))
        sim = Simulator(SimConfig(**fields))
        sim.start()
        client = http_client(sim.url, headers=API_KEY)
        running.append((sim, client))
        return sim, client

    try:
        yield start
    finally:
        for sim, client in running:
            client.close()
            sim.stop()


def assert_no_simulator_threads() -> None:
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("kling-simulator")]
    assert leftover == []


def data_of(response: httpx.Response) -> Any:
    """The ``data`` of a successful answer."""
    assert response.status_code == 200, response.text
    payload = response.json()
    assert (payload["code"], payload["message"]) == (0, "SUCCEED"), payload
    assert payload["request_id"]
    return payload["data"]


def refusal(response: httpx.Response) -> tuple[int, int, str]:
    """HTTP status, code and message of an error answer (Kling's error envelope, exactly)."""
    payload = response.json()
    assert set(payload) == {"code", "message", "request_id"}, payload
    assert payload["request_id"]
    return response.status_code, int(payload["code"]), str(payload["message"])


def invalid(message: str) -> tuple[int, int, str]:
    """What a 400/1201 refusal with ``message`` reads as through :func:`refusal`."""
    return 400, 1201, message


def window_around_now(seconds: float = 600.0) -> dict[str, int]:
    """A POST /tasks window from ``seconds`` before now to as long after (Unix ms)."""
    now = int(time.time() * 1000)
    return {"start_time": now - int(seconds * 1000), "end_time": now + int(seconds * 1000)}


def v2_body(
    prompt: str = "a cat",
    *,
    external: str | None = None,
    images: tuple[tuple[str, str], ...] = (),
    **settings: Any,
) -> dict[str, Any]:
    """An API 2.0 create body: a prompt, (type, url) images, settings and options."""
    contents: list[dict[str, Any]] = [{"type": "prompt", "text": prompt}] if prompt else []
    contents += [{"type": kind, "url": url} for kind, url in images]
    body: dict[str, Any] = {"contents": contents, "settings": settings}
    if external is not None:
        body["options"] = {"external_task_id": external}
    return body
