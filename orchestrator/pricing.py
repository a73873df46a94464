"""What a batch will cost, in Kling's units: a price table, per-task lookups and the estimate.

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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final, Protocol

from orchestrator.providers.base import Kind, TaskRequest
from orchestrator.providers.kling.catalogue import Catalogue, catalogue

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


@dataclass(frozen=True)
class Price:
    """The price found for one kind of task."""

    each: float  # units per task (video) or per image (image)
    indicative: bool  # from the built-in table, not the user's prices


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


def units_for(request: TaskRequest, table: PriceTable) -> float | None:
    """Units one submission of this request costs; None when no table prices it."""
    price = price_for(request, table)
    return price.each if price is not None else None


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


class _Priced(Protocol):
    @property
    def request(self) -> TaskRequest: ...


class _Capped(Protocol):
    @property
    def max_units(self) -> float | None: ...


class PricedBatch(Protocol):
    """What an estimate reads of a batch (a loaded manifest is one): the items' requests, the
    price table and ``limits.max_units``. A protocol, so that prices need not know manifests."""

    @property
    def items(self) -> Iterable[_Priced]: ...

    @property
    def pricing(self) -> PriceTable: ...

    @property
    def limits(self) -> _Capped: ...


def estimate(manifest: PricedBatch) -> Estimate:
    """Units the batch consumes if every item is submitted once and paid."""
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
        price = lookup(manifest.pricing, kind, model, mode, duration, sound)
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


def _units(value: float) -> str:
    text = f"{value:,.3f}".rstrip("0").rstrip(".")
    return text or "0"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def format_estimate(est: Estimate) -> str:
    """A table for the CLI: one row per model/mode/duration, a total, then what is missing."""
    # The last column keeps two places after each number for the " *" of indicative prices.
    header = ("kind", "model", "mode", "duration", "sound", "tasks", "units each", "units  ")
    rows = [header]
    for line in est.lines:
        each = "unpriced" if line.each is None else f"{_units(line.each)}/{line.per}"
        units = "-" if line.units is None else _units(line.units)
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
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    right = {5, 6, 7}
    out = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip())
    total = f"total: {_plural(est.tasks, 'task')}, {_units(est.total_units)} units"
    if est.unpriced_tasks:
        total += f" (+ {_plural(est.unpriced_tasks, 'unpriced task')}, not counted)"
    out.append(total)
    out.append("each item counted once: a retried generation is a new paid task")
    if est.indicative:
        out.append(
            "* built-in INDICATIVE price, not your contract's: set your prices under "
            "'pricing:' in the manifest"
        )
    if est.unpriced_tasks:
        out.append(
            f"{_plural(est.unpriced_tasks, 'task')} without a price: add the model under "
            "'pricing:' in the manifest, e.g. pricing: {video: {MODEL: {std: {5: 1.5}}}}"
        )
    if est.max_units is not None:
        verdict = (
            "the estimate exceeds it, so the batch will stop early (raise it and rerun to go on)"
            if est.total_units > est.max_units
            else "the estimate is within it"
        )
        out.append(f"limits.max_units: {_units(est.max_units)}: {verdict}")
    return "\n".join(out) + "\n"
