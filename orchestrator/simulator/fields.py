"""Checks of single wire fields that every model and both APIs share: types, lengths, image
encodings, camera_control's shape. Each raises the 400/1201 Kling would send.

Per-model rules (which modes, durations, ratios... a model takes) are not here: they come from
the catalogue, through :mod:`.model_rules`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Final

from orchestrator.simulator.wire import invalid

MAX_PROMPT_CHARS: Final = 2500
MAX_IMAGE_BYTES: Final = 10 * 1024 * 1024
CAMERA_TYPES: Final = (
    "simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward",
)
CAMERA_AXES: Final = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")


def value_is_invalid(key: str, value: object) -> str:
    """Kling's wording for a refused value, e.g. ``mode value 'std' is invalid``."""
    return f"{key} value '{value}' is invalid"


def text(value: object, key: str, *, required: bool) -> str:
    """A prompt-like string of at most MAX_PROMPT_CHARS; "" when absent and not required."""
    if value is None:
        if required:
            raise invalid(f"{key} is required")
        return ""
    if not isinstance(value, str):
        raise invalid(f"{key} must be a string")
    if required and not value.strip():
        raise invalid(f"{key} must not be empty")
    if len(value) > MAX_PROMPT_CHARS:
        raise invalid(f"{key} must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}")
    return value


def fraction(body: Mapping[str, Any], key: str) -> bool:
    """A number from 0 to 1, if present; returns whether it is."""
    value = body.get(key)
    if value is None:
        return False
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise invalid(f"{key} must be a number between 0 and 1, got {value!r}")
    return True


def optional_string(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(f"{key} must be a string")
    return value


def external_task_id(value: object) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid("external_task_id must be a string")
    return value


def image(value: object, key: str, *, required: bool) -> bool:
    """An image as Kling takes it, a public URL or raw base64 (no ``data:`` prefix) of at most
    MAX_IMAGE_BYTES; returns whether one is present."""
    if value is None or value == "":
        if required:
            raise invalid(f"{key} is required")
        return False
    if not isinstance(value, str):
        raise invalid(f"{key} must be a URL or a base64 string")
    if value.startswith(("http://", "https://")):
        return True
    if value.startswith("data:"):
        raise invalid(f"{key} format error: send raw base64 without a 'data:' prefix")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise invalid(f"{key} format error: neither an http(s) URL nor valid base64") from None
    if not decoded:
        raise invalid(f"{key} format error: empty image")
    if len(decoded) > MAX_IMAGE_BYTES:
        raise invalid(f"{key} is larger than {MAX_IMAGE_BYTES} bytes")
    return True


def camera_control(value: object) -> bool:
    """camera_control's documented shape, if present; returns whether it is."""
    if value is None:
        return False
    if not isinstance(value, Mapping):
        raise invalid("camera_control must be an object")
    kind = value.get("type")
    if kind not in CAMERA_TYPES:
        raise invalid(f"camera_control.type must be one of {', '.join(CAMERA_TYPES)}")
    config = value.get("config")
    if kind != "simple":
        if config is not None:
            raise invalid("camera_control.config is only allowed with type 'simple'")
        return True
    if not isinstance(config, Mapping):
        raise invalid("camera_control.config is required with type 'simple'")
    nonzero = 0
    for axis in CAMERA_AXES:
        amount = config.get(axis, 0)
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or not -10 <= amount <= 10
        ):
            raise invalid(f"camera_control.config.{axis} must be a number between -10 and 10")
        nonzero += amount != 0
    if nonzero != 1:
        raise invalid("camera_control.config must set exactly one of " + ", ".join(CAMERA_AXES))
    return True


def seconds_string(value: object, key: str = "duration") -> int | None:
    """A legacy duration: a JSON string of whole seconds ("5"); None when absent."""
    if value is None:
        return None
    if not isinstance(value, str):
        # Kling wants a JSON string here; a number is the classic client bug this catches.
        raise invalid(
            f'{key} must be a string such as "5", got {type(value).__name__} {value!r}'
        )
    if not value.isascii() or not value.isdigit() or int(value) <= 0:
        raise invalid(value_is_invalid(key, value))
    return int(value)
