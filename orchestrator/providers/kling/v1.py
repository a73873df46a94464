"""Kling's legacy ``/v1`` wire format: create bodies (model in the body) and task objects.

Task families are data (``FAMILIES``): adding one is adding a path and its wire fields. How a
manifest value travels (``duration`` 5 -> "5", ``sound`` true -> "on", shots numbered from 1,
omni images gathered into ``image_list``) is data too: ``CONVERSIONS`` and ``Family.image_list``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.providers.base import (
    Asset,
    Kind,
    Task,
    TaskRequest,
    TaskStatus,
    valid_asset_indexes,
)
from orchestrator.providers.kling.wire import (
    Malformed,
    TaskShape,
    identifier,
    parse_task_as,
    refused,
    to_wire,
    units,
)


@dataclass(frozen=True)
class ListedImage:
    """A manifest image field that travels as entries of the body's ``image_list``."""

    field: str
    #: the entry's ``type``; None: an untyped reference the prompt names <<<image_N>>>
    type: str | None
    #: the field holds a list of images, one entry each
    many: bool = False


@dataclass(frozen=True)
class Family:
    """One Kling task family: where it lives and which body fields it accepts."""

    path: str
    fields: frozenset[str]
    #: manifest image fields gathered, in this order, into ``image_list`` (omni-video)
    image_list: tuple[ListedImage, ...] = field(default=())


_COMMON_FIELDS = frozenset({"model_name", "prompt", "callback_url", "external_task_id"})
_SHOTS = frozenset({"multi_shot", "shot_type", "multi_prompt"})

FAMILIES: Mapping[Kind, Family] = {
    Kind.TEXT2VIDEO: Family(
        "videos/text2video",
        _COMMON_FIELDS | _SHOTS | {"negative_prompt", "cfg_scale", "mode", "aspect_ratio",
                                   "duration", "camera_control", "sound"},
    ),
    Kind.IMAGE2VIDEO: Family(
        "videos/image2video",
        _COMMON_FIELDS | _SHOTS | {"negative_prompt", "cfg_scale", "mode", "duration",
                                   "camera_control", "image", "image_tail", "static_mask",
                                   "dynamic_masks", "sound"},
    ),
    Kind.OMNI_VIDEO: Family(
        "videos/omni-video",
        _COMMON_FIELDS | {"mode", "aspect_ratio", "duration", "sound"},
        image_list=(
            ListedImage("image", "first_frame"),
            ListedImage("image_tail", "end_frame"),
            ListedImage("reference_images", None, many=True),
        ),
    ),
    Kind.IMAGE: Family(
        "images/generations",
        _COMMON_FIELDS | {"negative_prompt", "image", "image_reference", "image_fidelity",
                          "human_fidelity", "resolution", "n", "aspect_ratio"},
    ),
}

#: Manifest names that differ from Kling's.
WIRE_NAMES: Mapping[str, str] = {"model": "model_name"}


def _seconds_text(value: Any) -> Any:
    # Kling wants "5", not 5 (a bool is not a duration: left for Kling to refuse)
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


def _on_off(value: Any) -> Any:
    return ("on" if value else "off") if isinstance(value, bool) else value


def _shots(value: Any) -> Any:
    """[{prompt, duration: 5}] -> [{index: 1, prompt, duration: "5"}]: numbered from 1."""
    if not isinstance(value, list | tuple):
        return value
    shots: list[Any] = []
    for position, shot in enumerate(value, start=1):
        if not isinstance(shot, Mapping):
            raise refused(f"multi_prompt entry {position} is not a mapping",
                          "Give each shot as {prompt: ..., duration: N}.")
        entry = {str(k): v for k, v in shot.items() if v is not None and k != "index"}
        if "duration" in entry:
            entry["duration"] = _seconds_text(entry["duration"])
        shots.append({"index": position, **entry})
    return shots


#: How a manifest value travels on the legacy API, by wire name.
CONVERSIONS: Mapping[str, Callable[[Any], Any]] = {
    "duration": _seconds_text,
    "sound": _on_off,
    "multi_prompt": _shots,
}


async def _image_list(family: Family, fields: Mapping[str, Any]) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for listed in family.image_list:
        value = fields.get(listed.field)
        if value is None:
            continue
        images = list(value) if listed.many and isinstance(value, list | tuple) else [value]
        for image in images:
            if image is None:
                continue
            entry: dict[str, Any] = {"image_url": await to_wire(image)}
            if listed.type is not None:
                entry["type"] = listed.type
            entries.append(entry)
    return entries


async def build_body(request: TaskRequest, external_task_id: str) -> dict[str, Any]:
    """The legacy create body for ``request``; raises a VALIDATION ProviderError (sent=False)."""
    family = FAMILIES[request.kind]
    listed = {entry.field for entry in family.image_list}
    body: dict[str, Any] = {}
    for name, value in request.fields.items():
        if value is None or name in listed:
            continue
        wire = WIRE_NAMES.get(name, name)
        if wire not in family.fields:
            raise refused(
                f"field '{name}' is not accepted by Kling {family.path}",
                f"Remove '{name}' from the item, or use a kind that accepts it.",
            )
        convert = CONVERSIONS.get(wire)
        body[wire] = await to_wire(convert(value) if convert is not None else value)
    images = await _image_list(family, request.fields)
    if images:
        body["image_list"] = images
    body["external_task_id"] = external_task_id
    return body


# -- task objects --------------------------------------------------------------------------------

STATUSES: Mapping[str, TaskStatus] = {
    "submitted": TaskStatus.SUBMITTED,
    "processing": TaskStatus.PROCESSING,
    "succeed": TaskStatus.SUCCEEDED,
    # API 2.0's spelling; accepted here so a fix on their side does not fail paid tasks.
    "succeeded": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
}


def parse_assets(kind: Kind, result: object) -> tuple[Asset, ...]:
    if result is None:
        return ()
    if not isinstance(result, dict):
        raise Malformed("task_result is not an object")
    media = kind.media
    entries = result.get(f"{media}s")
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise Malformed(f"task_result.{media}s is not a list")
    urls: list[str] = []
    indexes: list[int] = []
    for position, entry in enumerate(entries):
        url = identifier(entry.get("url")) if isinstance(entry, dict) else None
        if url is None:
            raise Malformed(f"task_result.{media}s[{position}] has no url")
        urls.append(url)
        index = entry.get("index") if media == "image" else None
        indexes.append(index if type(index) is int else position)
    # An index names the file and matches a fresh URL to an expired one. Negative, huge or
    # repeated ones cannot, but the task is paid and its URLs are good: renumber them all by
    # position (Kling's order) rather than reject the answer, which would leave a succeeded
    # task unread until poll.timeout and fail it. Every read of the same answer renumbers alike.
    if not valid_asset_indexes(indexes):
        indexes = list(range(len(urls)))
    return tuple(
        Asset(index=index, url=url, media=media)
        for index, url in zip(indexes, urls, strict=True)
    )


def external_id(data: Mapping[str, Any]) -> str | None:
    info = data.get("task_info")
    return identifier(info.get("external_task_id")) if isinstance(info, dict) else None


#: Where a legacy task object keeps what a Task needs.
SHAPE = TaskShape(
    id_key="task_id",
    status_key="task_status",
    statuses=STATUSES,
    message_key="task_status_msg",
    created_key="created_at",
    updated_key="updated_at",
    external_id=external_id,
    charged=lambda data: units(data.get("final_unit_deduction")),
)


def parse_task(
    kind: Kind, data: object, request_id: str | None, clean: Callable[[str], str]
) -> Task:
    """A legacy task object (see :func:`~orchestrator.providers.kling.wire.parse_task_as`)."""
    return parse_task_as(
        SHAPE, data, lambda task: parse_assets(kind, task.get("task_result")), request_id, clean
    )
