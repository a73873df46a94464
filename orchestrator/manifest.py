"""Manifest loading and offline validation.

A manifest is checked completely before anything is sent, and every problem is reported at once
(with the item id, the field and the line) so that one ``validate`` run is enough to fix a batch.
Loading happens in three steps:

1. YAML events (libyaml's parser) -> plain data, built here rather than by ``yaml.safe_load``
   so that we keep a map from document paths (``("items", 3, "duration")``) to line numbers,
   and so that duplicate keys, which YAML resolves silently, become errors. The data is built
   as the events stream by, not from a composed node tree of the whole document (which is ten
   times the size of the data).
2. Shape, types and ranges: pydantic models with ``extra="forbid"``. A pydantic error location is
   a document path, so the line map places it.
3. What a schema cannot say: defaults merged per kind, rules that depend on the model, mutually
   exclusive fields, unique ids, and the local image files themselves.

Items may also come from a CSV or JSONL file (``items_from``), appended after the manifest's own
``items`` and held to the same rules: a row is turned into the same plain data as a YAML item
(CSV cells are text, so numeric fields are read from it and structured ones as JSON) and goes
through the same per-item code. Its problems are located by the file and its line
(:attr:`Problem.source`). Paths in the manifest, ``items_from`` included, are relative to the
manifest; image paths in an items file are relative to the items file (they travel with it),
while those a row inherits from ``defaults`` stay relative to the manifest.

That per-item code runs 100,000 times for a big items file, so it is kept lean: measured, most of
an item's time is Python around the pydantic call, not pydantic itself.

``pricing:`` and ``limits.max_units`` are checked here; the table and the estimate live in
:mod:`orchestrator.pricing`.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import functools
import gc
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PlainValidator,
)
from pydantic_core import ErrorDetails

from orchestrator.downloads import check_item_id
from orchestrator.images import ImageInfo
from orchestrator.layout import own_name_clash
from orchestrator.pricing import BUILTIN_PRICES, PriceTable, TaskKey, lookup, task_key
from orchestrator.pricing import label as price_label
from orchestrator.providers.base import Kind, TaskRequest
from orchestrator.providers.kling.catalogue import ALL_MODES, API_CHOICES, Catalogue, catalogue
from orchestrator.providers.kling.schema import (
    CSV_FLAGS,
    CSV_JSON,
    CSV_NUMBERS,
    FIELD_MODELS,
    IMAGE_FIELDS,
    KIND_FIELDS,
    Draft,
    ItemRules,
    Settings,
)
from orchestrator.validators import (
    DocPath,
    Flag,
    NonNegative,
    OneOf,
    Positive,
    Strict,
    WholeNumber,
    as_bool,
    as_number,
    as_text,
    choice_message,
    describe,
    fail,
    got,
    http_url_problem,
    is_loopback,
    number_text,
    scalar_hint,
    suggest,
    unknown_key,
    validate,
)

DEFAULT_BASE_URL = "https://api-singapore.klingai.com"
#: ``provider.base_url: simulator`` starts the bundled simulator in-process.
SIMULATOR_BASE_URL = "simulator"


@dataclass(frozen=True)
class ProviderSettings:
    name: str = "kling"
    base_url: str = DEFAULT_BASE_URL
    timeout: float = 60.0  # seconds per HTTP request
    #: Kling's API: "auto" (legacy /v1 where the model has it, else API 2.0), "v1" or "v2".
    api: str = "auto"
    #: Models the catalogue does not know are sent with the generic checks only.
    allow_unknown_models: bool = False


@dataclass(frozen=True)
class Deadline:
    """When a batch stops submitting: ``after`` seconds from the run's start, or ``at`` a Unix
    time. Running tasks are still collected after it."""

    after: float | None = None
    at: float | None = None

    def resolve(self, run_started: float) -> float:
        return self.at if self.at is not None else run_started + (self.after or 0.0)


@dataclass(frozen=True)
class Limits:
    concurrency: int = 5
    requests_per_minute: float = 60.0
    deadline: Deadline | None = None
    #: Stop submitting once the units of what was submitted would exceed this (see pricing.py).
    max_units: float | None = None


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    #: seconds to wait before looking a task up after an ambiguous create
    lookup_grace: float = 2.0
    #: seconds a task the provider says exists (a create refused as a duplicate) is looked for
    #: before the item is reported unresolved (reads may lag behind creates)
    lookup_timeout: float = 300.0


@dataclass(frozen=True)
class PollSettings:
    interval: float = 5.0
    max_interval: float = 30.0
    timeout: float = 900.0


@dataclass(frozen=True)
class Item:
    id: str
    request: TaskRequest
    #: Line in the manifest, or in ``source`` for an item read from an items file.
    line: int | None = None
    #: The items file (``items_from``) the item was read from; None for the manifest's own.
    source: Path | None = None


@dataclass(frozen=True)
class Manifest:
    version: int
    name: str
    path: Path
    provider: ProviderSettings
    limits: Limits
    retry: RetrySettings
    poll: PollSettings
    output_dir: Path
    items: tuple[Item, ...]
    #: ``output.download``: False keeps the assets' URLs in the report without fetching them.
    download: bool = True
    #: ``output.download_timeout``: seconds one attempt at one file may take in all.
    download_timeout: float = 600.0
    #: The manifest's ``pricing:`` over the built-in, indicative table (see pricing.py).
    pricing: PriceTable = BUILTIN_PRICES
    #: The file ``items_from`` names, resolved; its items follow the manifest's own.
    items_from: Path | None = None
    #: What is allowed but worth saying (a deprecated model), one line each.
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest, located as precisely as the YAML allows."""

    message: str
    field: str | None = None
    item_id: str | None = None
    line: int | None = None
    #: The file the line is in when it is not the manifest: the items file of ``items_from``.
    source: str | None = None

    def format(self, source: str) -> str:
        """One line, located as ``file:line:``; ``source`` names the manifest."""
        if self.source is not None:
            source = self.source
        where = f"{source}:{self.line}" if self.line is not None else source
        parts = []
        if self.item_id is not None:
            parts.append(f"item '{self.item_id}'")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        prefix = ", ".join(parts)
        return f"{where}: {prefix}: {self.message}" if prefix else f"{where}: {self.message}"


class ManifestError(Exception):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.format(source) for p in problems))


_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")
_NAME_CHARS: Final = "letters, digits, '.', '_' and '-'"

def _base_url(value: object) -> str:
    text = as_text(value)
    if text == SIMULATOR_BASE_URL:
        return text
    problem = http_url_problem(text)
    if problem:
        fail(f"{problem}, or the word '{SIMULATOR_BASE_URL}'")
    parts = urlsplit(text)
    if parts.scheme.lower() == "http" and not is_loopback(parts.hostname or ""):
        # Every request carries the credentials: plain http would send them in the clear.
        fail(
            f"must use https:// (plain http is accepted only for this machine: localhost, "
            f"127.0.0.1, [::1]); got {got(text)}"
        )
    # Endpoint paths are appended to it.
    return text.rstrip("/")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_DURATION_RE = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*[smhd]\s*)+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _deadline(value: object) -> Deadline:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            fail("needs a timezone, e.g. 2026-11-22T06:00:00+00:00 or ...Z")
        return Deadline(at=value.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = as_number(value)
        if seconds <= 0:
            fail(f"must be greater than 0 seconds (got {got(value)})")
        return Deadline(after=seconds)
    if isinstance(value, str):
        text = value.strip()
        if _DURATION_RE.fullmatch(text):
            seconds = sum(
                float(n) * _UNIT_SECONDS[unit] for n, unit in _DURATION_PART.findall(text)
            )
            if seconds > 0:
                return Deadline(after=seconds)
        else:
            try:
                when = datetime.fromisoformat(text)
            except ValueError:
                pass
            else:
                if when.tzinfo is None:
                    fail(f"needs a timezone, e.g. {text}+00:00 or {text}Z")
                return Deadline(at=when.timestamp())
    fail(
        "must be a duration from the start of the run (seconds, or like 90m, 6h, 1h30m) or a "
        f"date and time with a timezone (2026-11-22T06:00:00Z); got {got(value)}"
    )




def _version(value: object) -> int:
    if isinstance(value, float) and value == 1:
        return 1
    if isinstance(value, int) and not isinstance(value, bool):
        if value == 1:
            return value
        fail(f"unsupported version {got(value)}: this orchestrator reads manifest version 1")
    fail(f"must be the number 1 (got {got(value)})")


def _batch_name(value: object) -> str:
    text = as_text(value)
    if not _NAME_RE.fullmatch(text) or not text.strip("."):
        fail(
            f"must be 1-64 characters of {_NAME_CHARS}, and not only dots: it becomes part of "
            f"every external task id and of file names (got {got(text)})"
        )
    return text


def _output_dir(value: object) -> str:
    text = as_text(value)
    if not text.strip():
        fail("must not be empty")
    if text.startswith("~"):
        # Taken literally it would create a directory named "~" next to the manifest.
        fail("'~' is not expanded here: write the full path, or one relative to the manifest")
    return text






# --- Top-level sections ---------------------------------------------------------------------------


class ProviderSection(Strict):
    name: Annotated[str, BeforeValidator(OneOf(("kling",)))] = "kling"
    base_url: Annotated[str, BeforeValidator(_base_url)] = DEFAULT_BASE_URL
    timeout: Positive = 60.0
    api: Annotated[str, BeforeValidator(OneOf(API_CHOICES))] = "auto"
    allow_unknown_models: Flag = False


class LimitsSection(Strict):
    concurrency: Annotated[WholeNumber, Field(ge=1)] = 5
    requests_per_minute: Positive = 60.0
    deadline: Annotated[Deadline, PlainValidator(_deadline)] | None = None
    max_units: Positive | None = None


class RetrySection(Strict):
    max_attempts: Annotated[WholeNumber, Field(ge=1, le=100)] = 5
    base_delay: Positive = 1.0
    max_delay: Positive = 60.0
    lookup_grace: NonNegative = 2.0
    lookup_timeout: Positive = 300.0


class PollSection(Strict):
    interval: Positive = 5.0
    max_interval: Positive = 30.0
    timeout: Positive = 900.0


class OutputSection(Strict):
    dir: Annotated[str, BeforeValidator(_output_dir)] | None = None
    download: Annotated[bool, BeforeValidator(as_bool)] = True
    download_timeout: Positive = 600.0


class TopLevel(Strict):
    # version and name are optional here only so that the other sections still validate when
    # they are missing; their absence is reported separately.
    version: Annotated[int, BeforeValidator(_version)] | None = None
    name: Annotated[str, BeforeValidator(_batch_name)] | None = None
    provider: ProviderSection = Field(default_factory=ProviderSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    retry: RetrySection = Field(default_factory=RetrySection)
    poll: PollSection = Field(default_factory=PollSection)
    output: OutputSection = Field(default_factory=OutputSection)
    # Checked by hand: their rules depend on each other (defaults per kind, located per item),
    # or their keys are data (model names, durations, column names).
    defaults: Any = None
    items: Any = None
    items_from: Any = None
    pricing: Any = None


_SECTIONS: Final = ("provider", "limits", "retry", "poll", "output", "defaults", "pricing")



# --- YAML with line numbers -----------------------------------------------------------------------

#: libyaml's composer when PyYAML was built with it (the wheels are): the same nodes and line
#: marks as the pure-Python one, several times faster on a manifest of thousands of items.
_COMPOSER: Final[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP_TAG: Final = "tag:yaml.org,2002:map"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
# Aliases can make a small file expand exponentially ("billion laughs"): a document may expand
# to this many values more than it has characters (every value written out takes at least one
# character, so only aliases can exceed the budget, however many items are inline).
_MAX_VALUES: Final = 100_000
#: A value that could not be read; already reported, so it is left out instead of cascading.
_UNREADABLE: Final = object()

_Report = Callable[[DocPath, str, int | None], None]


class _TooLarge(Exception):
    pass


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


class _Builder:
    """Plain data from a composed node tree, plus the line of every key and list entry."""

    def __init__(self, report: _Report, size: int = 0) -> None:
        self.lines: dict[DocPath, int] = {}
        #: Where a value was reported unreadable and left out: it was written, just not usable.
        self.unreadable: set[DocPath] = set()
        self._report = report
        self._constructor = yaml.constructor.SafeConstructor()
        self._active: set[int] = set()
        self.limit = self._budget = _MAX_VALUES + size

    def build(self, node: yaml.Node, path: DocPath) -> Any:
        self._budget -= 1
        if self._budget < 0:
            raise _TooLarge
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._active:
            # Blame the place of the alias (its key), not the anchor it points back to.
            return self._give_up(path, "refers to itself through an alias", None)
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, path)
            return _UNREADABLE
        finally:
            self._active.discard(id(node))

    def _give_up(self, path: DocPath, message: str, node: yaml.Node | None) -> object:
        self._report(path, message, _line(node) if node is not None else None)
        self.unreadable.add(path)
        return _UNREADABLE

    def _scalar(self, node: yaml.ScalarNode, path: DocPath) -> Any:
        try:
            value = self._constructor.construct_object(node, deep=True)
            # The constructor remembers every node it built (for recursive documents, which
            # a scalar is not): forgotten at once, or 100,000 items keep 75 MB of nodes.
            self._constructor.constructed_objects.pop(node, None)
            return value
        # Dates like 2024-13-45, ints beyond the digit limit, unknown or unsafe tags.
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self._constructor.recursive_objects.clear()
            reason = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else str(exc)
            return self._give_up(path, f"cannot read the value {got(node.value)}: {reason}", node)

    def _mapping(self, node: yaml.MappingNode, path: DocPath) -> Any:
        if node.tag != _MAP_TAG:
            return self._give_up(path, f"uses the YAML tag {node.tag!r}, not supported here", node)
        result: dict[str, Any] = {}
        # Merged entries (<<: *anchor) first, so that explicit keys override them, lines included.
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for source in self._merge_sources(value_node, path):
                    merged = self.build(source, path)
                    if isinstance(merged, dict):
                        for key, value in merged.items():
                            result.setdefault(key, value)
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self._key(key_node, path, first_line)
            if key is None:
                continue
            value = self.build(value_node, (*path, key))
            if value is _UNREADABLE:
                result.pop(key, None)
            else:
                result[key] = value
        return result

    def _key(self, key_node: yaml.Node, path: DocPath, first_line: dict[str, int]) -> str | None:
        """The key of a mapping entry, its line recorded; None (reported) when the entry must
        be skipped: a key that is not a plain name, or one already in the mapping."""
        if not isinstance(key_node, yaml.ScalarNode):
            self._report(
                path, "a key must be a plain name, not a list or mapping", _line(key_node)
            )
            return None
        # Keys are names: the source text, so that `on:` or `1:` do not become true or 1.
        key = str(key_node.value)
        line = _line(key_node)
        if key in first_line:
            self._report(
                (*path, key),
                f"duplicate key '{key}' (first on line {first_line[key]}): YAML would "
                "silently keep only the last one",
                line,
            )
            return None
        first_line[key] = line
        self.lines[(*path, key)] = line
        return key

    def _merge_sources(self, node: yaml.Node, path: DocPath) -> list[yaml.Node]:
        if isinstance(node, yaml.MappingNode):
            return [node]
        if isinstance(node, yaml.SequenceNode) and all(
            isinstance(n, yaml.MappingNode) for n in node.value
        ):
            return list(node.value)
        self._report(path, "'<<' must be followed by a mapping or a list of mappings", _line(node))
        return []

    def _sequence(self, node: yaml.SequenceNode, path: DocPath) -> Any:
        if node.tag != _SEQ_TAG:
            return self._give_up(path, f"uses the YAML tag {node.tag!r}, not supported here", node)
        result: list[Any] = []
        for index, child in enumerate(node.value):
            self.lines[(*path, index)] = _line(child)
            value = self.build(child, (*path, index))
            # A placeholder keeps the indexes (and so the lines) of the following entries right.
            result.append(None if value is _UNREADABLE else value)
        return result

    # -- straight from the event stream

    def document(self, loader: Any) -> Any:
        """The plain data of the stream's one document, built as its events go by.

        Composing first would hold a node with two marks for every value of the document at
        once: about 2 KB an item, 210 MB for 100,000 inline items, before a value is read.
        Here only what an alias may refer to (anchored values) and small parts (scalars, keys,
        tagged values) become nodes, through PyYAML's own composer, so values and lines are
        exactly those of :meth:`build` on the composed document. Raises yaml.YAMLError where
        the composer would, a second document included.
        """
        loader.get_event()  # stream start
        data = None
        if not loader.check_event(yaml.StreamEndEvent):
            loader.get_event()  # document start
            self.lines[()] = int(loader.peek_event().start_mark.line) + 1
            data = self._streamed(loader, ())
            loader.get_event()  # document end
            loader.anchors = {}
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            raise yaml.composer.ComposerError(
                "expected a single document in the stream", None,
                "but found another document", event.start_mark,
            )
        return data

    def _streamed(self, loader: Any, path: DocPath) -> Any:
        event = loader.peek_event()
        if isinstance(event, yaml.MappingStartEvent):
            tag, default = event.tag, _MAP_TAG
        elif isinstance(event, yaml.SequenceStartEvent):
            tag, default = event.tag, _SEQ_TAG
        else:
            tag, default = None, None
        if default is None or event.anchor is not None or tag not in (None, "!", default):
            return self.build(loader.compose_node(None, None), path)
        self._budget -= 1
        if self._budget < 0:
            raise _TooLarge
        loader.get_event()
        if default == _SEQ_TAG:
            return self._streamed_sequence(loader, path)
        return self._streamed_mapping(loader, path)

    def _streamed_sequence(self, loader: Any, path: DocPath) -> list[Any]:
        result: list[Any] = []
        while not loader.check_event(yaml.SequenceEndEvent):
            at = (*path, len(result))
            self.lines[at] = self._next_line(loader)
            value = self._streamed(loader, at)
            result.append(None if value is _UNREADABLE else value)
        loader.get_event()
        return result

    def _streamed_mapping(self, loader: Any, path: DocPath) -> dict[str, Any]:
        """As :meth:`_mapping`: merged entries never override a key written in the mapping,
        wherever the ``<<`` stands."""
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        while not loader.check_event(yaml.MappingEndEvent):
            key_node = loader.compose_node(None, None)
            if key_node.tag == _MERGE_TAG:
                for source in self._merge_sources(loader.compose_node(None, None), path):
                    merged = self.build(source, path)
                    if isinstance(merged, dict):
                        for key, value in merged.items():
                            if key not in first_line:
                                result.setdefault(key, value)
                # The merged keys' lines must not replace those of the keys written here.
                for key, line in first_line.items():
                    self.lines[(*path, key)] = line
                continue
            key = self._key(key_node, path, first_line)
            if key is None:
                loader.compose_node(None, None)  # the value goes unread, but it is consumed
                continue
            value = self._streamed(loader, (*path, key))
            if value is _UNREADABLE:
                result.pop(key, None)
            else:
                result[key] = value
        loader.get_event()
        return result

    @staticmethod
    def _next_line(loader: Any) -> int:
        """The line of the next value; for an alias, that of the value it refers to (as the
        composed node would say)."""
        event = loader.peek_event()
        if isinstance(event, yaml.AliasEvent) and event.anchor in loader.anchors:
            return _line(loader.anchors[event.anchor])
        return int(event.start_mark.line) + 1


class _StreamLoader(_COMPOSER, yaml.composer.Composer):  # type: ignore[misc]
    """The fast parser's events with PyYAML's Python composer on top, for the parts of a
    document that :meth:`_Builder.document` composes into nodes."""

    def __init__(self, text: str) -> None:
        _COMPOSER.__init__(self, text)
        self.anchors: dict[str, yaml.Node] = {}


def _yaml_error(exc: yaml.YAMLError, text: str) -> tuple[str, int | None]:
    if isinstance(exc, yaml.MarkedYAMLError):
        problem, context = exc.problem, exc.context
        mark, context_mark = exc.problem_mark, exc.context_mark
        message = f"YAML syntax error: {problem or context or 'invalid document'}"
        if mark is not None and context_mark is not None and mark.index >= len(text.rstrip()):
            # Only noticed at the end of the file: what matters is where the unclosed
            # bracket or quote was opened.
            return f"{message} ({context} that starts here and is never closed)", (
                context_mark.line + 1
            )
        if problem and context:
            started = f" on line {context_mark.line + 1}" if context_mark is not None else ""
            message += f" ({context}{started})"
        if "'\\t'" in message:
            message += "; indent with spaces, not tabs"
        mark = mark or context_mark
        return message, (mark.line + 1 if mark is not None else None)
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        return f"YAML cannot read this file: {exc.reason} (character {exc.character!r})", line
    return f"YAML error: {exc}", None


# --- Validation -----------------------------------------------------------------------------------


@dataclass
class _Found:
    path: DocPath
    message: str
    line: int | None
    #: Where in ``defaults`` the faulty value came from, if it did.
    default: DocPath | None = None
    #: The items file, for a problem with the file as a whole (its header, its encoding).
    source: str | None = None


@dataclass
class _Defaults:
    values: dict[str, Any] = field(default_factory=dict)
    kind: Kind | None = None
    kind_invalid: bool = False
    _for_kind: dict[Kind, tuple[str, ...]] = field(default_factory=dict)

    def for_kind(self, kind: Kind) -> tuple[str, ...]:
        """The defaults that reach items of this kind (a default only where it means something)."""
        keys = self._for_kind.get(kind)
        if keys is None:
            allowed = _KIND_FIELD_SETS[kind]
            keys = self._for_kind[kind] = tuple(key for key in self.values if key in allowed)
        return keys


#: Where items are: the manifest's list, and the rows of the items file (``items_from``).
_ITEM_LISTS: Final = ("items", "items_from")
_ITEMS_FROM_KEYS: Final = ("path", "columns", "format", "ignore_columns")
_ITEMS_FILE_FORMATS: Final = ("csv", "jsonl")
_FORMAT_OF_SUFFIX: Final = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_KIND_FIELD_SETS: Final = {kind: frozenset(names) for kind, names in KIND_FIELDS.items()}
#: Every key an item may have, mapped to the kinds it belongs to.
_FIELD_KINDS: Final[Mapping[str, tuple[Kind, ...]]] = {
    name: tuple(kind for kind in KIND_FIELDS if name in KIND_FIELDS[kind])
    for name in dict.fromkeys(name for kind in KIND_FIELDS for name in KIND_FIELDS[kind])
}
_ITEM_KEYS: Final = ("id", "kind", *_FIELD_KINDS)
_ITEM_KEY_SET: Final = frozenset(_ITEM_KEYS)
_KINDS: Final = tuple(KIND_FIELDS)
_INT_TEXT: Final = re.compile(r"[+-]?\d+")
#: How a CSV cell spells a boolean (what YAML would read as one); anything else is refused as
#: text by the field ("must be true or false").
_CSV_FLAGS: Final = {"true": True, "false": False, "yes": True, "no": False}
_FLOAT_TEXT: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
#: Field values that _plain turns into plain data (a tuple: isinstance is faster with one).
_NESTED: Final = (BaseModel, list)
_NO_NAMES: Final[frozenset[str]] = frozenset()
# Enum members as plain names: on Python 3.11 each Kind.X lookup costs a quarter microsecond,
# a measurable share of the per-item time of a 100,000-row items file.
_IMAGE: Final = Kind.IMAGE
#: A bad default shared by many items names this many of them.
_MAX_NAMED: Final = 10


@dataclass(frozen=True)
class _ItemsFile:
    """What ``items_from`` says: a CSV or JSONL file of items, and how to read its columns."""

    at: DocPath  # where its path is written in the manifest
    written: str
    path: Path
    display: str  # the file as problems name it
    format: str
    columns: Mapping[str, str]  # column name -> item field (items_from.columns, inverted)
    ignore: frozenset[str]

    @functools.cached_property
    def column_of(self) -> dict[str, str]:
        """items_from.columns as written: {item field: column}."""
        return {item_field: column for column, item_field in self.columns.items()}


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of duplicate keys silently, as YAML would: refuse them alike.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _json_problem(exc: Exception) -> str:
    if isinstance(exc, _DuplicateKey):
        return f"duplicate key '{exc.key}': JSON would silently keep only the last one"
    if isinstance(exc, json.JSONDecodeError):
        return f"is not valid JSON: {exc.msg} (column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "is not valid JSON: nested too deeply"
    return f"is not valid JSON: {exc}"


def _lines(text: str) -> Iterator[str]:
    """The lines of a text, ends kept, one at a time.

    Split at "\\n" only: not str.splitlines(), which also splits at U+2028 and other characters
    that JSON strings and CSV values may hold; and not io.StringIO, which would keep a second,
    four-bytes-a-character copy of a whole items file.
    """
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _csv_number(cell: str) -> Any:
    """A number written in a CSV cell; the text itself when it is none (the field says why)."""
    text = cell.strip()
    try:
        if _INT_TEXT.fullmatch(text):
            return int(text)
        if _FLOAT_TEXT.fullmatch(text):
            return float(text)
    except ValueError:  # beyond int-to-str's digit limit
        pass
    return cell


def _kind_of(value: object) -> Kind | None:
    if not isinstance(value, str):
        return None
    try:
        kind = Kind(value)
    except ValueError:
        return None
    return kind


def _dotted(path: DocPath) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _plain(value: Any) -> Any:
    """Nested models as dicts; ImageSource and scalars as they are."""
    if isinstance(value, BaseModel):
        return {
            name: _plain(getattr(value, name))
            for name in type(value).model_fields
            if getattr(value, name) is not None
        }
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class _Checker:
    def __init__(
        self,
        manifest_path: Path,
        display_dir: Path | None = None,
        kling: Catalogue | None = None,
    ) -> None:
        self.manifest_path = manifest_path
        self.catalogue = kling if kling is not None else catalogue()
        #: replaced once the provider section is read (its api and allow_unknown_models)
        self.item_rules = ItemRules(Settings(self.catalogue))
        #: The manifest's directory as the user named it: an items file is named from it.
        self.display_dir = display_dir if display_dir is not None else manifest_path.parent
        self.image_cache: dict[Path, ImageInfo | str] = {}
        self.context: Mapping[str, Any] = {
            "base_dir": manifest_path.parent,
            "image_cache": self.image_cache,
        }
        self.lines: dict[DocPath, int] = {}
        self.found: list[_Found] = []
        #: Item ids by where the item is: ("items", index) or ("items_from", row index).
        self.item_ids: dict[DocPath, str] = {}
        self.unreadable: set[DocPath] = set()
        self.items_file: _ItemsFile | None = None
        #: items that name no model, by kind: reported once for all (see _report_missing_model)
        self.missing_model: dict[Kind, list[DocPath]] = {}

    # -- reporting

    def report(
        self,
        path: DocPath,
        message: str,
        line: int | None = None,
        *,
        default: DocPath | None = None,
    ) -> None:
        if line is None:
            line = self.line_of(path if default is None else ("defaults", *default))
        self.found.append(_Found(path, message, line, default))

    def report_file(self, message: str, line: int | None) -> None:
        """A problem with the items file as a whole, at a line of it."""
        assert self.items_file is not None
        self.found.append(_Found(("items_from",), message, line, source=self.items_file.display))

    def line_of(self, path: DocPath) -> int | None:
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    def problems(self) -> list[Problem]:
        result: dict[Problem, None] = {}  # ordered set: aliases can repeat a problem
        # A bad default usually breaks every item it reaches: one line for all of them, not
        # one per item, yet naming them (the same value can be fine for other kinds or models).
        shared: dict[tuple[DocPath, str, int | None], list[DocPath]] = {}
        for found in self.found:
            if found.default is not None:
                shared.setdefault((found.default, found.message, found.line), []).append(found.path)
        for found in self.found:
            if found.source is not None:
                result.setdefault(
                    Problem(found.message, line=found.line, source=found.source), None
                )
                continue
            if found.default is None:
                result.setdefault(self._problem(found.path, found.message, found.line), None)
                continue
            paths = shared.get((found.default, found.message, found.line))
            if paths is None:
                continue  # already reported with its group
            del shared[(found.default, found.message, found.line)]
            if len(paths) == 1:
                path = paths[0]
                where = ""
                if path[0] == "items_from":
                    where = f"; the item is on {self._item_name(path[:2], by_id=False)}"
                message = f"{found.message} (from defaults{where})"
                problem = self._problem(path, message, found.line, in_manifest=True)
            else:
                names = [self._item_name(path) for path in paths[:_MAX_NAMED]]
                if len(paths) > _MAX_NAMED:
                    names.append(f"and {len(paths) - _MAX_NAMED:,} more")
                problem = Problem(
                    f"{found.message} (from defaults; affects items {', '.join(names)})",
                    field=_dotted(("defaults", *found.default)),
                    line=found.line,
                )
            result.setdefault(problem, None)
        # The manifest's problems first, then the items file's, each in line order.
        return sorted(result, key=lambda p: (p.source is not None, p.line or 0))

    def _problem(
        self, path: DocPath, message: str, line: int | None, *, in_manifest: bool = False
    ) -> Problem:
        if len(path) >= 2 and path[0] in _ITEM_LISTS and isinstance(path[1], int):
            item_id = self.item_ids.get(path[:2])
            if path[0] == "items_from" and self.items_file is not None:
                # A row is located by its line: the field is relative to it, id known or not.
                field_name = _dotted(path[2:]) or None
                column = self.items_file.column_of.get(str(path[2])) if len(path) > 2 else None
                if field_name is not None and column is not None:
                    field_name += f" (column '{column}')"
                source = None if in_manifest else self.items_file.display
                return Problem(message, field_name, item_id, line, source)
            # Within an item with a known id, the field is relative to the item.
            rest = path[2:] if item_id is not None else path
            return Problem(message, _dotted(rest) or None, item_id, line)
        return Problem(message, _dotted(path) or None, None, line)

    def _item_name(self, path: DocPath, *, by_id: bool = True) -> str:
        at = path[:2]
        item_id = self.item_ids.get(at)
        if item_id is not None and by_id:
            return f"'{item_id}'"
        if at[0] == "items_from" and self.items_file is not None:
            return f"{self.items_file.display}:{self.lines.get(at)}"
        return _dotted(at)

    def report_errors(
        self,
        errors: list[ErrorDetails],
        model: type[BaseModel],
        at: DocPath = (),
        from_defaults: frozenset[str] = frozenset(),
    ) -> None:
        for error in errors:
            loc = tuple(error["loc"])
            message = describe(error, model)
            if loc and loc[0] in from_defaults:
                self.report(at + loc, message, default=loc)
            else:
                self.report(at + loc, message)

    # -- the document

    def load(self, text: str) -> Manifest | None:
        data = self._parse(text)
        if data is _UNREADABLE:
            return None
        if data is None:
            self.report((), "the manifest is empty: it needs at least version, name and items")
            return None
        if not isinstance(data, dict):
            self.report(
                (),
                "the manifest must be a mapping of keys (version, name, items, ...) at the top "
                f"level (got {got(data)})",
                self.lines.get(()),
            )
            return None
        return self._document(data)

    def _builder(self, size: int) -> _Builder:
        builder = _Builder(self.report, size)
        # Shared, not copied: problems found while building are located as they are reported.
        self.lines = builder.lines
        self.unreadable = builder.unreadable
        return builder

    def _parse(self, text: str) -> Any:
        builder = self._builder(len(text))
        reported = len(self.found)
        try:
            try:
                loader = _StreamLoader(text)
                try:
                    return builder.document(loader)
                finally:
                    loader.dispose()
            except yaml.YAMLError:
                # Start again: the pure-Python composer words syntax errors better (it names a
                # tab), and what was reported before the error came from a broken document.
                del self.found[reported:]
                builder = self._builder(len(text))
                node = yaml.compose(text, Loader=yaml.SafeLoader)
            if node is None:
                return None
            # Never found by line_of (it stops short of the empty path): for whole-document
            # problems only.
            self.lines[()] = _line(node)
            return builder.build(node, ())
        except yaml.YAMLError as exc:
            message, line = _yaml_error(exc, text)
            self.report((), message, line)
        except RecursionError:
            self.report((), "the document is nested too deeply")
        except _TooLarge:
            self.report((), f"the document expands to more than {builder.limit} values "
                        "(aliases?)")
        return _UNREADABLE

    def _document(self, data: dict[str, Any]) -> Manifest | None:
        top = {
            key: ({} if key in _SECTIONS and value is None else value)
            for key, value in data.items()
        }
        for key in ("version", "name"):
            if top.get(key) is None and (key,) not in self.unreadable:
                top.pop(key, None)
                hint = "write 'version: 1'" if key == "version" else "it names the batch"
                self.report((key,), f"is required: {hint}")
        settings, errors = validate(TopLevel, top, self.context)
        self.report_errors(errors, TopLevel)
        bad = {tuple(error["loc"]) for error in errors}
        if settings is not None:
            self._check_settings(settings, top, bad)
            self.item_rules = ItemRules(
                Settings(
                    self.catalogue,
                    api=settings.provider.api,
                    allow_unknown_models=settings.provider.allow_unknown_models,
                )
            )
        pricing = self._pricing(top.get("pricing"))
        defaults = self._defaults(top.get("defaults"))
        has_file = "items_from" in top
        items_file = self._items_from(top.get("items_from")) if has_file else None
        first_seen: dict[str, tuple[str, DocPath]] = {}
        items = self._items(top.get("items"), defaults, first_seen, optional=has_file)
        if items_file is not None:
            items += self._file_items(items_file, defaults, first_seen)
        self._report_missing_model()
        if items_file is not None and not items and not self.found:
            self.report(
                ("items_from",),
                f"{items_file.written!r} has no items, and the manifest lists none: a batch "
                "needs at least one",
            )
        max_units = settings.limits.max_units if settings is not None else None
        if max_units is not None and pricing is not None:
            self._check_max_units(items, pricing)
        if self.found or settings is None or settings.name is None or pricing is None:
            return None
        output_dir = (
            settings.output.dir if settings.output.dir is not None else f"out/{settings.name}"
        )
        return Manifest(
            version=1,
            name=settings.name,
            path=self.manifest_path,
            provider=ProviderSettings(
                name=settings.provider.name,
                base_url=settings.provider.base_url,
                timeout=settings.provider.timeout,
                api=settings.provider.api,
                allow_unknown_models=settings.provider.allow_unknown_models,
            ),
            limits=Limits(
                concurrency=settings.limits.concurrency,
                requests_per_minute=settings.limits.requests_per_minute,
                deadline=settings.limits.deadline,
                max_units=max_units,
            ),
            retry=RetrySettings(
                max_attempts=settings.retry.max_attempts,
                base_delay=settings.retry.base_delay,
                max_delay=settings.retry.max_delay,
                lookup_grace=settings.retry.lookup_grace,
                lookup_timeout=settings.retry.lookup_timeout,
            ),
            poll=PollSettings(
                interval=settings.poll.interval,
                max_interval=settings.poll.max_interval,
                timeout=settings.poll.timeout,
            ),
            output_dir=Path(os.path.normpath(self.manifest_path.parent / output_dir)),
            items=tuple(items),
            download=settings.output.download,
            download_timeout=settings.output.download_timeout,
            pricing=pricing,
            items_from=items_file.path if items_file is not None else None,
            warnings=tuple(self.item_rules.warnings.values()),
        )

    def _report_missing_model(self) -> None:
        """One problem for the items that name no model: on the item when it is the only one,
        else at ``defaults.model``, where one line fixes them all."""
        paths = [path for paths in self.missing_model.values() for path in paths]
        if not paths:
            return
        kind = next(iter(self.missing_model))
        message = self.item_rules.missing_model(kind)
        if len(paths) == 1:
            self.report((*paths[0], "model"), message)
            return
        names = [self._item_name(path) for path in paths[:_MAX_NAMED]]
        if len(paths) > _MAX_NAMED:
            names.append(f"and {len(paths) - _MAX_NAMED:,} more")
        self.report(
            ("defaults", "model"),
            f"{message}; {len(paths):,} items name none ({', '.join(names)}): set it here for "
            "all of them, or on each item",
        )

    def _check_settings(self, settings: TopLevel, top: dict[str, Any], bad: set[DocPath]) -> None:
        for section, upper, lower in (
            ("retry", "max_delay", "base_delay"),
            ("poll", "max_interval", "interval"),
        ):
            high = getattr(getattr(settings, section), upper)
            low = getattr(getattr(settings, section), lower)
            if (section, upper) in bad or (section, lower) in bad or high >= low:
                continue
            written = top.get(section)
            default = "" if isinstance(written, dict) and upper in written else ", the default"
            self.report(
                (section, upper),
                f"must be at least {lower} ({number_text(low)}) (got {number_text(high)}{default})",
            )

    def _defaults(self, raw: Any) -> _Defaults:
        defaults = _Defaults()
        if raw is None:
            return defaults
        if not isinstance(raw, dict):
            self.report(("defaults",), f"must be a mapping of item fields (got {got(raw)})")
            return defaults
        for key, value in raw.items():
            path: DocPath = ("defaults", key)
            if key == "id":
                self.report(path, "cannot have a default: every item needs its own unique id")
            elif key not in _ITEM_KEYS:
                self.report(path, unknown_key(key, _ITEM_KEYS))
            elif value is None:
                self.report(path, "has no value: write one, or remove the key")
            elif key == "kind":
                defaults.kind = _kind_of(value)
                if defaults.kind is None:
                    defaults.kind_invalid = True
                    self.report(path, choice_message(value, _KINDS))
            else:
                defaults.values[key] = value
        return defaults

    # -- pricing

    def _pricing(self, raw: Any) -> PriceTable | None:
        """The manifest's prices over the built-in table; None when they are invalid."""
        at: DocPath = ("pricing",)
        if at in self.unreadable:
            return None
        if not raw:
            return BUILTIN_PRICES
        if not isinstance(raw, dict):
            self.report(at, f"must be a mapping with video and/or image prices (got {got(raw)})")
            return None
        before = len(self.found)
        video: dict[tuple[str, str, int], float] = {}
        per_second: dict[tuple[str, str], float] = {}
        sound: dict[str, float] = {}
        image: dict[str, float] = {}
        builtin = True
        for key, value in raw.items():
            if key == "builtin":
                if isinstance(value, bool):
                    builtin = value
                else:
                    self.report((*at, key), f"must be true or false (got {got(value)})")
            elif key == "video":
                self._video_prices(value, video, per_second, sound)
            elif key == "image":
                self._image_prices(value, image)
            else:
                self.report((*at, key), unknown_key(key, ("video", "image", "builtin")))
        if len(self.found) > before:
            return None
        return PriceTable(
            video=video,
            video_per_second=per_second,
            image=image,
            sound_per_second=sound,
            indicative=False,
            fallback=BUILTIN_PRICES if builtin else None,
        )

    def _price_model(self, path: DocPath, model: str, media: str) -> bool:
        """Whether a model named under pricing.<media> is one that makes that media."""
        cat = self.item_rules.catalogue
        known = cat.model(model)
        if known is not None and any(k.media == media and r.usable
                                     for k, r in known.kinds.items()):
            return True
        if known is None and self.item_rules.settings.allow_unknown_models:
            return True
        usable_elsewhere = known is not None and any(
            k.media != media and r.usable for k, r in known.kinds.items()
        )
        if known is not None and any(k.media == media for k in known.kinds):
            message = f"'{model}' was retired by Kling for {media}s: it needs no price there"
            if usable_elsewhere:
                elsewhere = "image" if media == "video" else "video"
                message += f" (price its {elsewhere}s under pricing.{elsewhere})"
        elif known is not None:
            elsewhere = "image" if media == "video" else "video"
            message = (
                f"'{model}' is not {'an' if media == 'image' else 'a'} {media} model: price it "
                f"under pricing.{elsewhere}"
            )
        else:
            names = [m for m in cat.media_names(media)
                     if any(r.usable for r in cat.models[m].kinds.values())]
            message = f"unknown {media} model '{model}'{suggest(model, names)}"
        self.report(path, message)
        return False

    def _video_price_rules(self, model: str) -> tuple[tuple[str, ...], Callable[[int], str | None]]:
        """The modes a video model has and what is wrong with a duration for it."""
        cat = self.item_rules.catalogue
        known = cat.model(model)
        rules = [
            r for k, r in (known.kinds.items() if known is not None else ())
            if k.media == "video" and r.usable
        ]
        if not rules:
            return ALL_MODES, lambda seconds: None if 0 < seconds <= 3600 else "is implausible"
        modes = tuple(dict.fromkeys(mode for r in rules for mode in r.modes))
        spans = [d for r in rules for d in (r.durations, r.durations_with_references) if d]

        def duration_problem(seconds: int) -> str | None:
            if any(d.allows(seconds) for d in spans):
                return None
            allowed = " or ".join(dict.fromkeys(d.describe() for d in spans))
            return f"must be {allowed} for {model} (got {seconds})"

        return modes, duration_problem

    def _units(self, path: DocPath, value: Any) -> float | None:
        problem = None
        if isinstance(value, bool) or not isinstance(value, int | float):
            problem = f"must be a number of units (got {got(value)})"
        else:
            try:
                units = float(value)
            except OverflowError:
                units = float("inf")
            if units != units or units in (float("inf"), float("-inf")) or units < 0:
                problem = f"must be a finite number of units, 0 or more (got {got(value)})"
        if problem is not None:
            self.report(path, problem)
            return None
        return units

    def _video_prices(
        self,
        raw: Any,
        video: dict[tuple[str, str, int], float],
        per_second: dict[tuple[str, str], float],
        sound: dict[str, float],
    ) -> None:
        at: DocPath = ("pricing", "video")
        example = (
            "e.g. {kling-v2-5-turbo: {std: {5: 1.5, 10: 3}, pro: {per_second: 0.5}}, "
            "kling-v3: {sound: {per_second: 0.3}}}"
        )
        if not isinstance(raw, dict):
            self.report(
                at, f"must map video models to modes to prices, {example} (got {got(raw)})"
            )
            return
        for model, modes in raw.items():
            model_at = (*at, model)
            if not self._price_model(model_at, model, "video"):
                continue
            model_modes, duration_problem = self._video_price_rules(model)
            if not isinstance(modes, dict):
                self.report(
                    model_at,
                    f"must map modes ({', '.join(model_modes)}) and sound to prices, {example} "
                    f"(got {got(modes)})",
                )
                continue
            for mode, prices in modes.items():
                mode_at = (*model_at, mode)
                if mode == "sound":
                    if not isinstance(prices, dict) or set(prices) != {"per_second"}:
                        self.report(mode_at, "must be {per_second: UNITS}: the surcharge per "
                                    "second of video with sound on")
                        continue
                    units = self._units((*mode_at, "per_second"), prices["per_second"])
                    if units is not None:
                        sound[model] = units
                    continue
                if mode not in model_modes:
                    known = ", ".join(model_modes)
                    self.report(
                        mode_at,
                        f"unknown mode '{mode}' for {model}{suggest(mode, model_modes)}: "
                        f"{known}, or sound",
                    )
                    continue
                if not isinstance(prices, dict):
                    self.report(
                        mode_at,
                        "must map durations in seconds (or per_second) to units, e.g. "
                        f"{{5: 1.5, 10: 3}} (got {got(prices)})",
                    )
                    continue
                for seconds, value in prices.items():
                    price_at = (*mode_at, seconds)
                    if seconds == "per_second":
                        units = self._units(price_at, value)
                        if units is not None:
                            per_second[(model, mode)] = units
                        continue
                    if not _INT_TEXT.fullmatch(seconds) or len(seconds) > 4:
                        self.report(
                            price_at,
                            f"must be a duration in whole seconds, or per_second (got '{seconds}')",
                        )
                        continue
                    problem = duration_problem(int(seconds))
                    if problem is not None:
                        self.report(price_at, f"duration {problem}")
                        continue
                    units = self._units(price_at, value)
                    if units is not None:
                        video[(model, mode, int(seconds))] = units

    def _image_prices(self, raw: Any, image: dict[str, float]) -> None:
        at: DocPath = ("pricing", "image")
        if not isinstance(raw, dict):
            self.report(
                at,
                "must map image models to units per image, e.g. {kling-v2-1: 0.25} "
                f"(got {got(raw)})",
            )
            return
        for model, value in raw.items():
            if self._price_model((*at, model), model, "image"):
                units = self._units((*at, model), value)
                if units is not None:
                    image[model] = units

    def _check_max_units(self, items: list[Item], pricing: PriceTable) -> None:
        # A task without a price would slip past the cap unnoticed: refuse the batch instead.
        priced: dict[TaskKey, bool] = {}
        unpriced: dict[str, int] = {}
        for item in items:
            key = task_key(item.request)
            known = priced.get(key)
            if known is None:
                known = priced[key] = lookup(pricing, *key) is not None
            if not known:
                name = price_label(item.request)
                unpriced[name] = unpriced.get(name, 0) + 1
        if unpriced:
            count = sum(unpriced.values())
            which = ", ".join(f"{label}: {n:,}" for label, n in unpriced.items())
            self.report(
                ("limits", "max_units"),
                f"needs a price for every task, and {count:,} {'has' if count == 1 else 'have'} "
                f"none ({which}): add them under 'pricing:', or remove max_units",
            )

    # -- items

    def _items(
        self,
        raw: Any,
        defaults: _Defaults,
        first_seen: dict[str, tuple[str, DocPath]],
        *,
        optional: bool = False,
    ) -> list[Item]:
        """The manifest's own items; ``optional`` when an items file may bring them all."""
        if ("items",) in self.unreadable:
            return []
        if raw is None:
            if not optional:
                self.report(
                    ("items",), "is required: list at least one item (or name a file: items_from)"
                )
            return []
        if not isinstance(raw, list):
            self.report(("items",), f"must be a list of items (got {got(raw)})")
            return []
        if not raw:
            if not optional:
                self.report(("items",), "must list at least one item")
            return []
        items = []
        for index, entry in enumerate(raw):
            # Each entry's plain data is let go once it is an Item: at 100,000 items the two
            # together would be the load's peak memory.
            raw[index] = None
            if ("items", index) in self.unreadable:
                continue
            item = self._item(("items", index), entry, defaults, first_seen, self.context)
            if item is not None:
                items.append(item)
        return items

    def _items_from(self, raw: Any) -> _ItemsFile | None:
        """Check what ``items_from`` says (the file itself is read later)."""
        at: DocPath = ("items_from",)
        if at in self.unreadable:
            return None
        if raw is None:
            self.report(at, "has no value: give the path of a CSV or JSONL file, or remove the key")
            return None
        before = len(self.found)
        spec: dict[str, Any]
        if isinstance(raw, str):
            spec, path_at = {"path": raw}, at
        elif isinstance(raw, dict):
            spec, path_at = raw, (*at, "path")
            for key in raw:
                if key not in _ITEMS_FROM_KEYS:
                    self.report((*at, key), unknown_key(key, _ITEMS_FROM_KEYS))
        else:
            self.report(
                at,
                "must be the path of a CSV or JSONL file of items, or a mapping with path, "
                f"columns, format and ignore_columns (got {got(raw)})",
            )
            return None
        written = spec.get("path")
        if written is None:
            if path_at not in self.unreadable:
                self.report(path_at, "is required: the CSV or JSONL file of items")
        elif not isinstance(written, str) or not written.strip():
            self.report(path_at, f"must be a file path (got {got(written)})")
            written = None
        elif written.startswith("~"):
            self.report(
                path_at,
                "'~' is not expanded here: write the full path, or one relative to the manifest",
            )
        elif "://" in written:
            self.report(
                path_at,
                f"must be a local file path, relative to the manifest (got {got(written)})",
            )
        columns = self._columns(spec.get("columns"))
        ignore = self._ignore_columns(spec.get("ignore_columns"), columns)
        fmt = spec.get("format")
        if fmt is not None and fmt not in _ITEMS_FILE_FORMATS:
            self.report((*at, "format"), choice_message(fmt, _ITEMS_FILE_FORMATS))
        elif fmt is None and isinstance(written, str):
            fmt = _FORMAT_OF_SUFFIX.get(Path(written).suffix.lower())
            if fmt is None:
                how = (
                    "or add 'format: csv' or 'format: jsonl'"
                    if isinstance(raw, dict)
                    else ("or write items_from: {path: ..., format: csv}")
                )
                self.report(
                    path_at,
                    f"cannot tell the format of {written!r} from its name: end it in .csv, "
                    f".jsonl or .ndjson, {how}",
                )
        if len(self.found) > before or not isinstance(written, str) or fmt is None:
            return None
        # Relative to the manifest, as every path in it.
        return _ItemsFile(
            at=path_at,
            written=written,
            path=Path(os.path.normpath(self.manifest_path.parent / written)),
            display=os.path.normpath(self.display_dir / written),
            format=str(fmt),
            columns=columns,
            ignore=ignore,
        )

    def _columns(self, raw: Any) -> dict[str, str]:
        """items_from.columns, {item field: column}, inverted to {column: item field}."""
        at: DocPath = ("items_from", "columns")
        if raw is None or at in self.unreadable:
            return {}
        if not isinstance(raw, dict):
            self.report(
                at,
                "must map item fields to the file's column names, e.g. {prompt: description} "
                f"(got {got(raw)})",
            )
            return {}
        columns: dict[str, str] = {}
        for item_field, column in raw.items():
            path = (*at, item_field)
            if item_field not in _ITEM_KEY_SET:
                self.report(
                    path, f"unknown item field '{item_field}'{suggest(item_field, _ITEM_KEYS)}"
                )
            elif not isinstance(column, str) or not column.strip():
                self.report(
                    path, f"must be a column name (got {got(column)}){scalar_hint(column)}"
                )
            elif column.strip() in columns:
                self.report(path, f"column '{column}' is already read as {columns[column.strip()]}")
            else:
                columns[column.strip()] = item_field
        return columns

    def _ignore_columns(self, raw: Any, columns: Mapping[str, str]) -> frozenset[str]:
        at: DocPath = ("items_from", "ignore_columns")
        if raw is None or at in self.unreadable:
            return frozenset()
        if not isinstance(raw, list):
            self.report(at, f"must be a list of column names (got {got(raw)})")
            return frozenset()
        names = set()
        for index, name in enumerate(raw):
            if not isinstance(name, str) or not name.strip():
                self.report((*at, index), f"must be a column name (got {got(name)})")
            elif name.strip() in columns:
                self.report(
                    (*at, index),
                    f"column '{name}' is read as {columns[name.strip()]} (items_from.columns)",
                )
            else:
                names.add(name.strip())
        return frozenset(names)

    def _file_items(
        self, spec: _ItemsFile, defaults: _Defaults, first_seen: dict[str, tuple[str, DocPath]]
    ) -> list[Item]:
        self.items_file = spec
        try:
            data = spec.path.read_bytes()
        except (OSError, ValueError) as exc:  # ValueError: a NUL character in the path
            if isinstance(exc, FileNotFoundError):
                reason = "file not found"
            elif isinstance(exc, IsADirectoryError):
                reason = "it is a directory"
            elif isinstance(exc, OSError):
                reason = exc.strerror or str(exc)
            else:
                reason = str(exc)
            self.report(
                spec.at,
                f"cannot read {spec.written!r} ({spec.path}): {reason}; the path is relative "
                "to the manifest",
            )
            return []
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            self.report_file("the file is not UTF-8 text: save it as UTF-8", line)
            return []
        del data
        # Paths in rows are relative to the items file's directory (they travel with it);
        # paths inherited from the manifest's defaults stay relative to the manifest.
        context: dict[str, Any] = {"base_dir": spec.path.parent, "image_cache": self.image_cache}
        if spec.format == "csv":
            return self._csv_items(spec, text, defaults, first_seen, context)
        return self._jsonl_items(spec, text, defaults, first_seen, context)

    def _file_item(
        self,
        at: DocPath,
        raw: Any,
        defaults: _Defaults,
        first_seen: dict[str, tuple[str, DocPath]],
        context: Mapping[str, Any],
        before: int,
        items: list[Item],
    ) -> None:
        assert self.items_file is not None
        item = self._item(at, raw, defaults, first_seen, context, self.items_file.path)
        if item is not None and len(self.found) == before:
            items.append(item)

    def _csv_items(
        self,
        spec: _ItemsFile,
        text: str,
        defaults: _Defaults,
        first_seen: dict[str, tuple[str, DocPath]],
        context: Mapping[str, Any],
    ) -> list[Item]:
        reader = csv.reader(_lines(text))
        items: list[Item] = []
        try:
            header = next(reader, None)
            while header is not None and not any(cell.strip() for cell in header):
                header = next(reader, None)  # blank lines before the header
        except csv.Error as exc:
            self.report_file(f"cannot read the CSV header: {exc}", reader.line_num)
            return items
        if header is None:
            self.report_file(
                "the file is empty: it needs a header row naming the columns (id, prompt, ...)", 1
            )
            return items
        used = self._csv_header(spec, [cell.strip() for cell in header], reader.line_num)
        if used is None:
            return items
        width = len(header)
        start = reader.line_num + 1
        index = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                self.report_file(f"cannot read the CSV: {exc}", reader.line_num)
                break
            line, start = start, reader.line_num + 1
            if not any(cells):
                continue  # a blank line, or an empty spreadsheet row
            at: DocPath = ("items_from", index)
            index += 1
            self.lines[at] = line
            before = len(self.found)
            if len(cells) > width and any(cell.strip() for cell in cells[width:]):
                self.report(
                    at,
                    f"has {len(cells)} values but the header names {width} columns: put "
                    'values that contain commas in double quotes ("a, b")',
                )
            count = len(cells)
            raw: dict[str, Any] = {}
            for column, name in used:
                cell = cells[column] if column < count else ""
                if not cell:
                    continue  # an empty cell: the field is absent, a default applies
                if name in CSV_NUMBERS:
                    raw[name] = _csv_number(cell)
                elif name in CSV_FLAGS:
                    raw[name] = _CSV_FLAGS.get(cell.strip().lower(), cell)
                elif name in CSV_JSON:
                    try:
                        raw[name] = json.loads(cell, object_pairs_hook=_json_object)
                    except (ValueError, RecursionError) as exc:
                        self.report(
                            (*at, name),
                            f"{_json_problem(exc)}; in a CSV cell it is written as JSON, "
                            f"e.g. {CSV_JSON[name]}",
                        )
                        self.unreadable.add((*at, name))
                else:
                    raw[name] = cell
            self._file_item(at, raw, defaults, first_seen, context, before, items)
        return items

    def _csv_header(
        self, spec: _ItemsFile, names: list[str], line: int
    ) -> list[tuple[int, str]] | None:
        """The columns to read, as (position, item field); None when rows cannot be read."""
        column_of = spec.column_of
        used: list[tuple[int, str]] = []
        seen: dict[str, int] = {}
        readable = True
        # A mapped column missing from the header is most likely misspelt in the mapping (or
        # in the header): one problem for it, not three (the column it meant is then "unknown",
        # and the column named like the field "not read").
        present = set(names)
        missing = {column: field for column, field in spec.columns.items() if column not in present}
        meant = {
            close
            for column in missing
            for close in difflib.get_close_matches(column, names, n=1, cutoff=0.6)
        }
        for position, name in enumerate(names):
            if not name:
                self.report_file(f"column {position + 1} has no name in the header row", line)
                readable = False
            elif name in seen:
                self.report_file(
                    f"column '{name}' is named twice in the header (columns {seen[name] + 1} "
                    f"and {position + 1})",
                    line,
                )
                readable = False
            elif name in spec.ignore:
                pass
            elif name in spec.columns:
                used.append((position, spec.columns[name]))
            elif name in _ITEM_KEY_SET and name not in column_of:
                used.append((position, name))
            elif name in _ITEM_KEY_SET:
                if column_of[name] in missing:
                    continue
                self.report_file(
                    f"column '{name}' is not read: items_from.columns reads {name} from column "
                    f"'{column_of[name]}' (list '{name}' under items_from.ignore_columns to "
                    "leave it out)",
                    line,
                )
            elif name in meant:
                pass
            else:
                hint = ""
                if ";" in name or "\t" in name:
                    hint = (
                        "; the header reads as one column: save the file with commas between values"
                    )
                else:
                    suggestion = suggest(name, (*_ITEM_KEYS, *spec.columns))
                    hint = suggestion or (
                        ": columns are item fields (id, kind, prompt, ...); map others with "
                        "items_from.columns or list them under items_from.ignore_columns"
                    )
                self.report_file(f"unknown column '{name}'{hint}", line)
            seen.setdefault(name, position)
        for column, item_field in missing.items():
            self.report(
                ("items_from", "columns", item_field),
                f"column '{column}' is not in the header of {spec.written!r}"
                f"{suggest(column, [n for n in names if n])}",
            )
            readable = False
        if readable and not any(name == "id" for _, name in used):
            self.report_file(
                "no 'id' column: every item needs a unique, stable id (or map a column to it: "
                "items_from.columns: {id: COLUMN})",
                line,
            )
            readable = False
        return used if readable else None

    def _jsonl_items(
        self,
        spec: _ItemsFile,
        text: str,
        defaults: _Defaults,
        first_seen: dict[str, tuple[str, DocPath]],
        context: Mapping[str, Any],
    ) -> list[Item]:
        items: list[Item] = []
        column_of = spec.column_of
        rename = bool(spec.columns or spec.ignore)
        index = 0
        for number, line in enumerate(_lines(text), 1):
            if not line.strip():
                continue
            at: DocPath = ("items_from", index)
            index += 1
            self.lines[at] = number
            before = len(self.found)
            try:
                raw = json.loads(line, object_pairs_hook=_json_object)
            except (ValueError, RecursionError) as exc:
                self.report(at, _json_problem(exc))
                continue
            if rename and isinstance(raw, dict):
                renamed: dict[str, Any] = {}
                for key, value in raw.items():
                    if key in spec.ignore:
                        continue
                    if key in spec.columns:
                        renamed[spec.columns[key]] = value
                    elif key in column_of:
                        self.report(
                            at,
                            f"key '{key}' is not read: items_from.columns reads {key} from "
                            f"'{column_of[key]}' (list '{key}' under items_from.ignore_columns "
                            "to leave it out)",
                        )
                    else:
                        renamed[key] = value
                raw = renamed
            self._file_item(at, raw, defaults, first_seen, context, before, items)
        return items

    def _item_id(
        self, at: DocPath, raw: dict[str, Any], first_seen: dict[str, tuple[str, DocPath]]
    ) -> str | None:
        path: DocPath = (*at, "id")
        if self.unreadable and path in self.unreadable:
            return None
        value = raw.get("id")
        if value is None:
            self.report(path, "is required: every item needs a unique, stable id")
            return None
        if not isinstance(value, str):
            self.report(path, f"must be text (got {got(value)}){scalar_hint(value)}")
            return None
        if not _ID_RE.fullmatch(value) or not value.strip("."):
            self.report(
                path,
                f"must be 1-128 characters of {_NAME_CHARS}, and not only dots: it names the "
                f"item's directory and is part of its external task id (got {got(value)})",
            )
            return None
        try:
            # The downloader's rule (it names the item's directory on every OS): refused here,
            # offline, rather than after the task was paid for.
            check_item_id(value)
        except ValueError as exc:
            self.report(path, f"{exc}: choose another id")
            return None
        clash = own_name_clash(value)
        if clash is not None:
            # Its folder would take the place of the report, the state or the logs (a crash at
            # the end of every run, or assets among the logs): refused before anything is paid.
            self.report(path, f"'{value}' {clash}: choose another id")
            return None
        self.item_ids[at] = value
        # Ids name directories; macOS and Windows file systems ignore letter case.
        folded = value.casefold()
        first = first_seen.get(folded)
        if first is None:
            first_seen[folded] = (value, at)
            return value
        first_value, first_at = first
        where = self._where(first_at, at)
        if first_value == value:
            self.report(path, f"duplicate id: '{value}' is already used on {where}")
        else:
            self.report(
                path,
                f"duplicate id: '{value}' differs from '{first_value}' on {where} only in letter "
                "case, and ids name directories on case-insensitive file systems",
            )
        return value

    def _where(self, first: DocPath, here: DocPath) -> str:
        """Where the item at ``first`` is, as seen from a problem with the item at ``here``."""
        line = self.line_of((*first, "id"))
        if line is None:
            return "another item"
        if first[0] == here[0]:
            return f"line {line}"
        if first[0] == "items_from" and self.items_file is not None:
            return f"line {line} of {Path(self.items_file.display).name}"
        return f"line {line} of {self.manifest_path.name}"

    def _item_kind(self, at: DocPath, raw: dict[str, Any], defaults: _Defaults) -> Kind | None:
        if "kind" in raw:
            kind = _kind_of(raw["kind"])
            if kind is None:
                self.report((*at, "kind"), choice_message(raw["kind"], _KINDS))
            return kind
        if defaults.kind_invalid:
            return None
        return defaults.kind or Kind.TEXT2VIDEO

    def _item(
        self,
        at: DocPath,
        raw: Any,
        defaults: _Defaults,
        first_seen: dict[str, tuple[str, DocPath]],
        context: Mapping[str, Any],
        source: Path | None = None,
    ) -> Item | None:
        # Runs once per item, 100,000 times for a big items file: kept lean on purpose.
        if not isinstance(raw, dict):
            what = "a JSON object" if source is not None else "a mapping"
            self.report(at, f"must be {what} with at least an id and a prompt (got {got(raw)})")
            return None
        problems_before = len(self.found)
        item_id = self._item_id(at, raw, first_seen)
        kind = self._item_kind(at, raw, defaults)
        allowed = _KIND_FIELD_SETS[kind] if kind is not None else _FIELD_KINDS
        default_values = defaults.values
        merged: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "id" or key == "kind":
                continue
            if key in allowed:
                if value is not None:
                    merged[key] = value
                elif key not in default_values:
                    # null only opts out of a default; anywhere else it is a forgotten value.
                    self.report((*at, key), "has no value: write one, or remove the key")
            elif kind is not None and key in _FIELD_KINDS:
                self.report((*at, key), _not_a_field(key, kind))
            else:
                self.report((*at, key), unknown_key(key, _ITEM_KEYS))
        if kind is None:
            return None
        # A default applies only where it means something: video settings in defaults must
        # not break image items.
        inherited = [key for key in defaults.for_kind(kind) if key not in raw]
        for key in inherited:
            merged[key] = default_values[key]
        from_defaults = frozenset(inherited)
        if source is not None and not from_defaults.isdisjoint(IMAGE_FIELDS):
            context = {
                **context,
                "inherited": from_defaults,
                "defaults_dir": self.manifest_path.parent,
            }
        # Written but unreadable (reported already): present, so no "is required" on top.
        broken = (
            [key for key in KIND_FIELDS[kind] if (*at, key) in self.unreadable]
            if self.unreadable
            else []
        )
        schema = FIELD_MODELS[kind]
        values, errors = validate(schema, merged, context)
        if errors:
            self.report_errors(errors, schema, at, from_defaults)
        name: str | None = None
        if values is not None:
            draft = Draft(  # at, kind, given, from_defaults, bad, values
                at,
                kind,
                (*merged, *broken) if broken else tuple(merged),
                from_defaults,
                frozenset((*broken, *(str(e["loc"][0]) for e in errors if e["loc"])))
                if errors or broken
                else _NO_NAMES,
                values,
            )

            def report(field_name: str, message: str, conflict: bool) -> None:
                self._field_problem(draft, field_name, message, conflict)

            self.item_rules.check(draft, report)
            name = getattr(values, "model", None)
        if (
            len(self.found) > problems_before
            or broken
            or values is None
            or item_id is None
            or name is None  # reported for all such items at once
        ):
            return None
        builtin = self.item_rules.defaults(kind, name)
        fields: dict[str, Any] = {}
        # The model's fields, in declaration order (pydantic keeps them so in __dict__).
        for field_name, value in values.__dict__.items():
            if value is None:
                value = builtin.get(field_name)
                if value is None:
                    continue
            elif isinstance(value, _NESTED):
                value = _plain(value)
            fields[field_name] = value
        fields["model"] = self.item_rules.canonical(kind, name)
        if fields.get("sound") is False and not self.item_rules.has_sound(kind, name):
            del fields["sound"]  # Kling's default; a model without sound may refuse the key
        expected = int(fields["n"]) if kind is _IMAGE else 1
        # Positional: keyword arguments cost measurably at 100,000 items.
        return Item(item_id, TaskRequest(kind, fields, expected), self.lines.get(at), source)

    def _field_problem(
        self, draft: Draft, name: str, message: str, conflict: bool = False
    ) -> None:
        path: DocPath = (*draft.at, name)
        if name == "model" and name not in draft.given:
            # Missing everywhere: one problem for all the items it affects (see _document).
            self.missing_model.setdefault(draft.kind, []).append(draft.at)
            return
        if name not in draft.from_defaults:
            self.report(path, message)
            return
        if conflict:
            # The clash is with this item's own choice: it can be settled on the item.
            message += f"; write '{name}: null' on the item to not inherit it"
        self.report(path, message, default=(name,))


def _not_a_field(key: str, kind: Kind) -> str:
    if key == "aspect_ratio" and kind is Kind.IMAGE2VIDEO:
        return "'aspect_ratio' is not a field of kind image2video: the video follows the image"
    kinds = " and ".join(str(k) for k in _FIELD_KINDS[key])
    return f"'{key}' is not a field of kind {kind} (it belongs to {kinds})"


@contextlib.contextmanager
def _no_full_collections() -> Iterator[None]:
    """Hold off the garbage collector's full passes while a manifest loads.

    A 100,000-row items file leaves about a million objects alive; each full pass walks all of
    them and finds nothing (loading makes almost no reference cycles): about 15% of the load
    time. The young generations are still collected; the thresholds are restored after.
    """
    threshold = gc.get_threshold()
    gc.set_threshold(threshold[0], threshold[1], 1_000_000_000)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def load_manifest(path: Path, *, kling: Catalogue | None = None) -> Manifest:
    """Read and fully validate a manifest; raise ManifestError listing every problem found.

    ``kling``: the Kling model catalogue to validate against (the packaged one by default)."""
    source = str(path)
    try:
        data = path.read_bytes()
        manifest_path = path.resolve()
    except (OSError, ValueError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ManifestError(source, [Problem(f"cannot read the manifest: {reason}")]) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ManifestError(
            source, [Problem("the file is not UTF-8 text: save it as UTF-8", line=line)]
        ) from None
    checker = _Checker(manifest_path, path.parent, kling)
    with _no_full_collections():
        manifest = checker.load(text)
    problems = checker.problems()
    if manifest is None or problems:
        raise ManifestError(source, problems or [Problem("the manifest is not valid")])
    return manifest
