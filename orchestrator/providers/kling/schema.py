"""Kling's item fields: their shapes, and the rules each model sets, checked offline.

Two layers, as the manifest checks every item:

1. Shapes (pydantic models per kind, ``extra="forbid"``): types, closed sets, ranges that hold
   for every Kling model, and the local image files themselves (Kling's 10 MB / 300 px / ratio
   limits).
2. Rules that depend on the model (:class:`ItemRules`), read from the catalogue: which models
   exist and still serve the kind, on which API, with which modes, durations, aspect ratios,
   sound, end frames, multi-shot and image inputs; and the defaults that make a request say
   exactly what will be generated (the model's own default mode, 5 s, 16:9).

A model the catalogue does not know is refused, unless ``provider.allow_unknown_models`` lets
it through with the shapes alone (Kling shipped it before this catalogue knew it).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Self

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    ValidationInfo,
    model_validator,
)

from orchestrator.images import ImageInfo
from orchestrator.providers.base import ImageSource, Kind
from orchestrator.providers.item_schema import Draft, Report, image_rule, local_image
from orchestrator.providers.kling.catalogue import (
    ALL_MODES,
    MAX_SHOT_PROMPT,
    MAX_SHOTS,
    SHOT_TYPES,
    V2,
    Catalogue,
    KindRules,
    Status,
)
from orchestrator.validators import (
    Flag,
    Fraction,
    HttpUrl,
    JsonRule,
    OneOf,
    Strict,
    WholeNumber,
    as_number,
    as_text,
    choices,
    fail,
    suggest,
)

CAMERA_TYPES: Final = (
    "simple",
    "down_back",
    "forward_up",
    "right_turn_forward",
    "left_turn_forward",
)
CAMERA_AXES: Final = ("horizontal", "vertical", "pan", "tilt", "roll", "zoom")
IMAGE_REFERENCES: Final = ("subject", "face")
#: Every aspect ratio some model takes: the shape check; each model's own set is in the catalogue.
ASPECT_RATIOS: Final = ("16:9", "9:16", "1:1", "4:3", "3:4", "3:2", "2:3", "21:9")
RESOLUTIONS: Final = ("1k", "2k")
MAX_N: Final = 9
MAX_PROMPT_CHARS: Final = 2500
# "10 MB" is not defined further; the decimal reading is the smaller one, so a file that passes
# here passes Kling's check under either reading.
MAX_IMAGE_BYTES: Final = 10_000_000
MIN_IMAGE_SIDE: Final = 300
# Aspect ratio limit 1:2.5 .. 2.5:1 as the integer fraction 5/2, compared without floats.
_RATIO_NUM, _RATIO_DEN = 5, 2
#: What API 2.0's body (contents / settings / options) can carry; other fields stay on /v1.
V2_FIELDS: Final = frozenset(
    {"model", "prompt", "mode", "duration", "aspect_ratio", "sound", "callback_url", "image",
     "image_tail", "reference_images"}
)


def _limited_text(value: object, limit: int) -> str:
    text = as_text(value)
    if not text:
        fail("must not be empty")
    if not text.strip():
        fail("must not be blank")
    if len(text) > limit:
        fail(f"must be at most {limit} characters (got {len(text)})")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # YAML's "\ud800" escape makes a lone surrogate: it cannot be sent as JSON text.
        fail(f"contains a character that cannot be sent ({exc.object[exc.start]!r} at "
             f"position {exc.start}): remove it")
    return text


def _prompt(value: object) -> str:
    return _limited_text(value, MAX_PROMPT_CHARS)


def _shot_prompt(value: object) -> str:
    return _limited_text(value, MAX_SHOT_PROMPT)


def _model_name(value: object) -> str:
    text = as_text(value)
    if not text.strip():
        fail("must not be empty")
    return text


def _image_limits(image: ImageInfo) -> list[str]:
    """Kling's limits on an input image: 10 MB, 300 px a side, 1:2.5 to 2.5:1."""
    problems = []
    if image.size_bytes > MAX_IMAGE_BYTES:
        problems.append(f"is {image.size_bytes / 1e6:.1f} MB; the limit is 10 MB")
    if min(image.width, image.height) < MIN_IMAGE_SIDE:
        problems.append(
            f"is {image.width}x{image.height} px; each side must be at least {MIN_IMAGE_SIDE} px"
        )
    w, h = image.width, image.height
    if w * _RATIO_DEN > h * _RATIO_NUM or h * _RATIO_DEN > w * _RATIO_NUM:
        problems.append(
            f"has aspect ratio {w}:{h} ({w / h:.2f}); it must be between 1:2.5 and 2.5:1"
        )
    return problems


def _image_source(value: object, info: ValidationInfo) -> ImageSource:
    return local_image(
        value, info, limits=_image_limits,
        data_uri="a data: URI is not accepted (Kling wants raw base64 without the prefix): give "
        "the file's path and it is sent inline, or an http(s) URL",
        # a dynamic mask's file is inherited with its list
        field_name="dynamic_masks" if info.field_name == "mask" else None,
    )


def _text_rule(limit: int) -> JsonRule:
    return JsonRule({"minLength": 1, "maxLength": limit, "pattern": "\\S"})


def _one_of(allowed: tuple[str, ...]) -> JsonRule:
    return JsonRule({"enum": list(allowed)})


Prompt = Annotated[str, BeforeValidator(_prompt), _text_rule(MAX_PROMPT_CHARS)]
# Which names: the catalogue's (ItemRules.models), said per kind by the manifest's schema.
ModelName = Annotated[str, BeforeValidator(_model_name), JsonRule({"pattern": "\\S"})]
CameraAmount = Annotated[float, BeforeValidator(as_number), Field(ge=-10, le=10)]
ImageInput = Annotated[ImageSource, PlainValidator(_image_source), image_rule("http", "https")]
Mode = Annotated[str, BeforeValidator(OneOf(ALL_MODES)), _one_of(ALL_MODES)]
AspectRatio = Annotated[str, BeforeValidator(OneOf(ASPECT_RATIOS)), _one_of(ASPECT_RATIOS)]
Seconds = Annotated[WholeNumber, Field(ge=1)]

#: What the field descriptions say of the model's part.
_PER_MODEL = "which ones the model takes: `orchestrator models`"
_IMAGE_FILE = (
    "a local JPEG/PNG (relative to the manifest, sent inline) or an http(s) URL; at most "
    "10 MB, each side at least 300 px, aspect ratio between 1:2.5 and 2.5:1"
)


# --- Shapes, per kind ------------------------------------------------------------------------


class CameraConfig(Strict):
    """A simple camera movement: exactly one axis non-zero, -10 to 10."""

    horizontal: CameraAmount = Field(0.0, description="Moves sideways (negative: left).")
    vertical: CameraAmount = Field(0.0, description="Moves up or down (negative: down).")
    pan: CameraAmount = Field(0.0, description="Turns sideways around the vertical axis.")
    tilt: CameraAmount = Field(0.0, description="Turns up or down around the horizontal axis.")
    roll: CameraAmount = Field(0.0, description="Rolls around the lens's axis.")
    zoom: CameraAmount = Field(0.0, description="Zooms (negative: out).")


def _camera_rule(schema: dict[str, Any]) -> None:
    """The model validator's rule in JSON Schema's words."""
    one_axis = {
        "oneOf": [
            {"required": [axis], "properties": {axis: {"not": {"const": 0}}}}
            for axis in CAMERA_AXES
        ]
    }
    schema["if"] = {"properties": {"type": {"const": "simple"}}}
    schema["then"] = {"required": ["config"], "properties": {"config": one_axis}}
    schema["else"] = {"not": {"required": ["config"]}}


class CameraControl(Strict):
    """A camera movement (models that take one)."""

    model_config = ConfigDict(json_schema_extra=_camera_rule)

    type: Annotated[str, BeforeValidator(OneOf(CAMERA_TYPES)), _one_of(CAMERA_TYPES)] = Field(
        description="A preset movement, or simple: the one axis config sets."
    )
    config: CameraConfig | None = Field(
        None, description="With type simple (and only then): one axis, non-zero."
    )

    @model_validator(mode="after")
    def _config_fits_type(self) -> Self:
        axes = choices(CAMERA_AXES)
        if self.type != "simple":
            if self.config is not None:
                fail(f"only type 'simple' takes a config (got type '{self.type}')")
            return self
        if self.config is None:
            fail(f"type 'simple' needs a config with exactly one non-zero value among {axes}")
        moving = [axis for axis in CAMERA_AXES if getattr(self.config, axis) != 0]
        if len(moving) != 1:
            fail(
                f"config must have exactly one non-zero value among {axes} "
                f"(got {', '.join(moving) if moving else 'none'})"
            )
        return self


class TrajectoryPoint(Strict):
    """A point of a motion path."""

    x: WholeNumber = Field(description="Its x coordinate in the image, in pixels.")
    y: WholeNumber = Field(description="Its y coordinate in the image, in pixels.")


class DynamicMask(Strict):
    """An area of the image and the path it moves along."""

    mask: ImageInput = Field(description="An image marking the area that moves.")
    # A motion path needs a start and an end.
    trajectories: Annotated[list[TrajectoryPoint], Field(min_length=2)] = Field(
        description="The path it moves along: at least 2 points."
    )


class Shot(Strict):
    """One shot of a multi-shot video."""

    prompt: Annotated[str, BeforeValidator(_shot_prompt), _text_rule(MAX_SHOT_PROMPT)] = Field(
        description=f"What the shot shows, at most {MAX_SHOT_PROMPT} characters."
    )
    duration: Seconds = Field(description="The shot's seconds.")


_MODEL = Field(
    None,
    description="The Kling model: required, here or in defaults (Kling's own default was "
    "retired). What each model takes: `orchestrator models`.",
)
_MODE = Field(None, description=f"std, pro or 4k; {_PER_MODEL} (and its default).")
_DURATION = Field(None, description=f"Seconds of video; {_PER_MODEL} (and its default).")
_SOUND = Field(None, description="Generate audio with the video (models with sound).")
_CALLBACK_URL = Field(None, description="An http(s) URL Kling calls when the task ends.")
_ASPECT_RATIO = Field(
    None,
    description=f'Width:height, in quotes ("16:9": YAML reads 16:9 as a number); {_PER_MODEL} '
    "(and its default).",
)


class _VideoFields(Strict):
    model: ModelName | None = _MODEL
    prompt: Prompt | None = Field(
        None,
        description=f"What to make, at most {MAX_PROMPT_CHARS} characters: required, except on "
        "image2video and with shot_type customize.",
    )
    negative_prompt: Prompt | None = Field(
        None, description="What to keep out of the video (models that take it)."
    )
    mode: Mode | None = _MODE
    duration: Seconds | None = _DURATION
    cfg_scale: Fraction | None = Field(
        None, description="How closely to follow the prompt, 0 to 1 (models that take it)."
    )
    camera_control: CameraControl | None = Field(
        None, description="A camera movement (models that take one)."
    )
    sound: Flag | None = _SOUND
    multi_shot: Flag | None = Field(
        None, description="A video of several shots (models that make them); needs shot_type."
    )
    shot_type: Annotated[
        str, BeforeValidator(OneOf(SHOT_TYPES)), _one_of(SHOT_TYPES)
    ] | None = Field(
        None,
        description="With multi_shot: customize (your shots, in multi_prompt) or intelligence "
        "(Kling cuts the shots itself).",
    )
    multi_prompt: Annotated[
        list[Shot], Field(min_length=1, max_length=MAX_SHOTS)
    ] | None = Field(
        None,
        description=f"With shot_type customize: 1 to {MAX_SHOTS} shots, whose durations add up "
        "to duration.",
    )
    callback_url: HttpUrl | None = _CALLBACK_URL


class Text2VideoFields(_VideoFields):
    """A video from a prompt."""

    aspect_ratio: AspectRatio | None = _ASPECT_RATIO


class Image2VideoFields(_VideoFields):
    """A video that starts from an image (and keeps its aspect ratio)."""

    image: ImageInput | None = Field(
        None, description=f"The first frame, required: {_IMAGE_FILE}."
    )
    image_tail: ImageInput | None = Field(
        None, description="The last frame, as image (models with end frames)."
    )
    static_mask: ImageInput | None = Field(
        None, description="An image marking the area that stays still (models with masks)."
    )
    dynamic_masks: Annotated[list[DynamicMask], Field(min_length=1)] | None = Field(
        None, description="Areas that move, each along its path (models with masks)."
    )


class OmniVideoFields(Strict):
    """A video from a prompt that may refer to images: first and end frames, references."""

    model: ModelName | None = _MODEL
    prompt: Prompt | None = Field(
        None,
        description=f"What to make, at most {MAX_PROMPT_CHARS} characters (required); it "
        "refers to reference_images as <<<image_1>>>, <<<image_2>>>...",
    )
    mode: Mode | None = _MODE
    duration: Seconds | None = _DURATION
    aspect_ratio: AspectRatio | None = _ASPECT_RATIO
    sound: Flag | None = _SOUND
    image: ImageInput | None = Field(None, description=f"The first frame: {_IMAGE_FILE}.")
    image_tail: ImageInput | None = Field(
        None, description="The end frame, as image (needs image)."
    )
    reference_images: Annotated[list[ImageInput], Field(min_length=1)] | None = Field(
        None,
        description="Images the prompt refers to as <<<image_1>>>, <<<image_2>>>... (as "
        "image; how many: the model's limit).",
    )
    callback_url: HttpUrl | None = _CALLBACK_URL


class ImageFields(Strict):
    """Still images."""

    model: ModelName | None = _MODEL
    prompt: Prompt | None = Field(
        None, description=f"What to draw, at most {MAX_PROMPT_CHARS} characters (required)."
    )
    negative_prompt: Prompt | None = Field(
        None, description="What to keep out of the images (not together with image)."
    )
    image: ImageInput | None = Field(
        None, description=f"An image to start from (image to image): {_IMAGE_FILE}."
    )
    image_reference: Annotated[
        str, BeforeValidator(OneOf(IMAGE_REFERENCES)), _one_of(IMAGE_REFERENCES)
    ] | None = Field(
        None, description="With image: what to keep of it, subject or face (models with it)."
    )
    image_fidelity: Fraction | None = Field(
        None, description="With image: how closely to follow it, 0 to 1 (models with it)."
    )
    human_fidelity: Fraction | None = Field(
        None, description="How closely to keep a person's likeness, 0 to 1 (models with it)."
    )
    resolution: Annotated[
        str, BeforeValidator(OneOf(RESOLUTIONS)), _one_of(RESOLUTIONS)
    ] | None = Field(None, description=f"1k or 2k; {_PER_MODEL}.")
    n: Annotated[WholeNumber, Field(ge=1, le=MAX_N)] | None = Field(
        None,
        description=f"Images in one task, 1 to {MAX_N} (1 when left out): the report checks "
        "that as many came back.",
    )
    aspect_ratio: AspectRatio | None = _ASPECT_RATIO
    callback_url: HttpUrl | None = _CALLBACK_URL


FIELD_MODELS: Final[Mapping[Kind, type[Strict]]] = {
    Kind.TEXT2VIDEO: Text2VideoFields,
    Kind.IMAGE2VIDEO: Image2VideoFields,
    Kind.OMNI_VIDEO: OmniVideoFields,
    Kind.IMAGE: ImageFields,
}
#: Fields of each kind, in the order they are written to TaskRequest.fields.
KIND_FIELDS: Final[Mapping[Kind, tuple[str, ...]]] = {
    kind: tuple(model.model_fields) for kind, model in FIELD_MODELS.items()
}
#: Fields whose values are file paths, resolved against the directory of where they are written.
IMAGE_FIELDS: Final = frozenset(
    ("image", "image_tail", "static_mask", "dynamic_masks", "reference_images")
)
#: A CSV cell is text: these fields are read from it as numbers, these as booleans, these as JSON
#: (with an example for the message when one is not).
CSV_NUMBERS: Final = frozenset(("duration", "n", "cfg_scale", "image_fidelity", "human_fidelity"))
CSV_FLAGS: Final = frozenset(("sound", "multi_shot"))
CSV_JSON: Final[Mapping[str, str]] = {
    "camera_control": '{"type": "simple", "config": {"zoom": 2}}',
    "dynamic_masks": '[{"mask": "mask.png", "trajectories": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}]',
    "multi_prompt": '[{"prompt": "a wide shot", "duration": 2}, {"prompt": "a close-up", '
    '"duration": 3}]',
    "reference_images": '["images/hero.png", "images/room.png"]',
}
_EXCLUSIVE_GROUPS: Final = (("image_tail",), ("static_mask", "dynamic_masks"), ("camera_control",))
_MULTI_SHOT_FIELDS: Final = ("shot_type", "multi_prompt")


# --- Rules that depend on the model ----------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What the manifest's provider section says that item rules depend on."""

    catalogue: Catalogue
    #: provider.api: "auto", "v1" or "v2"
    api: str = "auto"
    allow_unknown_models: bool = False


def _names(names: list[str]) -> str:
    return ", ".join(names) if names else "none"


class ItemRules:
    """The per-model rules of one batch's items (one instance per manifest load).

    ``check`` reports problems through the ``report`` callback and returns the request fields
    (the item's values with the model's defaults filled in); ``warnings`` collects what is
    allowed but worth saying once (a deprecated model).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.catalogue = settings.catalogue
        #: one line per deprecated model in use: model -> message
        self.warnings: dict[str, str] = {}
        self._memo: dict[tuple[Kind, str], tuple[KindRules | None, str | None]] = {}

    # -- the model ------------------------------------------------------------------------

    def model_rules(self, kind: Kind, name: str) -> tuple[KindRules | None, str | None]:
        """The rules for this model and kind, or the problem with naming it (None, None: an
        unknown model let through by allow_unknown_models)."""
        key = (kind, name)
        found = self._memo.get(key)
        if found is None:
            found = self._memo[key] = self._model_rules(kind, name)
        return found

    def _model_rules(self, kind: Kind, name: str) -> tuple[KindRules | None, str | None]:
        cat = self.catalogue
        usable = cat.usable(kind)
        current = f"current {kind} models: {_names(usable)}"
        model = cat.model(name)
        if model is None:
            if self.settings.allow_unknown_models:
                return None, None
            return None, (
                f"unknown Kling model '{name}'{suggest(name, usable)} ({current}); if Kling has "
                "released it since this version's catalogue was written, set "
                "provider.allow_unknown_models: true to send it with the generic checks only"
            )
        rules = model.kinds.get(kind)
        if rules is None:
            serves = [str(k) for k, r in model.kinds.items() if r.usable]
            what = f"it makes {' and '.join(serves)}" if serves else "it is retired"
            return None, f"'{name}' does not make {kind}: {what} ({current})"
        if rules.status is Status.RETIRED:
            return None, (
                f"'{name}' was retired by Kling on {rules.since} and the API refuses it: use "
                f"{rules.replacement} ({current})"
            )
        if rules.status is Status.DEPRECATED:
            self.warnings[name] = (
                f"model '{name}' is deprecated since {rules.since}: Kling will retire it; "
                f"move to {rules.replacement}"
            )
        api = cat.api_for(kind, name, self.settings.api)
        if api is None:
            served = " and ".join({"v1": "/v1", "v2": "API 2.0"}[a] for a in rules.apis)
            return None, (
                f"'{name}' makes {kind} only on {served}, and provider.api is "
                f"{self.settings.api}: set provider.api: auto"
            )
        return rules, None

    # -- one item -------------------------------------------------------------------------

    def check(self, draft: Draft, report: Report) -> None:
        reported: set[str] = set()

        def once(field: str, message: str, conflict: bool) -> None:
            reported.add(field)
            report(field, message, conflict)

        self._check(draft, once)
        rules = self.model_rules(draft.kind, draft.values.model)[0] if draft.ok("model") else None
        if rules is not None and self.settings.api != "v1":
            api = self.catalogue.api_for(draft.kind, rules.model, self.settings.api)
            if api == V2:
                for field in draft.given:
                    if field not in V2_FIELDS and field not in reported:
                        report(field, f"cannot be sent on Kling's API 2.0, where "
                               f"'{rules.model}' is sent: remove it", True)

    def _check(self, draft: Draft, report: Report) -> None:
        values = draft.values
        kind = draft.kind
        name = str(values.model) if draft.ok("model") else None
        if "model" not in draft.given:
            report("model", self.missing_model(kind), False)
        rules: KindRules | None = None
        if name is not None:
            rules, problem = self.model_rules(kind, name)
            if problem is not None:
                report("model", problem, False)
                name = None
        if kind is Kind.IMAGE:
            self._image(draft, rules, report)
        else:
            # A model named but refused still leaves durations no model takes worth saying.
            refused = draft.ok("model") and name is None
            self._video(draft, rules, report, refused=refused)

    def models(self, kind: Kind) -> tuple[str, ...]:
        cat = self.catalogue
        served = [
            name for name in cat.usable(kind)
            if cat.api_for(kind, name, self.settings.api) is not None
        ]
        aliases = [alias for alias, name in cat.aliases.items() if name in served]
        return (*served, *aliases)

    def missing_model(self, kind: Kind) -> str:
        usable = self.catalogue.usable(kind)
        return (
            f"is required: name the Kling model, e.g. 'model: {usable[0] if usable else '?'}' "
            f"(Kling's own default, kling-v1, was retired); current {kind} models: "
            f"{_names(usable)}"
        )

    def _video(self, draft: Draft, rules: KindRules | None, report: Report, *,
               refused: bool) -> None:
        values = draft.values
        kind = draft.kind
        given = draft.given
        multi = draft.ok("multi_shot") and bool(values.multi_shot)
        shot_type = values.shot_type if draft.ok("shot_type") else None
        if kind is Kind.IMAGE2VIDEO and "image" not in given:
            report("image", "is required for kind image2video: the video's first frame", False)
        needs_prompt = kind is not Kind.IMAGE2VIDEO and not (multi and shot_type == "customize")
        if needs_prompt and "prompt" not in given:
            report("prompt", f"is required for kind {kind}", False)
        if "multi_shot" in given or any(f in given for f in _MULTI_SHOT_FIELDS):
            self._multi_shot(draft, rules, report, multi=multi)
        if kind is Kind.IMAGE2VIDEO:
            self._exclusive(draft, report)
        if kind is Kind.OMNI_VIDEO and "image_tail" in given and "image" not in given:
            report("image_tail", "needs image (the first frame) as well", True)
        if rules is None:
            if refused and draft.ok("duration"):
                low, high = self._duration_span(kind)
                if not low <= values.duration <= high:
                    report("duration", f"must be between {low} and {high} seconds (got "
                           f"{values.duration})", False)
            return
        mode = values.mode if draft.ok("mode") else rules.default_mode
        if draft.ok("mode") and values.mode not in rules.modes:
            report("mode", f"must be {_either(rules.modes)} for {rules.model} "
                   f"(got '{values.mode}')", True)
            mode = None
        references = len(values.reference_images) if draft.ok("reference_images") else 0
        if draft.ok("duration"):
            allowed = rules.durations_for(references)
            assert allowed is not None
            if not allowed.allows(values.duration):
                extra = ""
                if rules.durations_with_references is not None and not references:
                    extra = " without reference images"
                report("duration", f"must be {allowed.describe()} seconds for {rules.model}"
                       f"{extra} (got {values.duration})", False)
        if draft.ok("aspect_ratio") and values.aspect_ratio not in rules.aspect_ratios:
            report("aspect_ratio", f"must be {_either(rules.aspect_ratios)} for {rules.model} "
                   f"(got '{values.aspect_ratio}')", False)
        if draft.ok("sound") and values.sound:
            if not rules.sound:
                report("sound", f"is not available on {rules.model}: models with sound: "
                       f"{_names(self._with(draft.kind, 'sound'))}", True)
            elif mode is not None and not rules.sound_in(mode):
                report("sound", f"needs mode {_either(rules.sound)} on {rules.model} "
                       f"(mode is {mode})", True)
        if draft.ok("image_tail") and not rules.end_frame_in(mode):
            if not rules.end_frame:
                report("image_tail", f"is not available on {rules.model}", True)
            elif mode is not None:
                report("image_tail", f"an end frame needs mode {_either(rules.end_frame)} on "
                       f"{rules.model} (mode is {mode})", True)
        if references > rules.reference_images:
            report("reference_images", f"must list at most {rules.reference_images} images for "
                   f"{rules.model} (got {references})", False)
        for field, accepted in (
            ("cfg_scale", rules.cfg_scale),
            ("camera_control", rules.camera_control),
            ("static_mask", rules.masks),
            ("dynamic_masks", rules.masks),
            ("negative_prompt", rules.negative_prompt),
        ):
            if draft.ok(field) and not accepted:
                report(field, f"is not supported by {rules.model}", True)

    def _multi_shot(self, draft: Draft, rules: KindRules | None, report: Report, *,
                    multi: bool) -> None:
        values = draft.values
        given = draft.given
        if not multi:
            for field in _MULTI_SHOT_FIELDS:
                if field in given:
                    report(field, "needs multi_shot: true", True)
            return
        if rules is not None and not rules.multi_shot:
            report("multi_shot", f"is not available on {rules.model}: multi-shot models: "
                   f"{_names(self._with(draft.kind, 'multi_shot'))}", True)
            return
        if "shot_type" not in given:
            report("shot_type", f"is required with multi_shot: {_either(SHOT_TYPES)}", False)
            return
        if not draft.ok("shot_type"):
            return
        if values.shot_type == "intelligence":
            if "multi_prompt" in given:
                report("multi_prompt", "is for shot_type customize (with intelligence, Kling "
                       "cuts the shots itself)", True)
            return
        if "multi_prompt" not in given:
            report("multi_prompt", f"is required with shot_type customize: 1 to {MAX_SHOTS} "
                   "shots, each {prompt, duration}", False)
            return
        if draft.ok("multi_prompt") and draft.ok("duration"):
            total = sum(shot.duration for shot in values.multi_prompt)
            if total != values.duration:
                report("multi_prompt", f"the shots' durations add up to {total} s, and "
                       f"duration is {values.duration} s: they must be equal", True)
        elif draft.ok("multi_prompt") and "duration" not in given and rules is not None:
            total = sum(shot.duration for shot in values.multi_prompt)
            if total != rules.default_duration:
                report("duration", f"is required with multi_prompt: the shots add up to "
                       f"{total} s", False)

    def _exclusive(self, draft: Draft, report: Report) -> None:
        groups = [g for g in _EXCLUSIVE_GROUPS if any(name in draft.given for name in g)]
        if len(groups) <= 1:
            return
        names = [name for name in draft.given if any(name in g for g in groups)]
        # Blame a field that came from defaults (the likely surprise), else the one written last.
        blamed = next((n for n in names if n in draft.from_defaults), names[-1])
        others = ", ".join(n for n in names if n != blamed)
        report(
            blamed,
            f"cannot be combined with {others}: image_tail, static_mask/dynamic_masks and "
            "camera_control are mutually exclusive",
            True,
        )

    def _image(self, draft: Draft, rules: KindRules | None, report: Report) -> None:
        values = draft.values
        given = draft.given
        if "prompt" not in given:
            report("prompt", "is required for kind image", False)
        if "negative_prompt" in given and "image" in given:
            report("negative_prompt", "cannot be used together with image (Kling rejects it "
                   "for image-to-image)", True)
        if draft.ok("image_reference") and "image" not in given:
            report("image_reference", "needs an image to refer to", False)
        if rules is None:
            return
        if draft.ok("image_reference") and not rules.image_reference:
            report("image_reference", f"is not available on {rules.model}: models with it: "
                   f"{_names(self._with(Kind.IMAGE, 'image_reference'))}", True)
        for field in ("image_fidelity", "human_fidelity"):
            if draft.ok(field) and not rules.fidelity:
                report(field, f"is not available on {rules.model}: models with it: "
                       f"{_names(self._with(Kind.IMAGE, 'fidelity'))}", True)
        if draft.ok("aspect_ratio") and values.aspect_ratio not in rules.aspect_ratios:
            report("aspect_ratio", f"must be {_either(rules.aspect_ratios)} for {rules.model} "
                   f"(got '{values.aspect_ratio}')", False)
        if draft.ok("resolution") and values.resolution not in rules.resolutions:
            report("resolution", f"must be {_either(rules.resolutions)} for {rules.model}", False)
        if draft.ok("n") and values.n > rules.max_n:
            report("n", f"must be at most {rules.max_n} for {rules.model} (got {values.n})",
                   False)
        if draft.ok("negative_prompt") and not rules.negative_prompt:
            report("negative_prompt", f"is not supported by {rules.model}", True)

    def _duration_span(self, kind: Kind) -> tuple[int, int]:
        """The shortest and longest video any current model of this kind makes."""
        spans = [
            d for name in self.catalogue.usable(kind)
            if (r := self.catalogue.rules(name, kind)) is not None
            for d in (r.durations, r.durations_with_references) if d is not None
        ]
        return min(d.low for d in spans), max(d.high for d in spans)

    def _with(self, kind: Kind, attribute: str) -> list[str]:
        return [
            name for name in self.catalogue.usable(kind)
            if getattr(self.catalogue.rules(name, kind), attribute)
        ]

    # -- the request ----------------------------------------------------------------------

    def canonical(self, kind: Kind, name: str) -> str:
        """The catalogue's name for a model written by an alias (as written when unknown)."""
        return self.catalogue.canonical(name)

    def has_sound(self, kind: Kind, name: str) -> bool:
        rules, _ = self.model_rules(kind, name)
        return rules is None or bool(rules.sound)

    def finish(self, kind: Kind, name: str, fields: dict[str, Any]) -> None:
        if fields.get("sound") is False and not self.has_sound(kind, name):
            del fields["sound"]  # Kling's default; a model without sound may refuse the key

    def defaults(self, kind: Kind, name: str) -> Mapping[str, Any]:
        """What Kling would assume for fields an item leaves out, spelled out so the request
        (and the ledger) say what will be generated; nothing for a model we do not know."""
        rules, _ = self.model_rules(kind, name)
        if rules is None:
            return {"n": 1} if kind is Kind.IMAGE else {}
        if kind is Kind.IMAGE:
            return {"n": 1, "aspect_ratio": rules.default_aspect_ratio}
        found: dict[str, Any] = {"mode": rules.default_mode, "duration": rules.default_duration}
        if kind is Kind.TEXT2VIDEO:
            found["aspect_ratio"] = rules.default_aspect_ratio
        return found


def _either(values: tuple[str, ...]) -> str:
    if len(values) == 1:
        return values[0]
    return ", ".join(values[:-1]) + f" or {values[-1]}"
