"""What the catalogue lets one model do, checked against what one create asks of it.

Both APIs read their own wire format into an :class:`Ask` (the request in the catalogue's
terms: mode, seconds, sound, end frame, reference images...) and hand it to :func:`check`,
which takes every per-model rule from the catalogue (orchestrator.providers.kling.catalogue):
the simulator holds no model list and no rule of a particular model. A model Kling adds,
changes or retires is a change to the catalogue, and the simulator follows.

Messages quote the wire's own names (:class:`Wording`: ``mode`` on /v1, ``resolution`` on
API 2.0...) in the shape of Kling's live 1201 answers, ``mode value 'std' is invalid``; where
Kling's exact text is known it is used verbatim (kling-video-o1's duration without a reference
image).
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Final

from orchestrator.providers.base import Kind
from orchestrator.providers.kling.catalogue import (
    ALL_MODES,
    APIS,
    V1,
    V2,
    Durations,
    KindRules,
    Status,
    catalogue,
)
from orchestrator.simulator.fields import value_is_invalid
from orchestrator.simulator.wire import invalid

#: What a body without ``model_name`` gets: Kling's old default, retired on 2026-09-15, so
#: such a create is refused like any retired model (a client must always name the model).
DEFAULT_MODEL: Final = "kling-v1"
#: Kling's default mode when a legacy body names none (kling-v2-6 refuses it: pro only).
DEFAULT_MODE: Final = "std"
#: Kling's default duration when a body names none.
DEFAULT_SECONDS: Final = 5


@dataclass(frozen=True)
class Wording:
    """How one API names what the checks speak of, so that messages quote the wire."""

    mode: str = "mode"
    #: How a mode is spelt there (API 2.0: as a resolution); absent: as the mode itself.
    mode_values: Mapping[str, str] = field(default_factory=dict)
    sound: str = "sound"
    sound_on: str = "on"
    end_frame: str = "image_tail"
    references: str = "image_list"

    def spell(self, mode: str) -> str:
        return self.mode_values.get(mode, mode)


LEGACY: Final = Wording()
LEGACY_OMNI: Final = Wording(end_frame="end_frame")
API2: Final = Wording(
    mode="resolution",
    mode_values=catalogue().v2_resolution,
    sound="audio",
    sound_on="native",
    end_frame="last_frame",
    references="refer_image",
)


@dataclass(frozen=True)
class Ask:
    """One create in the catalogue's terms; ``mode`` and ``seconds`` are None for images."""

    kind: Kind
    mode: str | None = None
    seconds: int | None = None
    references: int = 0
    end_frame: bool = False
    sound: bool = False
    multi_shot: bool = False
    camera_control: bool = False
    masks: bool = False
    cfg_scale: bool = False
    negative_prompt: bool = False
    aspect_ratio: str | None = None
    n: int = 1
    resolution: str | None = None
    image_reference: bool = False
    fidelity: bool = False


def rules_for(
    name: object, kind: Kind, api: str, extra_models: Collection[str]
) -> tuple[str, KindRules]:
    """The model a create names, as its task is recorded (the catalogue's name), and its
    rules; or the 1201 refusing it.

    On /v1 ``name`` is the body's ``model_name`` and must be a catalogue name (not an alias);
    on API 2.0 it is the path's model segment and must be that model's ``v2_name``. Either way
    the model must serve ``kind`` on ``api``, and not be retired. A name the catalogue does not
    know is refused unless it is in ``extra_models``: then it gets :func:`generic_rules`.
    """
    refused = invalid(value_is_invalid("model_name", name))
    if not isinstance(name, str) or not name:
        raise refused
    cat = catalogue()
    model = cat.models.get(name) if api == V1 else cat.model(name)
    if model is None or (api == V2 and model.v2_name != name):
        if name in extra_models and cat.model(name) is None:
            return name, generic_rules(kind)
        raise refused
    rules = model.kinds.get(kind)
    if rules is None or not rules.usable or api not in rules.apis:
        raise refused
    return model.name, rules


@functools.cache
def generic_rules(kind: Kind) -> KindRules:
    """The rules a model the catalogue does not know is held to: what any model of the kind
    takes (the union over the catalogue's usable models), and every optional input allowed.
    Only the checks every Kling model makes apply to it."""
    usable = [
        rules
        for model in catalogue().models.values()
        if (rules := model.kinds.get(kind)) is not None and rules.usable
    ]
    seconds: set[int] = set()
    for rules in usable:
        for durations in (rules.durations, rules.durations_with_references):
            if durations is not None:
                seconds |= durations.values
    ratios: list[str] = []
    resolutions: list[str] = []
    for rules in usable:
        ratios += [r for r in rules.aspect_ratios if r not in ratios]
        resolutions += [r for r in rules.resolutions if r not in resolutions]
    video = kind.media == "video"
    return KindRules(
        model="(not in the catalogue)",
        kind=kind,
        status=Status.ACTIVE,
        apis=APIS,
        modes=ALL_MODES if video else (),
        default_mode=DEFAULT_MODE if video else None,
        durations=Durations(frozenset(seconds), is_range=True) if seconds else None,
        default_duration=DEFAULT_SECONDS if video else None,
        aspect_ratios=tuple(ratios),
        default_aspect_ratio=ratios[0] if ratios else None,
        sound=ALL_MODES if video else (),
        end_frame=ALL_MODES if video else (),
        multi_shot=video,
        camera_control=video,
        masks=video,
        cfg_scale=True,
        negative_prompt=True,
        reference_images=max((rules.reference_images for rules in usable), default=0),
        resolutions=tuple(resolutions),
        max_n=max((rules.max_n for rules in usable), default=1),
        image_reference=not video,
        fidelity=not video,
    )


def check(ask: Ask, rules: KindRules, wording: Wording = LEGACY) -> None:
    """Raise the 1201 for the first thing ``ask`` wants that the model does not take."""
    name = rules.model
    if ask.kind.media == "video":
        _check_video(ask, rules, wording)
    else:
        _check_image(ask, rules)
    for asked, allowed, label in (
        (ask.multi_shot, rules.multi_shot, "multi_shot"),
        (ask.camera_control, rules.camera_control, "camera_control"),
        (ask.masks, rules.masks, "static_mask/dynamic_masks"),
        (ask.cfg_scale, rules.cfg_scale, "cfg_scale"),
        (ask.negative_prompt, rules.negative_prompt, "negative_prompt"),
        (ask.image_reference, rules.image_reference, "image_reference"),
        (ask.fidelity, rules.fidelity, "image_fidelity/human_fidelity"),
    ):
        if asked and not allowed:
            raise invalid(f"{label} is not supported by {name}")
    if ask.aspect_ratio is not None and ask.aspect_ratio not in rules.aspect_ratios:
        raise invalid(value_is_invalid("aspect_ratio", ask.aspect_ratio))


def _check_video(ask: Ask, rules: KindRules, wording: Wording) -> None:
    mode = ask.mode if ask.mode is not None else DEFAULT_MODE
    if mode not in rules.modes:
        raise invalid(value_is_invalid(wording.mode, wording.spell(mode)))
    seconds = ask.seconds if ask.seconds is not None else DEFAULT_SECONDS
    durations = rules.durations_for(ask.references)
    if durations is not None and not durations.allows(seconds):
        if not ask.references and rules.durations_with_references is not None:
            # Kling's own text for a model whose durations widen with a reference image.
            raise invalid(
                f"Duration only supports {durations.describe()} seconds when no refer_image "
                "is provided"
            )
        raise invalid(value_is_invalid("duration", seconds))
    if ask.sound and not rules.sound_in(mode):
        raise invalid(value_is_invalid(wording.sound, wording.sound_on))
    if ask.end_frame and not rules.end_frame_in(mode):
        if rules.end_frame:
            needed = " or ".join(wording.spell(m) for m in rules.end_frame)
            raise invalid(f"{wording.end_frame} requires {wording.mode} {needed}")
        raise invalid(f"{wording.end_frame} is not supported by {rules.model}")
    if ask.references > rules.reference_images:
        if not rules.reference_images:
            raise invalid(f"reference images are not supported by {rules.model}")
        raise invalid(
            f"{wording.references} holds {ask.references} reference images; {rules.model} "
            f"takes at most {rules.reference_images}"
        )


def _check_image(ask: Ask, rules: KindRules) -> None:
    if not 1 <= ask.n <= rules.max_n:
        raise invalid(f"n must be an integer from 1 to {rules.max_n}, got {ask.n!r}")
    if ask.resolution is not None and ask.resolution not in rules.resolutions:
        raise invalid(value_is_invalid("resolution", ask.resolution))


def indicative_units(model: str, ask: Ask) -> float | None:
    """What the catalogue says a task like ``ask`` costs (None: no price known); reported as
    the task's ``final_unit_deduction`` and drawn from the resource pack."""
    video = ask.kind.media == "video"
    return catalogue().indicative_units(
        model,
        ask.kind,
        mode=(ask.mode or DEFAULT_MODE) if video else None,
        duration=(ask.seconds or DEFAULT_SECONDS) if video else None,
        sound=ask.sound,
        n=ask.n,
    )
