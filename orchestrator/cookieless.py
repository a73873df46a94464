"""httpx clients that keep no cookies: neither a provider's API nor an asset host needs them,
and httpx would otherwise copy every answer into urllib's cookie machinery (about 4% of the
CPU a create costs, measured) and send what it kept on later requests."""

from __future__ import annotations

import httpx

__all__ = ["keep_no_cookies"]


class _NoCookies(httpx.Cookies):
    """A jar that takes nothing from answers."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


def keep_no_cookies(client: httpx.AsyncClient) -> None:
    """Make ``client`` ignore every Set-Cookie. httpx has no public switch: its jar is
    replaced where it keeps it; a version that keeps it elsewhere is left as it is (its
    cookies then work as httpx's do, which is correct, only slower)."""
    if isinstance(getattr(client, "_cookies", None), httpx.Cookies):
        client._cookies = _NoCookies()
