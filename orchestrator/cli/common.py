"""What every command shares: the exit codes, how bad input and a failing disk end a
command, the manifest loaded with its located problems, the provider's plug-in and credentials.
"""

from __future__ import annotations

import argparse
import enum
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

import httpx

from orchestrator import (
    layout,
    local_failures,
)
from orchestrator.config import SIMULATOR_BASE_URL, Manifest, ManifestError, load_manifest
from orchestrator.providers import registry
from orchestrator.providers.plugin import ProviderPlugin
from orchestrator.state_location import StateLocation, locate


class Exit(enum.IntEnum):
    OK = 0
    ITEMS_FAILED = 1
    INVALID = 2
    ACCOUNT_STOP = 3
    LOCKED = 4
    INTERRUPTED = 130


class Usage(Exception):
    """Bad input found by the CLI itself: printed, exit 2, nothing sent."""


def load(path: Path, err: TextIO) -> Manifest:
    try:
        return load_manifest(path)
    except ManifestError as exc:
        n = len(exc.problems)
        err.write(f"{path}: {n} problem{'s' if n != 1 else ''}; nothing was sent.\n")
        for problem in exc.problems:
            err.write(problem.format(exc.source) + "\n")
        raise Usage from None


def plugin_of(manifest: Manifest) -> ProviderPlugin:
    """The plug-in of the provider the manifest names."""
    return registry.plugin(manifest.provider.name)


def credentials(manifest: Manifest, redact: Callable[[str], None]) -> httpx.Auth | None:
    """The provider's credentials from the environment, each secret told to ``redact``; None
    for the bundled simulator (it brings its own demo credentials)."""
    if manifest.provider.base_url == SIMULATOR_BASE_URL:
        return None
    plugin = plugin_of(manifest)
    try:
        auth: httpx.Auth | None = plugin.credentials(os.environ, redact)
    except ValueError as exc:
        raise Usage(str(exc)) from None
    if auth is None:
        raise Usage(
            f"no {plugin.title} credentials: {plugin.credentials_help}; nothing was sent."
        )
    return auth


def destination(manifest: Manifest, auth: httpx.Auth | None) -> str:
    """Where a run of ``manifest`` sends, with which credentials (named, never shown)."""
    title = plugin_of(manifest).title
    base_url = manifest.provider.base_url
    if base_url == SIMULATOR_BASE_URL:
        return f"{title}, the bundled simulator, in this process (no account, nothing paid)"
    host = urlsplit(base_url).hostname or base_url
    source = getattr(auth, "source", None) or "the environment"
    return f"{title}, {base_url} (host {host}), credentials from {source}"


class LocalStop(Exception):
    """This machine's files failed before anything was sent (a full disk, an I/O error):
    printed, exit 3 (resumable once the cause is fixed)."""


def cannot(what: str, path: Path | str, exc: Exception) -> Exception:
    """What a failure to set a run up becomes: a full, read-only or failing disk stops the run
    as resumable (exit 3); any other (a path that cannot be, a permission) is the arguments'
    (exit 2). Nothing was sent either way."""
    failure = local_failures.classify(exc, ledger_path=path, path=path)
    if failure is not None and failure.cause.everywhere:
        return LocalStop(
            f"cannot {what} {path}: {failure.cause.what}: {failure.cause.action}, then rerun; "
            "nothing was sent."
        )
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    return Usage(
        f"cannot {what} {path}: {reason}. Check output.dir in the manifest (or --state, "
        "--report); nothing was sent."
    )


def state_of(args: argparse.Namespace, manifest: Manifest) -> StateLocation:
    """The batch's ledger: ``--state``, else ``ORCHESTRATOR_STATE``, else the file in the
    output folder; a PostgreSQL URL without the driver installed is a usage error."""
    location = locate(args.state, manifest.output_dir / layout.STATE_FILE)
    if location.url is not None:
        try:
            location.describe()
            importlib.import_module("orchestrator.ledger_pg")
        except ImportError:
            raise Usage(
                "a PostgreSQL ledger (--state postgresql://...) needs the PostgreSQL driver: "
                "pip install 'kling-batch-orchestrator[postgres]', then run again. Nothing was "
                "sent."
            ) from None
    return location


def recovery_hint(manifest_path: Path, state_arg: str | Path | None) -> str:
    """How to go on from a state file a run refused: the commands, with this run's arguments."""
    where = f" --state {state_arg}" if state_arg is not None else ""
    return (
        f"`python -m orchestrator state check {manifest_path}{where}` tells what it holds; "
        f"`python -m orchestrator state recover {manifest_path}{where}` moves it aside (kept) "
        "so that the next run starts a new ledger and looks every item's tasks up by their "
        "external ids before creating anything: nothing is paid for twice."
    )


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse
