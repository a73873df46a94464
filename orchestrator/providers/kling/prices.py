"""What a Kling batch will cost, in Kling's units: a price table, per-task lookups, the
manifest's ``pricing:`` section and the estimate.

Kling bills generations in "units" drawn from a resource pack. How many units one task costs
depends on the model, the mode and the duration for videos, and on the model and the number of
images for image tasks. Kling publishes no machine-readable table and contracts differ, so:

- :data:`BUILTIN_PRICES` is INDICATIVE ONLY, read from the model catalogue (``price`` tables in
  providers/kling/catalogue.toml). It reflects public list prices as we understood them; we
  found no authoritative per-unit table, and newer models' figures are extrapolated. It exists
  so that ``validate --estimate`` says something useful out of the box; the estimate marks
  every figure that came from it.
- A manifest's ``pricing:`` section sets the user's own (contract) prices. They take precedence
  over the built-in table, which stays the fallback unless ``pricing.builtin: false``.
- Where no table has a price, :func:`units_for` returns None and the estimate lists the tasks as
  "unpriced" instead of guessing.

Lookups for a video task try, in each table in turn (the manifest's, then the built-in one), the
exact ``(model, mode, duration)`` price, then the table's per-second rate for ``(model, mode)``
times the duration (how the built-in table covers the 3-15 s durations of newer models). A task
with sound on adds the model's per-second sound surcharge, from the first table that has one
(unpriced when none does). An image task costs the per-image price of its model times ``n``.

The estimate counts one paid task per item. A retried generation is a new paid task: the engine
counts every submission against ``limits.max_units``, so a batch with retries may stop before
its last items (it is resumable).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, Final

from orchestrator.pricing import (
    Price,
    PricedBatch,
    ReportAt,
    amount,
    read_amount,
    render_table,
    summary_lines,
)
from orchestrator.providers.base import Kind, TaskRequest
from orchestrator.providers.kling.catalogue import ALL_MODES, Catalogue, catalogue
from orchestrator.providers.kling.schema import Settings
from orchestrator.validators import DocPath, got, suggest, unknown_key

VideoKey = tuple[str, str, int]  # (model, mode, duration in seconds)
RateKey = tuple[str, str]  # (model, mode)
#: What prices one kind of task: (kind, model, mode, duration, sound); None for images' mode,
#: duration and sound.
TaskKey = tuple[Kind, str, str | None, int | None, bool]


@dataclass(frozen=True)
class PriceTable:
    """Units per task.

    ``video`` prices one video task by (model, mode, duration); ``video_per_second`` gives a
    rate per second by (model, mode) for durations without an exact price; ``sound_per_second``
    is a model's surcharge per second with sound on; ``image`` prices one generated image by
    model (a task with ``n: 4`` costs four times that). ``fallback`` is consulted for whatever
    this table does not price.
    """

    video: Mapping[VideoKey, float] = field(default_factory=dict)
    video_per_second: Mapping[RateKey, float] = field(default_factory=dict)
    image: Mapping[str, float] = field(default_factory=dict)
    sound_per_second: Mapping[str, float] = field(default_factory=dict)
    #: True for the built-in table: its figures are not the user's contract prices.
    indicative: bool = False
    fallback: PriceTable | None = None
    unit: ClassVar[str] = "units"

    def price(self, request: TaskRequest) -> Price | None:
        return price_for(request, self)

    def label(self, request: TaskRequest) -> str:
        return label(request)

    def estimate_text(self, batch: PricedBatch) -> str:
        return format_estimate(estimate(batch))


def builtin_prices(cat: Catalogue) -> PriceTable:
    """The catalogue's INDICATIVE prices as a read-only table."""
    video: dict[VideoKey, float] = {}
    rates: dict[RateKey, float] = {}
    sound: dict[str, float] = {}
    image: dict[str, float] = {}
    for name, model in cat.models.items():
        price = model.video_price
        if price is not None:
            for (mode, seconds), units in price.exact.items():
                video[(name, mode, seconds)] = units
            for mode, units in price.per_second.items():
                rates[(name, mode)] = units
            if price.sound_per_second is not None:
                sound[name] = price.sound_per_second
        if model.image_price is not None:
            image[name] = model.image_price
    return PriceTable(
        video=MappingProxyType(video),
        video_per_second=MappingProxyType(rates),
        image=MappingProxyType(image),
        sound_per_second=MappingProxyType(sound),
        indicative=True,
    )


#: The built-in, INDICATIVE price table (read-only). Override it with ``pricing:``.
BUILTIN_PRICES: Final = builtin_prices(catalogue())


def _base(table: PriceTable, kind: Kind, model: str, mode: str | None,
          duration: int | None) -> float | None:
    if kind.media == "image":
        return table.image.get(model)
    if mode is None or duration is None:
        return None
    each = table.video.get((model, mode, duration))
    if each is None:
        rate = table.video_per_second.get((model, mode))
        each = rate * duration if rate is not None else None
    return each


def lookup(
    table: PriceTable | None,
    kind: Kind,
    model: str,
    mode: str | None,
    duration: int | None,
    sound: bool = False,
) -> Price | None:
    """The price of one video task, or of one image, from the first table that has one (and,
    with sound on, the surcharge from the first table that has one)."""
    base: Price | None = None
    extra: Price | None = None if sound and kind.media == "video" else Price(0.0, False)
    while table is not None and (base is None or extra is None):
        if base is None:
            each = _base(table, kind, model, mode, duration)
            if each is not None:
                base = Price(each, table.indicative)
        if extra is None and duration is not None:
            rate = table.sound_per_second.get(model)
            if rate is not None:
                extra = Price(rate * duration, table.indicative)
        table = table.fallback
    if base is None or extra is None:
        return None
    return Price(base.each + extra.each, base.indicative or extra.indicative)


def task_key(request: TaskRequest) -> TaskKey:
    fields = request.fields
    model = str(fields.get("model", ""))
    if request.kind.media == "image":
        return request.kind, model, None, None, False
    mode = fields.get("mode")
    duration = fields.get("duration")
    return (
        request.kind,
        model,
        str(mode) if mode is not None else None,
        int(duration) if duration is not None else None,
        bool(fields.get("sound", False)),
    )


def _images(request: TaskRequest) -> int:
    return int(request.fields.get("n", request.expected_assets))


def price_for(request: TaskRequest, table: PriceTable) -> Price | None:
    """What one submission of this request costs (an image task: all its images); None when
    no table prices it."""
    price = lookup(table, *task_key(request))
    if price is None or request.kind.media != "image":
        return price
    return Price(price.each * _images(request), price.indicative)


def label(request: TaskRequest) -> str:
    """How an estimate line names this kind of task: ``kling-v3 pro 5 s + sound``."""
    kind, model, mode, duration, sound = task_key(request)
    if kind.media == "image":
        return f"{model} image"
    text = f"{model} {mode or '(default mode)'} "
    text += f"{duration} s" if duration is not None else "(default duration)"
    return text + (" + sound" if sound else "")


@dataclass(frozen=True)
class EstimateLine:
    """Tasks that cost the same: one (kind, model, mode, duration)."""

    kind: Kind
    model: str
    mode: str | None  # None for images (and a video model whose default is not known)
    duration: int | None  # seconds; None for images
    sound: bool
    tasks: int
    assets: int  # videos or images expected
    each: float | None  # units per task (video) or per image (image); None: unpriced
    indicative: bool  # the price is the built-in table's

    @property
    def per(self) -> str:
        return "image" if self.kind.media == "image" else "task"

    @property
    def units(self) -> float | None:
        if self.each is None:
            return None
        return self.each * (self.assets if self.kind.media == "image" else self.tasks)


@dataclass(frozen=True)
class Estimate:
    lines: tuple[EstimateLine, ...]
    tasks: int
    total_units: float  # priced tasks only
    unpriced_tasks: int
    max_units: float | None = None

    @property
    def indicative(self) -> bool:
        """Some of the total comes from the built-in, indicative table."""
        return any(line.indicative for line in self.lines)


def estimate(manifest: PricedBatch) -> Estimate:
    """Units the batch consumes if every item is submitted once and paid (its prices must be
    a :class:`PriceTable`)."""
    table = manifest.pricing
    assert isinstance(table, PriceTable)
    counts: dict[TaskKey, list[int]] = {}
    for item in manifest.items:
        key = task_key(item.request)
        entry = counts.get(key)
        if entry is None:
            entry = counts[key] = [0, 0]
        entry[0] += 1
        entry[1] += _images(item.request) if key[0].media == "image" else 1
    lines = []
    for (kind, model, mode, duration, sound), (tasks, assets) in counts.items():
        price = lookup(table, kind, model, mode, duration, sound)
        lines.append(
            EstimateLine(
                kind=kind,
                model=model,
                mode=mode,
                duration=duration,
                sound=sound,
                tasks=tasks,
                assets=assets,
                each=price.each if price is not None else None,
                indicative=price.indicative if price is not None else False,
            )
        )
    kinds = list(Kind)
    lines.sort(
        key=lambda x: (kinds.index(x.kind), x.model, x.mode or "", x.duration or 0, x.sound)
    )
    return Estimate(
        lines=tuple(lines),
        tasks=sum(line.tasks for line in lines),
        total_units=sum(line.units or 0.0 for line in lines),
        unpriced_tasks=sum(line.tasks for line in lines if line.each is None),
        max_units=manifest.limits.max_units,
    )


def format_estimate(est: Estimate) -> str:
    """A table for the CLI: one row per model/mode/duration, a total, then what is missing."""
    # The last column keeps two places after each number for the " *" of indicative prices.
    header = ("kind", "model", "mode", "duration", "sound", "tasks", "units each", "units  ")
    rows = [header]
    for line in est.lines:
        each = "unpriced" if line.each is None else f"{amount(line.each)}/{line.per}"
        units = "-" if line.units is None else amount(line.units)
        units += " *" if line.indicative else "  "
        tasks = f"{line.tasks:,}"
        if line.per == "image" and line.assets != line.tasks:
            tasks += f" ({line.assets:,} images)"
        rows.append(
            (
                str(line.kind),
                line.model,
                line.mode or "-",
                f"{line.duration} s" if line.duration is not None else "-",
                ("on" if line.sound else "off") if line.kind.media == "video" else "-",
                tasks,
                each,
                units,
            )
        )
    out = render_table(rows, frozenset({5, 6, 7}))
    out += summary_lines(
        tasks=est.tasks,
        total=est.total_units,
        unit="units",
        unpriced_tasks=est.unpriced_tasks,
        indicative=est.indicative,
        unpriced_hint="pricing: {video: {MODEL: {std: {5: 1.5}}}}",
        max_units=est.max_units,
    )
    return "\n".join(out) + "\n"


# -- the manifest's pricing: section

_INT_TEXT: Final = re.compile(r"[+-]?\d+")


def read_pricing(raw: Any, report: ReportAt, rules: Any) -> PriceTable | None:
    """The manifest's ``pricing:`` over the built-in table; None when it is invalid (every
    problem reported).

    ``rules``: the item rules of this load (their settings: the catalogue and
    ``provider.allow_unknown_models``, as the items see them)."""
    return _Prices(report, rules.settings).read(raw)


class _Prices:
    def __init__(self, report: ReportAt, settings: Settings) -> None:
        self.problems = 0
        self._report = report
        self.settings = settings

    def report(self, at: DocPath, message: str) -> None:
        self.problems += 1
        self._report(at, message)

    def read(self, raw: Any) -> PriceTable | None:
        """The manifest's prices over the built-in table; None when they are invalid."""
        at: DocPath = ("pricing",)
        if not raw:
            return BUILTIN_PRICES
        if not isinstance(raw, dict):
            self.report(
                at, f"must be a mapping with video and/or image prices (got {got(raw)})"
            )
            return None
        before = self.problems
        video: dict[tuple[str, str, int], float] = {}
        per_second: dict[tuple[str, str], float] = {}
        sound: dict[str, float] = {}
        image: dict[str, float] = {}
        builtin = True
        for key, value in raw.items():
            if key == "builtin":
                if isinstance(value, bool):
                    builtin = value
                else:
                    self.report((*at, key), f"must be true or false (got {got(value)})")
            elif key == "video":
                self._video_prices(value, video, per_second, sound)
            elif key == "image":
                self._image_prices(value, image)
            else:
                self.report((*at, key), unknown_key(key, ("video", "image", "builtin")))
        if self.problems > before:
            return None
        return PriceTable(
            video=video,
            video_per_second=per_second,
            image=image,
            sound_per_second=sound,
            indicative=False,
            fallback=BUILTIN_PRICES if builtin else None,
        )

    def _price_model(self, path: DocPath, model: str, media: str) -> bool:
        """Whether a model named under pricing.<media> is one that makes that media."""
        cat = self.settings.catalogue
        known = cat.model(model)
        if known is not None and any(k.media == media and r.usable
                                     for k, r in known.kinds.items()):
            return True
        if known is None and self.settings.allow_unknown_models:
            return True
        usable_elsewhere = known is not None and any(
            k.media != media and r.usable for k, r in known.kinds.items()
        )
        if known is not None and any(k.media == media for k in known.kinds):
            message = f"'{model}' was retired by Kling for {media}s: it needs no price there"
            if usable_elsewhere:
                elsewhere = "image" if media == "video" else "video"
                message += f" (price its {elsewhere}s under pricing.{elsewhere})"
        elif known is not None:
            elsewhere = "image" if media == "video" else "video"
            message = (
                f"'{model}' is not {'an' if media == 'image' else 'a'} {media} model: price it "
                f"under pricing.{elsewhere}"
            )
        else:
            names = [m for m in cat.media_names(media)
                     if any(r.usable for r in cat.models[m].kinds.values())]
            message = f"unknown {media} model '{model}'{suggest(model, names)}"
        self.report(path, message)
        return False

    def _video_price_rules(self, model: str) -> tuple[tuple[str, ...], Callable[[int], str | None]]:
        """The modes a video model has and what is wrong with a duration for it."""
        cat = self.settings.catalogue
        known = cat.model(model)
        rules = [
            r for k, r in (known.kinds.items() if known is not None else ())
            if k.media == "video" and r.usable
        ]
        if not rules:
            return ALL_MODES, lambda seconds: None if 0 < seconds <= 3600 else "is implausible"
        modes = tuple(dict.fromkeys(mode for r in rules for mode in r.modes))
        spans = [d for r in rules for d in (r.durations, r.durations_with_references) if d]

        def duration_problem(seconds: int) -> str | None:
            if any(d.allows(seconds) for d in spans):
                return None
            allowed = " or ".join(dict.fromkeys(d.describe() for d in spans))
            return f"must be {allowed} for {model} (got {seconds})"

        return modes, duration_problem

    def _units(self, path: DocPath, value: Any) -> float | None:
        units = read_amount(value, "units")
        if isinstance(units, str):
            self.report(path, units)
            return None
        return units

    def _video_prices(
        self,
        raw: Any,
        video: dict[tuple[str, str, int], float],
        per_second: dict[tuple[str, str], float],
        sound: dict[str, float],
    ) -> None:
        at: DocPath = ("pricing", "video")
        example = (
            "e.g. {kling-v2-5-turbo: {std: {5: 1.5, 10: 3}, pro: {per_second: 0.5}}, "
            "kling-v3: {sound: {per_second: 0.3}}}"
        )
        if not isinstance(raw, dict):
            self.report(
                at, f"must map video models to modes to prices, {example} (got {got(raw)})"
            )
            return
        for model, modes in raw.items():
            model_at = (*at, model)
            if not self._price_model(model_at, model, "video"):
                continue
            model_modes, duration_problem = self._video_price_rules(model)
            if not isinstance(modes, dict):
                self.report(
                    model_at,
                    f"must map modes ({', '.join(model_modes)}) and sound to prices, {example} "
                    f"(got {got(modes)})",
                )
                continue
            for mode, prices in modes.items():
                mode_at = (*model_at, mode)
                if mode == "sound":
                    if not isinstance(prices, dict) or set(prices) != {"per_second"}:
                        self.report(mode_at, "must be {per_second: UNITS}: the surcharge per "
                                    "second of video with sound on")
                        continue
                    units = self._units((*mode_at, "per_second"), prices["per_second"])
                    if units is not None:
                        sound[model] = units
                    continue
                if mode not in model_modes:
                    known = ", ".join(model_modes)
                    self.report(
                        mode_at,
                        f"unknown mode '{mode}' for {model}{suggest(mode, model_modes)}: "
                        f"{known}, or sound",
                    )
                    continue
                if not isinstance(prices, dict):
                    self.report(
                        mode_at,
                        "must map durations in seconds (or per_second) to units, e.g. "
                        f"{{5: 1.5, 10: 3}} (got {got(prices)})",
                    )
                    continue
                for seconds, value in prices.items():
                    price_at = (*mode_at, seconds)
                    if seconds == "per_second":
                        units = self._units(price_at, value)
                        if units is not None:
                            per_second[(model, mode)] = units
                        continue
                    if not _INT_TEXT.fullmatch(seconds) or len(seconds) > 4:
                        self.report(
                            price_at,
                            f"must be a duration in whole seconds, or per_second (got '{seconds}')",
                        )
                        continue
                    problem = duration_problem(int(seconds))
                    if problem is not None:
                        self.report(price_at, f"duration {problem}")
                        continue
                    units = self._units(price_at, value)
                    if units is not None:
                        video[(model, mode, int(seconds))] = units

    def _image_prices(self, raw: Any, image: dict[str, float]) -> None:
        at: DocPath = ("pricing", "image")
        if not isinstance(raw, dict):
            self.report(
                at,
                "must map image models to units per image, e.g. {kling-v2-1: 0.25} "
                f"(got {got(raw)})",
            )
            return
        for model, value in raw.items():
            if self._price_model((*at, model), model, "image"):
                units = self._units((*at, model), value)
                if units is not None:
                    image[model] = units
