"""Collection: a succeeded task's assets counted against what was asked, then put safely on
disk.

A task that returned fewer assets than asked is ``partial`` (it keeps those it returned), none
at all ``failed``. Until every file is verified on disk an item is not done. A rerun fetches
only the files missing or failing their checksum; an expired or refused URL gets one fresh URL
from a new status read; a download never resubmits its task.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import replace
from typing import Any

from orchestrator.config import Item
from orchestrator.downloads import DownloadedAsset, Downloader, DownloadError
from orchestrator.engine import verdicts
from orchestrator.engine.batch import Batch, error_fields
from orchestrator.errors import ErrorInfo, ProviderError, asset_mismatch, downloads_pending
from orchestrator.ledger_api import AssetRecord, ItemRecord, ItemState
from orchestrator.providers.base import Task, valid_asset_indexes

#: Ledger states of a task that returned files (a partial one keeps those it returned).
FINISHED_WITH_FILES = (ItemState.SUCCEEDED, ItemState.PARTIAL)


def _mtime_ns(downloader: Downloader, relative: str) -> int | None:
    try:
        return (downloader.output_dir / relative).stat().st_mtime_ns
    except OSError:
        return None


def _looks_intact(downloader: Downloader, asset: AssetRecord) -> bool:
    """Cheap check (like make or rsync): the file is there with the size and modification time
    recorded when it was downloaded. Only files failing this are hashed on a rerun, so a rerun
    of a finished batch does not read every video again."""
    if asset.path is None or not asset.downloaded:
        return False
    try:
        info = os.stat(downloader.output_dir / asset.path)
    except OSError:
        return False
    return info.st_size == asset.bytes and info.st_mtime_ns == asset.mtime_ns


def _numbered(records: list[AssetRecord]) -> list[AssetRecord]:
    """Asset records whose indexes can name files: as they are, or renumbered by position
    (the provider's order) when an index is invalid or repeated, as providers renumber the
    assets they parse (records from an older version, or from another provider, may not be)."""
    if valid_asset_indexes(record.index for record in records):
        return records
    return [replace(record, index=position) for position, record in enumerate(records)]


class Collector:
    def __init__(
        self, batch: Batch, downloader: Downloader | None, *, verify_files: bool = False
    ) -> None:
        """``verify_files``: hash every recorded file of the finished items and fetch again
        those whose sha256 differs (by default only files whose size or modification time
        changed are hashed, so that a rerun of a finished batch does not read every video)."""
        self._b = batch
        self._downloader = downloader
        self._verify_files = verify_files
        #: per item being downloaded, the asset URLs as the provider sent them (by index)
        self._live_urls: dict[str, dict[int, str]] = {}

    @property
    def downloads(self) -> bool:
        return self._downloader is not None

    @property
    def verifies_every_file(self) -> bool:
        return self._verify_files and self._downloader is not None

    def verify(self, item: Item, task: Task, log: Any) -> bool:
        """Record the verdict on a succeeded task; True when it has assets to download."""
        expected = item.request.expected_assets
        assets = [AssetRecord(a.index, a.url, a.media) for a in task.assets]
        # The ledger keeps the URLs scrubbed of credentials (a proxy may echo the key in them);
        # this run downloads from the ones the provider sent.
        if self._downloader is not None:
            self._live_urls[item.id] = {a.index: a.url for a in task.assets}
        got = len(assets)
        # Until every file is verified on disk the item is not done: a run that ends before
        # its downloads (interrupt, kill) must not report it succeeded.
        pending = downloads_pending() if self._downloader is not None else None
        if got == 0:
            info = asset_mismatch(expected, 0, item.request.kind.media)
            self._b.ledger.finish(item.id, ItemState.FAILED, assets=assets, error=info)
            log.warning("item.failed", **error_fields(info))
            return False
        if got < expected:
            info = asset_mismatch(expected, got, item.request.kind.media)
            self._b.ledger.finish(
                item.id, ItemState.PARTIAL, assets=assets, error=info, download_error=pending
            )
            log.warning("item.partial", expected=expected, got=got)
        else:
            self._b.ledger.finish(
                item.id, ItemState.SUCCEEDED, assets=assets, download_error=pending
            )
            log.info("item.succeeded", assets=got)
        return True

    def needs_download(self, rec: ItemRecord) -> bool:
        """A finished item some of whose files are not known to be safely on disk (by the cheap
        check: see _looks_intact)."""
        if self._downloader is None or rec.state not in FINISHED_WITH_FILES:
            return False
        return rec.download_error is not None or not all(_looks_intact(self._downloader, a)
                                                          for a in rec.assets)

    async def download(self, item: Item, log: Any, *, leftovers: bool = False) -> None:
        """Put every asset of a finished item safely on disk; a rerun fetches only the files
        that are missing or fail their checksum (hashed when their size or modification time
        changed, or every one with verify_files). Failures are recorded on the item (its
        verdict stays), and the rerun downloads again: the task is never resubmitted for a
        file."""
        downloader = self._downloader
        assert downloader is not None
        rec = self._b.ledger.get(item.id)
        records = _numbered(list(rec.assets))
        marked = rec.download_error  # what the ledger says about the files right now
        self._b.progress.set(item.id, "downloading")
        if leftovers:
            # Temporary files of a run killed mid-download (its own cleanup never ran): only
            # an item finished in an earlier run can have them (``leftovers``); a task that
            # ended in this run has had no download yet. None of this item's files is being
            # downloaded now: its downloads are this loop's.
            removed = await downloader.aremove_stale_parts(item.id)
            if removed:
                log.info("item.stale_parts_removed", files=removed)
        error: ErrorInfo | None = None
        fetched = 0
        wanted: list[int] = []  # the records whose files must be downloaded
        for n, asset in enumerate(records):
            if not self._verify_files and _looks_intact(downloader, asset):
                continue
            if asset.downloaded and await downloader.averify(asset.to_json()):
                # Same bytes (the file was copied or touched): remember its new mtime.
                records[n] = replace(asset, mtime_ns=_mtime_ns(downloader, str(asset.path)))
                continue
            if asset.downloaded:
                log.info("item.file_changed", index=asset.index, path=asset.path)
            wanted.append(n)
        if wanted and marked is None:
            # A recorded file is missing or changed: not done until it is back.
            marked = downloads_pending()
            self._b.ledger.record_assets(item.id, records, marked)
        unsynced = False  # files placed whose names the item's folder has not synced yet
        for n in wanted:
            asset = records[n]
            # The folder is synced once, with the last file (or below, when that one fails).
            last = n == wanted[-1]
            try:
                got = await self._fetch(item, rec, records, n, log, sync_dir=last)
            except DownloadError as exc:
                error = exc.info
                log.warning("item.download_failed", index=asset.index,
                            **error_fields(exc.info))
                if exc.stops_batch:
                    # This machine's disk, not the item: every further download (and most
                    # other writes) would fail the same way. No new submissions; the rerun
                    # downloads what is missing, and the CLI says what to free.
                    if not self._b.stopping:
                        self._b.log.error("batch.stopping", **error_fields(exc.info))
                        self._b.stop(None)
                    break
                continue
            except (KeyError, TypeError, ValueError, OSError) as exc:
                # The downloader classifies its own failures; this is a damaged asset record
                # or a bug. A classified failure of this item's files, not a crash: the
                # verdict stands and the task is never resubmitted for a file.
                error = verdicts.unreadable_asset(asset, exc)
                log.warning("item.download_failed", index=asset.index, exc_info=True,
                            error_type=type(exc).__name__, **error_fields(error))
                continue
            records[n] = replace(
                records[n],
                url=got.url,
                media=got.media or records[n].media,
                path=got.path,
                bytes=got.bytes,
                sha256=got.sha256,
                content_type=got.content_type,
                mtime_ns=got.mtime_ns if got.mtime_ns is not None
                else _mtime_ns(downloader, got.path),
            )
            fetched += 1
            unsynced = not last
        if unsynced:
            # Recorded only once their names are durable: the file is on disk before the
            # ledger says so. (A crash mid-item fetches its files again: a cost, not a loss.)
            await downloader.sync_item(item.id)
        if records != rec.assets or error != rec.download_error:
            self._b.ledger.record_assets(item.id, records, error)
        self._live_urls.pop(item.id, None)
        if error is None:
            log.info("item.downloaded", files=len(records), fetched=fetched)

    async def _fetch(
        self, item: Item, rec: ItemRecord, records: list[AssetRecord], n: int, log: Any,
        *, sync_dir: bool,
    ) -> DownloadedAsset:
        """Asset ``records[n]``. A URL that is expired or refused, or still failing after the
        downloader's retries (a host that moved: the demo's simulator restarted elsewhere),
        gets one fresh URL from a new task query (recorded in ``records``); a failure that is
        ours (disk) or final is not retried."""
        downloader = self._downloader
        assert downloader is not None and rec.task_id is not None
        asset = records[n]
        index = asset.index
        media = asset.media or item.request.kind.media
        live = self._live_urls.setdefault(item.id, {})
        url = live.get(index) or asset.url
        try:
            return await downloader.download(item.id, index, url, media, sync_dir=sync_dir)
        except DownloadError as exc:
            if exc.local or not (exc.expired or exc.info.retryable):
                raise
            log.info("item.url_expired" if exc.expired else "item.url_refresh", index=index)
            self._b.outcome.requests["query"] += 1
            try:
                task = await self._b.provider.query(item.request, rec.task_id)
            except ProviderError:
                raise exc from None
            fresh = {a.index: a.url for a in task.assets}
            if not valid_asset_indexes(fresh.keys()) or len(fresh) != len(task.assets):
                fresh = {n: a.url for n, a in enumerate(task.assets)}  # as _numbered does
            if index not in fresh or (not exc.expired and fresh[index] == url):
                raise  # the same URL already had all its retries
            live[index] = fresh[index]
            records[n] = replace(asset, url=fresh[index])
            self._b.outcome.retries += 1  # the download again, from the fresh URL
            return await downloader.download(
                item.id, index, fresh[index], media, sync_dir=sync_dir
            )

    def counts(self) -> Counter[str]:
        """The downloader's counters now (to count what this run adds to them)."""
        return Counter(self._downloader.stats if self._downloader is not None else ())

    def count_since(self, before: Counter[str]) -> None:
        """Every HTTP attempt and every retry the downloader made since ``before``, into the
        run's outcome (not the files asked for)."""
        if self._downloader is None:
            return
        stats = self._downloader.stats
        attempts = stats["requests"] - before["requests"]
        if attempts:
            self._b.outcome.requests["download"] += attempts
        self._b.outcome.retries += stats["retries"] - before["retries"]
