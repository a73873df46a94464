"""Kling's model catalogue: ``catalogue.toml`` read into typed, frozen rules.

The data file is the one place that says which models Kling serves, on which API, and with
which modes, durations, sound, aspect ratios and image inputs; manifest validation, the built-in
price table, the simulator and the model table of docs/providers.md all read it through this
module. A model Kling adds, changes or retires is a change to the data file (and a test), not
to code.

    Catalogue
      models      name -> Model (aliases resolve to the same Model)
    Model
      kinds       Kind -> KindRules (every kind the model serves or served)
      price       INDICATIVE units (see providers/kling/prices.py)
    KindRules     the status of the (model, kind) pair and everything an item of that kind may
                  ask of the model

:func:`catalogue` loads the packaged file once; :func:`load` reads another (tests).
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import functools
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from orchestrator.providers.base import Kind

PATH: Final = Path(__file__).with_name("catalogue.toml")

#: The APIs a kind may be served on: legacy (model in the body) and API 2.0 (model in the path).
V1: Final = "v1"
V2: Final = "v2"
APIS: Final = (V1, V2)
#: What ``provider.api`` may say: one of the APIs, or "auto" (v1 where the model has it).
API_CHOICES: Final = ("auto", V1, V2)
#: Every mode any model has: what an unknown model (``allow_unknown_models``) is checked against.
ALL_MODES: Final = ("std", "pro", "4k")
SHOT_TYPES: Final = ("customize", "intelligence")
#: Multi-shot: 1 to 6 shots, each prompt at most 512 characters.
MAX_SHOTS: Final = 6
MAX_SHOT_PROMPT: Final = 512

_VIDEO_KINDS: Final = (Kind.TEXT2VIDEO, Kind.IMAGE2VIDEO, Kind.OMNI_VIDEO)


class CatalogueError(Exception):
    """The data file is not a valid catalogue (a packaging or editing mistake)."""


class Status(enum.StrEnum):
    ACTIVE = "active"
    DEPRECATED = "deprecated"
    RETIRED = "retired"


@dataclass(frozen=True)
class Durations:
    """Whole seconds a model takes: a set (``5 or 10``) or a range (``3 to 15``)."""

    values: frozenset[int]
    is_range: bool

    def allows(self, seconds: int) -> bool:
        return seconds in self.values

    @property
    def low(self) -> int:
        return min(self.values)

    @property
    def high(self) -> int:
        return max(self.values)

    def describe(self) -> str:
        if self.is_range:
            return f"{self.low} to {self.high}"
        ordered = sorted(self.values)
        if len(ordered) == 1:
            return str(ordered[0])
        return ", ".join(str(v) for v in ordered[:-1]) + f" or {ordered[-1]}"


@dataclass(frozen=True)
class KindRules:
    """What one model accepts for one kind of task, and whether it still serves it."""

    model: str
    kind: Kind
    status: Status
    #: When it was (or will be) deprecated or retired; None while active.
    since: dt.date | None = None
    replacement: str | None = None
    apis: tuple[str, ...] = (V1,)
    modes: tuple[str, ...] = ()
    default_mode: str | None = None
    durations: Durations | None = None
    default_duration: int | None = None
    durations_with_references: Durations | None = None
    aspect_ratios: tuple[str, ...] = ()
    default_aspect_ratio: str | None = None
    sound: tuple[str, ...] = ()
    end_frame: tuple[str, ...] = ()
    multi_shot: bool = False
    camera_control: bool = False
    masks: bool = False
    cfg_scale: bool = False
    negative_prompt: bool = False
    reference_images: int = 0
    resolutions: tuple[str, ...] = ()
    max_n: int = 1
    image_reference: bool = False
    fidelity: bool = False

    @property
    def usable(self) -> bool:
        return self.status is not Status.RETIRED

    def sound_in(self, mode: str | None) -> bool:
        return mode in self.sound if mode is not None else bool(self.sound)

    def end_frame_in(self, mode: str | None) -> bool:
        return mode in self.end_frame if mode is not None else bool(self.end_frame)

    def durations_for(self, references: int) -> Durations | None:
        if references and self.durations_with_references is not None:
            return self.durations_with_references
        return self.durations


@dataclass(frozen=True)
class VideoPrice:
    """INDICATIVE units for a video model: exact prices per (mode, seconds), a per-second rate
    per mode, and a per-second surcharge with sound on."""

    exact: Mapping[tuple[str, int], float] = field(default_factory=dict)
    per_second: Mapping[str, float] = field(default_factory=dict)
    sound_per_second: float | None = None


@dataclass(frozen=True)
class Model:
    name: str
    title: str
    kinds: Mapping[Kind, KindRules]
    aliases: tuple[str, ...] = ()
    #: The model's name in API 2.0 paths, where it is served there.
    v2_name: str | None = None
    video_price: VideoPrice | None = None
    #: INDICATIVE units per generated image.
    image_price: float | None = None

    @property
    def status(self) -> Status:
        """The model's best status over its kinds (active if any kind is)."""
        order = (Status.ACTIVE, Status.DEPRECATED, Status.RETIRED)
        return min((r.status for r in self.kinds.values()), key=order.index)


@dataclass(frozen=True)
class Catalogue:
    models: Mapping[str, Model]
    #: When the facts were last checked against Kling.
    checked: dt.date
    #: API 2.0: how a mode travels as ``settings.resolution``, and the path of each kind.
    v2_resolution: Mapping[str, str]
    v2_paths: Mapping[Kind, str]
    #: alias -> canonical name
    aliases: Mapping[str, str]

    def model(self, name: str) -> Model | None:
        """The model a manifest names, by its name or an alias."""
        return self.models.get(self.aliases.get(name, name))

    def canonical(self, name: str) -> str:
        return self.aliases.get(name, name)

    def rules(self, name: str, kind: Kind) -> KindRules | None:
        model = self.model(name)
        return model.kinds.get(kind) if model is not None else None

    def usable(self, kind: Kind) -> list[str]:
        """Models that still serve ``kind`` (active or deprecated), in catalogue order."""
        return [m.name for m in self.models.values() if (r := m.kinds.get(kind)) and r.usable]

    def media_names(self, media: str) -> list[str]:
        """Every model (any status) that serves or served a kind of this media."""
        return [
            m.name for m in self.models.values() if any(k.media == media for k in m.kinds)
        ]

    def suggest(self, name: str, kind: Kind) -> str | None:
        """The closest usable model name to a misspelt one, if any is close."""
        candidates = self.usable(kind) + [
            alias for alias, target in self.aliases.items() if target in self.usable(kind)
        ]
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        return self.canonical(close[0]) if close else None

    def api_for(self, kind: Kind, name: str, preference: str) -> str | None:
        """The API a task of this kind and model is sent on, given ``provider.api``; None when
        the model (known) is not served on the preferred API. A model the catalogue does not
        know goes where the preference says (v1 for "auto")."""
        rules = self.rules(name, kind)
        if rules is None:
            return V2 if preference == V2 else V1
        if preference == "auto":
            return V1 if V1 in rules.apis else rules.apis[0]
        return preference if preference in rules.apis else None

    def indicative_units(
        self,
        name: str,
        kind: Kind,
        *,
        mode: str | None = None,
        duration: int | None = None,
        sound: bool = False,
        n: int = 1,
    ) -> float | None:
        """INDICATIVE units one task costs by this catalogue's prices (not a contract: see
        providers/kling/prices.py); None when the catalogue has no price for it."""
        model = self.model(name)
        if model is None:
            return None
        if kind.media == "image":
            return model.image_price * n if model.image_price is not None else None
        price = model.video_price
        if price is None or mode is None or duration is None:
            return None
        units = price.exact.get((mode, duration))
        if units is None:
            rate = price.per_second.get(mode)
            if rate is None:
                return None
            units = rate * duration
        if sound:
            if price.sound_per_second is None:
                return None
            units += price.sound_per_second * duration
        return units

    def v2_path(self, kind: Kind, name: str) -> str | None:
        """``text-to-video/kling-2.6``: where an API 2.0 create for this kind and model goes."""
        base = self.v2_paths.get(kind)
        if base is None:
            return None
        model = self.model(name)
        segment = model.v2_name if model is not None else name
        return f"{base}/{segment}" if segment else None


# -- loading ------------------------------------------------------------------------------------

_RULE_KEYS: Final = frozenset(
    {
        "api", "modes", "default_mode", "durations", "default_duration",
        "durations_with_references", "aspect_ratios", "default_aspect_ratio", "sound",
        "end_frame", "multi_shot", "camera_control", "masks", "cfg_scale", "negative_prompt",
        "reference_images", "resolutions", "max_n", "image_reference", "fidelity",
    }
)
_STATUS_KEYS: Final = frozenset({"status", "retired", "deprecated", "replacement"})
_MODEL_KEYS: Final = (
    _STATUS_KEYS | {"title", "aliases", "v2_name", "kinds", "price"} | {k.value for k in Kind}
)


def _fail(where: str, message: str) -> CatalogueError:
    return CatalogueError(f"{PATH.name}: {where}: {message}")


def _strings(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(where, f"must be a list of strings (got {value!r})")
    return tuple(value)


def _durations(where: str, value: Any) -> Durations:
    if isinstance(value, list) and value and all(type(v) is int and v > 0 for v in value):
        return Durations(frozenset(value), is_range=False)
    if isinstance(value, dict) and set(value) == {"from", "to"}:
        low, high = value["from"], value["to"]
        if type(low) is int and type(high) is int and 0 < low <= high:
            return Durations(frozenset(range(low, high + 1)), is_range=True)
    raise _fail(where, f"must be a list of seconds or {{from = N, to = M}} (got {value!r})")


def _kind_rules(
    name: str, kind: Kind, base: Mapping[str, Any], own: Mapping[str, Any],
    status: Mapping[str, Any],
) -> KindRules:
    where = f"models.{name}.{kind}"
    unknown = set(own) - _RULE_KEYS - _STATUS_KEYS
    if unknown:
        raise _fail(where, f"unknown keys {sorted(unknown)}")
    merged = {**base, **{k: v for k, v in own.items() if k in _RULE_KEYS}}
    state = {**status, **{k: v for k, v in own.items() if k in _STATUS_KEYS}}
    try:
        level = Status(state.get("status", "active"))
    except ValueError:
        raise _fail(where, f"status must be one of {[s.value for s in Status]}") from None
    since = state.get(level.value) if level is not Status.ACTIVE else None
    if level is not Status.ACTIVE and not isinstance(since, dt.date):
        raise _fail(where, f"a {level} model needs the date: {level} = YYYY-MM-DD")
    replacement = state.get("replacement")
    if level is not Status.ACTIVE and not isinstance(replacement, str):
        raise _fail(where, f"a {level} model needs a replacement")
    values: dict[str, Any] = {}
    for key, value in merged.items():
        at = f"{where}.{key}"
        if key in ("durations", "durations_with_references"):
            values[key] = _durations(at, value)
        elif key in ("api", "modes", "aspect_ratios", "sound", "end_frame", "resolutions"):
            values["apis" if key == "api" else key] = _strings(at, value)
        elif key in ("default_mode", "default_aspect_ratio"):
            if not isinstance(value, str):
                raise _fail(at, "must be a string")
            values[key] = value
        elif key in ("default_duration", "reference_images", "max_n"):
            if type(value) is not int or value < 0:
                raise _fail(at, "must be a whole number")
            values[key] = value
        else:
            if not isinstance(value, bool):
                raise _fail(at, "must be true or false")
            values[key] = value
    rules = KindRules(
        model=name, kind=kind, status=level, since=since, replacement=replacement, **values
    )
    _check_rules(where, rules)
    return rules


def _check_rules(where: str, rules: KindRules) -> None:
    if not rules.usable:
        return
    if not rules.apis or any(api not in APIS for api in rules.apis):
        raise _fail(where, f"api must list some of {list(APIS)}")
    if rules.kind.media == "video":
        if not rules.modes or rules.durations is None:
            raise _fail(where, "a video kind needs modes and durations")
        if rules.default_mode not in rules.modes:
            raise _fail(where, f"default_mode must be one of its modes {list(rules.modes)}")
        if rules.default_duration is None or not rules.durations.allows(rules.default_duration):
            raise _fail(where, "default_duration must be one of its durations")
        for key in ("sound", "end_frame"):
            if not set(getattr(rules, key)) <= set(rules.modes):
                raise _fail(where, f"{key} must list some of its modes")
    if rules.aspect_ratios and rules.default_aspect_ratio not in rules.aspect_ratios:
        raise _fail(where, "default_aspect_ratio must be one of its aspect_ratios")


def _video_price(name: str, raw: Mapping[str, Any]) -> VideoPrice:
    exact: dict[tuple[str, int], float] = {}
    rates: dict[str, float] = {}
    sound = None
    for mode, table in raw.items():
        at = f"models.{name}.price.{mode}"
        if mode == "image":
            continue
        if not isinstance(table, dict):
            raise _fail(at, "must be a table of seconds (or per_second) to units")
        for key, units in table.items():
            if isinstance(units, bool) or not isinstance(units, int | float) or units < 0:
                raise _fail(f"{at}.{key}", "must be a number of units")
            if key == "per_second":
                if mode == "sound":
                    sound = float(units)
                else:
                    rates[mode] = float(units)
            elif key.isdigit() and mode != "sound":
                exact[(mode, int(key))] = float(units)
            else:
                raise _fail(f"{at}.{key}", "must be a duration in seconds or per_second")
    return VideoPrice(MappingProxyType(exact), MappingProxyType(rates), sound)


def _model(name: str, raw: Mapping[str, Any], defaults: Mapping[Kind, Mapping[str, Any]]) -> Model:
    where = f"models.{name}"
    if not isinstance(raw, dict):
        raise _fail(where, "must be a table")
    unknown = set(raw) - _MODEL_KEYS
    if unknown:
        raise _fail(where, f"unknown keys {sorted(unknown)}")
    status = {k: v for k, v in raw.items() if k in _STATUS_KEYS}
    kinds: dict[Kind, KindRules] = {}
    for kind in Kind:
        if kind.value in raw:
            kinds[kind] = _kind_rules(name, kind, defaults.get(kind, {}), raw[kind.value], status)
    listed = raw.get("kinds", [])
    for value in _strings(f"{where}.kinds", listed):
        try:
            kind = Kind(value)
        except ValueError:
            raise _fail(f"{where}.kinds", f"unknown kind {value!r}") from None
        if kind in kinds:
            raise _fail(f"{where}.kinds", f"{kind} also has its own table")
        if status.get("status", "active") == "active":
            raise _fail(f"{where}.kinds", "only a deprecated or retired model lists kinds")
        kinds[kind] = _kind_rules(name, kind, {}, {}, status)
    if not kinds:
        raise _fail(where, "serves no kind")
    price = raw.get("price", {})
    if not isinstance(price, dict):
        raise _fail(f"{where}.price", "must be a table")
    image_price = price.get("image")
    if image_price is not None and (
        isinstance(image_price, bool) or not isinstance(image_price, int | float)
    ):
        raise _fail(f"{where}.price.image", "must be a number of units per image")
    video_keys = set(price) - {"image"}
    title = raw.get("title")
    if not isinstance(title, str):
        raise _fail(where, "needs a title")
    v2_name = raw.get("v2_name")
    if v2_name is not None and not isinstance(v2_name, str):
        raise _fail(f"{where}.v2_name", "must be a string")
    if any(V2 in rules.apis for rules in kinds.values() if rules.usable) and v2_name is None:
        raise _fail(where, "is served on API 2.0 but has no v2_name")
    return Model(
        name=name,
        title=title,
        kinds=MappingProxyType(kinds),
        aliases=_strings(f"{where}.aliases", raw.get("aliases", [])),
        v2_name=v2_name,
        video_price=_video_price(name, price) if video_keys else None,
        image_price=float(image_price) if image_price is not None else None,
    )


def parse(text: str) -> Catalogue:
    """A catalogue from the text of a data file; raises CatalogueError naming the bad key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogueError(f"{PATH.name}: {exc}") from None
    if data.get("catalogue") != 1:
        raise _fail("catalogue", "this version reads format 1")
    checked = data.get("checked")
    if not isinstance(checked, dt.date):
        raise _fail("checked", "must be a date")
    defaults: dict[Kind, Mapping[str, Any]] = {}
    for key, value in data.get("defaults", {}).items():
        try:
            kind = Kind(key)
        except ValueError:
            raise _fail(f"defaults.{key}", "is not a kind") from None
        if set(value) - _RULE_KEYS:
            raise _fail(f"defaults.{key}", f"unknown keys {sorted(set(value) - _RULE_KEYS)}")
        defaults[kind] = value
    models: dict[str, Model] = {}
    aliases: dict[str, str] = {}
    for name, raw in data.get("models", {}).items():
        model = _model(name, raw, defaults)
        models[name] = model
        for alias in (*model.aliases, *([model.v2_name] if model.v2_name else [])):
            if alias == name:
                continue
            if alias in aliases and aliases[alias] != name:
                raise _fail(f"models.{name}", f"alias {alias!r} names two models")
            aliases[alias] = name
    clash = set(aliases) & set(models)
    if clash:
        raise _fail("models", f"{sorted(clash)} are both models and aliases")
    for model in models.values():
        for rules in model.kinds.values():
            target = rules.replacement
            served = models[target].kinds.get(rules.kind) if target in models else None
            if target is not None and (served is None or not served.usable):
                raise _fail(f"models.{model.name}.{rules.kind}",
                            f"replacement {target!r} is not a usable model")
    v2 = data.get("v2", {})
    resolution = v2.get("resolution", {})
    paths = {}
    for key, value in v2.get("paths", {}).items():
        try:
            paths[Kind(key)] = str(value)
        except ValueError:
            raise _fail(f"v2.paths.{key}", "is not a kind") from None
    return Catalogue(
        models=MappingProxyType(models),
        checked=checked,
        v2_resolution=MappingProxyType(dict(resolution)),
        v2_paths=MappingProxyType(paths),
        aliases=MappingProxyType(aliases),
    )


def load(path: Path = PATH) -> Catalogue:
    return parse(path.read_text(encoding="utf-8"))


@functools.cache
def catalogue() -> Catalogue:
    """The packaged catalogue (read once)."""
    return load()


# -- the docs' table -------------------------------------------------------------------------------

_KIND_LABELS: Final = {
    Kind.TEXT2VIDEO: "text2video",
    Kind.IMAGE2VIDEO: "image2video",
    Kind.OMNI_VIDEO: "omni_video",
    Kind.IMAGE: "image",
}


def _cell(rules: KindRules) -> Iterator[str]:
    if rules.kind.media == "video":
        assert rules.durations is not None
        yield f"modes {'/'.join(rules.modes)}"
        seconds = rules.durations.describe()
        yield f"{seconds} s"
        if rules.durations_with_references is not None:
            yield f"({rules.durations_with_references.describe()} s with reference images)"
        if rules.sound:
            yield "sound" + ("" if set(rules.sound) == set(rules.modes) else
                             f" ({'/'.join(rules.sound)})")
        if rules.kind is not Kind.TEXT2VIDEO and rules.end_frame:
            yield "end frame" + ("" if set(rules.end_frame) == set(rules.modes) else
                                 f" ({'/'.join(rules.end_frame)})")
        if rules.multi_shot:
            yield "multi-shot"
        if rules.reference_images:
            yield f"up to {rules.reference_images} reference images"
    else:
        yield f"n 1-{rules.max_n}"
        yield f"resolution {'/'.join(rules.resolutions)}"
        if rules.image_reference:
            yield "image_reference"
        if rules.fidelity:
            yield "fidelity"
    if rules.apis != (V1,):
        yield "API " + " + ".join({V1: "/v1", V2: "2.0"}[a] for a in rules.apis)


def markdown_table(cat: Catalogue | None = None) -> str:
    """docs/providers.md's model table, generated from the catalogue (a test keeps them equal)."""
    cat = cat or catalogue()
    header = ["model", "status", *(_KIND_LABELS[k] for k in Kind)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in cat.models.values():
        cells = []
        for kind in Kind:
            rules = model.kinds.get(kind)
            if rules is None:
                cells.append("")
            elif not rules.usable:
                cells.append(f"retired {rules.since}")
            else:
                cells.append(", ".join(_cell(rules)))
        status = str(model.status)
        retired = [r for r in model.kinds.values() if not r.usable]
        if model.status is Status.RETIRED and retired:
            status = f"retired {retired[0].since}, use {retired[0].replacement}"
        name = f"`{model.name}`"
        if model.aliases:
            name += " (" + ", ".join(f"`{a}`" for a in model.aliases) + ")"
        lines.append("| " + " | ".join([name, status, *cells]) + " |")
    return "\n".join(lines) + "\n"
