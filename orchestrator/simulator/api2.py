"""Kling's API 2.0 (the model in the path), as the simulator reads it: create bodies, the batch
query's parameters and the time-window list's body. Served beside ``/v1``, at the host root::

    POST /text-to-video/<v2_name>       create (paths and names from the catalogue:
    POST /image-to-video/<v2_name>        v2.paths, models.<m>.v2_name; the model must be
    POST /omni-video/<v2_name>            served on "v2" for that kind)
    GET  /tasks?task_ids=a,b            batch query by task ids, or
    GET  /tasks?external_task_ids=a,b     by external ids (at most 50, comma separated)
    POST /tasks                         time-window list, newest first, cursor pagination

One account serves both APIs (slots, rate, billing, external-id uniqueness), but each API reads
its own tasks: API 2.0 reads find only tasks created there (whether Kling's show legacy tasks
is unverified; the cautious reading makes a client that reads on the wrong API see nothing).
Answers are rendered by :mod:`.task_wire`.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qs

from orchestrator.providers.base import Kind
from orchestrator.providers.kling.catalogue import V2, catalogue
from orchestrator.simulator.families import CreateSpec, Family, Target, spec_for
from orchestrator.simulator.fields import (
    external_task_id,
    image,
    optional_string,
    text,
    value_is_invalid,
)
from orchestrator.simulator.model_rules import (
    API2,
    DEFAULT_MODE,
    DEFAULT_SECONDS,
    Ask,
    check,
    rules_for,
)
from orchestrator.simulator.state import TaskRecord
from orchestrator.simulator.task_wire import V2_STATUS
from orchestrator.simulator.wire import invalid

#: Ids one batch query may name (our choice; Kling documents no maximum).
MAX_BATCH_IDS: Final = 50
#: Tasks one page of ``POST /tasks`` may hold, and how many it holds when ``limit`` is absent.
MAX_LIMIT: Final = 500
DEFAULT_LIMIT: Final = 30
#: API 2.0's statuses, as a ``status`` filter names them.
STATUSES: Final = ("submitted", "processing", "succeeded", "failed")

_TOP_KEYS: Final = frozenset({"contents", "settings", "options"})
_SETTINGS_KEYS: Final = frozenset({"resolution", "aspect_ratio", "duration", "audio"})
_OPTIONS_KEYS: Final = frozenset({"external_task_id", "callback_url", "watermark_info"})
#: The images each kind's contents may hold (a prompt is allowed everywhere).
_IMAGES: Final[Mapping[Kind, tuple[str, ...]]] = {
    Kind.TEXT2VIDEO: (),
    Kind.IMAGE2VIDEO: ("first_frame", "last_frame"),
    Kind.OMNI_VIDEO: ("first_frame", "last_frame", "refer_image"),
}
_CURSOR_PREFIX: Final = "tasks:"


def contents_prompt(body: Mapping[str, Any]) -> str | None:
    """The prompt text an API 2.0 body carries, for fault rules to match against."""
    contents = body.get("contents")
    if isinstance(contents, list):
        for entry in contents:
            if isinstance(entry, dict) and entry.get("type") == "prompt":
                prompt = entry.get("text")
                return prompt if isinstance(prompt, str) else None
    return None


def _section(body: Mapping[str, Any], key: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise invalid(f"{key} must be an object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        # API 2.0 has no negative_prompt, cfg_scale, camera_control, masks or multi-shot: a
        # client that sends one anyway meant something the API cannot do.
        raise invalid(f"{key}.{unknown[0]} is not supported by API 2.0")
    return value


def _contents(contents: list[Any], kind: Kind, path: str) -> tuple[str | None, Counter[str]]:
    """The prompt, and how many images of each type the contents hold."""
    prompt: str | None = None
    images: Counter[str] = Counter()
    for position, entry in enumerate(contents):
        where = f"contents[{position}]"
        if not isinstance(entry, Mapping):
            raise invalid(f"{where} must be an object")
        kind_of = entry.get("type")
        if kind_of == "prompt":
            if prompt is not None:
                raise invalid("contents holds more than one prompt")
            prompt = text(entry.get("text"), f"{where}.text", required=True)
        elif isinstance(kind_of, str) and kind_of in _IMAGES[Kind.OMNI_VIDEO]:
            if kind_of not in _IMAGES[kind]:
                raise invalid(f"{kind_of} is not supported by {path}")
            image(entry.get("url"), f"{where}.url", required=True)
            images[kind_of] += 1
        else:
            raise invalid(value_is_invalid(f"{where}.type", kind_of))
    if images["first_frame"] > 1 or images["last_frame"] > 1:
        raise invalid("contents holds at most one first_frame and one last_frame")
    return prompt, images


def _mode(settings: Mapping[str, Any]) -> str:
    """The mode ``settings.resolution`` stands for (catalogue v2.resolution); Kling's default
    std (720p) when it is absent, as on /v1."""
    value = settings.get("resolution")
    if value is None:
        return DEFAULT_MODE
    modes = {resolution: mode for mode, resolution in catalogue().v2_resolution.items()}
    if not isinstance(value, str) or value not in modes:
        raise invalid(value_is_invalid("resolution", value))
    return modes[value]


def _seconds(settings: Mapping[str, Any]) -> int:
    value = settings.get("duration")
    if value is None:
        return DEFAULT_SECONDS
    if isinstance(value, bool) or not isinstance(value, int):
        # API 2.0 takes an integer: the legacy string is the client bug this catches.
        raise invalid(
            f"duration must be an integer such as 5, got {type(value).__name__} {value!r}"
        )
    if value <= 0:
        raise invalid(value_is_invalid("duration", value))
    return value


def _audio(settings: Mapping[str, Any]) -> bool:
    value = settings.get("audio")
    if value is None:
        return False
    if not isinstance(value, str) or value not in ("native", "off"):
        raise invalid(value_is_invalid("audio", value))
    return value == "native"


def _aspect_ratio(settings: Mapping[str, Any], kind: Kind, path: str) -> str | None:
    value = settings.get("aspect_ratio")
    if value is None:
        return None
    if kind is Kind.IMAGE2VIDEO:
        raise invalid(f"aspect_ratio is not supported by {path}: it follows the image")
    if not isinstance(value, str):
        raise invalid(value_is_invalid("aspect_ratio", value))
    return value


def _options(options: Mapping[str, Any]) -> str | None:
    optional_string(options, "callback_url")
    watermark = options.get("watermark_info")
    if watermark is not None and (
        not isinstance(watermark, Mapping) or not isinstance(watermark.get("enabled"), bool)
    ):
        raise invalid("watermark_info must be {\"enabled\": true | false}")
    return external_task_id(options.get("external_task_id"))


def validate_create(kind: Kind, path: str, body: Mapping[str, Any], target: Target) -> CreateSpec:
    """Check an API 2.0 create for ``kind`` sent to ``/<path>/<target.path_model>``."""
    contents = body.get("contents")
    if not contents:
        raise invalid("contents cannot be empty")  # Kling's answer to a legacy-style body
    unknown = sorted(set(body) - _TOP_KEYS)
    if unknown:
        raise invalid(f"{unknown[0]} is not a field of an API 2.0 create "
                      "(contents, settings, options)")
    if not isinstance(contents, list):
        raise invalid("contents must be an array")
    settings = _section(body, "settings", _SETTINGS_KEYS)
    options = _section(body, "options", _OPTIONS_KEYS)
    model, rules = rules_for(target.path_model, kind, V2, target.extra_models)
    prompt, images = _contents(contents, kind, path)
    if prompt is None and kind is not Kind.IMAGE2VIDEO:
        raise invalid("contents needs a prompt")
    if kind is Kind.IMAGE2VIDEO and not images["first_frame"]:
        raise invalid("contents needs a first_frame")
    ask = Ask(
        kind,
        mode=_mode(settings),
        seconds=_seconds(settings),
        references=images["refer_image"],
        end_frame=images["last_frame"] > 0,
        sound=_audio(settings),
        aspect_ratio=_aspect_ratio(settings, kind, path),
    )
    external = _options(options)
    check(ask, rules, API2)
    return spec_for(model, ask, prompt or "", external)


def _family(kind: Kind, path: str) -> Family:
    validate: Callable[[Mapping[str, Any], Target], CreateSpec] = functools.partial(
        validate_create, kind, path
    )
    return Family(path, kind, validate, prompt_of=contents_prompt, api=V2)


#: API 2.0's create families, by path (``text-to-video``...), from the catalogue.
V2_FAMILIES: Final[Mapping[str, Family]] = {
    path: _family(kind, path) for kind, path in catalogue().v2_paths.items()
}


# -- reads ---------------------------------------------------------------------------------


def batch_ids(query: str) -> tuple[list[str], bool]:
    """The ids ``GET /tasks`` names, and whether they are external ids."""
    params = parse_qs(query, keep_blank_values=True)

    def ids(name: str) -> list[str]:
        return [i for value in params.get(name, ()) for i in value.split(",") if i]

    task_ids, external_ids = ids("task_ids"), ids("external_task_ids")
    if not task_ids and not external_ids:
        raise invalid("task_ids or external_task_ids is required")  # Kling's text
    if task_ids and external_ids:
        raise invalid("task_ids and external_task_ids cannot be used together")
    chosen = task_ids or external_ids
    if len(chosen) > MAX_BATCH_IDS:
        raise invalid(f"at most {MAX_BATCH_IDS} ids per request, got {len(chosen)}")
    return chosen, bool(external_ids)


def encode_cursor(position: int) -> str:
    """An opaque ``next_cursor``: where the next page starts among API 2.0 tasks."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{position}".encode()).decode()


def _decode_cursor(value: object) -> int | None:
    if value is None:
        return None
    refused = invalid(value_is_invalid("cursor", value))
    if not isinstance(value, str):
        raise refused
    try:
        decoded = base64.urlsafe_b64decode(value.encode()).decode()
    except (binascii.Error, ValueError):
        raise refused from None
    number = decoded.removeprefix(_CURSOR_PREFIX)
    if not decoded.startswith(_CURSOR_PREFIX) or not number.isascii() or not number.isdigit():
        raise refused
    return int(number)


def _unix_ms(body: Mapping[str, Any], key: str) -> int:
    value = body.get(key)
    if value is None:
        raise invalid("start_time and end_time are required (Unix ms)")
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise invalid(value_is_invalid(key, value))
    return value


@dataclass(frozen=True)
class Window:
    """What one ``POST /tasks`` asks for."""

    start_ms: int
    end_ms: int
    cursor: int | None
    limit: int
    #: Legacy status names the ``status`` filters allow (None: any).
    statuses: frozenset[str] | None
    #: API 2.0 paths the ``product_type`` filters allow (None: any). Our reading of the
    #: undocumented values: the kind's path, "text-to-video"...
    product_types: frozenset[str] | None

    def keeps(self, task: TaskRecord, now: float) -> bool:
        if not self.start_ms <= task.created_at_ms <= self.end_ms:
            return False
        if self.statuses is not None and task.status(now) not in self.statuses:
            return False
        return self.product_types is None or task.family.path in self.product_types


def _filters(value: object) -> dict[str, frozenset[str]]:
    if value is None:
        return {}
    if not isinstance(value, list):
        raise invalid("filters must be an array")
    allowed: dict[str, tuple[str, ...]] = {
        "status": STATUSES,
        "product_type": tuple(catalogue().v2_paths.values()),
    }
    chosen: dict[str, frozenset[str]] = {}
    for position, entry in enumerate(value):
        where = f"filters[{position}]"
        if not isinstance(entry, Mapping):
            raise invalid(f"{where} must be an object")
        key, values = entry.get("key"), entry.get("values")
        if not isinstance(key, str) or key not in allowed:
            raise invalid(value_is_invalid(f"{where}.key", key))
        if not isinstance(values, list) or not values:
            raise invalid(f"{where}.values must be a non-empty array")
        for item in values:
            if not isinstance(item, str) or item not in allowed[key]:
                raise invalid(value_is_invalid(f"{where}.values", item))
        # Two filters on one key: a task must pass both.
        chosen[key] = chosen.get(key, frozenset(values)) & frozenset(values)
    return chosen


def parse_window(body: object) -> Window:
    if not isinstance(body, Mapping):
        raise invalid("request body must be a JSON object")
    start, end = _unix_ms(body, "start_time"), _unix_ms(body, "end_time")
    if start > end:
        raise invalid("start_time must not be after end_time")
    limit = body.get("limit", DEFAULT_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise invalid(f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}")
    filters = _filters(body.get("filters"))
    statuses = filters.get("status")
    legacy = {v2: legacy for legacy, v2 in V2_STATUS.items()}
    return Window(
        start_ms=start,
        end_ms=end,
        cursor=_decode_cursor(body.get("cursor")),
        limit=limit,
        statuses=frozenset(legacy.get(s, s) for s in statuses) if statuses is not None else None,
        product_types=filters.get("product_type"),
    )
