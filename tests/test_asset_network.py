"""Names that resolve to internal addresses: the downloader judges the addresses it dials.

Unit tests drive :class:`GuardedBackend` with a resolver and a dialler of their own; the rest
download over real loopback HTTP with a resolver that says where a name points (the machine's
own resolver knows no names but localhost), and once through the system resolver's entry point.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpcore
import httpx
import pytest

from orchestrator.asset_network import (
    GuardedBackend,
    InternalAddress,
    asset_transport,
    resolve_host,
)
from orchestrator.asset_policy import AssetPolicy, host_kind
from orchestrator.downloads import Downloader, DownloadError
from orchestrator.errors import Category
from orchestrator.retry import RetryPolicy
from orchestrator.simulator.media import video_mp4
from tests.loopback_server import Exchange, LoopbackServer

pytestmark = pytest.mark.anyio

#: Public hosts over plain http: the strict policy's host rules, without TLS on loopback.
PUBLIC_HTTP = AssetPolicy(allow_http=True)
EIGHT = RetryPolicy(max_attempts=8, base_delay=0.01, max_delay=0.01)
MP4 = video_mp4("t", 0)
LIMITS = httpx.Limits(max_connections=4, max_keepalive_connections=4)


class Resolver:
    """Answers from a table, one list per call in turn for names that rebind; counts calls."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        answers = self.table.get(host)
        if answers is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[min(len(self.calls), len(answers)) - 1]


class Dialler(httpcore.AsyncNetworkBackend):
    """Records the addresses dialled; those in ``refusing`` do not answer."""

    def __init__(self, refusing: frozenset[str] = frozenset()) -> None:
        self.dialled: list[str] = []
        self.refusing = refusing

    async def connect_tcp(self, host: str, port: int, *args: Any, **kwargs: Any) -> Any:
        self.dialled.append(host)
        if host in self.refusing:
            raise httpcore.ConnectError("connection refused")
        return object()  # a stream stand-in: these tests never speak HTTP over it


def guard(resolver: Resolver, dialler: httpcore.AsyncNetworkBackend | None = None,
          **options: Any) -> GuardedBackend:
    return GuardedBackend(resolve=resolver, backend=dialler, **options)


# --- the backend ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("addresses", "kinds"),
    [
        (["127.0.0.1"], ("loopback",)),
        (["169.254.169.254"], ("link-local",)),
        (["10.0.0.7", "192.168.1.1"], ("private",)),
        (["::1", "fe80::1"], ("loopback", "link-local")),
        (["::ffff:169.254.169.254"], ("link-local",)),
        (["100.64.0.1"], ("non-public",)),
    ],
)
async def test_a_name_with_only_internal_addresses_is_refused_undialled(
    addresses: list[str], kinds: tuple[str, ...]
) -> None:
    dialler = Dialler()
    backend = guard(Resolver({"cdn.example": [addresses]}), dialler)
    with pytest.raises(InternalAddress) as caught:
        await backend.connect_tcp("cdn.example", 443)
    assert caught.value.kinds == kinds
    assert caught.value.host == "cdn.example"
    assert "cdn.example resolves only to" in str(caught.value)
    assert dialler.dialled == []


async def test_internal_addresses_are_dropped_and_a_public_one_dialled() -> None:
    dialler = Dialler()
    backend = guard(Resolver({"cdn.example": [["10.0.0.1", "93.184.216.34", "::1"]]}), dialler)
    await backend.connect_tcp("cdn.example", 443)
    assert dialler.dialled == ["93.184.216.34"]


async def test_the_address_judged_is_the_address_dialled_when_the_name_rebinds() -> None:
    # A hostile DNS server: public when asked first, the metadata service when asked again.
    resolver = Resolver({"rebind.example": [["93.184.216.34"], ["169.254.169.254"]]})
    dialler = Dialler()
    backend = guard(resolver, dialler)
    await backend.connect_tcp("rebind.example", 443)
    assert dialler.dialled == ["93.184.216.34"]  # the name is not resolved again to dial
    with pytest.raises(InternalAddress):  # the next connection asks again, and is refused
        await backend.connect_tcp("rebind.example", 443)
    assert dialler.dialled == ["93.184.216.34"]
    assert resolver.calls == ["rebind.example", "rebind.example"]


async def test_the_next_public_address_is_tried_when_one_does_not_answer() -> None:
    dialler = Dialler(refusing=frozenset({"93.184.216.34"}))
    backend = guard(Resolver({"cdn.example": [["93.184.216.34", "93.184.216.35"]]}), dialler)
    await backend.connect_tcp("cdn.example", 443)
    assert dialler.dialled == ["93.184.216.34", "93.184.216.35"]


async def test_when_no_public_address_answers_the_last_failure_is_a_connect_error() -> None:
    dialler = Dialler(refusing=frozenset({"93.184.216.34", "93.184.216.35"}))
    backend = guard(Resolver({"cdn.example": [["93.184.216.34", "93.184.216.35"]]}), dialler)
    with pytest.raises(httpcore.ConnectError):
        await backend.connect_tcp("cdn.example", 443)
    assert len(dialler.dialled) == 2


async def test_a_name_that_does_not_resolve_is_a_connect_error() -> None:
    backend = guard(Resolver({"empty.example": [[]]}), Dialler())
    with pytest.raises(httpcore.ConnectError, match=r"cannot resolve nowhere\.example"):
        await backend.connect_tcp("nowhere.example", 443)
    with pytest.raises(httpcore.ConnectError, match="resolves to no address"):
        await backend.connect_tcp("empty.example", 443)


async def test_a_resolver_that_hangs_is_a_connect_timeout() -> None:
    async def hang(host: str, port: int) -> Sequence[str]:
        await anyio.sleep_forever()
        raise AssertionError

    backend = GuardedBackend(resolve=hang, backend=Dialler())
    with pytest.raises(httpcore.ConnectTimeout):
        await backend.connect_tcp("cdn.example", 443, timeout=0.01)


async def test_the_system_resolver_is_asked_for_stream_addresses() -> None:
    found = await resolve_host("localhost", 80)
    assert found and all(host_kind(address) == "loopback" for address in found)
    assert len(found) == len(set(found))


def test_a_policy_allowing_internal_hosts_needs_no_guard() -> None:
    transport = asset_transport(AssetPolicy(allow_private=True), LIMITS)
    assert type(transport) is httpx.AsyncHTTPTransport


# --- downloads over real loopback ----------------------------------------------------------------


def video(exchange: Exchange) -> None:
    exchange.start(200, {"Content-Type": "video/mp4", "Content-Length": str(len(MP4))})
    exchange.write(MP4)


async def _no_wait(seconds: float) -> None:
    pass


def downloader(out: Path, backend: GuardedBackend) -> Downloader:
    return Downloader(
        out,
        asset_policy=PUBLIC_HTTP,
        transport=asset_transport(PUBLIC_HTTP, LIMITS, guard=backend),
        policy=EIGHT,
        sleep=_no_wait,
    )


def loopback_is_public(address: str) -> str | None:
    """A judge for tests that need a "public" host to serve them: 127.0.0.1 passes, every other
    internal address is what it is."""
    return None if address == "127.0.0.1" else host_kind(address)


async def refused(dl: Downloader, url: str) -> DownloadError:
    with pytest.raises(DownloadError) as caught:
        await dl.download("item", 0, url, "video")
    error = caught.value
    assert error.info.category is Category.SERVER and not error.info.retryable
    assert error.attempts == 1  # refused once, not retried as a network failure
    assert "sig=" not in error.info.message
    return error


async def test_e2e_a_name_pointing_at_loopback_is_refused_before_any_request(
    tmp_path: Path,
) -> None:
    with LoopbackServer(video) as server:
        port = server.url.rsplit(":", 1)[1]
        backend = guard(Resolver({"assets.example": [["127.0.0.1"]]}))
        async with downloader(tmp_path, backend) as dl:
            error = await refused(dl, f"http://assets.example:{port}/a.mp4?sig=s3cret")
    assert server.requests == []
    assert "assets.example resolves only to loopback addresses" in error.info.message
    assert "refused" in error.info.message
    assert error.info.hint


async def test_e2e_a_public_name_downloads_through_the_guard(tmp_path: Path) -> None:
    with LoopbackServer(video) as server:
        port = server.url.rsplit(":", 1)[1]
        resolver = Resolver({"assets.example": [["127.0.0.1"]]})
        backend = guard(resolver, judge=loopback_is_public)
        async with downloader(tmp_path, backend) as dl:
            asset = await dl.download("item", 0, f"http://assets.example:{port}/a.mp4", "video")
    assert (tmp_path / asset.path).read_bytes() == MP4
    assert server.requests == ["GET /a.mp4"]
    assert resolver.calls == ["assets.example"]


async def test_e2e_a_redirect_to_a_name_pointing_inside_is_refused_once(tmp_path: Path) -> None:
    def to_metadata(exchange: Exchange) -> None:
        exchange.start(302, {"Location": f"http://meta.example:{port}/latest/meta-data/",
                             "Content-Length": "0"})

    port = ""
    with LoopbackServer(to_metadata) as server:
        port = server.url.rsplit(":", 1)[1]
        resolver = Resolver({"cdn.example": [["127.0.0.1"]],
                             "meta.example": [["169.254.169.254"]]})
        async with downloader(tmp_path, guard(resolver, judge=loopback_is_public)) as dl:
            error = await refused(dl, f"http://cdn.example:{port}/a.mp4?sig=s3cret")
    assert server.requests == ["GET /a.mp4?sig=s3cret"]
    assert "redirected to meta.example" in error.info.message
    assert "link-local" in error.info.message


async def test_e2e_the_default_downloader_asks_the_system_resolver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The name is the test's, the answer comes through anyio's resolver: the downloader built
    # without a transport guards its connections by default.
    real = anyio.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, **kwargs: Any) -> Any:
        return await real("127.0.0.1" if host == "assets.example" else host, port, **kwargs)

    monkeypatch.setattr(anyio, "getaddrinfo", getaddrinfo)
    with LoopbackServer(video) as server:
        port = server.url.rsplit(":", 1)[1]
        async with Downloader(tmp_path, asset_policy=PUBLIC_HTTP, policy=EIGHT,
                              sleep=_no_wait) as dl:
            error = await refused(dl, f"http://assets.example:{port}/a.mp4")
    assert server.requests == []
    assert "loopback" in error.info.message
