"""Kling's API 2.0 wire format (model in the path, paths at the host root): create bodies,
task objects, batch reads and the time-window list.

    create   POST /<v2 path>/<v2_name>  {contents: [...], settings: {...}, options: {...}}
    read     GET  /tasks?task_ids=a,b | ?external_task_ids=a,b     -> data: [task, ...]
    window   POST /tasks {start_time, end_time, cursor, limit}     -> data: {result, count,
                                                                       next_cursor, has_more}

A task: ``{id, status (submitted | processing | succeeded | failed), message, create_time,
update_time (Unix ms), external_id, outputs: [{type, id, url, watermark_url, duration}],
billing: [{charge_type, amount, package_type}]}``. Which fields travel where is data
(``FIELDS``, ``CANNOT_CARRY``); the model facts (paths, names, resolutions) are the catalogue's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from orchestrator.providers.base import Asset, Kind, Task, TaskRequest, TaskStatus
from orchestrator.providers.kling.catalogue import Catalogue
from orchestrator.providers.kling.wire import (
    Malformed,
    TaskShape,
    billing_units,
    identifier,
    parse_task_as,
    refused,
    to_wire,
)

#: The batch read and the time-window list, at the host root.
TASKS_PATH = "tasks"
#: The most ids one batch read names (the spec's choice: Kling publishes no maximum).
BATCH_LIMIT = 50
#: The window list's page size ceiling.
WINDOW_LIMIT = 500


class BatchKey(NamedTuple):
    """API 2.0 tasks of one media, read together (outputs are parsed as this media)."""

    api: str
    media: str


# -- create bodies -------------------------------------------------------------------------------

_ALWAYS = frozenset({"model", "prompt", "mode", "duration", "sound", "callback_url"})

#: The manifest fields API 2.0 takes, by kind.
FIELDS: Mapping[Kind, frozenset[str]] = {
    Kind.TEXT2VIDEO: _ALWAYS | {"aspect_ratio"},
    Kind.IMAGE2VIDEO: _ALWAYS | {"image", "image_tail"},
    Kind.OMNI_VIDEO: _ALWAYS | {"aspect_ratio", "image", "image_tail", "reference_images"},
}

#: What API 2.0 has no place for: refused before sending, not silently dropped (the item
#: would be generated, and paid, without it).
CANNOT_CARRY: Mapping[str, str] = {
    "negative_prompt": "a negative prompt",
    "cfg_scale": "cfg_scale",
    "camera_control": "camera control",
    "static_mask": "motion-brush masks",
    "dynamic_masks": "motion-brush masks",
    "multi_shot": "multi-shot",
    "shot_type": "multi-shot",
    "multi_prompt": "multi-shot",
}

#: Image fields and the content type each becomes.
_CONTENT_TYPES: Mapping[str, str] = {
    "image": "first_frame",
    "image_tail": "last_frame",
    "reference_images": "refer_image",
}


def _absent(value: Any) -> bool:
    # multi_shot: false asks for nothing API 2.0 lacks
    return value is None or value is False


def _check_fields(request: TaskRequest) -> None:
    accepted = FIELDS.get(request.kind, frozenset())
    for name, value in request.fields.items():
        if _absent(value) or name in accepted:
            continue
        what = CANNOT_CARRY.get(name)
        if what is not None:
            raise refused(
                f"API 2.0 cannot carry {what} ('{name}'), and this item's model is sent there",
                f"Remove '{name}' from the item, or choose a model served on the legacy API "
                "(provider.api: v1 or auto).",
            )
        raise refused(
            f"field '{name}' is not accepted by Kling API 2.0 for {request.kind}",
            f"Remove '{name}' from the item, or use a kind that accepts it.",
        )


def _duration(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    raise refused(f"duration {value!r} is not a whole number of seconds",
                  "Give duration as whole seconds, e.g. 5.")


async def build_body(
    request: TaskRequest, external_task_id: str, catalogue: Catalogue
) -> tuple[str, dict[str, Any]]:
    """Where an API 2.0 create goes and its body; raises a VALIDATION ProviderError
    (sent=False) for what API 2.0 cannot carry."""
    fields = request.fields
    model = fields.get("model")
    if not isinstance(model, str) or not model:
        raise refused("an API 2.0 create needs the model (it names the path)",
                      "Set `model` on the item.")
    path = catalogue.v2_path(request.kind, model)
    if path is None:
        raise refused(f"Kling API 2.0 has no {request.kind} endpoint for {model}",
                      "Choose a model and kind served on API 2.0, or provider.api: v1.")
    _check_fields(request)

    contents: list[dict[str, Any]] = []
    prompt = fields.get("prompt")
    if prompt is not None:
        contents.append({"type": "prompt", "text": prompt})
    for name, content_type in _CONTENT_TYPES.items():
        value = fields.get(name)
        if value is None:
            continue
        images = list(value) if isinstance(value, list | tuple) else [value]
        for image in images:
            if image is not None:
                contents.append({"type": content_type, "url": await to_wire(image)})

    settings: dict[str, Any] = {}
    mode = fields.get("mode")
    if mode is not None:
        resolution = catalogue.v2_resolution.get(mode) if isinstance(mode, str) else None
        if resolution is None:
            raise refused(f"mode {mode!r} has no API 2.0 resolution",
                          f"Use one of {sorted(catalogue.v2_resolution)} as mode.")
        settings["resolution"] = resolution
    aspect_ratio = fields.get("aspect_ratio")
    if aspect_ratio is not None:
        settings["aspect_ratio"] = aspect_ratio
    duration = fields.get("duration")
    if duration is not None:
        settings["duration"] = _duration(duration)
    sound = fields.get("sound")
    if sound is not None:
        settings["audio"] = "native" if sound is True or sound == "on" else "off"

    options: dict[str, Any] = {"external_task_id": external_task_id}
    callback_url = fields.get("callback_url")
    if callback_url is not None:
        options["callback_url"] = callback_url
    return path, {"contents": contents, "settings": settings, "options": options}


def window_body(start_ms: int, end_ms: int, cursor: str | None) -> bytes:
    return json.dumps(
        {"start_time": start_ms, "end_time": end_ms, "cursor": cursor, "limit": WINDOW_LIMIT}
    ).encode("utf-8")


# -- task objects --------------------------------------------------------------------------------

STATUSES: Mapping[str, TaskStatus] = {
    "submitted": TaskStatus.SUBMITTED,
    "processing": TaskStatus.PROCESSING,
    "succeeded": TaskStatus.SUCCEEDED,
    # The legacy spelling; accepted so that an answer mixing the two does not fail paid tasks.
    "succeed": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
}


def external_id(data: Mapping[str, Any]) -> str | None:
    return identifier(data.get("external_id"))


def task_id(data: object) -> str | None:
    """The id of an entry, if it has a usable one (entries are matched before parsing)."""
    if not isinstance(data, dict):
        return None
    value = data.get("id")
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return identifier(value)


def parse_outputs(media: str, outputs: object) -> tuple[Asset, ...]:
    """The outputs of ``media`` (those without a type count as it), numbered by position:
    API 2.0 gives no index. Outputs of another type (a cover image, say) are not assets."""
    if outputs is None:
        return ()
    if not isinstance(outputs, list):
        raise Malformed("outputs is not a list")
    assets: list[Asset] = []
    for position, entry in enumerate(outputs):
        if not isinstance(entry, dict):
            raise Malformed(f"outputs[{position}] is not an object")
        kind = entry.get("type")
        if kind is not None and kind != media:
            continue
        url = identifier(entry.get("url"))
        if url is None:
            raise Malformed(f"outputs[{position}] has no url")
        assets.append(Asset(index=len(assets), url=url, media=media))
    return tuple(assets)


#: Where an API 2.0 task object keeps what a Task needs.
SHAPE = TaskShape(
    id_key="id",
    status_key="status",
    statuses=STATUSES,
    message_key="message",
    created_key="create_time",
    updated_key="update_time",
    external_id=external_id,
    charged=lambda data: billing_units(data.get("billing")),
)


def parse_task(
    media: str, data: object, request_id: str | None, clean: Callable[[str], str]
) -> Task:
    """An API 2.0 task object (a create's answer is one without outputs)."""
    return parse_task_as(
        SHAPE, data, lambda task: parse_outputs(media, task.get("outputs")), request_id, clean
    )


def entries(data: object) -> list[object]:
    """A batch read's ``data``: a list of task objects (``[]`` when none match)."""
    if not isinstance(data, list):
        raise Malformed("batch read data is not an array")
    return data


@dataclass(frozen=True)
class WindowPage:
    result: list[object]
    has_more: bool
    next_cursor: str | None


def window_page(data: object) -> WindowPage:
    """One page of the time-window list; anything that could hide an entry is Malformed."""
    if not isinstance(data, dict):
        raise Malformed("window list data is not an object")
    result = data.get("result")
    if result is None:
        result = []
    if not isinstance(result, list):
        raise Malformed("window list result is not an array")
    has_more = data.get("has_more")
    if not isinstance(has_more, bool):
        raise Malformed("window list has_more is not true or false")
    cursor = data.get("next_cursor")
    next_cursor = identifier(cursor)
    if has_more and next_cursor is None:
        raise Malformed("window list has more pages but no next_cursor")
    return WindowPage(result, has_more, next_cursor)
