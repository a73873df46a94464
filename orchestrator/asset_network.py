"""The downloader's connections: every address a host name resolves to is judged before it is
dialled, and the connection goes to the address that was judged.

:func:`~orchestrator.asset_policy.refusal` judges a URL's host as written. A name is not an
address: ``assets.example.com`` may resolve to 127.0.0.1 or 169.254.169.254, and a hostile DNS
server may answer a public address when asked first and an internal one when the connection is
made (DNS rebinding). So, when the policy does not allow internal hosts, the downloader's
transport resolves each name itself (:class:`GuardedBackend`), drops the internal addresses
(:func:`~orchestrator.asset_policy.host_kind`), refuses the host when none is left
(:class:`InternalAddress`) and connects to the first address left that answers: the address
judged is the address dialled, so a second answer from the resolver never reaches the socket.
TLS still names the host (SNI and certificate check use the URL's host, not the address).

The transport has no proxy (an explicit transport ignores the environment's), so every
connection is a direct one and passes here.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence

import anyio
import httpcore
import httpx

from orchestrator.asset_policy import AssetPolicy, host_kind

__all__ = ["GuardedBackend", "InternalAddress", "Resolve", "asset_transport", "resolve_host"]

#: Resolves a host name and port to the addresses to try, in order.
Resolve = Callable[[str, int], Awaitable[Sequence[str]]]
_SocketOption = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)


class InternalAddress(Exception):
    """A host whose every address is internal, under a policy that refuses internal hosts."""

    def __init__(self, host: str, kinds: Sequence[str]) -> None:
        self.host = host
        self.kinds = tuple(dict.fromkeys(kinds))
        super().__init__(f"{host} resolves only to {' and '.join(self.kinds)} addresses")


async def resolve_host(host: str, port: int) -> Sequence[str]:
    """The system resolver's addresses for ``host``, in its order, each once."""
    found = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_, sockaddr in found))


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that connects only to addresses that are not internal.

    ``resolve`` and ``backend`` (the one that dials) are injectable for tests; ``judge`` says
    what kind of internal address one is, or None (:func:`host_kind`).
    """

    def __init__(
        self,
        *,
        resolve: Resolve = resolve_host,
        backend: httpcore.AsyncNetworkBackend | None = None,
        judge: Callable[[str], str | None] = host_kind,
    ) -> None:
        self._resolve = resolve
        self._backend = backend if backend is not None else httpcore.AnyIOBackend()
        self._judge = judge

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with anyio.fail_after(timeout):
                addresses = await self._resolve(host, port)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from None
        allowed: list[str] = []
        kinds: list[str] = []
        for address in addresses:
            kind = self._judge(address)
            if kind is None:
                allowed.append(address)
            else:
                kinds.append(kind)
        if not allowed:
            if not kinds:
                raise httpcore.ConnectError(f"{host} resolves to no address")
            raise InternalAddress(host, kinds)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in allowed:
            try:
                return await self._backend.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("asset downloads do not use unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._backend.sleep(seconds)


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport (its exception mapping and response streams) over a connection pool
    whose connections pass :class:`GuardedBackend`."""

    def __init__(self, limits: httpx.Limits, backend: httpcore.AsyncNetworkBackend) -> None:
        super().__init__(retries=0, limits=limits)
        # httpx builds its pool without a way to name the network backend: build the same
        # pool with one (no proxy, no retries: the downloader retries).
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            retries=0,
            network_backend=backend,
        )


def asset_transport(
    policy: AssetPolicy, limits: httpx.Limits, *, guard: GuardedBackend | None = None
) -> httpx.AsyncBaseTransport:
    """The downloader's transport under ``policy``: names resolving only to internal addresses
    are refused unless the policy allows internal hosts (then it is httpx's own transport).
    ``guard`` replaces the default :class:`GuardedBackend` (tests inject a resolver)."""
    if policy.allow_private:
        return httpx.AsyncHTTPTransport(retries=0, limits=limits)
    return _GuardedTransport(limits, guard if guard is not None else GuardedBackend())
