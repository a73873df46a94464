"""Nothing hangs, nothing balloons: every request has a total deadline (connect, send, the whole
body), every API answer a size cap, every asset body its ``max_bytes`` whether or not it says
its length.

Unit tests inject slow or endless bodies through httpx.MockTransport (the deadlines are a tenth
of a second: a cancel scope runs on the event loop's clock, which no fake clock can drive); the
end-to-end proofs run a real loopback server that trickles bytes or generates a gigabyte as it
sends it, and measure how long the client took to stop and how far it read.
"""

from __future__ import annotations

import gzip
import json
import time
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from orchestrator.asset_policy import AssetPolicy
from orchestrator.body_cap import BodyTooLarge, CappedTransport
from orchestrator.config import load_manifest
from orchestrator.downloads import Downloader, DownloadError
from orchestrator.errors import Category, ProviderError
from orchestrator.providers.base import Kind, TaskRequest
from orchestrator.providers.kling import KlingProvider
from orchestrator.providers.kling.auth import ApiKeyAuth, JwtAuth
from orchestrator.providers.kling.transport import MAX_ANSWER_BYTES
from orchestrator.retry import RetryPolicy
from orchestrator.simulator.media import video_mp4
from tests.conftest import dedent, request_of
from tests.loopback_server import Exchange, LoopbackServer, zeros

pytestmark = pytest.mark.anyio

API_KEY = "apikey-test-0123456789abcdefghijkl"
T2V = TaskRequest(
    Kind.TEXT2VIDEO,
    {"model": "kling-v2-5-turbo", "prompt": "a fox", "duration": 5, "mode": "std"},
    expected_assets=1,
)
QUERY = request_of(Kind.TEXT2VIDEO)
CAP = 64 * 1024
CHUNK = 16 * 1024
ONE_GIB = 1024**3
ONE_ATTEMPT = RetryPolicy(max_attempts=1, base_delay=0.01, max_delay=0.01)
LOOPBACK = AssetPolicy(allow_private=True, allow_http=True)


def envelope(data: object = None) -> bytes:
    return json.dumps(
        {"code": 0, "message": "SUCCEED", "request_id": "r1", "data": data}
    ).encode()


TASK = {"task_id": "t1", "task_status": "processing", "task_info": {"external_task_id": "e1"}}


class Lazy(httpx.AsyncByteStream):
    """A body generated as it is read, never held whole; counts what was pulled from it."""

    def __init__(self, total: int, *, chunk: int = CHUNK, data: bytes = b"") -> None:
        self.total = total
        self.chunk = chunk
        self.data = data
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.data:
            self.pulled += len(self.data)
            yield self.data
        block = b" " * self.chunk
        while self.pulled < self.total:
            piece = block[: self.total - self.pulled]
            self.pulled += len(piece)
            yield piece


class Trickle(httpx.AsyncByteStream):
    """A byte every ``every`` seconds, without end: only a deadline stops the reader."""

    def __init__(self, first: bytes = b"{", every: float = 0.01) -> None:
        self.first = first
        self.every = every
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.pulled += len(self.first)
        yield self.first
        while True:
            await anyio.sleep(self.every)
            self.pulled += 1
            yield b" "


def provider_answering(
    respond: Any, *, auth: httpx.Auth | None = None, **kwargs: Any
) -> KlingProvider:
    return KlingProvider(
        "https://kling.test",
        auth or ApiKeyAuth(API_KEY),
        transport=httpx.MockTransport(respond),
        clock=lambda: 1_700_000_000.0,
        **kwargs,
    )


async def provider_error(call: Any) -> ProviderError:
    with pytest.raises(ProviderError) as caught:
        await call
    return caught.value


# --- the API's size cap ------------------------------------------------------------------------


@pytest.mark.parametrize("op", ["query", "create"])
async def test_an_answer_past_the_cap_stops_there_as_a_server_error(op: str) -> None:
    bodies: list[Lazy] = []

    def respond(request: httpx.Request) -> httpx.Response:
        bodies.append(Lazy(100 * CAP))
        return httpx.Response(200, headers={"Content-Type": "application/json"},
                              stream=bodies[-1])

    async with provider_answering(respond, max_answer_bytes=CAP) as provider:
        call = provider.query(QUERY, "t1") if op == "query" else provider.create(T2V, "e1")
        error = await provider_error(call)
    assert error.info.category is Category.SERVER and error.info.retryable
    assert error.info.http_status == 200
    assert f"{CAP}-byte limit" in error.info.message
    # Stopped one chunk past the cap, not at the end of the body.
    (body,) = bodies
    assert CAP < body.pulled <= CAP + CHUNK
    assert CAP < error.details["bytes_read"] <= CAP + CHUNK
    # A create whose answer was cut off may have created the task: looked up, never resent.
    assert error.ambiguous is (op == "create")


async def test_a_declared_length_past_the_cap_is_refused_unread() -> None:
    body = Lazy(10 * CAP)

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Length": str(10 * CAP)}, stream=body)

    async with provider_answering(respond, max_answer_bytes=CAP) as provider:
        error = await provider_error(provider.query(QUERY, "t1"))
    assert error.info.category is Category.SERVER
    assert f"declared {10 * CAP} bytes" in error.info.message
    assert body.pulled == 0


async def test_an_answer_at_the_cap_is_read() -> None:
    data = envelope(TASK)

    def respond(request: httpx.Request) -> httpx.Response:
        padded = data + b" " * (CAP - len(data))
        return httpx.Response(200, stream=Lazy(CAP, data=padded))

    async with provider_answering(respond, max_answer_bytes=CAP) as provider:
        task = await provider.query(QUERY, "t1")
    assert task.task_id == "t1"


async def test_the_cap_holds_where_the_jwt_auth_reads_the_body_itself() -> None:
    # JwtAuth reads every answer (to spot an expired token) before the client returns it.
    body = Lazy(100 * CAP)

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, stream=body)

    auth = JwtAuth("ak-test-0123456789abcdef", "sk-test-secret-0123456789abcdefghijkl",
                   clock=lambda: 1_700_000_000.0)
    async with provider_answering(respond, auth=auth, max_answer_bytes=CAP) as provider:
        error = await provider_error(provider.query(QUERY, "t1"))
    assert error.info.category is Category.SERVER and error.info.http_status == 401
    assert body.pulled <= CAP + CHUNK


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_answers_are_inflated_within_the_cap(encoding: str) -> None:
    # 16 MiB of blanks compress to about 16 KiB: the body is small, its content is not.
    bomb = envelope(TASK)[:-1] + b" " * (16 * 1024 * 1024) + b"}"
    small = envelope(TASK)

    def compress(data: bytes) -> bytes:
        if encoding == "gzip":
            return gzip.compress(data)
        wbits = zlib.MAX_WBITS if encoding == "deflate" else -zlib.MAX_WBITS
        packer = zlib.compressobj(wbits=wbits)
        return packer.compress(data) + packer.flush()

    packed = compress(bomb)
    assert len(packed) < CAP * 2
    answers = [compress(small), packed]
    pulled: list[Lazy] = []
    name = "deflate" if encoding == "raw-deflate" else encoding

    def respond(request: httpx.Request) -> httpx.Response:
        pulled.append(Lazy(0, data=answers.pop(0)))
        return httpx.Response(200, headers={"Content-Encoding": name}, stream=pulled[-1])

    async with provider_answering(respond, max_answer_bytes=CAP) as provider:
        task = await provider.query(QUERY, "t1")
        error = await provider_error(provider.query(QUERY, "t1"))
    assert task.task_id == "t1"  # decoded by us, not twice by httpx
    assert error.info.category is Category.SERVER
    assert f"{CAP}-byte limit" in error.info.message
    assert error.details["bytes_read"] == CAP + 1  # inflated one byte past the cap, no more


async def test_an_encoding_not_asked_for_is_undecodable_not_inflated() -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        assert request.headers["accept-encoding"] == "gzip, deflate"
        return httpx.Response(200, headers={"Content-Encoding": "br"}, stream=Lazy(0, data=b"x"))

    async with provider_answering(respond) as provider:
        error = await provider_error(provider.query(QUERY, "t1"))
    assert error.info.category is Category.NETWORK
    assert "DecodingError" in error.info.message


async def test_capped_transport_refuses_an_in_memory_body_past_the_cap() -> None:
    inner = httpx.MockTransport(lambda request: httpx.Response(200, content=b"x" * 11))
    async with httpx.AsyncClient(transport=CappedTransport(inner, 10)) as client:
        with pytest.raises(BodyTooLarge) as caught:
            await client.get("https://x.test/")
    assert (caught.value.limit, caught.value.read) == (10, 11)


# --- the API's total deadline --------------------------------------------------------------------


@pytest.mark.parametrize("op", ["query", "create"])
async def test_a_trickling_answer_ends_at_the_total_deadline(op: str) -> None:
    streams: list[Trickle] = []

    def respond(request: httpx.Request) -> httpx.Response:
        streams.append(Trickle())
        return httpx.Response(200, stream=streams[-1])

    async with provider_answering(respond, timeout=0.1) as provider:
        started = time.monotonic()
        call = provider.query(QUERY, "t1") if op == "query" else provider.create(T2V, "e1")
        error = await provider_error(call)
        took = time.monotonic() - started
    # Each read came within 10 ms, far inside httpx's 0.1 s per-read timeout.
    assert streams[0].pulled > 3
    assert 0.1 <= took < 1.0
    assert error.info.category is Category.TIMEOUT and error.info.retryable
    assert "within 0.1 s" in error.info.message
    assert error.sent and error.ambiguous is (op == "create")


# --- real loopback HTTP: the API ---------------------------------------------------------------


def trickling_json(exchange: Exchange) -> None:
    exchange.start(200, {"Content-Type": "application/json"})
    exchange.write(b'{"code": 0, ')
    exchange.trickle(every=0.1)


async def test_e2e_a_trickling_api_body_ends_within_provider_timeout() -> None:
    with LoopbackServer(trickling_json) as server:
        async with KlingProvider(server.url, ApiKeyAuth(API_KEY), timeout=1.0) as provider:
            started = time.monotonic()
            queried = await provider_error(provider.query(QUERY, "t1"))
            took_query = time.monotonic() - started
            started = time.monotonic()
            created = await provider_error(provider.create(T2V, "e1"))
            took_create = time.monotonic() - started
    print(f"\ntrickling API body: query ended after {took_query:.2f} s, "
          f"create after {took_create:.2f} s (provider.timeout 1 s)")
    for error, took in ((queried, took_query), (created, took_create)):
        assert error.info.category is Category.TIMEOUT
        assert 1.0 <= took < 2.0
    assert created.ambiguous and not queried.ambiguous
    assert len(server.requests) == 2  # the provider never retries: the engine does


async def test_e2e_a_gigabyte_api_body_is_refused_having_read_about_the_cap() -> None:
    def gigabyte(exchange: Exchange) -> None:
        # No Content-Length: the body ends when the connection does.
        exchange.start(200, {"Content-Type": "application/json"})
        exchange.stream(zeros(ONE_GIB))

    with LoopbackServer(gigabyte) as server:
        async with KlingProvider(server.url, ApiKeyAuth(API_KEY), timeout=30.0) as provider:
            started = time.monotonic()
            error = await provider_error(provider.query(QUERY, "t1"))
            took = time.monotonic() - started
        await anyio.sleep(0.2)  # let the server notice the closed connection
        sent = server.body_bytes
    read = error.details["bytes_read"]
    print(f"\n1 GiB API body: the client read {read} bytes ({read / 2**20:.2f} MiB) and "
          f"stopped after {took:.2f} s; the server wrote {sent / 2**20:.2f} MiB of 1024")
    assert error.info.category is Category.SERVER
    assert f"{MAX_ANSWER_BYTES}-byte limit" in error.info.message
    assert MAX_ANSWER_BYTES < read <= MAX_ANSWER_BYTES + 1024 * 1024
    # What the server wrote beyond it sat in socket buffers (the kernel's, up to tcp_rmem's
    # maximum), never in our memory: far from the gigabyte offered.
    assert sent < 8 * MAX_ANSWER_BYTES


# --- asset downloads -----------------------------------------------------------------------------

MP4 = video_mp4("t", 0)


def asset_downloader(out: Path, transport: httpx.AsyncBaseTransport | None = None,
                     **options: Any) -> Downloader:
    options.setdefault("policy", ONE_ATTEMPT)
    options.setdefault("asset_policy", LOOPBACK)

    async def no_wait(seconds: float) -> None:
        pass

    return Downloader(out, transport=transport, sleep=no_wait, rand=lambda: 0.5, **options)


def leftovers(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.is_file()]


async def test_a_trickling_asset_ends_at_the_attempt_deadline(tmp_path: Path) -> None:
    streams: list[Trickle] = []

    def respond(request: httpx.Request) -> httpx.Response:
        streams.append(Trickle(first=MP4[:32]))
        return httpx.Response(200, headers={"Content-Type": "video/mp4"}, stream=streams[-1])

    policy = RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01)
    async with asset_downloader(tmp_path, httpx.MockTransport(respond), policy=policy,
                                attempt_timeout=0.1) as dl:
        started = time.monotonic()
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", 0, "https://cdn.example/a.mp4", "video")
        took = time.monotonic() - started
    error = caught.value
    assert error.info.category is Category.TIMEOUT and error.info.retryable
    assert "within 0.1 s (output.download_timeout" in error.info.message
    assert error.attempts == 2 and len(streams) == 2  # a timeout is retried like any other
    assert 0.2 <= took < 1.5
    assert leftovers(tmp_path) == []


async def test_an_asset_without_content_length_stops_at_max_bytes(tmp_path: Path) -> None:
    body = Lazy(100 * CAP, data=MP4)

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "video/mp4"}, stream=body)

    async with asset_downloader(tmp_path, httpx.MockTransport(respond), max_bytes=CAP) as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", 0, "https://cdn.example/a.mp4", "video")
    assert not caught.value.info.retryable
    assert f"{CAP}-byte limit" in caught.value.info.message
    # The downloader reads up to 1 MiB at a time: it stops within one read past the limit.
    assert body.pulled <= CAP + 1024 * 1024 + CHUNK
    assert leftovers(tmp_path) == []


async def test_e2e_a_trickling_asset_ends_within_its_deadline(tmp_path: Path) -> None:
    def trickling_video(exchange: Exchange) -> None:
        exchange.start(200, {"Content-Type": "video/mp4", "Content-Length": "100000"})
        exchange.write(MP4[:32])
        exchange.trickle(every=0.1)

    with LoopbackServer(trickling_video) as server:
        async with asset_downloader(tmp_path, attempt_timeout=1.0) as dl:
            started = time.monotonic()
            with pytest.raises(DownloadError) as caught:
                await dl.download("item", 0, f"{server.url}/a.mp4", "video")
            took = time.monotonic() - started
    print(f"\ntrickling asset: the attempt ended after {took:.2f} s (attempt_timeout 1 s)")
    assert caught.value.info.category is Category.TIMEOUT
    assert 1.0 <= took < 2.0
    assert leftovers(tmp_path) == []


async def test_e2e_an_asset_past_max_bytes_without_content_length_is_refused(
    tmp_path: Path,
) -> None:
    limit = 1024 * 1024

    def endless_video(exchange: Exchange) -> None:
        exchange.start(200, {"Content-Type": "video/mp4"})
        exchange.write(MP4)
        exchange.stream(zeros(ONE_GIB))

    with LoopbackServer(endless_video) as server:
        async with asset_downloader(tmp_path, max_bytes=limit) as dl:
            with pytest.raises(DownloadError) as caught:
                await dl.download("item", 0, f"{server.url}/a.mp4", "video")
        await anyio.sleep(0.2)
        sent = server.body_bytes
    assert not caught.value.info.retryable
    assert sent < limit + 64 * 1024 * 1024  # of a gigabyte, the rest in socket buffers
    assert leftovers(tmp_path) == []


# --- the setting ---------------------------------------------------------------------------------


def test_output_download_timeout_is_a_manifest_setting(tmp_path: Path) -> None:
    path = tmp_path / "batch.yaml"
    body = """\
        version: 1
        name: b
        output:
          download_timeout: 45
        items:
          - id: a
            kind: text2video
            model: kling-v2-5-turbo
            prompt: a fox
        """
    path.write_text(dedent(body))
    assert load_manifest(path).download_timeout == 45.0
    path.write_text(dedent(body).replace("download_timeout: 45", "download: true"))
    assert load_manifest(path).download_timeout == 600.0
