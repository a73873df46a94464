"""The provider-neutral sections of a manifest: what they may say, and the settings they give.

``version``, ``name``, ``provider``, ``limits``, ``retry``, ``poll`` and ``output`` are checked
for shape, types and ranges by pydantic models with ``extra="forbid"`` (a misspelt key is a
problem, never a silently dropped setting), whose value validators speak plain English. A
pydantic error's location is a document path, so the line map places it. What a model cannot
say (``retry.max_delay`` at least ``retry.base_delay``...) is checked after, on the valid part.
The result is the frozen settings the engine reads: :class:`ProviderSettings`, :class:`Limits`
(with its :class:`Deadline`), :class:`RetrySettings` and :class:`PollSettings`.

``provider.name`` chooses the plug-in (providers/registry.py), read before the rest: the
provider section is the generic keys (name, base_url, timeout) and the plug-in's own options,
validated as one model, and the plug-in gives the defaults the manifest leaves out (its base
URL, its account's concurrency).

``defaults``, ``items``, ``items_from`` and ``pricing`` are left to their own modules: their
rules depend on each other or their keys are data.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final
from urllib.parse import urlsplit

from pydantic import BeforeValidator, ConfigDict, Field, PlainValidator, create_model

from orchestrator.config.problems import ProblemSink
from orchestrator.providers import registry
from orchestrator.providers.plugin import ProviderPlugin
from orchestrator.validators import (
    DocPath,
    Flag,
    JsonRule,
    NonNegative,
    OneOf,
    Positive,
    Strict,
    WholeNumber,
    any_case,
    as_number,
    as_text,
    fail,
    got,
    http_url_problem,
    is_loopback,
    number_text,
    url_pattern,
    validate,
)

#: ``provider.base_url: simulator`` starts the provider's bundled simulator in-process.
SIMULATOR_BASE_URL = "simulator"
#: The provider of a manifest that names none.
DEFAULT_PROVIDER: Final = registry.DEFAULT_PROVIDER


@dataclass(frozen=True)
class ProviderSettings:
    base_url: str
    name: str = DEFAULT_PROVIDER
    timeout: float = 60.0  # seconds per HTTP request
    #: The plug-in's own keys of the provider section (its ``schema.options`` model); None for
    #: all their defaults.
    options: Any = None


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



_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: What a batch name (and an item id) may be made of, as messages say it.
NAME_CHARS: Final = "letters, digits, '.', '_' and '-'"


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


#: _base_url's rule in JSON Schema's words: the simulator, https anywhere, http to this machine.
_BASE_URL_RULE: Final = JsonRule({"anyOf": [
    {"const": SIMULATOR_BASE_URL},
    {"pattern": url_pattern("https")},
    {"pattern": f"^{any_case('http')}://([^\\s/?#@]*@)?({any_case('localhost')}"
                "|127\\.\\d{1,3}\\.\\d{1,3}\\.\\d{1,3}|\\[::1\\])(:\\d*)?([/?#]\\S*)?$"},
]})

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_DURATION_RE = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*[smhd]\s*)+")
#: _deadline's rule in JSON Schema's words (of the date spellings Python reads, the usual one).
_DEADLINE_RULE: Final = JsonRule({"anyOf": [
    {"type": "number", "exclusiveMinimum": 0},
    {"type": "string", "pattern": f"^{_DURATION_RE.pattern}$"},
    {"type": "string", "pattern": "^\\s*\\d{4}-\\d{2}-\\d{2}[Tt ]\\d{2}:\\d{2}(:\\d{2}([.,]\\d+)?)?"
                                  "\\s*([Zz]|[+-]\\d{2}(:?\\d{2})?)\\s*$"},
]})
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


def batch_name_problem(text: str) -> str | None:
    """Why ``text`` cannot name a batch; None when it can."""
    if not _NAME_RE.fullmatch(text) or not text.strip("."):
        return (
            f"must be 1-64 characters of {NAME_CHARS}, and not only dots: it becomes part of "
            f"every external task id and of file names (got {got(text)})"
        )
    return None


def _batch_name(value: object) -> str:
    text = as_text(value)
    problem = batch_name_problem(text)
    if problem is not None:
        fail(problem)
    return text


def _output_dir(value: object) -> str:
    text = as_text(value)
    if not text.strip():
        fail("must not be empty")
    if text.startswith("~"):
        # Taken literally it would create a directory named "~" next to the manifest.
        fail("'~' is not expanded here: write the full path, or one relative to the manifest")
    return text


class ProviderSection(Strict):
    """Which provider runs the batch, and how to reach it."""

    # The generic keys; each plug-in's section adds its own options (top_level_model).
    name: Annotated[
        str, BeforeValidator(OneOf(registry.NAMES)), JsonRule({"enum": list(registry.NAMES)})
    ] = Field(
        DEFAULT_PROVIDER,
        description=f"The provider: {' or '.join(registry.NAMES)} ({DEFAULT_PROVIDER} when "
        "left out). It decides the item fields and the credentials read from the environment.",
    )
    base_url: Annotated[str, BeforeValidator(_base_url), _BASE_URL_RULE] | None = Field(
        None,
        description="Where requests go: the provider's API when left out; any https URL (a "
        "proxy), http only to this machine (localhost), or 'simulator' for the bundled "
        "simulator, in this process (no account, nothing paid).",
    )
    timeout: Positive = Field(
        60.0,
        description="Seconds one HTTP request may take in all: connecting, sending and reading "
        "the whole answer.",
    )

    def settings(self, plugin: ProviderPlugin) -> ProviderSettings:
        options = plugin.schema.options
        return ProviderSettings(
            name=plugin.name,
            base_url=self.base_url if self.base_url is not None else plugin.default_base_url,
            timeout=self.timeout,
            # The plug-in's keys, as its own model (this section is a subclass of both).
            options=options.model_validate(
                {name: getattr(self, name) for name in options.model_fields}
            ),
        )


class LimitsSection(Strict):
    """How much of the provider the batch uses at once, and when it stops submitting."""

    concurrency: Annotated[WholeNumber, Field(ge=1)] | None = Field(
        None,
        description="Tasks in flight at once (a Kling image task of n images counts n); the "
        "provider account's usual limit when left out.",
    )
    requests_per_minute: Positive = Field(60.0, description="Create requests a minute, at most.")
    deadline: Annotated[Deadline, PlainValidator(_deadline), _DEADLINE_RULE] | None = Field(
        None,
        description="No new submissions after it: seconds or a duration from the start of the "
        "run (90m, 6h, 1h30m), or a date and time with a timezone (2026-11-22T06:00:00Z). "
        "Running tasks are still collected; the rest is reported not_run, and a rerun goes on.",
        examples=["6h"],
    )
    max_units: Positive | None = Field(
        None,
        description="Stop submitting before what was submitted would cost more than this, in "
        "the provider's unit (Kling: units; LTX: USD); every task needs a price (pricing).",
        examples=[1000],
    )

    def settings(self, plugin: ProviderPlugin) -> Limits:
        return Limits(
            concurrency=(
                self.concurrency if self.concurrency is not None else plugin.default_concurrency
            ),
            requests_per_minute=self.requests_per_minute,
            deadline=self.deadline,
            max_units=self.max_units,
        )


class RetrySection(Strict):
    """What is tried again, and how soon."""

    max_attempts: Annotated[WholeNumber, Field(ge=1, le=100)] = Field(
        5,
        description="Attempts per item, each a new task, counting failed generations worth "
        "retrying.",
    )
    base_delay: Positive = Field(
        1.0,
        description="Seconds before the first retry; full-jitter exponential backoff doubles "
        "it at each attempt, up to max_delay.",
    )
    max_delay: Positive = Field(
        60.0, description="The longest wait between two attempts, in seconds (at least "
        "base_delay)."
    )
    lookup_grace: NonNegative = Field(
        2.0,
        description="Seconds to wait before looking up a create whose answer was lost, so that "
        "the provider has recorded it.",
    )
    lookup_timeout: Positive = Field(
        300.0,
        description="Seconds a task the provider says exists (a create refused as a duplicate) "
        "is looked for before the item is left unresolved.",
    )

    def settings(self) -> RetrySettings:
        return RetrySettings(
            max_attempts=self.max_attempts,
            base_delay=self.base_delay,
            max_delay=self.max_delay,
            lookup_grace=self.lookup_grace,
            lookup_timeout=self.lookup_timeout,
        )


class PollSection(Strict):
    """How often running tasks are checked."""

    interval: Positive = Field(
        5.0,
        description="Seconds before a task's first status check; the wait grows up to "
        "max_interval.",
    )
    max_interval: Positive = Field(
        30.0, description="The longest wait between two status checks of a task, in seconds "
        "(at least interval)."
    )
    timeout: Positive = Field(900.0, description="Seconds a task may run before it is given up.")

    def settings(self) -> PollSettings:
        return PollSettings(
            interval=self.interval, max_interval=self.max_interval, timeout=self.timeout
        )


class OutputSection(Strict):
    """Where the results go."""

    dir: Annotated[
        str, BeforeValidator(_output_dir), JsonRule({"pattern": "\\S", "not": {"pattern": "^~"}})
    ] | None = Field(
        None,
        description="The folder of the report, logs, state and downloaded files, relative to "
        "the manifest; out/ and the batch's name when left out.",
        examples=["out/results"],
    )
    download: Flag = Field(
        True, description="Download what the tasks made; false keeps only its URLs in the report."
    )
    download_timeout: Positive = Field(
        600.0, description="Seconds one attempt at one file may take in all."
    )


def _as_written(schema: dict[str, Any]) -> None:
    """What a manifest may write at the top level, where the model says less: version and name
    are required (the model lets them be missing only to go on checking), and a section
    written empty is an empty one."""
    properties = schema["properties"]
    for key in ("version", "name"):
        properties[key] = _not_null(properties[key])
    schema["required"] = ["version", "name"]
    for key in _SECTIONS:
        if "$ref" in properties[key]:
            ref = {"$ref": properties[key].pop("$ref")}
            properties[key]["anyOf"] = [ref, {"type": "null"}]


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``X | None``'s schema as X's."""
    options = [option for option in schema.get("anyOf", ()) if option != {"type": "null"}]
    if len(options) != 1:
        return schema
    rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    return {**options[0], **rest}


class TopLevel(Strict):
    """A batch of generation tasks for one provider (manifest version 1)."""

    model_config = ConfigDict(json_schema_extra=_as_written)

    # version and name are optional here only so that the other sections still validate when
    # they are missing; their absence is reported separately.
    version: Annotated[int, BeforeValidator(_version), JsonRule({"const": 1})] | None = Field(
        None, description="The manifest format: 1."
    )
    name: Annotated[
        str,
        BeforeValidator(_batch_name),
        JsonRule({"pattern": "^[A-Za-z0-9._-]{1,64}$", "not": {"pattern": "^\\.+$"}}),
    ] | None = Field(
        None,
        description=f"Names the batch: 1-64 {NAME_CHARS}. It is part of every external task "
        "id and of the state, so keep it stable across reruns.",
    )
    provider: ProviderSection = Field(default_factory=ProviderSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    retry: RetrySection = Field(default_factory=RetrySection)
    poll: PollSection = Field(default_factory=PollSection)
    output: OutputSection = Field(default_factory=OutputSection)
    # Checked by hand: their rules depend on each other (defaults per kind, located per item),
    # or their keys are data (model names, durations, column names). Their schemas are the
    # provider's (config/json_schema.py).
    defaults: Any = Field(
        None,
        description="Item fields every item gets unless it sets them itself. A default reaches "
        "only the kinds that have the field, and 'field: null' on an item opts out of it.",
    )
    items: Any = Field(
        None,
        description="The batch's items: each one a unique, stable id (results are matched by "
        "id, never by order), its kind and its provider's fields.",
    )
    items_from: Any = Field(
        None,
        description="A CSV or JSONL file of more items, read after the manifest's own: its "
        "path (relative to the manifest), or a mapping of path, columns, format and "
        "ignore_columns.",
    )
    pricing: Any = Field(
        None,
        description="Your prices over the provider's built-in, indicative table, for validate "
        "--estimate and limits.max_units (see docs/errors-and-limits.md, Cost).",
    )


_SECTIONS: Final = ("provider", "limits", "retry", "poll", "output", "defaults", "pricing")


@functools.cache
def top_level_model(name: str) -> type[TopLevel]:
    """The top level of a manifest for the provider ``name``: its provider section is the
    generic keys and the plug-in's options."""
    plugin = registry.plugin(name)
    section = create_model(
        f"{plugin.title}ProviderSection",
        __base__=(ProviderSection, plugin.schema.options),
        __doc__=ProviderSection.__doc__,
    )
    model: type[TopLevel] = create_model(
        f"{plugin.title}TopLevel",
        __base__=TopLevel,
        __doc__=TopLevel.__doc__,
        provider=(section, Field(default_factory=section)),
    )
    return model


def chosen_plugin(top: dict[str, Any], sink: ProblemSink) -> ProviderPlugin | None:
    """The plug-in ``provider.name`` names (the default provider's when it names none); None
    when the name is not one (reported by the section's validation), as the items cannot then
    be checked."""
    section = top.get("provider")
    # Not a mapping: reported as such, and the items checked as the default provider's.
    name = section.get("name", DEFAULT_PROVIDER) if isinstance(section, dict) else DEFAULT_PROVIDER
    if ("provider", "name") in sink.unreadable or name not in registry.NAMES:
        return None
    return registry.plugin(name)


def read_sections(
    data: dict[str, Any], sink: ProblemSink
) -> tuple[dict[str, Any], TopLevel | None, ProviderPlugin | None]:
    """The manifest's top level (a section written empty is an empty mapping), its sections
    validated (None when even the valid part cannot make them) and the provider's plug-in (None
    when the manifest names no provider there is): every problem is in ``sink``."""
    top = {
        key: ({} if key in _SECTIONS and value is None else value)
        for key, value in data.items()
    }
    plugin = chosen_plugin(top, sink)
    for key in ("version", "name"):
        if top.get(key) is None and (key,) not in sink.unreadable:
            top.pop(key, None)
            hint = "write 'version: 1'" if key == "version" else "it names the batch"
            sink.report((key,), f"is required: {hint}")
    # No validator of the sections reads the context (only item fields resolve files).
    model = top_level_model(plugin.name if plugin is not None else DEFAULT_PROVIDER)
    settings, errors = validate(model, top, {})
    sink.report_errors(errors, model)
    if settings is not None:
        bad = {tuple(error["loc"]) for error in errors}
        _check_bounds(settings, top, bad, sink)
    return top, settings, plugin


def _check_bounds(
    settings: TopLevel, top: dict[str, Any], bad: set[DocPath], sink: ProblemSink
) -> None:
    """An upper bound below its lower one (each valid on its own)."""
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
        sink.report(
            (section, upper),
            f"must be at least {lower} ({number_text(low)}) (got {number_text(high)}{default})",
        )
