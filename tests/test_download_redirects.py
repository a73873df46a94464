"""Downloads go only where they belong: https (http only beside a provider reached over it),
no internal hosts (unless the provider is on one), at most five requests an attempt, and a
refused hop fails at once, never retried as a network error.

The decisions are pure functions (tables below); the downloader is driven through
httpx.MockTransport, and a redirect loop and a ``file://`` redirect over real loopback HTTP.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.asset_policy import (
    DEFAULT_MAX_HOPS,
    AssetPolicy,
    host_kind,
    redirect_method,
    redirect_target,
    refusal,
)
from orchestrator.downloads import Downloader, DownloadError
from orchestrator.errors import Category
from orchestrator.retry import RetryPolicy
from orchestrator.simulator.media import video_mp4
from tests.loopback_server import Exchange, LoopbackServer

pytestmark = pytest.mark.anyio

STRICT = AssetPolicy()
LOOPBACK = AssetPolicy(allow_private=True, allow_http=True)
#: As many attempts as production's downloads get: a refusal must not use them.
EIGHT = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.01)
MP4 = video_mp4("t", 0)
ASSET = "https://cdn.example/v/a.mp4?sig=s3cret"


# --- the decisions -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.9.9.9", "loopback"),
        ("::1", "loopback"),
        ("[::1]", "loopback"),
        ("localhost", "loopback"),
        ("LOCALHOST.", "loopback"),
        ("api.localhost", "loopback"),
        # Forms the system resolver reads as 127.0.0.1.
        ("127.1", "loopback"),
        ("2130706433", "loopback"),
        ("0x7f000001", "loopback"),
        ("0177.0.0.1", "loopback"),
        ("127.0.0.1.", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fe80::1%25eth0", "link-local"),
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("::ffff:10.1.2.3", "private"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "non-public"),
        ("::127.0.0.1", "non-public"),
        # Public: addresses and names (names are not resolved).
        ("8.8.8.8", None),
        ("172.32.0.1", None),
        ("2606:4700::1111", None),
        ("cdn.example", None),
        ("localhost.example", None),
        ("10.0.0.1.example", None),
    ],
)
def test_host_kind(host: str, kind: str | None) -> None:
    assert host_kind(host) == kind


@pytest.mark.parametrize(
    ("policy", "url", "why"),
    [
        (STRICT, "https://cdn.example/a.mp4", None),
        (STRICT, "http://cdn.example/a.mp4", "http scheme, not https://"),
        (STRICT, "file:///etc/passwd", "file scheme, not https://"),
        (STRICT, "ftp://cdn.example/a.mp4", "ftp scheme, not https://"),
        (STRICT, "https://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local"),
        (STRICT, "https://[::1]/a", "::1 is a loopback address"),
        (AssetPolicy(allow_http=True), "http://cdn.example/a.mp4", None),
        (AssetPolicy(allow_http=True), "file:///etc/passwd",
         "file scheme, not https:// or http://"),
        (AssetPolicy(allow_http=True), "http://10.0.0.1/a", "10.0.0.1 is a private address"),
        (AssetPolicy(allow_private=True), "https://10.0.0.1/a", None),
        (AssetPolicy(allow_private=True), "http://10.0.0.1/a", "http scheme, not https://"),
        (LOOPBACK, "http://127.0.0.1:8080/a", None),
        (LOOPBACK, "file:///etc/passwd", "file scheme"),
    ],
)
def test_refusal(policy: AssetPolicy, url: str, why: str | None) -> None:
    found = refusal(policy, httpx.URL(url))
    assert found == why if why is None else (found is not None and found.startswith(why))


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://api-singapore.klingai.com", STRICT),
        ("http://127.0.0.1:8765", LOOPBACK),  # the bundled simulator
        ("http://localhost:8765", LOOPBACK),
        ("https://10.0.0.5", AssetPolicy(allow_private=True)),  # a gateway on the network
        ("not a url at all\x00", STRICT),
    ],
)
def test_the_policy_follows_the_provider(base_url: str, expected: AssetPolicy) -> None:
    assert AssetPolicy.for_provider(base_url) == expected


def test_redirect_targets_resolve_relative_locations() -> None:
    here = httpx.URL("https://cdn.example/v/a.mp4?sig=1#t=5")
    assert redirect_target(here, "/w/b.mp4") == httpx.URL("https://cdn.example/w/b.mp4#t=5")
    assert redirect_target(here, "b.mp4") == httpx.URL("https://cdn.example/v/b.mp4#t=5")
    assert redirect_target(here, "//edge.example/c") == httpx.URL("https://edge.example/c#t=5")
    assert redirect_target(here, "https://x.example/d#z") == httpx.URL("https://x.example/d#z")


@pytest.mark.parametrize(
    ("method", "status", "expected"),
    [("GET", 303, "GET"), ("POST", 303, "GET"), ("HEAD", 303, "HEAD"), ("POST", 302, "GET"),
     ("POST", 301, "GET"), ("POST", 307, "POST"), ("POST", 308, "POST"), ("GET", 302, "GET")],
)
def test_redirect_method(method: str, status: int, expected: str) -> None:
    assert redirect_method(method, status) == expected


# --- the downloader ------------------------------------------------------------------------------


async def _no_wait(seconds: float) -> None:
    pass


def downloader(out: Path, handler: Any, **options: Any) -> Downloader:
    options.setdefault("policy", EIGHT)
    return Downloader(out, transport=httpx.MockTransport(handler), sleep=_no_wait,
                      rand=lambda: 0.5, **options)


def video(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, headers={"Content-Type": "video/mp4"}, content=MP4)


async def refused(dl: Downloader, url: str = ASSET) -> DownloadError:
    with pytest.raises(DownloadError) as caught:
        await dl.download("item", 0, url, "video")
    error = caught.value
    assert not error.info.retryable and not error.expired and not error.local
    assert error.info.category is Category.SERVER  # not a network error: never retried
    assert error.attempts == 1
    assert "sig=" not in error.info.message and "s3cret" not in error.info.message
    return error


@pytest.mark.parametrize(
    "location",
    [
        "http://cdn.example/a.mp4",
        "file:///etc/passwd",
        "ftp://cdn.example/a.mp4",
        "https://127.0.0.1/a.mp4",
        "https://localhost/a.mp4",
        "https://metadata.localhost/a.mp4",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/a.mp4",
        "https://172.16.0.1/a.mp4",
        "https://192.168.1.1/a.mp4",
        "https://[::1]/a.mp4",
        "https://[fe80::1]/a.mp4",
        "https://[fc00::1]/a.mp4",
        "https://0.0.0.0/a.mp4",
        "https://224.0.0.1/a.mp4",
        "https://2130706433/a.mp4",
        "https://[::ffff:169.254.169.254]/a.mp4",
        "https://[::1",  # not a URL at all
    ],
)
async def test_a_redirect_where_downloads_never_go_is_refused_once(
    tmp_path: Path, location: str
) -> None:
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        if request.url.host == "cdn.example" and request.url.path == "/v/a.mp4":
            return httpx.Response(302, headers={"Location": location})
        return video(request)

    async with downloader(tmp_path, handler) as dl:
        error = await refused(dl)
    assert len(seen) == 1 and dl.stats["requests"] == 1
    assert "302" in error.info.message
    assert "report it to the provider" in error.info.hint
    assert list(tmp_path.rglob("*.*")) == []


@pytest.mark.parametrize(
    "url",
    ["http://cdn.example/a.mp4", "https://169.254.169.254/a.mp4", "https://[::1]:8443/a.mp4",
     "https://localhost/a.mp4", "https://10.0.0.7/a.mp4"],
)
async def test_a_first_url_where_downloads_never_go_is_refused_unsent(
    tmp_path: Path, url: str
) -> None:
    # A hostile provider could name an internal address as the asset's own URL.
    async with downloader(tmp_path, video) as dl:
        error = await refused(dl, url)
    assert "refused" in error.info.message
    assert dl.stats["requests"] == 0


async def test_a_redirect_loop_ends_at_the_hop_limit_not_retried(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        following = "/b" if request.url.path != "/b" else "/a"
        return httpx.Response(302, headers={"Location": following})

    async with downloader(tmp_path, handler) as dl:
        error = await refused(dl, "https://cdn.example/a")
    assert len(seen) == DEFAULT_MAX_HOPS == 5
    assert "still redirected after 5 requests" in error.info.message


async def test_a_chain_within_the_hop_limit_is_followed(tmp_path: Path) -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        hop = int(request.url.path.strip("/"))
        if hop < DEFAULT_MAX_HOPS:
            return httpx.Response(301 + hop % 2, headers={"Location": f"/{hop + 1}"})
        return video(request)

    async with downloader(tmp_path, handler) as dl:
        asset = await dl.download("item", 0, "https://cdn.example/1", "video")
    assert seen == ["/1", "/2", "/3", "/4", "/5"]
    assert asset.url == "https://cdn.example/1"  # the record keeps the provider's URL
    assert dl.stats["requests"] == 5


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_each_redirect_status_is_followed_with_get(tmp_path: Path, status: int) -> None:
    seen: list[tuple[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url)))
        if request.url.path.startswith("/v/x/"):
            # Relative: resolved against the URL that answered.
            return httpx.Response(status, headers={"Location": "../f/abc.bin"})
        return video(request)

    async with downloader(tmp_path, handler) as dl:
        await dl.download("item", 0, "https://api.example/v/x/a.mp4", "video")
    assert seen[1] == ("GET", "https://api.example/v/f/abc.bin")


async def test_a_redirect_without_location_is_an_http_error(tmp_path: Path) -> None:
    async with downloader(tmp_path, lambda request: httpx.Response(302)) as dl:
        with pytest.raises(DownloadError) as caught:
            await dl.download("item", 0, ASSET, "video")
    assert caught.value.info.http_status == 302 and not caught.value.info.retryable


async def test_internal_hosts_and_http_are_followed_beside_an_internal_provider(
    tmp_path: Path,
) -> None:
    # The bundled simulator: its assets are on its own loopback host, over http.
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.port == 8765:
            return httpx.Response(307, headers={"Location": "http://10.0.0.2/a.mp4"})
        return video(request)

    policy = AssetPolicy.for_provider("http://127.0.0.1:8765")
    async with downloader(tmp_path, handler, asset_policy=policy) as dl:
        await dl.download("item", 0, "http://127.0.0.1:8765/a.mp4", "video")
    assert seen == ["http://127.0.0.1:8765/a.mp4", "http://10.0.0.2/a.mp4"]
    # ... and still never anywhere but http(s).
    def to_file(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "file:///etc/passwd"})

    async with downloader(tmp_path, to_file, asset_policy=policy) as dl:
        await refused(dl, "http://127.0.0.1:8765/a.mp4")


# --- real loopback HTTP --------------------------------------------------------------------------


async def test_e2e_a_redirect_loop_costs_at_most_the_hop_limit(tmp_path: Path) -> None:
    def loop(exchange: Exchange) -> None:
        following = "/b" if exchange.path.startswith("/a") else "/a?sig=s3cret"
        exchange.start(302, {"Location": following, "Content-Length": "0"})

    with LoopbackServer(loop) as server:
        policy = AssetPolicy.for_provider(server.url)  # a provider on loopback: exempt
        async with Downloader(tmp_path, policy=EIGHT, sleep=_no_wait,
                              asset_policy=policy) as dl:
            error = await refused(dl, f"{server.url}/a?sig=s3cret")
    print(f"\nredirect loop: {len(server.requests)} requests for one download, then refused")
    assert len(server.requests) == DEFAULT_MAX_HOPS
    assert "redirect loop" in error.info.message


async def test_e2e_a_file_redirect_is_refused_once(tmp_path: Path) -> None:
    def to_file(exchange: Exchange) -> None:
        exchange.start(302, {"Location": "file:///etc/passwd", "Content-Length": "0"})

    with LoopbackServer(to_file) as server:
        policy = AssetPolicy.for_provider(server.url)
        async with Downloader(tmp_path, policy=EIGHT, sleep=_no_wait,
                              asset_policy=policy) as dl:
            error = await refused(dl, f"{server.url}/a.mp4")
    assert server.requests == ["GET /a.mp4"]
    assert "file scheme" in error.info.message
