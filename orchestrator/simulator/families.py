"""The task families the simulator serves, and how each validates a create body.

A family is data: its path under ``/v1``, what one asset is, and a validator that either returns
a :class:`CreateSpec` or raises the 400/1201 Kling would send. Adding a family means adding an
entry to :data:`FAMILIES`. The checks follow shared/reference/kling-api.md; they are strict on
purpose, so a client bug shows up against the simulator rather than as a paid failure.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.simulator.wire import invalid

VIDEO_MODELS = frozenset(
    {
        "kling-v1",
        "kling-v1-6",
        "kling-v2-master",
        "kling-v2-1-master",
        "kling-v2-5-turbo",
        "kling-v2-6",
        "kling-v3",
    }
)
IMAGE_MODELS = frozenset(
    {"kling-v1", "kling-v1-5", "kling-v2", "kling-v2-new", "kling-v2-1", "kling-v3"}
)
DEFAULT_MODEL = "kling-v1"

_LONG_DURATION_MODELS = frozenset({"kling-v2-6", "kling-v3"})
_LONG_DURATIONS = frozenset(str(seconds) for seconds in range(3, 16))
_CLASSIC_DURATIONS = frozenset({"5", "10"})
_VIDEO_ASPECT_RATIOS = ("16:9", "9:16", "1:1")
_IMAGE_ASPECT_RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9")
_CAMERA_TYPES = ("simple", "down_back", "forward_up", "right_turn_forward", "left_turn_forward")
_CAMERA_AXES = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
MAX_PROMPT_CHARS = 2500
MAX_IMAGE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class CreateSpec:
    """What a valid create asks for, in the terms the task store needs."""

    model_name: str
    prompt: str
    #: Assets a successful task returns (images: n; videos: 1).
    assets: int
    #: Concurrency slots the task holds until it ends (images: n; videos: 1).
    slots: int
    external_task_id: str | None
    #: The ``duration`` reported on each video; None for image tasks.
    video_duration: str | None


@dataclass(frozen=True)
class Family:
    path: str
    media: str  # "video" | "image"
    validate: Callable[[Mapping[str, Any]], CreateSpec]

    @property
    def asset_suffix(self) -> str:
        return "mp4" if self.media == "video" else "png"


def _model(body: Mapping[str, Any], models: frozenset[str], family: str) -> str:
    model = body.get("model_name", DEFAULT_MODEL)
    if not isinstance(model, str) or model not in models:
        raise invalid(
            f"model_name {model!r} is not supported by {family}; "
            f"expected one of {', '.join(sorted(models))}"
        )
    return model


def _text(body: Mapping[str, Any], key: str, *, required: bool) -> str:
    value = body.get(key)
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


def _choice(body: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> None:
    value = body.get(key)
    if value is not None and value not in allowed:
        raise invalid(f"{key} must be one of {', '.join(allowed)}, got {value!r}")


def _fraction(body: Mapping[str, Any], key: str) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise invalid(f"{key} must be a number between 0 and 1, got {value!r}")


def _duration(body: Mapping[str, Any], model: str) -> str:
    value = body.get("duration")
    if value is None:
        return "5"
    if not isinstance(value, str):
        # Kling wants a JSON string here; a number is the classic client bug this catches.
        raise invalid(
            f'duration must be a string such as "5", got {type(value).__name__} {value!r}'
        )
    allowed = _LONG_DURATIONS if model in _LONG_DURATION_MODELS else _CLASSIC_DURATIONS
    if value not in allowed:
        names = sorted(allowed, key=int)
        raise invalid(f"duration {value!r} is not supported by {model}; expected one of {names}")
    return value


def _camera_control(body: Mapping[str, Any]) -> None:
    value = body.get("camera_control")
    if value is None:
        return
    if not isinstance(value, Mapping):
        raise invalid("camera_control must be an object")
    kind = value.get("type")
    if kind not in _CAMERA_TYPES:
        raise invalid(f"camera_control.type must be one of {', '.join(_CAMERA_TYPES)}")
    config = value.get("config")
    if kind != "simple":
        if config is not None:
            raise invalid("camera_control.config is only allowed with type 'simple'")
        return
    if not isinstance(config, Mapping):
        raise invalid("camera_control.config is required with type 'simple'")
    nonzero = 0
    for axis in _CAMERA_AXES:
        amount = config.get(axis, 0)
        if (
            isinstance(amount, bool)
            or not isinstance(amount, int | float)
            or not -10 <= amount <= 10
        ):
            raise invalid(f"camera_control.config.{axis} must be a number between -10 and 10")
        nonzero += amount != 0
    if nonzero != 1:
        raise invalid("camera_control.config must set exactly one of " + ", ".join(_CAMERA_AXES))


def _image(body: Mapping[str, Any], key: str, *, required: bool) -> bool:
    """Check an image field; return whether it is present."""
    value = body.get(key)
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


def _external_task_id(body: Mapping[str, Any]) -> str | None:
    value = body.get("external_task_id")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise invalid("external_task_id must be a string")
    return value


def _optional_string(body: Mapping[str, Any], key: str) -> None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(f"{key} must be a string")


def _video_common(body: Mapping[str, Any], family: str, *, prompt_required: bool) -> CreateSpec:
    model = _model(body, VIDEO_MODELS, family)
    prompt = _text(body, "prompt", required=prompt_required)
    _text(body, "negative_prompt", required=False)
    _fraction(body, "cfg_scale")
    _choice(body, "mode", ("std", "pro"))
    duration = _duration(body, model)
    _camera_control(body)
    _optional_string(body, "callback_url")
    return CreateSpec(
        model_name=model,
        prompt=prompt,
        assets=1,
        slots=1,
        external_task_id=_external_task_id(body),
        video_duration=duration,
    )


def validate_text2video(body: Mapping[str, Any]) -> CreateSpec:
    spec = _video_common(body, "videos/text2video", prompt_required=True)
    _choice(body, "aspect_ratio", _VIDEO_ASPECT_RATIOS)
    return spec


def validate_image2video(body: Mapping[str, Any]) -> CreateSpec:
    spec = _video_common(body, "videos/image2video", prompt_required=False)
    if body.get("aspect_ratio") is not None:
        raise invalid("aspect_ratio is not supported by image2video: it follows the image")
    _image(body, "image", required=True)
    has_tail = _image(body, "image_tail", required=False)
    has_static = _image(body, "static_mask", required=False)
    masks = body.get("dynamic_masks")
    if masks is not None and not isinstance(masks, list):
        raise invalid("dynamic_masks must be an array")
    exclusive = {
        "image_tail": has_tail,
        "static_mask/dynamic_masks": has_static or bool(masks),
        "camera_control": body.get("camera_control") is not None,
    }
    chosen = [name for name, present in exclusive.items() if present]
    if len(chosen) > 1:
        raise invalid(f"{' and '.join(chosen)} cannot be used together: choose one")
    return spec


def validate_image_generation(body: Mapping[str, Any]) -> CreateSpec:
    model = _model(body, IMAGE_MODELS, "images/generations")
    prompt = _text(body, "prompt", required=True)
    negative = _text(body, "negative_prompt", required=False)
    has_image = _image(body, "image", required=False)
    if has_image and negative:
        raise invalid("negative_prompt is not supported together with image")
    _choice(body, "image_reference", ("subject", "face"))
    _fraction(body, "image_fidelity")
    _fraction(body, "human_fidelity")
    _choice(body, "resolution", ("1k", "2k"))
    ratios = _IMAGE_ASPECT_RATIOS if model != "kling-v1" else _IMAGE_ASPECT_RATIOS[:-1]
    _choice(body, "aspect_ratio", ratios)
    _optional_string(body, "callback_url")
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 9:
        raise invalid(f"n must be an integer from 1 to 9, got {n!r}")
    return CreateSpec(
        model_name=model,
        prompt=prompt,
        assets=n,
        slots=n,
        external_task_id=_external_task_id(body),
        video_duration=None,
    )


FAMILIES: dict[str, Family] = {
    family.path: family
    for family in (
        Family("videos/text2video", "video", validate_text2video),
        Family("videos/image2video", "video", validate_image2video),
        Family("images/generations", "image", validate_image_generation),
    )
}
