"""Generated files, downloaded and made durable: a batch is done only when they are safely on disk.

Providers delete generated files (Kling after 30 days, LTX 24 hours after the job ends) and their
URLs may be hotlink-protected, so every asset of a succeeded task is fetched promptly into
``<output.dir>/<item-id>/<index>.<ext>``:

1. streamed (``httpx``, no credentials: asset hosts never see the provider's ``Authorization``
   header) into ``<item-id>/.<index>.<random>.part``, hashed while written; redirects are
   followed here, not by httpx, so that every hop passes the :class:`AssetPolicy` (https, no
   internal hosts, at most ``max_hops`` requests: see asset_policy.py), the asset's own URL
   included, and every connection dials only addresses that pass it (a name resolving inside
   is refused: asset_network.py); a refused URL, hop or name, or a redirect loop, fails at
   once (never retried);
2. checked: HTTP 200; ``Content-Length`` equal to the bytes received; the magic bytes (or, when
   they are not recognised, the declared ``Content-Type``) say the expected media: video is
   MP4/QuickTime (an ``ftyp`` box at offset 4) or WebM (EBML ``1A45DFA3``), image is
   PNG/JPEG/WebP/GIF; a body that starts like a web page or JSON is never accepted;
3. ``fsync``-ed, renamed into place (``os.replace``: readers see the old file or the whole new
   one), then the directory is ``fsync``-ed (or, with ``sync_dir=False``, left for the caller
   to sync once after several files of the item: :meth:`Downloader.sync_item`). Any failure
   removes the temporary file.

A body up to ``_IN_MEMORY`` bytes (1 MiB: images, short clips) is held in memory and written,
hashed, fsync-ed and renamed in one trip to a worker thread; a larger one streams to its
temporary file a chunk at a time, hashed as it is written.

Each attempt has a total deadline (``attempt_timeout``: every hop and the whole body), beside
httpx's per-read ``timeout``: a server trickling a byte at a time ends at the deadline, a timeout
like any other. The body stops at ``max_bytes`` whether or not it declares its length.

The extension comes from the verified format, never from the URL. Downloads have their own
concurrency cap and a more generous retry budget than creates (a download costs no credits):
network errors, timeouts, 408/429/5xx (Retry-After honoured), a truncated body and a wrong
content type are retried with full-jitter backoff. 401/403/404/410 mean the URL expired or is
refused: :class:`DownloadError` with ``expired=True`` is raised at once, for the caller to query
the task again for fresh URLs and call :meth:`Downloader.download` again.

This module knows nothing about the ledger or the engine: the caller records the returned
:class:`DownloadedAsset` (its ``to_dict()``), and on a rerun calls :meth:`Downloader.verify` on
each recorded asset to download again only what is missing or fails its checksum.

Messages and logs name the item, the index and the URL without its query string (signed URLs
carry signatures there).
"""

from __future__ import annotations

import hmac
import os
import random
import re
import stat
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit, urlunsplit

import anyio
import anyio.to_thread
import httpx
import structlog

from orchestrator.asset_network import InternalAddress, asset_transport
from orchestrator.asset_policy import (
    REDIRECT_STATUSES,
    AssetPolicy,
    redirect_method,
    redirect_target,
    refusal,
)
from orchestrator.cookieless import keep_no_cookies
from orchestrator.errors import Category, ErrorInfo
from orchestrator.layout import check_item_id
from orchestrator.local_failures import LocalFailure, classify
from orchestrator.media_formats import identify
from orchestrator.part_files import (
    PART_NAME,
    PartFile,
    fsync_dir,
    hash_file,
    place_whole,
    prepare_dir,
)
from orchestrator.retry import GiveUp, Retry, RetryLoop, RetryPolicy, parse_retry_after

__all__ = [
    "DEFAULT_POLICY",
    "AssetPolicy",
    "DownloadError",
    "DownloadedAsset",
    "Downloader",
    "identify",
    "redact_url",
]

#: Downloads cost no credits: more attempts and longer waits than creates.
DEFAULT_POLICY = RetryPolicy(max_attempts=8, base_delay=1.0, max_delay=30.0)
#: Refuse bodies larger than this (a broken or hostile server must not fill the disk).
DEFAULT_MAX_BYTES = 4 * 1024**3
MEDIA = ("video", "image")

#: Seconds one attempt may take in all: 600 s is 4 MB/s for a 2.4 GB file, far above Kling's.
DEFAULT_ATTEMPT_TIMEOUT = 600.0

_CHUNK = 1024 * 1024
#: Bodies up to this many bytes are held in memory and placed in one worker-thread call.
_IN_MEMORY = 1024 * 1024
_HEAD = 64
_USER_AGENT = "kling-batch-orchestrator/0.1 (asset download)"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_QUERY = re.compile(r"\?[^\s'\"<>]*")
#: Answers meaning "this URL no longer works": expired, unsigned or refused (hotlink
#: protection), or the file is gone. A fresh query of the task gives new URLs.
_EXPIRED_STATUSES = frozenset({401, 403, 404, 410})
_HINT_REFUSED = (
    "The asset's URL or a redirect pointed where downloads never go (another scheme than https, "
    "an internal address, or a redirect loop); report it to the provider with the task id."
)
#: How long a provider keeps generated files, when the downloader is not told.
_KEEPS_FILES = "providers delete generated files after a while"


def _hint_rerun(keeps_files: str) -> str:
    return (
        "The task is not resubmitted: rerun the same manifest to download the missing files "
        f"again ({keeps_files})."
    )

_T = TypeVar("_T")


def redact_url(url: str) -> str:
    """``url`` without credentials, query string or fragment: safe for messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable URL>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class DownloadedAsset:
    """One file safely on disk: what the ledger and the report record."""

    index: int
    url: str
    #: Relative to the output directory, POSIX form, e.g. ``drone-sunrise/0.mp4``.
    path: str
    bytes: int
    #: Hex SHA-256 of the file's bytes.
    sha256: str
    #: The verified type (from the magic bytes when recognised), e.g. ``video/mp4``.
    content_type: str
    media: str = ""
    #: The file's modification time when placed (not recorded by ``to_dict``).
    mtime_ns: int | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "index": self.index,
            "url": self.url,
            "path": self.path,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "content_type": self.content_type,
        }
        if self.media:
            data["media"] = self.media
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DownloadedAsset:
        return cls(
            index=int(data["index"]),
            url=str(data["url"]),
            path=str(data["path"]),
            bytes=int(data["bytes"]),
            sha256=str(data["sha256"]),
            content_type=str(data.get("content_type", "")),
            media=str(data.get("media", "")),
        )


@dataclass(eq=False)
class DownloadError(Exception):
    """A download failed; nothing was left on disk for it. The message carries no query string.

    ``info.retryable`` says whether a later try may succeed (a rerun downloads again; the task
    is never resubmitted). ``expired``: the URL expired or is refused (401/403/404/410): query
    the task again for fresh URLs and call ``download`` again; not retried here. ``local``: the
    failure was on this machine (disk full, permissions), not the download. ``stops_batch``: a
    local failure of the whole file system (full, over quota, read-only, failing): every
    further download fails the same way, so the batch should stop (the rerun downloads what
    is missing); the caller reads ``Downloader.local_failure`` for the line it ends with.
    """

    info: ErrorInfo
    expired: bool = False
    local: bool = False
    stops_batch: bool = False
    #: Attempts made by the ``download`` call that raised.
    attempts: int = 1
    #: Server-requested wait (Retry-After), already parsed.
    retry_after: float | None = None

    def __str__(self) -> str:
        status = f" HTTP {self.info.http_status}" if self.info.http_status is not None else ""
        return f"{self.info.category}{status}: {self.info.message}"


def _unusable(message: str) -> DownloadError:
    """An asset the provider described in a way no file can be fetched or named from."""
    return DownloadError(
        ErrorInfo(
            category=Category.SERVER,
            message=message,
            retryable=False,
            hint="The provider returned an unusable asset (URL, index or type); report it to the "
            "provider with the task id.",
        )
    )


def _refused(what: str) -> DownloadError:
    """A URL the asset policy refuses, or a redirect chain it will not follow: not retried (the
    same answer would come back), not a network error."""
    return DownloadError(
        ErrorInfo(category=Category.SERVER, message=what, retryable=False, hint=_HINT_REFUSED)
    )


@dataclass(frozen=True)
class _Target:
    """Where one download comes from and goes to, and how to name it in messages."""

    item_id: str
    index: int
    url: str
    media: str
    directory: Path

    def describe(self) -> str:
        return f"item {self.item_id} asset {self.index} ({redact_url(self.url)})"


@dataclass
class _Body:
    """What one attempt received, filled in as it arrives (a deadline may stop it anywhere):
    held in ``chunks`` up to ``_IN_MEMORY`` bytes, in a part file beyond."""

    part: PartFile | None = None
    chunks: list[bytes] = field(default_factory=list)
    #: The file's bytes so far.
    size: int = 0
    head: bytes = b""
    #: Content-Length, when declared.
    length: int | None = None
    #: Bytes received, counted as Content-Length counts them.
    received: int = 0
    declared_type: str = ""


def _describe_exc(exc: BaseException) -> str:
    """The exception's type and text, without query strings (a URL in it may be signed)."""
    text = _QUERY.sub("", str(exc)).strip()
    name = type(exc).__name__
    return f"{name}: {text[:200]}" if text else name


class _BadLocation(Exception):
    """A redirect whose Location is not a URL (raised before httpx reads it as one)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


async def _check_location(response: httpx.Response) -> None:
    # httpx parses a redirect's Location even when it does not follow it, and calls a bad one
    # a protocol error: a network error, retried, when it is the server's answer, and final.
    if response.has_redirect_location:
        try:
            httpx.URL(response.headers["Location"])
        except httpx.InvalidURL:
            raise _BadLocation(response.status_code) from None


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    try:
        length = int(value.strip())
    except ValueError:
        return None
    return length if length >= 0 else None


class Downloader:
    """Downloads assets into ``output_dir`` under its own concurrency cap and retry policy.

    Usable as ``async with Downloader(...) as downloader:``; otherwise call ``aclose()``.
    ``stats`` counts ``requests`` (HTTP requests, each redirect hop one), ``retries``, ``files``
    and ``bytes`` (of files placed), and ``expired`` (URLs refused as expired).

    ``timeout`` bounds each network operation (connect, one read), ``attempt_timeout`` an
    attempt in all; ``asset_policy`` says where URLs and redirects may lead (the caller builds
    it, e.g. :meth:`AssetPolicy.for_provider`); the default allows only public https hosts.
    """

    def __init__(
        self,
        output_dir: Path,
        *,
        concurrency: int = 4,
        timeout: float = 120.0,
        attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT,
        asset_policy: AssetPolicy | None = None,
        policy: RetryPolicy = DEFAULT_POLICY,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rand: Callable[[], float] = random.random,
        max_bytes: int | None = DEFAULT_MAX_BYTES,
        log: Any = None,
        keeps_files: str = _KEEPS_FILES,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if policy.max_attempts < 1:
            raise ValueError("policy.max_attempts must be >= 1")
        if attempt_timeout <= 0:
            raise ValueError("attempt_timeout must be > 0")
        self.output_dir = Path(output_dir)
        self.attempt_timeout = attempt_timeout
        self.asset_policy = asset_policy if asset_policy is not None else AssetPolicy()
        self.concurrency = concurrency
        self.policy = policy
        self.max_bytes = max_bytes
        #: how long the provider keeps generated files, as hints say it
        self.keeps_files = keeps_files
        self._hint_rerun = _hint_rerun(keeps_files)
        self.stats: Counter[str] = Counter()
        #: The first failure of this machine's disk that stopped a download for good (see
        #: DownloadError.stops_batch); None while there was none.
        self.local_failure: LocalFailure | None = None
        self._sleep = sleep
        self._rand = rand
        self._log = log if log is not None else structlog.get_logger("orchestrator")
        # Created in the running event loop, on first use.
        self._limiter: anyio.CapacityLimiter | None = None
        #: item folders made (or found) by this downloader: not looked at again
        self._ready: set[Path] = set()
        if transport is None:
            pool = max(concurrency, 10)
            transport = asset_transport(
                self.asset_policy,
                httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            )
        # No auth and no base URL: asset URLs are absolute, public or signed, and must never
        # receive the provider's credentials. Redirects are followed by _fetch, under the
        # asset policy: httpx would follow them anywhere, 20 times.
        self._client = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={
                "User-Agent": _USER_AGENT,
                "Accept": "*/*",
                # Content-Length then counts the file's own bytes.
                "Accept-Encoding": "identity",
            },
            event_hooks={"response": [_check_location]},
        )
        keep_no_cookies(self._client)  # an asset host's cookies are never sent back

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    # --- paths ---------------------------------------------------------------------------

    def item_dir(self, item_id: str) -> Path:
        """The directory of ``item_id``'s files; ValueError if unsafe or outside output_dir."""
        check_item_id(item_id)
        root = self.output_dir.resolve()
        directory = (root / item_id).resolve()
        if directory.parent != root:
            raise ValueError(f"item id {item_id!r} resolves outside the output directory")
        return directory

    def _record_path(self, relative: str) -> Path | None:
        """The file a ledger record names, or None when it is not safely inside output_dir."""
        if not relative or "\\" in relative or "\x00" in relative:
            return None
        posix = PurePosixPath(relative)
        if posix.is_absolute() or ".." in posix.parts or len(posix.parts) != 2:
            return None
        root = self.output_dir.resolve()
        path = (root / Path(*posix.parts)).resolve()
        if not path.is_relative_to(root) or path == root:
            return None
        return path

    # --- leftovers -----------------------------------------------------------------------

    def remove_stale_parts(self, item_id: str) -> int:
        """Remove the temporary files a killed run left in ``item_id``'s folder; how many.

        Only regular files named like ours (``.<index>.<16 hex>.part``) go; anything else in
        the folder is left alone. Call it before downloading the item's files, never while one
        of them is being downloaded (its temporary file would go too). Blocking.
        """
        directory = self.item_dir(item_id)
        removed = 0
        try:
            entries = list(os.scandir(directory))
        except OSError:
            return 0  # no folder yet: nothing left over
        for entry in entries:
            if not PART_NAME.fullmatch(entry.name):
                continue
            try:
                if entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed += 1
            except OSError:
                continue  # best effort: a leftover costs disk space, not correctness
        return removed

    async def aremove_stale_parts(self, item_id: str) -> int:
        """:meth:`remove_stale_parts` in a worker thread, for async callers."""
        return await anyio.to_thread.run_sync(self.remove_stale_parts, item_id)

    # --- verify --------------------------------------------------------------------------

    def verify(self, record: Mapping[str, Any]) -> bool:
        """True when the file a record names (``path``, ``bytes``, ``sha256``, as in
        :meth:`DownloadedAsset.to_dict`) is on disk, inside output_dir, with that size and
        checksum. Streams the file; blocking (wrap in a thread from async code if it is big)."""
        try:
            relative, size, expected = record["path"], record["bytes"], record["sha256"]
        except (KeyError, TypeError):
            return False
        if not isinstance(relative, str) or not isinstance(expected, str):
            return False
        expected = expected.strip().lower()
        if not _SHA256_HEX.fullmatch(expected):
            return False
        if isinstance(size, bool) or not isinstance(size, int):
            return False
        path = self._record_path(relative)
        if path is None:
            return False
        try:
            info = path.stat()
            if not stat.S_ISREG(info.st_mode) or info.st_size != size:
                return False
            actual_size, actual = hash_file(path)
        except OSError:
            return False
        return actual_size == size and hmac.compare_digest(actual, expected)

    async def averify(self, record: Mapping[str, Any]) -> bool:
        """:meth:`verify` in a worker thread, for async callers."""
        return await anyio.to_thread.run_sync(self.verify, record)

    # --- download ------------------------------------------------------------------------

    async def sync_item(self, item_id: str) -> None:
        """Make the names of ``item_id``'s files durable (one fsync of its folder, best effort
        as every folder sync): call it after downloads made with ``sync_dir=False``, before
        recording them."""
        await anyio.to_thread.run_sync(fsync_dir, self.item_dir(item_id))

    async def download(
        self, item_id: str, index: int, url: str, media: str, *, sync_dir: bool = True
    ) -> DownloadedAsset:
        """Download asset ``index`` of ``item_id`` from ``url`` and return it, verified and on
        disk; with ``sync_dir=False`` its folder is not fsync-ed (call :meth:`sync_item` once
        after the item's files). Every failure is a DownloadError, arguments no file can be made
        from included
        (an unsafe item id, an index that is not an int >= 0, an unknown media, a URL that is
        not http(s), or one the asset policy refuses): those are not retryable and send nothing.
        Nothing else escapes: these arguments come from the provider's answers and the ledger,
        and a bad one must fail the item's download, not crash the run.
        """
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise _unusable(f"item {item_id!r}: asset index {index!r} is not an int >= 0")
        if media not in MEDIA:
            raise _unusable(f"item {item_id!r} asset {index}: media {media!r} is not in {MEDIA}")
        try:
            directory = self.item_dir(item_id)
        except ValueError as exc:
            raise DownloadError(
                ErrorInfo(
                    category=Category.VALIDATION,
                    message=f"cannot download asset {index}: {exc}",
                    retryable=False,
                    hint=(
                        "Item ids must be safe directory names inside output.dir ([A-Za-z0-9._-], "
                        "no symlink out of it): fix the id or the directory, then rerun."
                    ),
                ),
                local=True,
            ) from None
        target = _Target(item_id, index, url, media, directory)
        scheme = urlsplit(url).scheme.lower() if isinstance(url, str) else ""
        if scheme not in ("http", "https"):
            raise _unusable(f"{target.describe()}: not an http(s) URL")
        try:
            why = refusal(self.asset_policy, httpx.URL(url))
        except httpx.InvalidURL:
            why = "not a valid URL"
        if why is not None:
            raise _refused(f"{target.describe()}: refused: {why}")
        if directory not in self._ready:
            await self._local(target, prepare_dir, directory)
            self._ready.add(directory)
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.concurrency)
        limiter = self._limiter
        loop = RetryLoop(self.policy, self._rand)  # no budget: a download costs no credits
        while True:
            try:
                # The slot is held for one attempt, not across backoff sleeps.
                async with limiter:
                    return await self._attempt(target, sync_dir)
            except DownloadError as error:
                error.attempts = loop.tries + 1
                if error.expired:
                    self.stats["expired"] += 1
                    raise
                if error.local:
                    raise
                step = loop.failed(error.info, error.retry_after)
                if step is GiveUp.EXHAUSTED:
                    error.info = replace(
                        error.info,
                        message=f"{error.info.message} (gave up after {loop.tries} attempts)",
                    )
                if not isinstance(step, Retry):
                    raise
                self.stats["retries"] += 1
                self._log.info(
                    "asset.download_retry",
                    item=item_id,
                    index=index,
                    attempt=loop.tries,
                    delay=round(step.delay, 3),
                    category=str(error.info.category),
                    http_status=error.info.http_status,
                    message=error.info.message,
                )
                await self._sleep(step.delay)

    async def _attempt(self, target: _Target, sync_dir: bool) -> DownloadedAsset:
        body = _Body()
        try:
            # The deadline covers the network only: a file being committed is never cut off.
            with anyio.move_on_after(self.attempt_timeout) as deadline:
                await self._fetch(target, body)
            if deadline.cancelled_caught:
                raise self._error(
                    target,
                    Category.TIMEOUT,
                    f"not downloaded within {self.attempt_timeout:g} s (output.download_timeout; "
                    f"{body.received} bytes received)",
                )
            if body.length is not None and body.received != body.length:
                raise self._error(
                    target,
                    Category.NETWORK,
                    f"truncated body: {body.received} of {body.length} bytes received",
                )
            head, declared = body.head, body.declared_type
            found = identify(target.media, declared, head) if body.size else None
            if found is None:
                raise self._error(
                    target,
                    Category.ASSET_MISMATCH,
                    f"not a {target.media} file (Content-Type {declared or 'missing'!r}, "
                    f"{body.size} bytes, first bytes {head[:8].hex() or 'none'})",
                    hint=(
                        f"The server sent something other than a {target.media} (often a "
                        "hotlink-protection or error page). " + self._hint_rerun
                    ),
                )
            name = f"{target.index}.{found.ext}"
            if body.part is None:
                placed = body.part = await self._local(
                    target, self._place_whole, target, b"".join(body.chunks), name, sync_dir
                )
            else:
                placed = body.part
                final = target.directory / name
                await self._local(target, lambda: placed.commit(final, sync_dir=sync_dir))
            part = placed
            self.stats["files"] += 1
            self.stats["bytes"] += part.size
            return DownloadedAsset(
                index=target.index,
                url=target.url,
                path=f"{target.item_id}/{name}",
                bytes=part.size,
                sha256=part.digest.hexdigest(),
                content_type=found.content_type,
                media=target.media,
                mtime_ns=part.mtime_ns,
            )
        except DownloadError:
            raise
        except httpx.TimeoutException as exc:
            what = f"timed out ({_describe_exc(exc)})"
            raise self._error(target, Category.TIMEOUT, what) from None
        except (httpx.RequestError, OSError) as exc:
            # Connection failures, a body cut short (RemoteProtocolError); an OSError here comes
            # from the network (local file errors are wrapped in _local).
            raise self._error(target, Category.NETWORK, _describe_exc(exc)) from None
        finally:
            if body.part is not None:
                body.part.discard()

    async def _fetch(self, target: _Target, body: _Body) -> None:
        """The asset's URL, then each redirect the policy allows, until an answer that is not a
        redirect: its body goes into ``body``."""
        url = httpx.URL(target.url)
        method = "GET"
        for _ in range(self.asset_policy.max_hops):
            self.stats["requests"] += 1
            try:
                response = await self._client.send(
                    self._client.build_request(method, url), stream=True
                )
            except _BadLocation as exc:
                raise _refused(
                    f"{target.describe()}: HTTP {exc.status} to a Location that is not a URL"
                ) from None
            except InternalAddress as exc:
                what = "" if url == httpx.URL(target.url) else f" (redirected to {url.host})"
                raise _refused(f"{target.describe()}{what}: refused: {exc}") from None
            try:
                status = response.status_code
                location = response.headers.get("Location")
                if status not in REDIRECT_STATUSES or location is None:
                    await self._receive(target, response, body)
                    return
            finally:
                await response.aclose()
            try:
                following = redirect_target(url, location)
            except httpx.InvalidURL:
                raise _refused(
                    f"{target.describe()}: HTTP {status} to a Location that is not a URL"
                ) from None
            why = refusal(self.asset_policy, following)
            if why is not None:
                raise _refused(
                    f"{target.describe()}: HTTP {status} redirect to "
                    f"{redact_url(str(following))} refused: {why}"
                )
            url, method = following, redirect_method(method, status)
        raise _refused(
            f"{target.describe()}: still redirected after {self.asset_policy.max_hops} requests "
            "(a redirect loop?)"
        )

    async def _receive(self, target: _Target, response: httpx.Response, body: _Body) -> None:
        self._check_status(target, response)
        body.length = length = _content_length(response)
        if self.max_bytes is not None and length is not None and length > self.max_bytes:
            raise self._too_large(target)
        # Content-Length counts the bytes on the wire: the file's own, unless the server
        # compressed them in spite of Accept-Encoding: identity.
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        plain = encoding in ("", "identity")
        body.declared_type = response.headers.get("Content-Type", "")
        async for chunk in response.aiter_bytes(_CHUNK):
            if len(body.head) < _HEAD:
                body.head += chunk[: _HEAD - len(body.head)]
            # Checked on every chunk, so a body without Content-Length stops here too.
            if self.max_bytes is not None and body.size + len(chunk) > self.max_bytes:
                raise self._too_large(target)
            if body.part is None and body.size + len(chunk) <= _IN_MEMORY:
                body.chunks.append(chunk)
            else:
                await self._spill(target, body, chunk)
            body.size += len(chunk)
            body.received = body.size if plain else response.num_bytes_downloaded

    async def _spill(self, target: _Target, body: _Body, chunk: bytes) -> None:
        """Write ``chunk`` to the attempt's part file, created (with what memory held) on the
        first chunk past ``_IN_MEMORY``."""
        if body.part is None:
            held = b"".join(body.chunks)
            body.chunks.clear()
            # Shielded: a deadline landing while the file is created would lose its name, and
            # the file would stay behind.
            with anyio.CancelScope(shield=True):
                body.part = await self._local(
                    target, PartFile.create, target.directory, target.index
                )
            chunk = held + chunk
        part = body.part
        assert part is not None
        await self._local(target, part.write, chunk)

    @staticmethod
    def _place_whole(target: _Target, data: bytes, name: str, sync_dir: bool) -> PartFile:
        return place_whole(target.directory, target.index, data, name, sync_dir=sync_dir)

    def _check_status(self, target: _Target, response: httpx.Response) -> None:
        status = response.status_code
        if status == 200:
            return
        retry_after = parse_retry_after(response.headers.get("Retry-After"), time.time())
        if status in _EXPIRED_STATUSES:
            raise DownloadError(
                ErrorInfo(
                    category=Category.ASSET_MISMATCH,
                    message=f"{target.describe()}: URL expired or refused (HTTP {status})",
                    retryable=True,
                    hint=(
                        "The download URL expired or was refused; the task is queried again for "
                        "fresh URLs. If that keeps failing, the provider may have deleted the "
                        f"files ({self.keeps_files})."
                    ),
                    http_status=status,
                ),
                expired=True,
            )
        if status == 429:
            category, retryable = Category.RATE_LIMIT, True
        elif status == 408:
            category, retryable = Category.TIMEOUT, True
        elif status >= 500:
            category, retryable = Category.SERVER, True
        else:
            category, retryable = Category.SERVER, False
        raise DownloadError(
            ErrorInfo(
                category=category,
                message=f"{target.describe()}: HTTP {status}",
                retryable=retryable,
                hint=self._hint_rerun,
                http_status=status,
            ),
            retry_after=retry_after,
        )

    def _error(
        self, target: _Target, category: Category, what: str, *, hint: str | None = None
    ) -> DownloadError:
        return DownloadError(
            ErrorInfo(
                category=category,
                message=f"{target.describe()}: {what}",
                retryable=True,
                hint=hint if hint is not None else self._hint_rerun,
            )
        )

    def _too_large(self, target: _Target) -> DownloadError:
        return DownloadError(
            ErrorInfo(
                category=Category.ASSET_MISMATCH,
                message=f"{target.describe()}: larger than the {self.max_bytes}-byte limit",
                retryable=False,
                hint="The server sent more than any generated file should be; report it.",
            )
        )

    async def _local(self, target: _Target, func: Callable[..., _T], *args: Any) -> _T:
        """Run a blocking file operation in a worker thread; its OSError is a local failure."""
        try:
            return await anyio.to_thread.run_sync(func, *args)
        except OSError as exc:
            failure = classify(exc, path=target.directory)
            everywhere = failure is not None and failure.cause.everywhere
            if everywhere and self.local_failure is None:
                self.local_failure = failure
            raise DownloadError(
                ErrorInfo(
                    category=Category.VALIDATION,
                    message=(
                        f"{target.describe()}: cannot write under {self.output_dir}: "
                        f"{exc.strerror or type(exc).__name__}"
                    ),
                    retryable=everywhere,
                    hint=(
                        "Check that output.dir is writable and has free space, then rerun: "
                        "only missing files are downloaded."
                    ),
                ),
                local=True,
                stops_batch=everywhere,
            ) from None
