"""The task families the simulator serves, and how a legacy ``/v1`` create body is checked.

A family is data: its path, its kind (what one asset is follows from it), the API it is on, and
a validator that either returns a :class:`CreateSpec` or raises the 400/1201 Kling would send.
The legacy families are in :data:`FAMILIES` (by path under ``/v1``), API 2.0's in
``api2.V2_FAMILIES``. Validators check each field's shape here (or in :mod:`.fields`) and
leave every per-model rule to the catalogue, through :mod:`.model_rules`. They are strict on
purpose, so that a client bug shows up against the simulator rather than as a paid failure or
a refusal from the real API.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from orchestrator.providers.base import Kind
from orchestrator.providers.kling.catalogue import (
    ALL_MODES,
    MAX_SHOT_PROMPT,
    MAX_SHOTS,
    SHOT_TYPES,
    V1,
    KindRules,
)
from orchestrator.simulator.fields import (
    camera_control,
    external_task_id,
    fraction,
    image,
    optional_string,
    seconds_string,
    text,
    value_is_invalid,
)
from orchestrator.simulator.model_rules import (
    DEFAULT_MODE,
    DEFAULT_MODEL,
    DEFAULT_SECONDS,
    LEGACY,
    LEGACY_OMNI,
    Ask,
    check,
    indicative_units,
    rules_for,
)
from orchestrator.simulator.wire import invalid

#: What a legacy create may say about the image's subject.
IMAGE_REFERENCES: Final = ("subject", "face")


@dataclass(frozen=True)
class CreateSpec:
    """What a valid create asks for, in the terms the task store needs."""

    #: The catalogue's name of the model (an API 2.0 path names it by its v2_name), or the
    #: name as sent for a model the catalogue does not know (SimConfig.extra_models).
    model_name: str
    prompt: str
    #: Assets a successful task returns (images: n; videos: 1).
    assets: int
    #: Concurrency slots the task holds until it ends (images: n; videos: 1).
    slots: int
    external_task_id: str | None
    #: The ``duration`` reported on each video ("5.1" for 5 s); None for image tasks.
    video_duration: str | None
    mode: str | None = None
    seconds: int | None = None
    sound: bool = False
    #: Units the task is charged once it succeeds (the catalogue's INDICATIVE price of what
    #: was asked); None when the catalogue has no price for it.
    units: float | None = None


@dataclass(frozen=True)
class Target:
    """What a validator needs besides the body: the models accepted beyond the catalogue, and
    the model an API 2.0 path names (None on /v1, where the body names it)."""

    extra_models: Collection[str] = ()
    path_model: str | None = None


def body_prompt(body: Mapping[str, Any]) -> str | None:
    """The prompt a legacy body carries (a multi-shot body: its shots' prompts), for fault
    rules to match against before the body is validated."""
    prompt = body.get("prompt")
    if isinstance(prompt, str) and prompt:
        return prompt
    shots = body.get("multi_prompt")
    if isinstance(shots, list):
        texts = [s["prompt"] for s in shots if isinstance(s, dict) and isinstance(
            s.get("prompt"), str)]
        return "\n".join(texts) or None
    return None


@dataclass(frozen=True)
class Family:
    path: str
    kind: Kind
    validate: Callable[[Mapping[str, Any], Target], CreateSpec]
    prompt_of: Callable[[Mapping[str, Any]], str | None] = body_prompt
    #: The API the family is served on (catalogue.V1 or V2): each reads its own tasks.
    api: str = V1

    @property
    def media(self) -> str:
        """What one asset is: "video" or "image"."""
        return self.kind.media

    @property
    def asset_suffix(self) -> str:
        return "mp4" if self.media == "video" else "png"


def video_duration(seconds: int) -> str:
    """The ``duration`` Kling reports on a video asked for ``seconds``: "5.1" for 5 s."""
    return f"{seconds}.1"


def spec_for(
    model: str, ask: Ask, prompt: str, external: str | None
) -> CreateSpec:
    """The CreateSpec of a create that passed every check (either API)."""
    video = ask.kind.media == "video"
    seconds = (ask.seconds or DEFAULT_SECONDS) if video else None
    return CreateSpec(
        model_name=model,
        prompt=prompt,
        assets=ask.n,
        slots=ask.n,
        external_task_id=external,
        video_duration=video_duration(seconds) if seconds is not None else None,
        mode=(ask.mode or DEFAULT_MODE) if video else None,
        seconds=seconds,
        sound=ask.sound,
        units=indicative_units(model, ask),
    )


# -- legacy fields -------------------------------------------------------------------------


def _model(body: Mapping[str, Any], kind: Kind, target: Target) -> tuple[str, KindRules]:
    """The model a legacy body names (Kling's old default when it names none) and its rules;
    the name returned is the one the task is recorded under."""
    name = body.get("model_name")
    return rules_for(DEFAULT_MODEL if name is None else name, kind, V1, target.extra_models)


def _mode(body: Mapping[str, Any]) -> str:
    value = body.get("mode")
    if value is None:
        return DEFAULT_MODE  # Kling's default: a pro-only model refuses a body without mode
    if not isinstance(value, str) or value not in ALL_MODES:
        raise invalid(value_is_invalid("mode", value))
    return value


def _seconds(body: Mapping[str, Any]) -> int:
    seconds = seconds_string(body.get("duration"))
    return DEFAULT_SECONDS if seconds is None else seconds


def _sound(body: Mapping[str, Any]) -> bool:
    value = body.get("sound")
    if value is None:
        return False
    if not isinstance(value, str) or value not in ("on", "off"):
        raise invalid(value_is_invalid("sound", value))
    return value == "on"


def _string_choice(body: Mapping[str, Any], key: str) -> str | None:
    """A string the catalogue's rules decide on (aspect_ratio, resolution), if present."""
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(value_is_invalid(key, value))
    return value


def _negative_prompt(body: Mapping[str, Any]) -> bool:
    return bool(text(body.get("negative_prompt"), "negative_prompt", required=False))


def _multi_shot(body: Mapping[str, Any], seconds: int, rules: KindRules) -> bool:
    """multi_shot / shot_type / multi_prompt, checked; returns whether multi-shot is on.

    Kling's rules (shared/reference/kling-api.md): 1 to 6 shots, each prompt at most 512
    characters, each duration a string, adding up to ``duration``. Our reading where the docs
    are silent: no shot_type means customize, and customize needs multi_prompt.
    """
    flag = body.get("multi_shot")
    shot_type = body.get("shot_type")
    shots = body.get("multi_prompt")
    if flag is not None and not isinstance(flag, bool):
        raise invalid(value_is_invalid("multi_shot", flag))
    if not flag:
        if shot_type is not None or shots is not None:
            raise invalid("shot_type and multi_prompt require multi_shot true")
        return False
    if not rules.multi_shot:
        raise invalid(f"multi_shot is not supported by {rules.model}")
    shot_type = "customize" if shot_type is None else shot_type
    if shot_type not in SHOT_TYPES:
        raise invalid(value_is_invalid("shot_type", shot_type))
    if shots is None:
        if shot_type == "customize":
            raise invalid("multi_prompt is required with shot_type customize")
        return True
    if not isinstance(shots, list) or not 1 <= len(shots) <= MAX_SHOTS:
        raise invalid(f"multi_prompt must hold 1 to {MAX_SHOTS} shots")
    total = 0
    for position, shot in enumerate(shots, 1):
        where = f"multi_prompt[{position - 1}]"
        if not isinstance(shot, Mapping):
            raise invalid(f"{where} must be an object")
        index = shot.get("index")
        if type(index) is not int or index != position:
            raise invalid(f"{where}.index must be {position} (1-based, in order)")
        prompt = shot.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise invalid(f"{where}.prompt is required")
        if len(prompt) > MAX_SHOT_PROMPT:
            raise invalid(
                f"{where}.prompt must be at most {MAX_SHOT_PROMPT} characters, got {len(prompt)}"
            )
        shot_seconds = seconds_string(shot.get("duration"), f"{where}.duration")
        if shot_seconds is None:
            raise invalid(f"{where}.duration is required")
        total += shot_seconds
    if total != seconds:
        raise invalid("multi_prompt durations must add up to duration")
    return True


def _dynamic_masks(body: Mapping[str, Any]) -> bool:
    masks = body.get("dynamic_masks")
    if masks is None:
        return False
    if not isinstance(masks, list):
        raise invalid("dynamic_masks must be an array")
    for position, entry in enumerate(masks):
        where = f"dynamic_masks[{position}]"
        if not isinstance(entry, Mapping):
            raise invalid(f"{where} must be an object")
        image(entry.get("mask"), f"{where}.mask", required=True)
        if not isinstance(entry.get("trajectories"), list):
            raise invalid(f"{where}.trajectories must be an array")
    return bool(masks)


# -- legacy validators ---------------------------------------------------------------------


def validate_text2video(body: Mapping[str, Any], target: Target) -> CreateSpec:
    model, rules = _model(body, Kind.TEXT2VIDEO, target)
    seconds = _seconds(body)
    multi = _multi_shot(body, seconds, rules)
    # Kling ignores prompt when multi-shot is on: the shots carry theirs.
    prompt = text(body.get("prompt"), "prompt", required=not multi)
    ask = Ask(
        Kind.TEXT2VIDEO,
        mode=_mode(body),
        seconds=seconds,
        sound=_sound(body),
        multi_shot=multi,
        camera_control=camera_control(body.get("camera_control")),
        cfg_scale=fraction(body, "cfg_scale"),
        negative_prompt=_negative_prompt(body),
        aspect_ratio=_string_choice(body, "aspect_ratio"),
    )
    optional_string(body, "callback_url")
    check(ask, rules, LEGACY)
    return spec_for(model, ask, prompt or (body_prompt(body) or ""),
                    external_task_id(body.get("external_task_id")))


def validate_image2video(body: Mapping[str, Any], target: Target) -> CreateSpec:
    model, rules = _model(body, Kind.IMAGE2VIDEO, target)
    seconds = _seconds(body)
    multi = _multi_shot(body, seconds, rules)
    prompt = text(body.get("prompt"), "prompt", required=False)
    if body.get("aspect_ratio") is not None:
        raise invalid("aspect_ratio is not supported by image2video: it follows the image")
    image(body.get("image"), "image", required=True)
    has_tail = image(body.get("image_tail"), "image_tail", required=False)
    has_masks = image(body.get("static_mask"), "static_mask", required=False)
    has_masks = _dynamic_masks(body) or has_masks
    has_camera = camera_control(body.get("camera_control"))
    exclusive = {
        "image_tail": has_tail,
        "static_mask/dynamic_masks": has_masks,
        "camera_control": has_camera,
    }
    chosen = [name for name, present in exclusive.items() if present]
    if len(chosen) > 1:
        raise invalid(f"{' and '.join(chosen)} cannot be used together: choose one")
    ask = Ask(
        Kind.IMAGE2VIDEO,
        mode=_mode(body),
        seconds=seconds,
        end_frame=has_tail,
        sound=_sound(body),
        multi_shot=multi,
        camera_control=has_camera,
        masks=has_masks,
        cfg_scale=fraction(body, "cfg_scale"),
        negative_prompt=_negative_prompt(body),
    )
    optional_string(body, "callback_url")
    check(ask, rules, LEGACY)
    return spec_for(model, ask, prompt or (body_prompt(body) or ""),
                    external_task_id(body.get("external_task_id")))


def _image_list(body: Mapping[str, Any]) -> tuple[bool, int]:
    """Omni's image_list: whether it has an end frame, and how many reference images.

    Each entry is ``{"image_url": ..., "type": "first_frame" | "end_frame"}``, or without a
    type: a reference image the prompt refers to as <<<image_1>>>...
    """
    entries = body.get("image_list")
    if entries is None:
        return False, 0
    if not isinstance(entries, list):
        raise invalid("image_list must be an array")
    frames = {"first_frame": 0, "end_frame": 0}
    references = 0
    for position, entry in enumerate(entries):
        where = f"image_list[{position}]"
        if not isinstance(entry, Mapping):
            raise invalid(f"{where} must be an object")
        image(entry.get("image_url"), f"{where}.image_url", required=True)
        kind = entry.get("type")
        if kind is None:
            references += 1
        elif isinstance(kind, str) and kind in frames:
            frames[kind] += 1
        else:
            raise invalid(value_is_invalid(f"{where}.type", kind))
    if max(frames.values()) > 1:
        raise invalid("image_list holds at most one first_frame and one end_frame")
    return frames["end_frame"] > 0, references


def validate_omni_video(body: Mapping[str, Any], target: Target) -> CreateSpec:
    model, rules = _model(body, Kind.OMNI_VIDEO, target)
    seconds = _seconds(body)
    prompt = text(body.get("prompt"), "prompt", required=True)
    end_frame, references = _image_list(body)
    multi = body.get("multi_shot")
    ask = Ask(
        Kind.OMNI_VIDEO,
        mode=_mode(body),
        seconds=seconds,
        references=references,
        end_frame=end_frame,
        sound=_sound(body),
        multi_shot=multi is not None and multi is not False,
        camera_control=camera_control(body.get("camera_control")),
        cfg_scale=fraction(body, "cfg_scale"),
        negative_prompt=_negative_prompt(body),
        aspect_ratio=_string_choice(body, "aspect_ratio"),
    )
    optional_string(body, "callback_url")
    check(ask, rules, LEGACY_OMNI)
    return spec_for(model, ask, prompt, external_task_id(body.get("external_task_id")))


def validate_image_generation(body: Mapping[str, Any], target: Target) -> CreateSpec:
    model, rules = _model(body, Kind.IMAGE, target)
    prompt = text(body.get("prompt"), "prompt", required=True)
    negative = _negative_prompt(body)
    has_image = image(body.get("image"), "image", required=False)
    if has_image and negative:
        raise invalid("negative_prompt is not supported together with image")
    reference = body.get("image_reference")
    if reference is not None and (not isinstance(reference, str)
                                  or reference not in IMAGE_REFERENCES):
        raise invalid(value_is_invalid("image_reference", reference))
    fidelity = fraction(body, "image_fidelity")
    fidelity = fraction(body, "human_fidelity") or fidelity
    n = body.get("n", 1)
    if isinstance(n, bool) or not isinstance(n, int):
        raise invalid(f"n must be an integer from 1 to {rules.max_n}, got {n!r}")
    ask = Ask(
        Kind.IMAGE,
        n=n,
        resolution=_string_choice(body, "resolution"),
        aspect_ratio=_string_choice(body, "aspect_ratio"),
        image_reference=reference is not None,
        fidelity=fidelity,
        negative_prompt=negative,
    )
    optional_string(body, "callback_url")
    check(ask, rules, LEGACY)
    return spec_for(model, ask, prompt, external_task_id(body.get("external_task_id")))


FAMILIES: Mapping[str, Family] = {
    family.path: family
    for family in (
        Family("videos/text2video", Kind.TEXT2VIDEO, validate_text2video),
        Family("videos/image2video", Kind.IMAGE2VIDEO, validate_image2video),
        Family("videos/omni-video", Kind.OMNI_VIDEO, validate_omni_video),
        Family("images/generations", Kind.IMAGE, validate_image_generation),
    )
}
