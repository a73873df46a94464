"""Asset downloads against the bundled simulator on loopback (and a mock transport for what the
simulator cannot send): verified, durable, retried where worth it, never outside output_dir.

Task lifecycles run on an injected clock and backoff sleeps are recorded, not slept.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import ssl
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from orchestrator.asset_policy import AssetPolicy
from orchestrator.downloads import (
    DownloadedAsset,
    Downloader,
    DownloadError,
    identify,
    redact_url,
)
from orchestrator.errors import Category
from orchestrator.layout import check_item_id
from orchestrator.part_files import PartFile
from orchestrator.retry import RetryPolicy
from orchestrator.simulator import FaultRule, SimConfig, Simulator
from orchestrator.simulator.media import image_png, video_mp4

pytestmark = pytest.mark.anyio

API_KEY = {"Authorization": "Bearer sim-api-key"}
T2V = "/v1/videos/text2video"
IMG = "/v1/images/generations"
PLAIN_HTTP = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
POLICY = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05)
LOOPBACK = AssetPolicy(allow_private=True, allow_http=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Sleeps:
    """An injected sleep that records the delays instead of waiting."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@dataclass
class Sim:
    sim: Simulator
    client: httpx.Client
    clock: FakeClock

    def finished(self, prompt: str = "a cat", *, n: int | None = None) -> tuple[str, list[str]]:
        """Create a task (images when ``n`` is given), let it finish; its id and asset URLs."""
        path = IMG if n is not None else T2V
        body: dict[str, Any] = {"model_name": "kling-v2-5-turbo", "prompt": prompt}
        if n is not None:
            body = {"model_name": "kling-v2-1", "prompt": prompt, "n": n}
        response = self.client.post(path, json=body)
        assert response.status_code == 200, response.text
        task_id: str = response.json()["data"]["task_id"]
        self.clock.advance(1.0)
        return task_id, self.urls(task_id, image=n is not None)

    def urls(self, task_id: str, *, image: bool = False) -> list[str]:
        """Query the task again: fresh URLs (signed anew when URLs expire)."""
        path = IMG if image else T2V
        result = self.client.get(f"{path}/{task_id}").json()["data"]["task_result"]
        return [asset["url"] for asset in result["images" if image else "videos"]]


@pytest.fixture
def launch() -> Iterator[Any]:
    running: list[Sim] = []

    def start(**fields: Any) -> Sim:
        clock = FakeClock()
        fields.setdefault("task_duration", (1.0, 1.0))
        sim = Simulator(SimConfig(clock=clock, **fields))
        sim.start()
        client = httpx.Client(base_url=sim.url, headers=API_KEY, verify=PLAIN_HTTP, timeout=5.0)
        running.append(Sim(sim, client, clock))
        return running[-1]

    yield start
    for env in running:
        env.client.close()
        env.sim.stop()


def downloader(out: Path, sleeps: Sleeps | None = None, **options: Any) -> Downloader:
    options.setdefault("policy", POLICY)
    # The simulator serves its assets from its own loopback host, over plain http.
    options.setdefault("asset_policy", LOOPBACK)
    options.setdefault("transport", httpx.AsyncHTTPTransport(verify=PLAIN_HTTP))
    return Downloader(out, sleep=sleeps or Sleeps(), rand=lambda: 0.5, **options)


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.rglob("*") if p.name.endswith(".part"))


def files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


# --- the good path ----------------------------------------------------------------------------


async def test_video_is_downloaded_verified_and_placed(launch: Any, tmp_path: Path) -> None:
    env = launch()
    task_id, (url,) = env.finished()
    out = tmp_path / "out"
    # The default transport (no injected one): what production uses.
    async with Downloader(out, sleep=Sleeps(), asset_policy=LOOPBACK) as dl:
        asset = await dl.download("drone-sunrise", 0, url, "video")

    expected = video_mp4(task_id, 0)
    assert asset == DownloadedAsset(
        index=0,
        url=url,
        path="drone-sunrise/0.mp4",
        bytes=len(expected),
        sha256=hashlib.sha256(expected).hexdigest(),
        content_type="video/mp4",
        media="video",
    )
    placed = out / "drone-sunrise" / "0.mp4"
    assert placed.read_bytes() == expected
    assert files(out) == ["drone-sunrise/0.mp4"]
    if os.name == "posix":
        umask = os.umask(0)
        os.umask(umask)
        assert placed.stat().st_mode & 0o777 == 0o644 & ~umask
    assert dl.stats == {"requests": 1, "files": 1, "bytes": len(expected)}
    assert asset.to_dict() == {
        "index": 0,
        "url": url,
        "path": "drone-sunrise/0.mp4",
        "bytes": len(expected),
        "sha256": asset.sha256,
        "content_type": "video/mp4",
        "media": "video",
    }
    assert DownloadedAsset.from_dict(asset.to_dict()) == asset
    assert env.sim.stats().asset_answers == {"200": 1}


async def test_images_get_their_own_index_and_extension(launch: Any, tmp_path: Path) -> None:
    env = launch()
    task_id, urls = env.finished("a mug", n=3)
    async with downloader(tmp_path) as dl:
        assets = [await dl.download("mug-stills", i, url, "image") for i, url in enumerate(urls)]
    assert [a.path for a in assets] == ["mug-stills/0.png", "mug-stills/1.png", "mug-stills/2.png"]
    assert {a.content_type for a in assets} == {"image/png"}
    for i, asset in enumerate(assets):
        assert (tmp_path / asset.path).read_bytes() == image_png(task_id, i)
    assert len({a.sha256 for a in assets}) == 3


# --- retried failures ---------------------------------------------------------------------------


async def test_truncated_body_is_retried(launch: Any, tmp_path: Path) -> None:
    env = launch(faults=(FaultRule(op="asset", effect="truncate", times=2),))
    task_id, (url,) = env.finished()
    sleeps = Sleeps()
    async with downloader(tmp_path, sleeps) as dl:
        asset = await dl.download("item", 0, url, "video")
    assert (tmp_path / asset.path).read_bytes() == video_mp4(task_id, 0)
    assert env.sim.stats().asset_answers == {"truncated": 2, "200": 1}
    assert (dl.stats["requests"], dl.stats["retries"]) == (3, 2)
    # Full jitter with rand=0.5: half of base_delay * 2**(retry - 1).
    assert sleeps.delays == [0.005, 0.01]
    assert leftovers(tmp_path) == []


async def test_wrong_content_type_is_retried(launch: Any, tmp_path: Path) -> None:
    env = launch(faults=(FaultRule(op="asset", effect="wrong_type", times=1),))
    task_id, urls = env.finished("a mug", n=1)
    async with downloader(tmp_path) as dl:
        asset = await dl.download("mug", 0, urls[0], "image")
    assert (tmp_path / asset.path).read_bytes() == image_png(task_id, 0)
    assert env.sim.stats().asset_answers == {"wrong_type": 1, "200": 1}
    assert dl.stats["retries"] == 1
    assert files(tmp_path) == ["mug/0.png"]


async def test_dropped_connection_is_retried(launch: Any, tmp_path: Path) -> None:
    env = launch(faults=(FaultRule(op="asset", effect="drop_before_commit", times=1),))
    _, (url,) = env.finished()
    async with downloader(tmp_path) as dl:
        await dl.download("item", 0, url, "video")
    assert dl.stats["retries"] == 1


async def test_retry_after_is_honoured(launch: Any, tmp_path: Path) -> None:
    faults = (
        FaultRule(op="asset", effect="error", http_status=429, code=1302, retry_after="7", times=1),
        FaultRule(op="asset", effect="error", http_status=503, code=5001, retry_after="2", times=1),
    )
    env = launch(faults=faults)
    _, (url,) = env.finished()
    sleeps = Sleeps()
    async with downloader(tmp_path, sleeps) as dl:
        await dl.download("item", 0, url, "video")
    assert sleeps.delays == [7.0, 2.0]


async def test_persistent_server_error_gives_up_retryable_and_leaves_nothing(
    launch: Any, tmp_path: Path
) -> None:
    env = launch(faults=(FaultRule(op="asset", effect="error", http_status=500),), asset_url_ttl=60)
    _, (url,) = env.finished()
    assert "sig=" in url
    sleeps = Sleeps()
    async with downloader(tmp_path, sleeps) as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", 0, url, "video")
    error = caught.value
    assert (error.info.category, error.info.http_status) == (Category.SERVER, 500)
    assert error.info.retryable and not error.expired
    assert error.attempts == POLICY.max_attempts == env.sim.stats().asset_requests
    assert len(sleeps.delays) == POLICY.max_attempts - 1
    assert "item item asset 0" in error.info.message
    assert "gave up after 4 attempts" in error.info.message
    assert "resubmitted" in error.info.hint
    # Signed URLs carry their signature in the query string: never in a message.
    assert "sig=" not in str(error) and "exp=" not in error.info.message
    assert files(tmp_path) == []


async def test_truncated_until_the_budget_runs_out(launch: Any, tmp_path: Path) -> None:
    env = launch(faults=(FaultRule(op="asset", effect="truncate"),))
    _, (url,) = env.finished()
    async with downloader(tmp_path) as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", 0, url, "video")
    assert caught.value.info.category is Category.NETWORK
    assert caught.value.info.retryable
    assert files(tmp_path) == []


# --- expired and refused URLs -------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403, 404, 410])
async def test_refused_url_is_expired_at_once(launch: Any, tmp_path: Path, status: int) -> None:
    env = launch(faults=(FaultRule(op="asset", effect="error", http_status=status, code=1103),))
    _, (url,) = env.finished()
    sleeps = Sleeps()
    async with downloader(tmp_path, sleeps) as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", 0, url, "video")
    assert caught.value.expired
    assert caught.value.info.http_status == status
    assert caught.value.attempts == 1
    assert sleeps.delays == []
    assert env.sim.stats().asset_requests == 1
    assert dl.stats["expired"] == 1
    assert files(tmp_path) == []


async def test_other_client_errors_are_not_retried(launch: Any, tmp_path: Path) -> None:
    env = launch(faults=(FaultRule(op="asset", effect="error", http_status=400, code=1200),))
    _, (url,) = env.finished()
    async with downloader(tmp_path) as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", 0, url, "video")
    assert not caught.value.info.retryable and not caught.value.expired
    assert env.sim.stats().asset_requests == 1


async def test_expired_url_then_fresh_url_from_a_requery(launch: Any, tmp_path: Path) -> None:
    env = launch(asset_url_ttl=30.0)
    task_id, (url,) = env.finished()
    env.clock.advance(31.0)
    async with downloader(tmp_path) as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", 0, url, "video")
        assert caught.value.expired
        (fresh,) = env.urls(task_id)
        assert fresh != url
        asset = await dl.download("item", 0, fresh, "video")
    assert (tmp_path / asset.path).read_bytes() == video_mp4(task_id, 0)
    assert asset.url == fresh
    assert env.sim.stats().asset_answers == {"403": 1, "200": 1}


# --- verify ---------------------------------------------------------------------------------


async def test_verify_detects_missing_and_corrupt_files(launch: Any, tmp_path: Path) -> None:
    env = launch()
    _, (url,) = env.finished()
    async with downloader(tmp_path) as dl:
        record = (await dl.download("item", 0, url, "video")).to_dict()
        path = tmp_path / record["path"]
        assert dl.verify(record)
        assert await dl.averify(record)

        data = bytearray(path.read_bytes())
        data[-1] ^= 0x01  # same size, one bit off
        path.write_bytes(bytes(data))
        assert not dl.verify(record)

        # A rerun downloads it again, over the corrupt copy.
        assert (await dl.download("item", 0, url, "video")).to_dict() == record
        assert dl.verify(record)

        path.write_bytes(bytes(data) + b"x")
        assert not dl.verify(record)
        path.unlink()
        assert not dl.verify(record)
        assert not await dl.averify(record)


def test_verify_refuses_malformed_or_unsafe_records(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "item").mkdir(parents=True)
    content = b"\x89PNG\r\n\x1a\n"
    (out / "item" / "0.png").write_bytes(content)
    (tmp_path / "secret.png").write_bytes(content)
    digest = hashlib.sha256(content).hexdigest()
    good: dict[str, Any] = {"path": "item/0.png", "bytes": len(content), "sha256": digest}
    dl = Downloader(out)
    assert dl.verify(good)
    assert dl.verify({**good, "sha256": digest.upper()})
    for bad in (
        {},
        {**good, "bytes": True},
        {**good, "bytes": "8"},
        {**good, "sha256": None},
        {**good, "sha256": "\u00e9" * 64},
        {**good, "sha256": digest[:-1]},
        {**good, "path": "../secret.png"},
        {**good, "path": "item/../../secret.png"},
        {**good, "path": str(tmp_path / "secret.png")},
        {**good, "path": "item\\0.png"},
        {**good, "path": "item"},
        {**good, "path": ""},
    ):
        assert not dl.verify(bad), bad


# --- concurrency ------------------------------------------------------------------------------


@pytest.mark.parametrize("cap", [1, 3])
async def test_own_concurrency_cap(launch: Any, tmp_path: Path, cap: int) -> None:
    env = launch(faults=(FaultRule(op="asset", effect="delay", delay=0.1),))
    _, urls = env.finished("a mug", n=5)
    results: list[DownloadedAsset] = []
    async with downloader(tmp_path, concurrency=cap) as dl:

        async def one(index: int, url: str) -> None:
            results.append(await dl.download(f"item-{index}", 0, url, "image"))

        async with anyio.create_task_group() as tg:
            for index, url in enumerate(urls):
                tg.start_soon(one, index, url)
    assert len(results) == 5
    assert env.sim.stats().asset_peak_in_flight == cap


# --- leftovers of a killed run ----------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_stale_part_files_are_removed_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    folder = out / "item"
    folder.mkdir(parents=True)
    stale = [".0.0123456789abcdef.part", ".12.fedcba9876543210.part"]
    kept = [
        "0.mp4",
        "notes.part",
        ".0.xyz.part",
        ".0.0123456789ABCDEF.part",  # not our (lower-case) hex
        ".0.0123456789abcdef.part.bak",
        "0.0123456789abcdef.part",  # no leading dot
    ]
    for name in stale + kept:
        (folder / name).write_bytes(b"x")
    (folder / ".1.0123456789abcdef.part").mkdir()  # not a file of ours
    (tmp_path / "precious").write_bytes(b"keep me")
    (folder / ".2.0123456789abcdef.part").symlink_to(tmp_path / "precious")
    dl = Downloader(out)
    assert dl.remove_stale_parts("item") == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [*kept, ".1.0123456789abcdef.part", ".2.0123456789abcdef.part"]
    )
    assert (tmp_path / "precious").read_bytes() == b"keep me"
    assert dl.remove_stale_parts("item") == 0
    assert dl.remove_stale_parts("never-downloaded") == 0
    with pytest.raises(ValueError):
        dl.remove_stale_parts("../out")


@pytest.mark.parametrize("size", ["small", "large"])
async def test_a_download_writes_a_part_file_named_like_the_stale_ones(
    tmp_path: Path, size: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cleanup pattern must match what a download writes, or a kill's leftovers stay: a
    body held in memory and one streamed to disk (past 1 MiB) both go through a part file."""
    made: list[str] = []
    create = PartFile.create.__func__  # type: ignore[attr-defined]

    def spy(cls: type[PartFile], directory: Path, index: int) -> PartFile:
        part: PartFile = create(cls, directory, index)
        made.append(part.path.name)
        return part

    monkeypatch.setattr(PartFile, "create", classmethod(spy))
    seen: list[list[str]] = []
    folder = tmp_path / "item"
    head = video_mp4("T", 0)

    async def body() -> Any:
        yield head
        if size == "large":
            # Past what memory holds (httpx hands the body on in 1 MiB chunks): the part file
            # is made with the second chunk, before the last one is sent.
            yield b"\0" * (2 * 1024 * 1024)
            seen.append(sorted(p.name for p in folder.iterdir()))
            yield b"\0"

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body())

    async with downloader(tmp_path, transport=mock(serve)) as dl:
        asset = await dl.download("item", 3, "https://cdn.test/a.mp4", "video")
        (name,) = made
        assert re.fullmatch(r"\.3\.[0-9a-f]{16}\.part", name)
        if size == "large":
            assert seen == [[name]]  # on disk while the body streams
            assert asset.bytes == len(head) + 2 * 1024 * 1024 + 1
        (folder / name).write_bytes(b"left by a kill")
        assert dl.remove_stale_parts("item") == 1
    assert sorted(p.name for p in folder.iterdir()) == ["3.mp4"]
    assert hashlib.sha256((folder / "3.mp4").read_bytes()).hexdigest() == asset.sha256
    assert asset.mtime_ns == (folder / "3.mp4").stat().st_mtime_ns


# --- safety -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "item_id",
    ["", ".", "..", "...", "a/b", "../x", "a\\b", "a b", "caf\u00e9", "x.", "CON", "nul.txt",
     "com1", "x" * 256, "a\x00b"],
)
async def test_unsafe_item_ids_are_refused(tmp_path: Path, item_id: str) -> None:
    # A classified DownloadError (was ValueError, which crashed the item in the engine).
    async with downloader(tmp_path / "out") as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download(item_id, 0, "http://127.0.0.1:9/a.mp4", "video")
    assert caught.value.local and not caught.value.info.retryable
    assert caught.value.info.category is Category.VALIDATION
    assert not (tmp_path / "out").exists()
    assert dl.stats["requests"] == 0


def test_safe_item_ids_are_accepted() -> None:
    for item_id in ("drone-sunrise", "a.b_c-1", ".hidden", "x" * 255, "console", "COM"):
        assert check_item_id(item_id) == item_id


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
async def test_item_dir_symlinked_outside_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (out / "item").symlink_to(tmp_path / "elsewhere")
    async with downloader(out) as dl:
        with pytest.raises(DownloadError, match="outside") as caught:
            await dl.download("item", 0, "http://127.0.0.1:9/a.mp4", "video")
    assert caught.value.local and not caught.value.info.retryable
    assert dl.stats["requests"] == 0


@pytest.mark.parametrize(
    ("index", "url", "media"),
    [(-1, "http://127.0.0.1:9/a.mp4", "video"), (True, "http://127.0.0.1:9/a.mp4", "video"),
     (0, "http://127.0.0.1:9/a.mp4", "audio"), (0, "file:///etc/passwd", "video")],
    ids=["negative-index", "bool-index", "unknown-media", "not-http"],
)
async def test_unusable_asset_arguments_are_classified_errors(
    tmp_path: Path, index: Any, url: str, media: str
) -> None:
    # Was ValueError for the index and the media: it escaped the engine as a crash, the item
    # was reported succeeded with no file, and every rerun crashed again.
    async with downloader(tmp_path) as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", index, url, media)
    assert not caught.value.info.retryable and not caught.value.expired
    assert caught.value.info.category is Category.SERVER
    assert "report it to the provider" in caught.value.info.hint
    assert dl.stats["requests"] == 0
    assert not (tmp_path / "item").exists()


async def test_local_write_failure_is_not_retried(launch: Any, tmp_path: Path) -> None:
    env = launch()
    _, (url,) = env.finished()
    (tmp_path / "item").write_text("a file where the item directory should be")
    async with downloader(tmp_path) as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", 0, url, "video")
    assert caught.value.local and not caught.value.info.retryable
    assert dl.stats["requests"] == 0


async def test_a_full_disk_stops_the_batch_not_just_the_item(
    launch: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = launch()
    _, (url,) = env.finished()

    def full(self: Any, chunk: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("orchestrator.part_files.PartFile.write", full)
    async with downloader(tmp_path) as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", 0, url, "video")
    # Every further download would fail the same way: the flag the engine reads, and the
    # failure the CLI ends the run with.
    assert caught.value.local and caught.value.stops_batch
    assert caught.value.info.retryable  # once there is space again
    assert dl.stats["requests"] == 1  # not retried here
    assert dl.local_failure is not None
    assert dl.local_failure.line() == (
        f"disk full writing {(tmp_path / 'item').resolve()}: free space, then rerun: "
        "nothing is lost"
    )
    assert list((tmp_path / "item").iterdir()) == []  # no part file left


# --- what the simulator cannot send: a mock transport --------------------------------------------


def mock(handler: Any) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


async def test_redirects_are_followed_without_credentials(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    body = video_mp4("t", 0)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "api.example":
            return httpx.Response(302, headers={"Location": "https://cdn.example/f/abc.bin"})
        return httpx.Response(200, headers={"Content-Type": "video/mp4"}, content=body)

    async with downloader(tmp_path, transport=mock(handler)) as dl:
        asset = await dl.download("item", 2, "https://api.example/v/abc.mp4?sig=s3cret", "video")
    assert asset.path == "item/2.mp4"  # the name never comes from the URL
    assert [r.url.host for r in seen] == ["api.example", "cdn.example"]
    for request in seen:
        assert "authorization" not in request.headers
        assert request.headers["accept-encoding"] == "identity"


async def test_an_asset_hosts_cookies_are_never_sent_back(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    body = video_mp4("t", 0)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        headers = {"Content-Type": "video/mp4", "Set-Cookie": "track=abc; Path=/"}
        return httpx.Response(200, headers=headers, content=body)

    async with downloader(tmp_path, transport=mock(handler)) as dl:
        await dl.download("item", 0, "https://cdn.example/a.mp4", "video")
        await dl.download("item", 1, "https://cdn.example/b.mp4", "video")
    assert len(seen) == 2 and all("cookie" not in r.headers for r in seen)


async def test_content_length_must_equal_the_bytes_received(tmp_path: Path) -> None:
    body = video_mp4("t", 0)

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": "video/mp4", "Content-Length": str(len(body) + 10)}
        return httpx.Response(200, headers=headers, content=body)

    async with downloader(tmp_path, transport=mock(handler)) as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", 0, "https://cdn.example/a.mp4", "video")
    assert "truncated body" in caught.value.info.message
    assert caught.value.attempts == POLICY.max_attempts
    assert files(tmp_path) == []


@pytest.mark.parametrize(
    ("declared", "body", "media", "expected"),
    [
        ("video/mp4", video_mp4("t", 0), "video", "mp4"),
        ("application/octet-stream", video_mp4("t", 0), "video", "mp4"),
        ("video/mp4", b"\x00\x00\x00\x14ftypqt  " + b"\x00" * 8, "video", "mov"),
        ("", b"\x1a\x45\xdf\xa3" + b"\x00" * 20, "video", "webm"),
        ("video/quicktime", b"\x00\x00\x00\x08wide" + b"\x00" * 20, "video", "mov"),
        ("image/jpeg", image_png("t", 0), "image", "png"),
        ("binary/octet-stream", b"\xff\xd8\xff\xe0" + b"\x00" * 20, "image", "jpg"),
        ("image/webp", b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image", "webp"),
        ("", b"GIF89a" + b"\x00" * 20, "image", "gif"),
        # Refused: the wrong media, a web page whatever its label, an unknown type.
        ("video/mp4", image_png("t", 0), "video", None),
        ("image/png", video_mp4("t", 0), "image", None),
        ("video/mp4", b"  <!DOCTYPE html><html></html>", "video", None),
        ("image/png", b'{"code": 403}', "image", None),
        ("text/html", b"<html></html>", "image", None),
        ("video/x-msvideo", b"RIFF\x10\x00\x00\x00AVI LIST", "video", None),
        ("video/mp4", b"\x00\x00\x00\x1cftypavif" + b"\x00" * 16, "video", None),
    ],
)
def test_identify(declared: str, body: bytes, media: str, expected: str | None) -> None:
    found = identify(media, declared, body[:64])
    assert (found.ext if found is not None else None) == expected


async def test_empty_body_is_refused(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "video/mp4"}, content=b"")

    async with downloader(tmp_path, transport=mock(handler)) as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", 0, "https://cdn.example/a.mp4", "video")
    assert caught.value.info.category is Category.ASSET_MISMATCH
    assert files(tmp_path) == []


async def test_oversized_body_is_refused_without_retries(tmp_path: Path) -> None:
    body = video_mp4("t", 0)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"Content-Type": "video/mp4"}, content=body)

    async with downloader(tmp_path, transport=mock(handler), max_bytes=len(body) - 1) as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", 0, "https://cdn.example/a.mp4", "video")
    assert not caught.value.info.retryable
    assert dl.stats["requests"] == 1
    assert files(tmp_path) == []


def test_redact_url() -> None:
    assert redact_url("https://u:p@cdn.example:8443/a/b.mp4?sig=x#f") == (
        "https://cdn.example:8443/a/b.mp4"
    )
    assert redact_url("http://[::1]:80/x?y") == "http://[::1]:80/x"
