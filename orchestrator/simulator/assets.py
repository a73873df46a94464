"""Asset URLs as a CDN with hotlink protection hands them out: signed, and valid for a while.

With ``SimConfig.asset_url_ttl`` set, each task answer carries asset URLs signed at that moment::

    /assets/<task_id>/<index>.<suffix>?exp=<clock time>&sig=<hmac-sha256, hex>

``exp`` is on the simulator's clock (``SimConfig.clock``), so a test expires a URL by moving its
fake clock; the signature covers the path and ``exp``, so a client cannot extend or move a URL.
Without a TTL, URLs are plain and never expire (the query string is ignored).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Callable
from urllib.parse import parse_qs, urlencode

#: What a CDN's hotlink protection (or a captive portal) serves instead of the file: a web page
#: with a 200 status. The ``wrong_type`` asset fault answers this.
HOTLINK_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Access denied</title></head>"
    b"<body><h1>Access denied</h1><p>Hotlinking is not allowed.</p></body></html>\n"
)
HOTLINK_PAGE_TYPE = "text/html; charset=utf-8"


class AssetSigner:
    """Signs asset paths with an expiry, and checks signed requests. Thread-safe (no state)."""

    def __init__(self, key: str, ttl: float | None, clock: Callable[[], float]) -> None:
        self._key = hashlib.sha256(b"kling-simulator-assets:" + key.encode()).digest()
        self.ttl = ttl
        self._clock = clock

    def query(self, path: str) -> str:
        """The query string (with its ``?``) to append to ``path``; empty without a TTL."""
        if self.ttl is None:
            return ""
        expires = f"{self._clock() + self.ttl:.3f}"
        return "?" + urlencode({"exp": expires, "sig": self._sign(path, expires)})

    def refusal(self, path: str, query: str) -> str | None:
        """Why a request for ``path`` with ``query`` must be refused (403), or None to serve it."""
        if self.ttl is None:
            return None
        params = parse_qs(query)
        expires = params.get("exp", [""])[0]
        signature = params.get("sig", [""])[0]
        if not expires or not signature:
            return "asset URL is not signed"
        if not hmac.compare_digest(signature, self._sign(path, expires)):
            return "asset URL signature is invalid"
        try:
            deadline = float(expires)
        except ValueError:
            return "asset URL signature is invalid"
        if not math.isfinite(deadline) or self._clock() >= deadline:
            return "asset URL has expired"
        return None

    def _sign(self, path: str, expires: str) -> str:
        message = f"{path}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]
