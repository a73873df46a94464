"""LTX Video's item fields: their shapes, and the rules each model sets, checked offline.

    text2video    model, prompt, duration (whole seconds), resolution ("WxH"), fps,
                  generate_audio, camera_motion
    image2video   the same, with image (a local JPEG/PNG or an https URL) and last_frame (the
                  models that take one)

LTX answers 400 to any (resolution, fps, duration) outside a model's support matrix and an error
to a removed model; both are caught here from the catalogue, with what the model takes. The
defaults spell out what LTX would assume (24 fps, audio on), and what it requires is given the
values every current model takes (6 s, 1920x1080), so a request says exactly what is made.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Final

from pydantic import BeforeValidator, Field, PlainValidator, ValidationInfo

from orchestrator.images import ImageInfo
from orchestrator.providers.base import ImageSource, Kind
from orchestrator.providers.item_schema import (
    Draft,
    ItemSchema,
    Report,
    image_rule,
    local_image,
)
from orchestrator.providers.ltx.catalogue import KINDS, Catalogue, Status, catalogue
from orchestrator.validators import (
    Flag,
    JsonRule,
    OneOf,
    Strict,
    WholeNumber,
    as_text,
    fail,
    suggest,
)

CAMERA_MOTIONS: Final = (
    "dolly_in", "dolly_out", "dolly_left", "dolly_right", "jib_up", "jib_down", "static",
    "focus_shift",
)
#: LTX publishes no prompt limit; this bound only keeps a runaway cell out of a request.
MAX_PROMPT_CHARS: Final = 10_000
_RESOLUTION: Final = re.compile(r"[1-9][0-9]{1,4}x[1-9][0-9]{1,4}")
#: What LTX assumes (fps, generate_audio) or needs (duration, resolution) when an item is silent.
DEFAULTS: Final[Mapping[str, Any]] = {
    "duration": 6, "resolution": "1920x1080", "fps": 24, "generate_audio": True,
}


def _prompt(value: object) -> str:
    text = as_text(value)
    if not text.strip():
        fail("must not be empty")
    if len(text) > MAX_PROMPT_CHARS:
        fail(f"must be at most {MAX_PROMPT_CHARS} characters (got {len(text)})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # YAML's "\ud800" escape makes a lone surrogate: it cannot be sent as JSON text.
        fail(f"contains a character that cannot be sent ({exc.object[exc.start]!r} at "
             f"position {exc.start}): remove it")
    return text


def _model_name(value: object) -> str:
    text = as_text(value)
    if not text.strip():
        fail("must not be empty")
    return text


def _resolution(value: object) -> str:
    text = as_text(value).strip().lower().replace("\u00d7", "x")  # the multiplication sign
    if not _RESOLUTION.fullmatch(text):
        fail(f"must be width x height in pixels, such as 1920x1080 (got {value!r})")
    return text


def _no_limits(image: ImageInfo) -> list[str]:
    return []  # LTX publishes no size limits; a large file is uploaded rather than inlined


def _image(value: object, info: ValidationInfo) -> ImageSource:
    source = local_image(
        value, info, limits=_no_limits,
        data_uri="a data: URI is not accepted here: give the file's path (it is sent inline, or "
        "uploaded when large) or an https URL",
    )
    if source.url is not None and not source.url.lower().startswith("https://"):
        fail("an image URL must be https:// (LTX fetches it from the internet)")
    return source


Prompt = Annotated[
    str,
    BeforeValidator(_prompt),
    JsonRule({"minLength": 1, "maxLength": MAX_PROMPT_CHARS, "pattern": "\\S"}),
]
# Which names: the catalogue's (ItemRules.models), said per kind by the manifest's schema.
ModelName = Annotated[str, BeforeValidator(_model_name), JsonRule({"pattern": "\\S"})]
Resolution = Annotated[
    str,
    BeforeValidator(_resolution),
    JsonRule({"pattern": "^\\s*[1-9][0-9]{1,4}[xX\u00d7][1-9][0-9]{1,4}\\s*$"}),
]
ImageInput = Annotated[ImageSource, PlainValidator(_image), image_rule("https")]
#: What the field descriptions say of the model's part.
_MATRIX = (
    "which the model takes depends on resolution, fps and duration together: "
    "`orchestrator models --provider ltx`"
)


class Text2VideoFields(Strict):
    """A video from a prompt."""

    model: ModelName | None = Field(
        None,
        description="The LTX model: required, here or in defaults. What each model takes: "
        "`orchestrator models --provider ltx`.",
    )
    prompt: Prompt | None = Field(
        None, description=f"What to make, required (here or in defaults), at most "
        f"{MAX_PROMPT_CHARS:,} characters."
    )
    duration: Annotated[WholeNumber, Field(ge=1)] | None = Field(
        None,
        description=f"Whole seconds of video ({DEFAULTS['duration']} when left out); {_MATRIX}.",
    )
    resolution: Resolution | None = Field(
        None,
        description=f"Width x height in pixels ({DEFAULTS['resolution']} when left out); "
        f"{_MATRIX}.",
    )
    fps: Annotated[WholeNumber, Field(ge=1, le=120)] | None = Field(
        None, description=f"Frames per second ({DEFAULTS['fps']} when left out); {_MATRIX}."
    )
    generate_audio: Flag | None = Field(
        None, description="Generate audio with the video (LTX's default: true)."
    )
    camera_motion: Annotated[
        str, BeforeValidator(OneOf(CAMERA_MOTIONS)), JsonRule({"enum": list(CAMERA_MOTIONS)})
    ] | None = Field(None, description="A camera movement.")


class Image2VideoFields(Text2VideoFields):
    """A video that starts from an image."""

    image: ImageInput | None = Field(
        None,
        description="The first frame, required: a local JPEG/PNG (relative to the manifest; "
        "sent inline, or uploaded when large) or an https URL.",
    )
    last_frame: ImageInput | None = Field(
        None, description="The last frame, as image (models that take one)."
    )


class Options(Strict):
    """The provider section's own keys: none for LTX."""


class ItemRules:
    """The per-model rules of one batch's LTX items."""

    def __init__(self, cat: Catalogue | None = None) -> None:
        self.catalogue = cat if cat is not None else catalogue()
        self.warnings: dict[str, str] = {}

    def check(self, draft: Draft, report: Report) -> None:
        values, kind = draft.values, draft.kind
        if "prompt" not in draft.given:
            # LTX answers 400 "prompt: field required" for both kinds: refused before sending.
            report("prompt", f"is required for kind {kind}", False)
        if "model" not in draft.given:
            report("model", self.missing_model(kind), False)
            return
        if not draft.ok("model"):
            return
        name = str(values.model)
        model = self.catalogue.model(name)
        usable = self.catalogue.usable(kind)
        current = f"current {kind} models: {', '.join(usable) or 'none'}"
        if model is None:
            report("model", f"unknown LTX model '{name}'{suggest(name, usable)} ({current})",
                   False)
            return
        if model.status is Status.RETIRED:
            report("model", f"'{name}' was removed by LTX on {model.removed} and the API "
                   f"refuses it: use {model.replacement} ({current})", False)
            return
        if kind not in model.kinds:
            report("model", f"'{name}' does not make {kind} ({current})", False)
            return
        if kind is Kind.IMAGE2VIDEO:
            if "image" not in draft.given:
                report("image", "is required for image2video: a local JPEG/PNG file or an "
                       "https URL", False)
            if "last_frame" in draft.given and not model.last_frame:
                with_it = [n for n in usable if self._takes_last_frame(n)]
                report("last_frame", f"'{name}' takes no last frame (models that do: "
                       f"{', '.join(with_it) or 'none'})", True)
        fields = ("resolution", "fps", "duration")
        if any(f in draft.bad for f in fields):
            return
        chosen = {f: getattr(values, f) if f in draft.given else DEFAULTS[f] for f in fields}
        problem = model.problem(chosen["resolution"], chosen["fps"], chosen["duration"])
        if problem is not None:
            blamed = model.blame(chosen["resolution"], chosen["fps"])
            report(blamed, f"{problem} ({name} makes {model.describe()})",
                   blamed in draft.given)

    def _takes_last_frame(self, name: str) -> bool:
        found = self.catalogue.model(name)
        return found is not None and found.last_frame

    def models(self, kind: Kind) -> tuple[str, ...]:
        return tuple(self.catalogue.usable(kind))

    def missing_model(self, kind: Kind) -> str:
        usable = self.catalogue.usable(kind)
        return (
            f"is required: name the LTX model, e.g. 'model: {usable[0] if usable else '?'}'; "
            f"current {kind} models: {', '.join(usable) or 'none'}"
        )

    def defaults(self, kind: Kind, name: str) -> Mapping[str, Any]:
        return DEFAULTS

    def canonical(self, kind: Kind, name: str) -> str:
        return name

    def finish(self, kind: Kind, name: str, fields: dict[str, Any]) -> None:
        return None


def _rules(options: Any, cat: Catalogue | None = None) -> ItemRules:
    return ItemRules(cat)


SCHEMA: Final = ItemSchema(
    kinds=KINDS,
    field_models={Kind.TEXT2VIDEO: Text2VideoFields, Kind.IMAGE2VIDEO: Image2VideoFields},
    image_fields=frozenset(("image", "last_frame")),
    rules=_rules,
    options=Options,
    csv_numbers=frozenset(("duration", "fps")),
    csv_flags=frozenset(("generate_audio",)),
)
