"""What an LTX batch will cost, in US dollars: a rate per second by model and resolution class,
the manifest's ``pricing:`` over the built-in list prices, and the estimate.

LTX bills text- and image-to-video by the second of output, at a rate set by the model and the
resolution class of the video (720p, 1080p, 1440p, 4k; a vertical 1080x1920 is 1080p). The
built-in rates are the catalogue's list prices (``price`` in providers/ltx/catalogue.toml),
INDICATIVE: read from LTX's pricing page, and contracts differ. A manifest sets its own::

    pricing:
      builtin: true             # fall back to the list prices for what is not set (default)
      video:
        ltx-2-3-fast: {1080p: 0.05, 4k: 0.2}    # USD per second of video

``limits.max_units`` is then a cap in USD. A model the catalogue has no price for (and the
manifest does not price) is unpriced: the estimate lists it, and ``max_units`` refuses the batch.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from orchestrator.providers.ltx.catalogue import Catalogue, Status, catalogue
from orchestrator.providers.ltx.schema import DEFAULTS
from orchestrator.validators import DocPath, got, suggest, unknown_key

RateKey = tuple[str, str]  # (model, resolution class)
#: What prices one kind of LTX task: (kind, model, resolution class or None, duration)
TaskKey = tuple[Kind, str, str | None, int]

_EXAMPLE: Final = "{video: {ltx-2-3-fast: {1080p: 0.06, 4k: 0.24}}}"


@dataclass(frozen=True)
class LtxPrices:
    """USD per second of video by (model, resolution class); ``fallback`` is consulted for what
    this table does not price."""

    per_second: Mapping[RateKey, float] = field(default_factory=dict)
    #: "WxH" -> resolution class, from the catalogue
    classes: Mapping[str, str] = field(default_factory=dict)
    #: True for the built-in table: its figures are not the user's contract prices.
    indicative: bool = False
    fallback: LtxPrices | None = None
    unit: ClassVar[str] = "USD"

    def rate(self, model: str, grade: str | None) -> Price | None:
        """USD per second for this model at this resolution class, from the first table that
        has it."""
        table: LtxPrices | None = self
        while table is not None and grade is not None:
            usd = table.per_second.get((model, grade))
            if usd is not None:
                return Price(usd, table.indicative)
            table = table.fallback
        return None

    def key(self, request: TaskRequest) -> TaskKey:
        fields = request.fields
        resolution = str(fields.get("resolution", DEFAULTS["resolution"]))
        return (
            request.kind,
            str(fields.get("model", "")),
            self.classes.get(resolution),
            int(fields.get("duration", DEFAULTS["duration"])),
        )

    def price(self, request: TaskRequest) -> Price | None:
        _, model, grade, seconds = self.key(request)
        rate = self.rate(model, grade)
        return Price(rate.each * seconds, rate.indicative) if rate is not None else None

    def label(self, request: TaskRequest) -> str:
        _, model, grade, seconds = self.key(request)
        return f"{model} {grade or str(request.fields.get('resolution'))} {seconds} s"

    def estimate_text(self, batch: PricedBatch) -> str:
        return format_estimate(estimate(batch, self), batch.limits.max_units)


def builtin_prices(cat: Catalogue) -> LtxPrices:
    """The catalogue's list prices as a read-only, INDICATIVE table."""
    rates = {
        (name, grade): usd
        for name, model in cat.models.items()
        for grade, usd in model.price.items()
    }
    return LtxPrices(MappingProxyType(rates), cat.classes, indicative=True)


# -- the estimate


@dataclass(frozen=True)
class EstimateLine:
    """Tasks that cost the same: one (kind, model, resolution class, duration)."""

    key: TaskKey
    tasks: int
    each: Price | None  # USD per task; None: unpriced

    @property
    def usd(self) -> float | None:
        return self.each.each * self.tasks if self.each is not None else None


def estimate(batch: PricedBatch, prices: LtxPrices) -> list[EstimateLine]:
    """USD the batch costs if every item is submitted once and paid, by kind of task."""
    counts: dict[TaskKey, int] = {}
    requests: dict[TaskKey, TaskRequest] = {}
    for item in batch.items:
        key = prices.key(item.request)
        counts[key] = counts.get(key, 0) + 1
        requests.setdefault(key, item.request)
    kinds = list(Kind)
    return sorted(
        (EstimateLine(key, tasks, prices.price(requests[key])) for key, tasks in counts.items()),
        key=lambda line: (kinds.index(line.key[0]), line.key[1], line.key[2] or "", line.key[3]),
    )


def format_estimate(lines: list[EstimateLine], max_units: float | None) -> str:
    """A table for the CLI: one row per model, resolution class and duration, then a total."""
    rows = [("kind", "model", "resolution", "duration", "tasks", "USD each", "USD  ")]
    for line in lines:
        kind, model, grade, seconds = line.key
        usd = "-" if line.usd is None else amount(line.usd)
        usd += " *" if line.each is not None and line.each.indicative else "  "
        each = "unpriced" if line.each is None else f"{amount(line.each.each)}/task"
        rows.append((str(kind), model, grade or "?", f"{seconds} s", f"{line.tasks:,}", each, usd))
    out = render_table(rows, frozenset({4, 5, 6}))
    out += summary_lines(
        tasks=sum(line.tasks for line in lines),
        total=sum(line.usd or 0.0 for line in lines),
        unit="USD",
        unpriced_tasks=sum(line.tasks for line in lines if line.each is None),
        indicative=any(line.each is not None and line.each.indicative for line in lines),
        unpriced_hint="pricing: {video: {MODEL: {1080p: 0.06}}} (USD per second)",
        max_units=max_units,
    )
    return "\n".join(out) + "\n"


# -- the manifest's pricing: section


def read_pricing(raw: Any, report: ReportAt, rules: Any) -> LtxPrices | None:
    """The manifest's ``pricing:`` over the built-in list prices; None when it is invalid
    (every problem reported). ``rules``: the item rules of this load (their catalogue)."""
    cat: Catalogue = rules.catalogue
    builtin = BUILTIN_PRICES if cat is catalogue() else builtin_prices(cat)
    if not raw:
        return builtin
    at: DocPath = ("pricing",)
    problems: list[str] = []

    def problem(path: DocPath, message: str) -> None:
        problems.append(message)
        report(path, message)

    if not isinstance(raw, dict):
        problem(at, f"must be a mapping with video prices, e.g. {_EXAMPLE} (got {got(raw)})")
        return None
    rates: dict[RateKey, float] = {}
    use_builtin = True
    for key, value in raw.items():
        if key == "builtin":
            if isinstance(value, bool):
                use_builtin = value
            else:
                problem((*at, key), f"must be true or false (got {got(value)})")
        elif key == "video":
            _video(value, cat, rates, problem)
        else:
            problem((*at, key), unknown_key(key, ("video", "builtin")))
    if problems:
        return None
    return LtxPrices(rates, cat.classes, fallback=builtin if use_builtin else None)


def _video(raw: Any, cat: Catalogue, rates: dict[RateKey, float], problem: ReportAt) -> None:
    at: DocPath = ("pricing", "video")
    if not isinstance(raw, dict):
        problem(at, "must map LTX models to USD per second by resolution class, e.g. "
                f"{_EXAMPLE[8:-1]} (got {got(raw)})")
        return
    grades = cat.grades
    active = [n for n, m in cat.models.items() if m.status is Status.ACTIVE]
    for name, by_grade in raw.items():
        model_at = (*at, name)
        model = cat.model(name)
        if model is None:
            problem(model_at, f"unknown LTX model '{name}'{suggest(name, active)} (current "
                    f"models: {', '.join(active)})")
            continue
        if model.status is Status.RETIRED:
            problem(model_at, f"'{name}' was removed by LTX on {model.removed}: it needs no "
                    f"price (price {model.replacement} instead)")
            continue
        makes = cat.grades_of(model.resolutions)
        if not isinstance(by_grade, dict):
            problem(model_at, f"must map resolution classes ({', '.join(makes)}) to USD per "
                    f"second, e.g. {{{makes[0]}: 0.06}} (got {got(by_grade)})")
            continue
        for grade, value in by_grade.items():
            price_at = (*model_at, grade)
            grade_text = str(grade)
            if grade_text not in makes:
                named = cat.classes.get(grade_text.lower())
                if named is not None:
                    message = f"'{grade_text}' is a resolution: price its class, {named}"
                elif grade_text in grades:
                    message = f"{name} does not make {grade_text} videos"
                else:
                    message = (f"unknown resolution class '{grade_text}'"
                               f"{suggest(grade_text.lower(), makes)}")
                problem(price_at, f"{message} ({name} makes {', '.join(makes)})")
                continue
            usd = read_amount(value, "USD per second")
            if isinstance(usd, str):
                problem(price_at, usd)
            else:
                rates[(name, grade_text)] = usd


#: The built-in, INDICATIVE list prices of the packaged catalogue (read-only).
BUILTIN_PRICES: Final = builtin_prices(catalogue())
