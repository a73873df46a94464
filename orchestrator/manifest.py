"""Manifest loading and offline validation.

A manifest is checked completely before anything is sent, and every problem is reported at once
(with the item id, the field and the line) so that one ``validate`` run is enough to fix a batch.
Loading happens in three steps:

1. YAML -> node tree (PyYAML's safe composer) -> plain data, built here rather than by
   ``yaml.safe_load`` so that we keep a map from document paths (``("items", 3, "duration")``) to
   line numbers, and so that duplicate keys, which YAML resolves silently, become errors.
2. Shape, types and ranges: pydantic models with ``extra="forbid"``. A pydantic error location is
   a document path, so the line map places it.
3. What a schema cannot say: defaults merged per kind, rules that depend on the model, mutually
   exclusive fields, unique ids, and the local image files themselves.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn, Self, TypeVar, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from orchestrator.images import ImageError, read_image_info
from orchestrator.providers.base import ImageSource, Kind, TaskRequest

DEFAULT_BASE_URL = "https://api-singapore.klingai.com"
#: ``provider.base_url: simulator`` starts the bundled simulator in-process.
SIMULATOR_BASE_URL = "simulator"


@dataclass(frozen=True)
class ProviderSettings:
    name: str = "kling"
    base_url: str = DEFAULT_BASE_URL
    timeout: float = 60.0  # seconds per HTTP request


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


@dataclass(frozen=True)
class RetrySettings:
    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    #: seconds to wait before looking a task up after an ambiguous create
    lookup_grace: float = 2.0


@dataclass(frozen=True)
class PollSettings:
    interval: float = 5.0
    max_interval: float = 30.0
    timeout: float = 900.0


@dataclass(frozen=True)
class Item:
    id: str
    request: TaskRequest
    line: int | None = None


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


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest, located as precisely as the YAML allows."""

    message: str
    field: str | None = None
    item_id: str | None = None
    line: int | None = None

    def format(self, source: str) -> str:
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


# --- What Kling accepts (reference/kling-api.md) ------------------------------------------------

VIDEO_MODELS: Final = (
    "kling-v1",
    "kling-v1-6",
    "kling-v2-master",
    "kling-v2-1-master",
    "kling-v2-5-turbo",
    "kling-v2-6",
    "kling-v3",
)
IMAGE_MODELS: Final = (
    "kling-v1",
    "kling-v1-5",
    "kling-v2",
    "kling-v2-new",
    "kling-v2-1",
    "kling-v3",
)
#: Kling's own default when a body has no model_name; spelled out so the ledger records it.
DEFAULT_MODEL: Final = "kling-v1"
MODES: Final = ("std", "pro")
VIDEO_ASPECT_RATIOS: Final = ("16:9", "9:16", "1:1")
IMAGE_ASPECT_RATIOS: Final = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9")
CAMERA_TYPES: Final = (
    "simple",
    "down_back",
    "forward_up",
    "right_turn_forward",
    "left_turn_forward",
)
CAMERA_AXES: Final = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
IMAGE_REFERENCES: Final = ("subject", "face")
RESOLUTIONS: Final = ("1k", "2k")
DURATIONS: Final = (5, 10)
#: Newer models take any whole number of seconds in a range instead of 5 or 10.
DURATION_RANGES: Final[Mapping[str, tuple[int, int]]] = {"kling-v2-6": (3, 15), "kling-v3": (3, 15)}
MAX_PROMPT_CHARS: Final = 2500
# "10 MB" is not defined further; the decimal reading is the smaller one, so a file that passes
# here passes Kling's check under either reading.
MAX_IMAGE_BYTES: Final = 10_000_000
MIN_IMAGE_SIDE: Final = 300
# Aspect ratio limit 1:2.5 .. 2.5:1 as the integer fraction 5/2, compared without floats.
_RATIO_NUM, _RATIO_DEN = 5, 2

_NAME_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")
_NAME_CHARS: Final = "letters, digits, '.', '_' and '-'"

DocPath = tuple[str | int, ...]


# --- Friendly messages ----------------------------------------------------------------------------


def _got(value: object) -> str:
    """A short rendering of a user's value for "(got ...)", in YAML's spelling where it differs."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            text = str(value)
        except ValueError:  # beyond int-to-str's digit limit
            return "an enormous number"
        return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"
    if isinstance(value, float):
        return _num(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    if isinstance(value, bytes):
        return "binary data"
    return f"a value of type {type(value).__name__}"


def _num(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _fail(message: str) -> NoReturn:
    # The message travels in ctx, not in the template: user text may contain "{...}".
    raise PydanticCustomError("manifest", "{message}", {"message": message})


def _suggest(key: str, candidates: Iterable[str]) -> str:
    options = list(candidates)
    # A truncated name ("kling-v2-5") is nearer its full form than what difflib's ratio prefers.
    close = [c for c in options if key and c.startswith(key)]
    close = close or difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _unknown_key(key: str, candidates: Iterable[str]) -> str:
    return f"unknown key '{key}'{_suggest(key, candidates)}"


def _choices(allowed: Iterable[object]) -> str:
    return ", ".join(str(a) for a in allowed)


def _scalar_hint(value: object) -> str:
    # YAML turns unquoted 1984, yes, 2024-01-01 into numbers, booleans and dates.
    if isinstance(value, bool | int | float | date):
        return "; put it in quotes"
    return ""


# --- Field types ----------------------------------------------------------------------------------


def _text(value: object) -> str:
    if not isinstance(value, str):
        _fail(f"must be text (got {_got(value)}){_scalar_hint(value)}")
    return value


def _prompt(value: object) -> str:
    text = _text(value)
    if not text:
        _fail("must not be empty")
    if not text.strip():
        _fail("must not be blank")
    if len(text) > MAX_PROMPT_CHARS:
        _fail(f"must be at most {MAX_PROMPT_CHARS} characters (got {len(text)})")
    return text


def _number(value: object) -> float:
    # bool is an int subclass: "true" must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(f"must be a number (got {_got(value)})")
    try:
        number = float(value)
    except OverflowError:
        _fail(f"is far too large (got {_got(value)})")
    if number != number or number in (float("inf"), float("-inf")):
        _fail(f"must be a finite number (got {_got(value)})")
    return number


def _whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        _fail(f"must be a whole number (got {_got(value)})")
    if isinstance(value, float):
        if not value.is_integer():
            _fail(f"must be a whole number (got {_got(value)})")
        return int(value)
    return value


class _OneOf:
    """Before-validator for a closed set of strings, with a did-you-mean and YAML gotchas."""

    def __init__(
        self, allowed: tuple[str, ...], foreign: tuple[str, ...] = (), foreign_note: str = ""
    ) -> None:
        self.allowed = allowed
        # Values valid elsewhere (a video model on an image item): say so instead of guessing.
        self.foreign = foreign
        self.foreign_note = foreign_note

    def __call__(self, value: object) -> str:
        if isinstance(value, str) and value in self.allowed:
            return value
        if isinstance(value, str) and value in self.foreign:
            _fail(
                f"must be one of {_choices(self.allowed)} (got {_got(value)}, {self.foreign_note})"
            )
        _fail(_choice_message(value, self.allowed))


def _choice_message(value: object, allowed: tuple[str, ...]) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 60:
        # YAML 1.1 reads unquoted 16:9 as the base-60 number 969.
        as_ratio = f"{value // 60}:{value % 60}"
        if as_ratio in allowed:
            return (
                f"must be in quotes: YAML reads {as_ratio} without quotes as the number {value}; "
                f'write "{as_ratio}"'
            )
    if len(allowed) == 1:
        message = f"must be {allowed[0]} (got {_got(value)})"
    else:
        message = f"must be one of {_choices(allowed)} (got {_got(value)})"
    if isinstance(value, str):
        message += _suggest(value, allowed)
    return message


def _http_url_problem(text: str) -> str | None:
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not host:
        return f"must be an http(s) URL such as https://example.com/path (got {_got(text)})"
    if any(ch.isspace() for ch in text):
        return "must not contain spaces (write them as %20)"
    return None


def _http_url(value: object) -> str:
    text = _text(value)
    problem = _http_url_problem(text)
    if problem:
        _fail(problem)
    return text


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _base_url(value: object) -> str:
    text = _text(value)
    if text == SIMULATOR_BASE_URL:
        return text
    problem = _http_url_problem(text)
    if problem:
        _fail(f"{problem}, or the word '{SIMULATOR_BASE_URL}'")
    parts = urlsplit(text)
    if parts.scheme.lower() == "http" and not _is_loopback(parts.hostname or ""):
        # Every request carries the credentials: plain http would send them in the clear.
        _fail(
            f"must use https:// (plain http is accepted only for this machine: localhost, "
            f"127.0.0.1, [::1]); got {_got(text)}"
        )
    # Endpoint paths are appended to it.
    return text.rstrip("/")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_DURATION_RE = re.compile(r"\s*(?:\d+(?:\.\d+)?\s*[smhd]\s*)+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _deadline(value: object) -> Deadline:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            _fail("needs a timezone, e.g. 2026-11-22T06:00:00+00:00 or ...Z")
        return Deadline(at=value.timestamp())
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = _number(value)
        if seconds <= 0:
            _fail(f"must be greater than 0 seconds (got {_got(value)})")
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
                    _fail(f"needs a timezone, e.g. {text}+00:00 or {text}Z")
                return Deadline(at=when.timestamp())
    _fail(
        "must be a duration from the start of the run (seconds, or like 90m, 6h, 1h30m) or a "
        f"date and time with a timezone (2026-11-22T06:00:00Z); got {_got(value)}"
    )


def _version(value: object) -> int:
    if isinstance(value, float) and value == 1:
        return 1
    if isinstance(value, int) and not isinstance(value, bool):
        if value == 1:
            return value
        _fail(f"unsupported version {_got(value)}: this orchestrator reads manifest version 1")
    _fail(f"must be the number 1 (got {_got(value)})")


def _batch_name(value: object) -> str:
    text = _text(value)
    if not _NAME_RE.fullmatch(text) or not text.strip("."):
        _fail(
            f"must be 1-64 characters of {_NAME_CHARS}, and not only dots: it becomes part of "
            f"every external task id and of file names (got {_got(text)})"
        )
    return text


def _output_dir(value: object) -> str:
    text = _text(value)
    if not text.strip():
        _fail("must not be empty")
    if text.startswith("~"):
        # Taken literally it would create a directory named "~" next to the manifest.
        _fail("'~' is not expanded here: write the full path, or one relative to the manifest")
    return text


def _image_source(value: object, info: ValidationInfo) -> ImageSource:
    if not isinstance(value, str):
        _fail(f"must be a file path or an http(s) URL (got {_got(value)})")
    text = value.strip()
    if not text:
        _fail("must not be empty")
    lowered = text.lower()
    if lowered.startswith("data:"):
        _fail(
            "a data: URI is not accepted (Kling wants raw base64 without the prefix): give the "
            "file's path and it is sent inline, or an http(s) URL"
        )
    if lowered.startswith(("http://", "https://")):
        problem = _http_url_problem(text)
        if problem:
            _fail(problem)
        return ImageSource(url=text)
    if "://" in text:
        _fail(f"must be a local file path or an http(s) URL (got {_got(text)})")
    if not isinstance(info.context, Mapping) or not isinstance(info.context.get("base_dir"), Path):
        raise TypeError("image fields are validated with context={'base_dir': Path}")
    # normpath, not resolve(): no filesystem access, and symlinks keep the name the user chose.
    path = Path(os.path.normpath(info.context["base_dir"] / text))
    try:
        image = read_image_info(path)
    except ImageError as exc:
        hint = " ('~' is not expanded: write the full path)" if text.startswith("~") else ""
        _fail(f"{exc}{hint}")
    problems = []
    if image.size_bytes > MAX_IMAGE_BYTES:
        problems.append(f"is {image.size_bytes / 1e6:.1f} MB; the limit is 10 MB")
    if min(image.width, image.height) < MIN_IMAGE_SIDE:
        problems.append(
            f"is {image.width}x{image.height} px; each side must be at least {MIN_IMAGE_SIDE} px"
        )
    w, h = image.width, image.height
    if w * _RATIO_DEN > h * _RATIO_NUM or h * _RATIO_DEN > w * _RATIO_NUM:
        problems.append(
            f"has aspect ratio {w}:{h} ({w / h:.2f}); it must be between 1:2.5 and 2.5:1"
        )
    if problems:
        _fail(f"{text!r} " + " and ".join(problems))
    return ImageSource(path=path)


Prompt = Annotated[str, BeforeValidator(_prompt)]
Positive = Annotated[float, BeforeValidator(_number), Field(gt=0)]
NonNegative = Annotated[float, BeforeValidator(_number), Field(ge=0)]
Fraction = Annotated[float, BeforeValidator(_number), Field(ge=0, le=1)]
CameraAmount = Annotated[float, BeforeValidator(_number), Field(ge=-10, le=10)]
WholeNumber = Annotated[int, BeforeValidator(_whole)]
HttpUrl = Annotated[str, BeforeValidator(_http_url)]
ImageInput = Annotated[ImageSource, PlainValidator(_image_source)]


class _Strict(BaseModel):
    # extra="forbid": a misspelt key must be an error, never a silently dropped parameter.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


# --- Top-level sections ---------------------------------------------------------------------------


class ProviderSection(_Strict):
    name: Annotated[str, BeforeValidator(_OneOf(("kling",)))] = "kling"
    base_url: Annotated[str, BeforeValidator(_base_url)] = DEFAULT_BASE_URL
    timeout: Positive = 60.0


class LimitsSection(_Strict):
    concurrency: Annotated[WholeNumber, Field(ge=1)] = 5
    requests_per_minute: Positive = 60.0
    deadline: Annotated[Deadline, PlainValidator(_deadline)] | None = None


class RetrySection(_Strict):
    max_attempts: Annotated[WholeNumber, Field(ge=1, le=100)] = 5
    base_delay: Positive = 1.0
    max_delay: Positive = 60.0
    lookup_grace: NonNegative = 2.0


class PollSection(_Strict):
    interval: Positive = 5.0
    max_interval: Positive = 30.0
    timeout: Positive = 900.0


class OutputSection(_Strict):
    dir: Annotated[str, BeforeValidator(_output_dir)] | None = None


class TopLevel(_Strict):
    # version and name are optional here only so that the other sections still validate when
    # they are missing; their absence is reported separately.
    version: Annotated[int, BeforeValidator(_version)] | None = None
    name: Annotated[str, BeforeValidator(_batch_name)] | None = None
    provider: ProviderSection = Field(default_factory=ProviderSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    retry: RetrySection = Field(default_factory=RetrySection)
    poll: PollSection = Field(default_factory=PollSection)
    output: OutputSection = Field(default_factory=OutputSection)
    # Checked by hand: their rules depend on each other (defaults per kind, located per item).
    defaults: Any = None
    items: Any = None


_SECTIONS: Final = ("provider", "limits", "retry", "poll", "output", "defaults")


# --- Item fields, per kind ------------------------------------------------------------------------


class CameraConfig(_Strict):
    horizontal: CameraAmount = 0.0
    vertical: CameraAmount = 0.0
    pan: CameraAmount = 0.0
    tilt: CameraAmount = 0.0
    roll: CameraAmount = 0.0
    zoom: CameraAmount = 0.0


class CameraControl(_Strict):
    type: Annotated[str, BeforeValidator(_OneOf(CAMERA_TYPES))]
    config: CameraConfig | None = None

    @model_validator(mode="after")
    def _config_fits_type(self) -> Self:
        axes = _choices(CAMERA_AXES)
        if self.type != "simple":
            if self.config is not None:
                _fail(f"only type 'simple' takes a config (got type '{self.type}')")
            return self
        if self.config is None:
            _fail(f"type 'simple' needs a config with exactly one non-zero value among {axes}")
        moving = [axis for axis in CAMERA_AXES if getattr(self.config, axis) != 0]
        if len(moving) != 1:
            _fail(
                f"config must have exactly one non-zero value among {axes} "
                f"(got {', '.join(moving) if moving else 'none'})"
            )
        return self


_VIDEO_MODEL: Final = _OneOf(VIDEO_MODELS, IMAGE_MODELS, "an image model")
_IMAGE_MODEL: Final = _OneOf(IMAGE_MODELS, VIDEO_MODELS, "a video model")


class TrajectoryPoint(_Strict):
    x: WholeNumber
    y: WholeNumber


class DynamicMask(_Strict):
    mask: ImageInput
    # A motion path needs a start and an end.
    trajectories: Annotated[list[TrajectoryPoint], Field(min_length=2)]


class _VideoFields(_Strict):
    model: Annotated[str, BeforeValidator(_VIDEO_MODEL)] | None = None
    prompt: Prompt | None = None
    negative_prompt: Prompt | None = None
    mode: Annotated[str, BeforeValidator(_OneOf(MODES))] | None = None
    duration: WholeNumber | None = None
    cfg_scale: Fraction | None = None
    camera_control: CameraControl | None = None
    callback_url: HttpUrl | None = None


class Text2VideoFields(_VideoFields):
    aspect_ratio: Annotated[str, BeforeValidator(_OneOf(VIDEO_ASPECT_RATIOS))] | None = None


class Image2VideoFields(_VideoFields):
    image: ImageInput | None = None
    image_tail: ImageInput | None = None
    static_mask: ImageInput | None = None
    dynamic_masks: Annotated[list[DynamicMask], Field(min_length=1)] | None = None


class ImageFields(_Strict):
    model: Annotated[str, BeforeValidator(_IMAGE_MODEL)] | None = None
    prompt: Prompt | None = None
    negative_prompt: Prompt | None = None
    image: ImageInput | None = None
    image_reference: Annotated[str, BeforeValidator(_OneOf(IMAGE_REFERENCES))] | None = None
    image_fidelity: Fraction | None = None
    human_fidelity: Fraction | None = None
    resolution: Annotated[str, BeforeValidator(_OneOf(RESOLUTIONS))] | None = None
    n: Annotated[WholeNumber, Field(ge=1, le=9)] | None = None
    aspect_ratio: Annotated[str, BeforeValidator(_OneOf(IMAGE_ASPECT_RATIOS))] | None = None
    callback_url: HttpUrl | None = None


_FIELD_MODELS: Final[Mapping[Kind, type[_Strict]]] = {
    Kind.TEXT2VIDEO: Text2VideoFields,
    Kind.IMAGE2VIDEO: Image2VideoFields,
    Kind.IMAGE: ImageFields,
}
#: Fields of each kind, in the order they are written to TaskRequest.fields.
KIND_FIELDS: Final[Mapping[Kind, tuple[str, ...]]] = {
    kind: tuple(model.model_fields) for kind, model in _FIELD_MODELS.items()
}
#: Every key an item may have, mapped to the kinds it belongs to.
_FIELD_KINDS: Final[Mapping[str, tuple[Kind, ...]]] = {
    name: tuple(kind for kind in Kind if name in KIND_FIELDS[kind])
    for name in dict.fromkeys(name for kind in Kind for name in KIND_FIELDS[kind])
}
_ITEM_KEYS: Final = ("id", "kind", *_FIELD_KINDS)
#: Kling's own defaults, filled in so the request (and the ledger) say what will be generated.
_BUILTIN_DEFAULTS: Final[Mapping[Kind, Mapping[str, Any]]] = {
    Kind.TEXT2VIDEO: {"model": DEFAULT_MODEL, "mode": "std", "duration": 5, "aspect_ratio": "16:9"},
    Kind.IMAGE2VIDEO: {"model": DEFAULT_MODEL, "mode": "std", "duration": 5},
    Kind.IMAGE: {"model": DEFAULT_MODEL, "n": 1, "aspect_ratio": "16:9"},
}
_EXCLUSIVE_GROUPS: Final = (("image_tail",), ("static_mask", "dynamic_masks"), ("camera_control",))


# --- YAML with line numbers -----------------------------------------------------------------------

_MAP_TAG: Final = "tag:yaml.org,2002:map"
_SEQ_TAG: Final = "tag:yaml.org,2002:seq"
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"
# Aliases can make a small file expand exponentially ("billion laughs").
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

    def __init__(self, report: _Report) -> None:
        self.lines: dict[DocPath, int] = {}
        #: Where a value was reported unreadable and left out: it was written, just not usable.
        self.unreadable: set[DocPath] = set()
        self._report = report
        self._constructor = yaml.constructor.SafeConstructor()
        self._active: set[int] = set()
        self._budget = _MAX_VALUES

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
            return self._constructor.construct_object(node, deep=True)
        # Dates like 2024-13-45, ints beyond the digit limit, unknown or unsafe tags.
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            self._constructor.recursive_objects.clear()
            reason = exc.problem if isinstance(exc, yaml.MarkedYAMLError) else str(exc)
            return self._give_up(path, f"cannot read the value {_got(node.value)}: {reason}", node)

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
            if not isinstance(key_node, yaml.ScalarNode):
                self._report(
                    path, "a key must be a plain name, not a list or mapping", _line(key_node)
                )
                continue
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
                continue
            first_line[key] = line
            self.lines[(*path, key)] = line
            value = self.build(value_node, (*path, key))
            if value is _UNREADABLE:
                result.pop(key, None)
            else:
                result[key] = value
        return result

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

_M = TypeVar("_M", bound=BaseModel)


def _without(data: Any, loc: DocPath) -> Any:
    """A copy of data without the value at loc (whole lists go: their indexes would shift)."""
    if not loc or not isinstance(data, dict) or loc[0] not in data:
        return data
    copy = dict(data)
    rest = loc[1:]
    if not rest or isinstance(rest[0], int):
        del copy[loc[0]]
    else:
        copy[loc[0]] = _without(data[loc[0]], rest)
    return copy


def _validate(
    model: type[_M], data: dict[str, Any], context: Mapping[str, Any]
) -> tuple[_M | None, list[ErrorDetails]]:
    """Validate, and on errors also return a model of the values that were fine.

    The cross-field checks that follow need the valid part: one bad field must not hide the
    problems of the others.
    """
    try:
        return model.model_validate(data, context=context), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    trimmed = data
    for error in errors:
        trimmed = _without(trimmed, tuple(error["loc"]))
    try:
        return model.model_validate(trimmed, context=context), errors
    except ValidationError as exc:
        more = exc.errors(include_url=False)
    # Fall back to dropping the whole top-level key of every error (required sub-keys missing).
    bad = {error["loc"][0] for error in (*errors, *more) if error["loc"]}
    trimmed = {key: value for key, value in data.items() if key not in bad}
    try:
        return model.model_validate(trimmed, context=context), errors
    except ValidationError:
        return None, errors


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _keys_at(model: type[BaseModel], loc: DocPath) -> list[str]:
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None or part not in current.model_fields:
            return []
        current = _model_in(current.model_fields[part].annotation)
    return list(current.model_fields) if current is not None else []


def _describe(error: ErrorDetails, model: type[BaseModel]) -> str:
    """Plain English for a pydantic error (our own validators already speak it)."""
    kind = error["type"]
    ctx = error.get("ctx", {})
    value = error.get("input")
    loc = tuple(error["loc"])
    if kind == "manifest":
        return str(ctx["message"])
    if kind == "extra_forbidden":
        return _unknown_key(str(loc[-1]), _keys_at(model, loc[:-1]))
    if kind == "missing":
        return "is required"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping of keys to values (got {_got(value)})"
    if kind == "list_type":
        return f"must be a list (got {_got(value)})"
    if kind == "too_short":
        count = ctx.get("min_length")
        return f"must have at least {count} {'entry' if count == 1 else 'entries'}"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} entries"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("string_too_long", "too_long") and isinstance(value, str):
        return f"must be at most {ctx.get('max_length')} characters (got {len(value)})"
    bounds = {
        "greater_than": ("greater than", "gt"),
        "greater_than_equal": ("at least", "ge"),
        "less_than": ("less than", "lt"),
        "less_than_equal": ("at most", "le"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {_num(ctx.get(key))} (got {_got(value)})"
    return f"{error['msg']} (got {_got(value)})"


@dataclass
class _Found:
    path: DocPath
    message: str
    line: int | None
    #: Where in ``defaults`` the faulty value came from, if it did.
    default: DocPath | None = None


@dataclass
class _Defaults:
    values: dict[str, Any] = field(default_factory=dict)
    kind: Kind | None = None
    kind_invalid: bool = False


@dataclass(frozen=True)
class _Draft:
    """One item between schema validation and its cross-field checks."""

    index: int
    kind: Kind
    given: tuple[str, ...]  # in file order, defaults last
    from_defaults: frozenset[str]
    bad: frozenset[str]
    values: Any  # the kind's fields model, with the fields that failed left out

    def ok(self, name: str) -> bool:
        return name in self.given and name not in self.bad

    @property
    def model(self) -> str | None:
        """The model this item will use; None when the one written is invalid."""
        if "model" not in self.given:
            return DEFAULT_MODEL
        return str(self.values.model) if self.ok("model") else None


def _kind_of(value: object) -> Kind | None:
    if not isinstance(value, str):
        return None
    try:
        return Kind(value)
    except ValueError:
        return None


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
    def __init__(self, manifest_path: Path) -> None:
        self.manifest_path = manifest_path
        self.context: Mapping[str, Any] = {"base_dir": manifest_path.parent}
        self.lines: dict[DocPath, int] = {}
        self.found: list[_Found] = []
        self.item_ids: dict[int, str] = {}
        self.unreadable: set[DocPath] = set()

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
            if found.default is None:
                result.setdefault(self._problem(found.path, found.message, found.line), None)
                continue
            paths = shared.get((found.default, found.message, found.line))
            if paths is None:
                continue  # already reported with its group
            del shared[(found.default, found.message, found.line)]
            if len(paths) == 1:
                problem = self._problem(paths[0], f"{found.message} (from defaults)", found.line)
            else:
                items = ", ".join(self._item_name(path) for path in paths)
                problem = Problem(
                    f"{found.message} (from defaults; affects items {items})",
                    field=_dotted(("defaults", *found.default)),
                    line=found.line,
                )
            result.setdefault(problem, None)
        return sorted(result, key=lambda p: p.line or 0)

    def _problem(self, path: DocPath, message: str, line: int | None) -> Problem:
        item_id = None
        if len(path) >= 2 and path[0] == "items" and isinstance(path[1], int):
            item_id = self.item_ids.get(path[1])
        # Within an item with a known id, the field is relative to the item.
        field_name = _dotted(path[2:] if item_id is not None else path) or None
        return Problem(message, field_name, item_id, line)

    def _item_name(self, path: DocPath) -> str:
        index = path[1]
        item_id = self.item_ids.get(index) if isinstance(index, int) else None
        return f"'{item_id}'" if item_id is not None else _dotted(path[:2])

    def report_errors(
        self,
        errors: list[ErrorDetails],
        model: type[BaseModel],
        at: DocPath = (),
        from_defaults: frozenset[str] = frozenset(),
    ) -> None:
        for error in errors:
            loc = tuple(error["loc"])
            message = _describe(error, model)
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
                f"level (got {_got(data)})",
                self.lines.get(()),
            )
            return None
        return self._document(data)

    def _parse(self, text: str) -> Any:
        builder = _Builder(self.report)
        # Shared, not copied: problems found while building are located as they are reported.
        self.lines = builder.lines
        self.unreadable = builder.unreadable
        try:
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
            self.report((), f"the document expands to more than {_MAX_VALUES} values (aliases?)")
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
        settings, errors = _validate(TopLevel, top, self.context)
        self.report_errors(errors, TopLevel)
        bad = {tuple(error["loc"]) for error in errors}
        if settings is not None:
            self._check_settings(settings, top, bad)
        defaults = self._defaults(top.get("defaults"))
        items = self._items(top.get("items"), defaults)
        if self.found or settings is None or settings.name is None:
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
            ),
            limits=Limits(
                concurrency=settings.limits.concurrency,
                requests_per_minute=settings.limits.requests_per_minute,
                deadline=settings.limits.deadline,
            ),
            retry=RetrySettings(
                max_attempts=settings.retry.max_attempts,
                base_delay=settings.retry.base_delay,
                max_delay=settings.retry.max_delay,
                lookup_grace=settings.retry.lookup_grace,
            ),
            poll=PollSettings(
                interval=settings.poll.interval,
                max_interval=settings.poll.max_interval,
                timeout=settings.poll.timeout,
            ),
            output_dir=Path(os.path.normpath(self.manifest_path.parent / output_dir)),
            items=tuple(items),
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
                f"must be at least {lower} ({_num(low)}) (got {_num(high)}{default})",
            )

    def _defaults(self, raw: Any) -> _Defaults:
        defaults = _Defaults()
        if raw is None:
            return defaults
        if not isinstance(raw, dict):
            self.report(("defaults",), f"must be a mapping of item fields (got {_got(raw)})")
            return defaults
        for key, value in raw.items():
            path: DocPath = ("defaults", key)
            if key == "id":
                self.report(path, "cannot have a default: every item needs its own unique id")
            elif key not in _ITEM_KEYS:
                self.report(path, _unknown_key(key, _ITEM_KEYS))
            elif value is None:
                self.report(path, "has no value: write one, or remove the key")
            elif key == "kind":
                defaults.kind = _kind_of(value)
                if defaults.kind is None:
                    defaults.kind_invalid = True
                    self.report(path, _choice_message(value, tuple(Kind)))
            else:
                defaults.values[key] = value
        return defaults

    # -- items

    def _items(self, raw: Any, defaults: _Defaults) -> list[Item]:
        if ("items",) in self.unreadable:
            return []
        if raw is None:
            self.report(("items",), "is required: list at least one item")
            return []
        if not isinstance(raw, list):
            self.report(("items",), f"must be a list of items (got {_got(raw)})")
            return []
        if not raw:
            self.report(("items",), "must list at least one item")
            return []
        first_line: dict[str, tuple[str, int | None]] = {}
        items = []
        for index, entry in enumerate(raw):
            if ("items", index) in self.unreadable:
                continue
            item = self._item(index, entry, defaults, first_line)
            if item is not None:
                items.append(item)
        return items

    def _item_id(
        self, index: int, raw: dict[str, Any], first_line: dict[str, tuple[str, int | None]]
    ) -> str | None:
        path: DocPath = ("items", index, "id")
        if path in self.unreadable:
            return None
        if raw.get("id") is None:
            self.report(path, "is required: every item needs a unique, stable id")
            return None
        value = raw["id"]
        if not isinstance(value, str):
            self.report(path, f"must be text (got {_got(value)}){_scalar_hint(value)}")
            return None
        if not _ID_RE.fullmatch(value) or not value.strip("."):
            self.report(
                path,
                f"must be 1-128 characters of {_NAME_CHARS}, and not only dots: it names the "
                f"item's directory and is part of its external task id (got {_got(value)})",
            )
            return None
        self.item_ids[index] = value
        # Ids name directories; macOS and Windows file systems ignore letter case.
        folded = value.casefold()
        line = self.line_of(path)
        if folded in first_line:
            first, first_at = first_line[folded]
            where = f"line {first_at}" if first_at is not None else "another item"
            if first == value:
                self.report(path, f"duplicate id: '{value}' is already used on {where}")
            else:
                self.report(
                    path,
                    f"duplicate id: '{value}' differs from '{first}' on {where} only in letter "
                    "case, and ids name directories on case-insensitive file systems",
                )
        else:
            first_line[folded] = (value, line)
        return value

    def _item_kind(self, index: int, raw: dict[str, Any], defaults: _Defaults) -> Kind | None:
        if "kind" in raw:
            kind = _kind_of(raw["kind"])
            if kind is None:
                self.report(("items", index, "kind"), _choice_message(raw["kind"], tuple(Kind)))
            return kind
        if defaults.kind_invalid:
            return None
        return defaults.kind or Kind.TEXT2VIDEO

    def _item(
        self,
        index: int,
        raw: Any,
        defaults: _Defaults,
        first_line: dict[str, tuple[str, int | None]],
    ) -> Item | None:
        at: DocPath = ("items", index)
        if not isinstance(raw, dict):
            self.report(at, f"must be a mapping with at least an id and a prompt (got {_got(raw)})")
            return None
        problems_before = len(self.found)
        item_id = self._item_id(index, raw, first_line)
        kind = self._item_kind(index, raw, defaults)
        allowed = KIND_FIELDS[kind] if kind is not None else tuple(_FIELD_KINDS)
        merged: dict[str, Any] = {}
        for key, value in raw.items():
            if key in ("id", "kind"):
                continue
            if key in allowed:
                if value is not None:
                    merged[key] = value
                elif key not in defaults.values:
                    # null only opts out of a default; anywhere else it is a forgotten value.
                    self.report((*at, key), "has no value: write one, or remove the key")
            elif kind is not None and key in _FIELD_KINDS:
                self.report((*at, key), _not_a_field(key, kind))
            else:
                self.report((*at, key), _unknown_key(key, _ITEM_KEYS))
        if kind is None:
            return None
        # A default applies only where it means something: video settings in defaults must
        # not break image items.
        inherited = {
            key: value
            for key, value in defaults.values.items()
            if key in allowed and key not in raw
        }
        merged.update(inherited)
        # Written but unreadable (reported already): present, so no "is required" on top.
        broken = [key for key in allowed if (*at, key) in self.unreadable]
        schema = _FIELD_MODELS[kind]
        values, errors = _validate(schema, merged, self.context)
        from_defaults = frozenset(inherited)
        self.report_errors(errors, schema, at, from_defaults)
        if values is not None:
            draft = _Draft(
                index=index,
                kind=kind,
                given=(*merged, *broken),
                from_defaults=from_defaults,
                bad=frozenset((*broken, *(str(e["loc"][0]) for e in errors if e["loc"]))),
                values=values,
            )
            if kind is Kind.IMAGE:
                self._check_image_item(draft)
            else:
                self._check_video_item(draft)
        if len(self.found) > problems_before or broken or values is None or item_id is None:
            return None
        fields: dict[str, Any] = {}
        for name in KIND_FIELDS[kind]:
            value = getattr(values, name)
            if value is None:
                value = _BUILTIN_DEFAULTS[kind].get(name)
            if value is not None:
                fields[name] = _plain(value)
        expected = int(fields["n"]) if kind is Kind.IMAGE else 1
        return Item(
            id=item_id,
            request=TaskRequest(kind=kind, fields=fields, expected_assets=expected),
            line=self.lines.get(at),
        )

    def _field_problem(
        self, draft: _Draft, name: str, message: str, conflict: bool = False
    ) -> None:
        path: DocPath = ("items", draft.index, name)
        if name not in draft.from_defaults:
            self.report(path, message)
            return
        if conflict:
            # The clash is with this item's own choice: it can be settled on the item.
            message += f"; write '{name}: null' on the item to not inherit it"
        self.report(path, message, default=(name,))

    def _check_video_item(self, draft: _Draft) -> None:
        values = draft.values
        model = draft.model
        if draft.kind is Kind.TEXT2VIDEO and "prompt" not in draft.given:
            self._field_problem(draft, "prompt", "is required for kind text2video")
        if draft.kind is Kind.IMAGE2VIDEO and "image" not in draft.given:
            self._field_problem(
                draft, "image", "is required for kind image2video: the video's first frame"
            )
        if draft.ok("duration"):
            self._check_duration(draft, int(values.duration), model)
        if draft.ok("cfg_scale") and model is not None and model.startswith("kling-v2"):
            self._field_problem(
                draft,
                "cfg_scale",
                f"is not supported by kling-v2 models (model is {model})",
                conflict=True,
            )
        if draft.kind is Kind.IMAGE2VIDEO:
            groups = [g for g in _EXCLUSIVE_GROUPS if any(name in draft.given for name in g)]
            if len(groups) > 1:
                names = [name for name in draft.given if any(name in g for g in groups)]
                # Blame a field that came from defaults (the likely surprise), else the one
                # written last.
                blamed = next((n for n in names if n in draft.from_defaults), names[-1])
                others = ", ".join(n for n in names if n != blamed)
                self._field_problem(
                    draft,
                    blamed,
                    f"cannot be combined with {others}: image_tail, static_mask/dynamic_masks "
                    "and camera_control are mutually exclusive",
                    conflict=True,
                )

    def _check_duration(self, draft: _Draft, duration: int, model: str | None) -> None:
        if model is None:
            # The model is invalid (reported); still catch what no model accepts.
            low = min(min(DURATIONS), *(r[0] for r in DURATION_RANGES.values()))
            high = max(max(DURATIONS), *(r[1] for r in DURATION_RANGES.values()))
            if not low <= duration <= high:
                self._field_problem(
                    draft, "duration", f"must be between {low} and {high} seconds (got {duration})"
                )
            return
        if model in DURATION_RANGES:
            low, high = DURATION_RANGES[model]
            if not low <= duration <= high:
                self._field_problem(
                    draft,
                    "duration",
                    f"must be a whole number of seconds from {low} to {high} for {model} "
                    f"(got {duration})",
                )
        elif duration not in DURATIONS:
            allowed = " or ".join(str(d) for d in DURATIONS)
            self._field_problem(
                draft, "duration", f"must be {allowed} for {model} (got {duration})"
            )

    def _check_image_item(self, draft: _Draft) -> None:
        values = draft.values
        model = draft.model
        if "prompt" not in draft.given:
            self._field_problem(draft, "prompt", "is required for kind image")
        if "negative_prompt" in draft.given and "image" in draft.given:
            self._field_problem(
                draft,
                "negative_prompt",
                "cannot be used together with image (Kling rejects it for image-to-image)",
                conflict=True,
            )
        if draft.ok("image_reference"):
            if model is not None and model != "kling-v1-5":
                self._field_problem(
                    draft,
                    "image_reference",
                    f"only works with model kling-v1-5 (model is {model})",
                    conflict=True,
                )
            if "image" not in draft.given:
                self._field_problem(draft, "image_reference", "needs an image to refer to")
        if draft.ok("aspect_ratio") and values.aspect_ratio == "21:9" and model == "kling-v1":
            self._field_problem(draft, "aspect_ratio", "21:9 is not available on kling-v1")


def _not_a_field(key: str, kind: Kind) -> str:
    if key == "aspect_ratio" and kind is Kind.IMAGE2VIDEO:
        return "'aspect_ratio' is not a field of kind image2video: the video follows the image"
    kinds = " and ".join(str(k) for k in _FIELD_KINDS[key])
    return f"'{key}' is not a field of kind {kind} (it belongs to {kinds})"


def load_manifest(path: Path) -> Manifest:
    """Read and fully validate a manifest; raise ManifestError listing every problem found."""
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
    checker = _Checker(manifest_path)
    manifest = checker.load(text)
    problems = checker.problems()
    if manifest is None or problems:
        raise ManifestError(source, problems or [Problem("the manifest is not valid")])
    return manifest
