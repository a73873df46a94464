"""structlog configuration: JSON lines to a file, readable lines on a terminal, secrets redacted.

Every event goes to ``<output.dir>/logs/<timestamp>.jsonl`` as one JSON object per line. The
console gets the warnings and errors that need a person, each as one short line (event_lines.py):
above the live progress view on a terminal, one after another under cron; retries that may
still succeed only with ``-v``.

The redactor runs before any renderer: registered secrets (secret key, API key, every JWT minted)
and anything shaped like a JWT are replaced, wherever they appear in an event: in keys as well as
values, at any depth, and in values that are not strings (exceptions, bytes, objects), which are
rendered to text first.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any, TextIO

import structlog

from orchestrator.event_lines import VERBOSE_ONLY, human_line
from orchestrator.layout import LOGS_DIR, owner_only
from orchestrator.local_failures import is_local_failure

REDACTED = "[REDACTED]"
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")


#: Nesting below this depth is rendered to text whole (cyclic structures end here too).
_MAX_DEPTH = 32
#: Distinct keys whose scrubbed form is remembered (keys can be data, e.g. ids: bounded).
_KEY_CACHE = 1024
#: Short string values remembered scrubbed (at most this many, of at most this length).
_VALUE_CACHE = 4096
_VALUE_CACHE_LENGTH = 120


def _text(value: object) -> str:
    """What a JSON or console renderer would print for ``value``, never raising."""
    try:
        if isinstance(value, BaseException):
            return f"{type(value).__name__}: {value}" if str(value) else type(value).__name__
        return str(value)
    except Exception:  # a __str__ that raises must not lose the event
        return f"<unprintable {type(value).__name__}>"


class Redactor:
    """A structlog processor that scrubs secrets from everything in an event: keys and values,
    at any depth. Values that are not JSON scalars (exceptions, bytes, sets, arbitrary objects)
    are rendered to text first, so what a renderer would print is what gets scrubbed."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        # Scrubbed keys: events reuse a few dozen field names, and scrubbing is the cost.
        self._keys: dict[str, str] = {}
        # Scrubbed short values: the batch's name, item ids, event names, states and codes
        # come back in event after event.
        self._values: dict[str, str] = {}

    def add(self, secret: str | None) -> None:
        # Very short values would redact ordinary words; real keys are long.
        if secret and len(secret) >= 6:
            self._secrets.add(secret)
            self._keys.clear()
            self._values.clear()

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _JWT.sub(REDACTED, text)
        return _BEARER.sub(r"\1" + REDACTED, text)

    def clean(self, value: Any) -> Any:
        """``value`` with every secret scrubbed, at any depth (what the log events get): for
        the report, the results file and the ledger, which must not hold them either."""
        return self._walk(value)

    def _key(self, key: object) -> str:
        if not isinstance(key, str):
            return self.scrub(_text(key))
        scrubbed = self._keys.get(key)
        if scrubbed is None:
            scrubbed = self.scrub(key)
            if len(self._keys) < _KEY_CACHE:
                self._keys[key] = scrubbed
        return scrubbed

    def _walk(self, value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            if len(value) > _VALUE_CACHE_LENGTH:
                return self.scrub(value)
            scrubbed = self._values.get(value)
            if scrubbed is None:
                scrubbed = self.scrub(value)
                if len(self._values) >= _VALUE_CACHE:
                    self._values.clear()  # a run's recurring values come back at once
                self._values[value] = scrubbed
            return scrubbed
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            # A number stays a number unless its digits hold a secret (no JWT or bearer
            # token is made of digits alone).
            text = str(value)
            return self.scrub(text) if any(s in text for s in self._secrets) else value
        if depth >= _MAX_DEPTH:
            return self.scrub(_text(value))
        if isinstance(value, Mapping):
            return {self._key(k): self._walk(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self._walk(v, depth + 1) for v in value]
        if isinstance(value, bytes | bytearray | memoryview):
            return self.scrub(bytes(value).decode("utf-8", "replace"))
        return self.scrub(_text(value))

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        scrubbed = {self._key(key): self._walk(value) for key, value in event_dict.items()}
        event_dict.clear()
        event_dict.update(scrubbed)
        return event_dict


class _Tee:
    """Final processor: one JSON line to the file; to the console, the events at or above
    ``console_level`` as a line for a person (those of what is retried and may still succeed
    only when ``verbose``)."""

    def __init__(
        self,
        file: TextIO | None,
        say: Callable[[str], None],
        console_level: int,
        verbose: bool,
    ) -> None:
        self._file = file
        self._say = say
        self._console_level = console_level
        self._verbose = verbose

    def __call__(self, logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        if self._file is not None:
            line = json.dumps(event_dict, default=str, separators=(",", ":"))
            try:
                self._file.write(line + "\n")
                self._file.flush()
            except OSError as exc:
                # A log that cannot be written ends the run (local_failures.py): say which file.
                name = getattr(self._file, "name", None)
                if exc.filename is None and exc.errno is not None and isinstance(name, str):
                    raise OSError(exc.errno, exc.strerror, name) from exc
                raise
        level = logging.getLevelName(str(event_dict.get("level", "info")).upper())
        if (
            isinstance(level, int)
            and level >= self._console_level
            and (self._verbose or event_dict.get("event") not in VERBOSE_ONLY)
        ):
            self._say(human_line(event_dict))
        raise structlog.DropEvent


#: Run logs kept in output.dir/logs: the newest, this run's included; older ones are removed.
KEEP_LOGS = 30
_RUN_LOG = re.compile(r"run-\d{8}T\d{6}Z-\d+(?:-\d+)?\.jsonl")


def open_log_file(output_dir: Path, now: float | None = None) -> tuple[Path, TextIO]:
    logs = output_dir / LOGS_DIR
    logs.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))
    path = logs / f"run-{stamp}-{os.getpid()}.jsonl"

    def owner_only_opener(name: str, flags: int) -> int:
        fd = os.open(name, flags, 0o600)
        owner_only(fd)
        return fd

    # Opened by name (not from a descriptor) so that the file object knows its path: an error
    # writing it names the file.
    prune_logs(logs, keep=KEEP_LOGS, current=path)
    return path, open(path, "a", encoding="utf-8", opener=owner_only_opener)


def prune_logs(logs: Path, *, keep: int, current: Path) -> list[Path]:
    """Remove all but the ``keep`` newest run logs in ``logs`` (by modification time; the
    ``current`` one always stays); the paths removed. Best effort: a log left costs space."""
    found: list[tuple[float, str, Path]] = []
    try:
        entries = list(os.scandir(logs))
    except OSError:
        return []
    for entry in entries:
        if _RUN_LOG.fullmatch(entry.name) and entry.path != str(current):
            try:
                found.append((entry.stat().st_mtime, entry.name, Path(entry.path)))
            except OSError:
                continue
    found.sort(reverse=True)
    removed = []
    for _, _, old in found[max(keep - 1, 0):]:
        try:
            old.unlink()
            removed.append(old)
        except OSError:
            continue
    return removed


def _local_failure_without_traceback(
    logger: Any, method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A failure of this machine's files (a full disk, an I/O error) is not a bug: the event
    carries its one-line text instead of a traceback, and the run ends with a line saying what
    to do (local_failures.py). Before format_exc_info, which would render the traceback."""
    exc_info = event_dict.get("exc_info")
    if exc_info is True:
        exc: object = sys.exc_info()[1]
    elif isinstance(exc_info, tuple):
        exc = exc_info[1]
    else:
        exc = exc_info
    if isinstance(exc, BaseException) and is_local_failure(exc):
        del event_dict["exc_info"]
        event_dict.setdefault("error", _text(exc))
    return event_dict


def configure(
    redactor: Redactor,
    *,
    file: TextIO | None,
    console: TextIO = sys.stderr,
    tty: bool | None = None,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
    verbosity: int = 0,
) -> None:
    """The console gets warnings and errors as lines for a person (event_lines.py), at a
    terminal and under cron alike; on a terminal without a progress view, every event.
    ``say`` writes a console line (above the progress view when there is one; by default to
    ``console``). ``verbosity``: -1 (``-q``) errors only, 1 (``-v``) every event, those of
    retries included; the log file always gets every event."""
    if tty is None:
        tty = console.isatty()
    every = (tty and not progress) or verbosity > 0
    console_level = logging.INFO if every else logging.WARNING
    if verbosity < 0:
        console_level = logging.ERROR

    def write(line: str) -> None:
        console.write(line + "\n")
        console.flush()

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _local_failure_without_traceback,
            structlog.processors.format_exc_info,
            redactor,
            _Tee(file, say or write, console_level, verbose=every and verbosity >= 0),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        cache_logger_on_first_use=False,
    )
