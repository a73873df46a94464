"""What a v2 submit body must be, checked as LTX checks it: every field's presence and type, the
model against the catalogue (removed models named with their replacement), the (resolution, fps,
duration) combination against the model's support matrix, and the image URIs of image-to-video.

Each refusal is a 400 ``invalid_request_error`` whose message starts with the field it is about.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from orchestrator.providers.base import Kind
from orchestrator.providers.ltx.catalogue import Model, Status, catalogue
from orchestrator.providers.ltx.simulator.wire import invalid

#: The v2 endpoints served, by path segment.
ENDPOINTS: Final[Mapping[str, Kind]] = MappingProxyType(
    {"text-to-video": Kind.TEXT2VIDEO, "image-to-video": Kind.IMAGE2VIDEO}
)
CAMERA_MOTIONS: Final = (
    "dolly_in", "dolly_out", "dolly_left", "dolly_right", "jib_up", "jib_down", "static",
    "focus_shift",
)
_TEXT_FIELDS: Final = frozenset(
    {"prompt", "model", "duration", "resolution", "fps", "generate_audio", "camera_motion"}
)
_FIELDS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "text-to-video": _TEXT_FIELDS,
        "image-to-video": _TEXT_FIELDS | {"image_uri", "last_frame_uri"},
    }
)
_RESOLUTION: Final = re.compile(r"[1-9][0-9]{0,4}x[1-9][0-9]{0,4}")
_DATA_URI: Final = re.compile(r"data:image/(png|jpeg|webp);base64,(.*)", re.DOTALL)
STORAGE_PREFIX: Final = "ltx://uploads/"


@dataclass(frozen=True)
class JobSpec:
    """A submit that passed validation: what the job is asked to make."""

    endpoint: str
    model: str
    prompt: str
    duration: int
    resolution: str
    fps: int = 24
    generate_audio: bool = True
    camera_motion: str | None = None
    #: Whether image-to-video was given a last frame.
    last_frame: bool = False


def validate(endpoint: str, body: Any, uploaded: Callable[[str], bool]) -> JobSpec:
    """The job ``body`` asks for on ``endpoint``, or raise the 400 that refuses it.

    ``uploaded(storage_uri)`` says whether a storage URI names a file this account uploaded
    and can still use.
    """
    if not isinstance(body, dict):
        raise invalid("request body must be a JSON object")
    unknown = sorted(set(body) - _FIELDS[endpoint])
    if unknown:
        raise invalid(f"{', '.join(unknown)}: unknown field for {endpoint}")
    prompt = body.get("prompt")
    if "prompt" not in body:
        raise invalid("prompt: field required")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("prompt: must be a non-empty string")
    model = _model(endpoint, body)
    duration = _integer(body, "duration", None)
    resolution = body.get("resolution")
    if "resolution" not in body:
        raise invalid("resolution: field required")
    if not isinstance(resolution, str) or not _RESOLUTION.fullmatch(resolution):
        raise invalid(f'resolution: must be a string "WxH" such as "1920x1080", got {resolution!r}')
    fps = _integer(body, "fps", 24)
    generate_audio = body.get("generate_audio", True)
    if type(generate_audio) is not bool:
        raise invalid(f"generate_audio: must be a boolean, got {generate_audio!r}")
    camera_motion = body.get("camera_motion")
    if "camera_motion" in body and camera_motion not in CAMERA_MOTIONS:
        raise invalid(
            f"camera_motion: must be one of {', '.join(CAMERA_MOTIONS)}, got {camera_motion!r}"
        )
    problem = model.problem(resolution, fps, duration)
    if problem is not None:
        raise invalid(f"{model.blame(resolution, fps)}: {problem}")
    last_frame = False
    if endpoint == "image-to-video":
        if "image_uri" not in body:
            raise invalid("image_uri: field required")
        _check_uri("image_uri", body["image_uri"], uploaded)
        if "last_frame_uri" in body:
            if not model.last_frame:
                takers = [m.name for m in catalogue().models.values() if m.last_frame]
                raise invalid(
                    f"last_frame_uri: {model.name} does not take a last frame "
                    f"(models that do: {', '.join(takers)})"
                )
            _check_uri("last_frame_uri", body["last_frame_uri"], uploaded)
            last_frame = True
    return JobSpec(
        endpoint=endpoint,
        model=model.name,
        prompt=prompt,
        duration=duration,
        resolution=resolution,
        fps=fps,
        generate_audio=generate_audio,
        camera_motion=camera_motion if isinstance(camera_motion, str) else None,
        last_frame=last_frame,
    )


def _model(endpoint: str, body: Mapping[str, Any]) -> Model:
    if "model" not in body:
        raise invalid("model: field required")
    name = body["model"]
    if not isinstance(name, str):
        raise invalid(f"model: must be a string, got {name!r}")
    models = catalogue()
    kind = ENDPOINTS[endpoint]
    model = models.model(name)
    if model is None:
        guess = models.suggest(name, kind)
        hint = f" (did you mean {guess}?)" if guess else ""
        raise invalid(
            f"model: unknown model {name!r}{hint}; available: {', '.join(models.usable(kind))}"
        )
    if model.status is Status.RETIRED:
        when = f" on {model.removed.isoformat()}" if model.removed is not None else ""
        instead = f"; use {model.replacement} instead" if model.replacement else ""
        raise invalid(f"model: {name} was removed{when}{instead}")
    if kind not in model.kinds:
        raise invalid(f"model: {name} does not serve {endpoint}")
    return model


def _integer(body: Mapping[str, Any], name: str, default: int | None) -> int:
    if name not in body:
        if default is None:
            raise invalid(f"{name}: field required")
        return default
    value = body[name]
    # A JSON true is a bool, not an integer, even though Python's bool is an int.
    if type(value) is not int:
        raise invalid(f"{name}: must be an integer, got {value!r}")
    return value


def _check_uri(name: str, value: Any, uploaded: Callable[[str], bool]) -> None:
    if not isinstance(value, str) or not value:
        raise invalid(f"{name}: must be a non-empty string")
    if value.startswith(STORAGE_PREFIX):
        if not uploaded(value):
            raise invalid(
                f"{name}: {value} names no uploaded file (PUT it to its upload_url first; "
                "a file lives 24 h)"
            )
        return
    if value.startswith("data:"):
        found = _DATA_URI.fullmatch(value)
        if found is None:
            raise invalid(f"{name}: a data URI must be data:image/<png|jpeg|webp>;base64,...")
        try:
            decoded = base64.b64decode(found.group(2), validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
        if not decoded:
            raise invalid(f"{name}: the data URI's base64 does not decode to an image")
        return
    parts = urlsplit(value)
    if parts.scheme != "https" or not parts.hostname:
        raise invalid(
            f"{name}: must be an https:// URL, a data:image/...;base64, URI or a storage_uri "
            "from POST /v1/upload"
        )

