"""Where asset downloads may go: the scheme and host rules for asset URLs and their redirects.

An asset URL comes from the provider's answer, and each redirect from whatever host served the
previous hop: either could point the downloader at this machine or its network (a cloud's
metadata service at 169.254.169.254, an admin page on 10.0.0.1), at another scheme
(``file://``), or round in a loop. So downloads follow redirects themselves, and every URL they
would request, the first one included, passes :func:`refusal` first:

    scheme   https; http only when the policy allows plain http
    host     not an internal address, unless the policy allows them: loopback (127/8, ::1,
             "localhost", "*.localhost"), link-local (169.254/16, fe80::/10), private (10/8,
             172.16/12, 192.168/16, fc00::/7), unspecified (0.0.0.0, ::), multicast, or any
             other address not globally routable (100.64/10, documentation ranges, reserved)
    hops     at most ``max_hops`` requests per attempt: the asset's URL and its redirects

The exemption is for providers that are themselves internal: the bundled simulator (and any
provider on loopback or a private network) serves its assets from the same host, often over
plain http. :meth:`AssetPolicy.for_provider` derives it from the provider's base URL.

Hosts are judged here as written (literal addresses, in every form the system resolver reads as
one: ``127.1``, ``2130706433``, ``0x7f.0.0.1``, ``[::ffff:127.0.0.1]``), never resolved. A name
that resolves to an internal address is caught where the downloader connects: see
asset_network.py, which judges each address with :func:`host_kind` before dialling it.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import unquote

import httpx

__all__ = [
    "DEFAULT_MAX_HOPS",
    "REDIRECT_STATUSES",
    "AssetPolicy",
    "host_kind",
    "redirect_method",
    "redirect_target",
    "refusal",
]

#: Answers whose Location is the next hop.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
#: Requests one download attempt may make: the asset's URL and up to four redirects. CDNs
#: redirect once or twice; a loop costs this many requests, not httpx's 21.
DEFAULT_MAX_HOPS = 5

#: What inet_aton (and so the system resolver) reads as an IPv4 address: one to four parts,
#: decimal, octal or hex.
_INET_ATON = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}")
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class AssetPolicy:
    """Where downloads may go. The default is the strict one, for a provider on the internet."""

    #: Internal hosts (loopback, link-local, private, ...) may be downloaded from.
    allow_private: bool = False
    #: Plain http is allowed beside https.
    allow_http: bool = False
    max_hops: int = DEFAULT_MAX_HOPS

    def __post_init__(self) -> None:
        if self.max_hops < 1:
            raise ValueError("max_hops must be >= 1")

    @classmethod
    def for_provider(cls, base_url: str) -> AssetPolicy:
        """The policy for a provider at ``base_url``: internal hosts are allowed only when the
        provider is itself on one, plain http only when the provider is reached over it."""
        try:
            url = httpx.URL(base_url)
        except httpx.InvalidURL:
            return cls()
        return cls(
            allow_private=host_kind(url.host) is not None,
            allow_http=url.scheme == "http",
        )


def _literal_ip(host: str) -> _IP | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _INET_ATON.fullmatch(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def host_kind(host: str) -> str | None:
    """What kind of internal host ``host`` is ("loopback", "link-local", "private",
    "unspecified", "multicast", "non-public"), or None for a public address or a name."""
    name = unquote(host).strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
    if name == "localhost" or name.endswith(".localhost"):
        return "loopback"
    ip = _literal_ip(name)
    if ip is None:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1 on the wire
    for kind, found in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
    ):
        if found:
            return kind
    return None if ip.is_global and not ip.is_reserved else "non-public"


def refusal(policy: AssetPolicy, url: httpx.URL) -> str | None:
    """Why ``url`` may not be requested under ``policy``, or None when it may."""
    schemes = ("https", "http") if policy.allow_http else ("https",)
    if url.scheme not in schemes:
        allowed = " or ".join(f"{scheme}://" for scheme in schemes)
        return f"{url.scheme or 'no'} scheme, not {allowed}"
    if not url.host:
        return "no host"
    kind = host_kind(url.host)
    if kind is not None and not policy.allow_private:
        return f"{url.host} is a {kind} address"
    return None


def redirect_target(current: httpx.URL, location: str) -> httpx.URL:
    """The URL a Location header names, relative ones resolved against ``current``
    (httpx.InvalidURL when it is not a URL)."""
    target = current.join(httpx.URL(location.strip()))
    if not target.fragment and current.fragment:
        target = target.copy_with(fragment=current.fragment)  # RFC 9110 section 10.2.2
    return target


def redirect_method(method: str, status: int) -> str:
    """The method of the next hop (RFC 9110 section 15.4, as browsers and httpx do it)."""
    if status == 303 and method != "HEAD":
        return "GET"
    if status in (301, 302) and method == "POST":
        return "GET"
    return method
