"""What both Kling APIs share on the wire: input images as Kling takes them, the values read back
(ids, Unix-ms times, charged units), and the refusal of a request that cannot be sent.

Reading never raises anything but :class:`Malformed` (the caller turns it into a SERVER
ProviderError with the answer's status and request id): a value of the wrong type is either
"not said" (None) or a malformed answer, never a KeyError or TypeError.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from orchestrator.errors import Category, ErrorInfo, ProviderError
from orchestrator.providers.base import Asset, ImageSource, Task, TaskStatus
from orchestrator.providers.http_channel import is_utf8
from orchestrator.providers.kling.codes import classify_task_failure


class Malformed(Exception):
    """A 2xx answer that is not the shape Kling documents."""


def refused(message: str, hint: str) -> ProviderError:
    """A request refused before anything was sent (so it may be fixed and sent later)."""
    info = ErrorInfo(Category.VALIDATION, message, retryable=False, hint=hint)
    return ProviderError(info, sent=False)


# -- input images --------------------------------------------------------------------------------

def _read_base64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


async def encode_image(source: ImageSource) -> str:
    """The image as both APIs take it: its URL, or the file as raw base64 (no ``data:``)."""
    if source.url is not None:
        return source.url
    if source.path is None:
        raise refused("an image field has neither a path nor a url",
                      "Give the image as a local file path or a public URL.")
    try:
        # Up to 10 MB: read off the event loop.
        return await anyio.to_thread.run_sync(_read_base64, source.path)
    except OSError as exc:
        raise refused(
            f"cannot read image {source.path}: {exc.strerror or type(exc).__name__}",
            "Check that the image file exists and is readable.",
        ) from None


async def to_wire(value: Any) -> Any:
    """Images to URL/base64 at any depth (dynamic_masks[].mask too); None values dropped."""
    if isinstance(value, ImageSource):
        return await encode_image(value)
    if isinstance(value, Mapping):
        return {str(k): await to_wire(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [await to_wire(v) for v in value if v is not None]
    return value


# -- values read back ----------------------------------------------------------------------------

def identifier(value: object) -> str | None:
    """An id or URL Kling sent: a non-empty, encodable string, or None."""
    return value if isinstance(value, str) and value and is_utf8(value) else None


def task_id_of(value: object) -> str | None:
    """A task id as Kling sends it: a string, or (some proxies) a JSON integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else None


def checked_task_id(value: object) -> str:
    task_id = task_id_of(value)
    if not task_id:
        raise Malformed("task object has no task id")
    if not is_utf8(task_id):
        # It could not be queried later: a URL cannot carry it.
        raise Malformed(f"task id {task_id!r} is not valid text")
    return task_id


def unix_ms(value: object) -> float | None:
    """A Kling timestamp (Unix ms), when a finite, plausible number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not 0 < value < 10**15:  # NaN and infinities fail too; 10**15 ms is the year 33658
        return None
    return float(value)


def seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


def units(value: object) -> float | None:
    """Units Kling says it charged (``final_unit_deduction``, a billing ``amount``): a number
    or a numeric string, counted only when finite and >= 0. Anything else (the docs' literal
    "string", "", a bool, "nan") is "not said": None, never an error, since a paid task must
    not fail over what is only reported."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int beyond float range
        return None
    return number if math.isfinite(number) and number >= 0 else None


#: The API 2.0 billing entries that count as units charged ("charge_type": "unit"); others (a
#: currency amount, say) are in another measure and are left out.
UNIT_CHARGE = "unit"


def billing_units(value: object) -> float | None:
    """The units an API 2.0 task's ``billing`` list charged: the sum of its "unit" entries'
    amounts (one per package type). None when it names no unit entry, or when any unit entry's
    amount is unreadable: a partial sum would understate the cost."""
    if not isinstance(value, list):
        return None
    total = 0.0
    counted = False
    for entry in value:
        if not isinstance(entry, dict):
            return None
        charge_type = entry.get("charge_type")
        if charge_type is not None and charge_type != UNIT_CHARGE:
            continue
        amount = units(entry.get("amount"))
        if amount is None:
            return None
        total += amount
        counted = True
    return total if counted and math.isfinite(total) else None


@dataclass(frozen=True)
class TaskShape:
    """Where one API's task object keeps what a Task needs (legacy and API 2.0 differ only in
    names): the rest of parsing is one function, :func:`parse_task_as`."""

    #: what the API calls the object ("task_status" / "status"), for messages
    id_key: str
    status_key: str
    statuses: Mapping[str, TaskStatus]
    message_key: str
    created_key: str
    updated_key: str
    external_id: Callable[[Mapping[str, Any]], str | None]
    charged: Callable[[Mapping[str, Any]], float | None]


def parse_task_as(
    shape: TaskShape,
    data: object,
    assets: Callable[[Mapping[str, Any]], tuple[Asset, ...]],
    request_id: str | None,
    clean: Callable[[str], str],
) -> Task:
    """A task object of ``shape``. ``clean`` masks credentials in Kling's free text; Malformed
    messages are cleaned by the caller, so they may quote what Kling sent."""
    if not isinstance(data, dict):
        raise Malformed(f"data is {type(data).__name__}, not a task object")
    ident = checked_task_id(data.get(shape.id_key))
    raw_status = data.get(shape.status_key)
    status = shape.statuses.get(raw_status) if isinstance(raw_status, str) else None
    if status is None:
        shown = repr(raw_status) if isinstance(raw_status, str) else (
            f"of type {type(raw_status).__name__}")
        raise Malformed(f"task {ident} has unknown {shape.status_key} {shown}")
    raw_message = data.get(shape.message_key)
    raw_text = raw_message if isinstance(raw_message, str) else None
    message = (clean(raw_text) or None) if raw_text is not None else None
    return Task(
        task_id=ident,
        status=status,
        external_task_id=shape.external_id(data),
        message=message,
        assets=assets(data),
        request_id=request_id,
        # Decided on the raw text: cleaning may cut or mask the words that decide.
        failure=(classify_task_failure(raw_text, shown=message or "")
                 if status is TaskStatus.FAILED else None),
        raw=data,
        created_at=seconds(unix_ms(data.get(shape.created_key))),
        ended_at=seconds(unix_ms(data.get(shape.updated_key))) if status.finished else None,
        charged_units=shape.charged(data),
    )

