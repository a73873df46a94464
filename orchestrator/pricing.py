"""Prices in a provider's own unit: what the engine, the manifest and the estimate ask of them.

Each provider plug-in prices its tasks its own way (Kling in resource-pack "units" by model,
mode and duration; LTX in USD per second by model and resolution) and reads its own
``pricing:`` section. The rest of the orchestrator sees only :class:`Prices`: what one
submission costs, how to name a kind of task, the unit, and the estimate table.
``limits.max_units`` is counted in that unit.

The helpers at the bottom (:func:`render_table`, :func:`summary_lines`) give every provider's
estimate the same look.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from orchestrator.providers.base import TaskRequest
from orchestrator.validators import DocPath, got

__all__ = [
    "UNPRICED",
    "Price",
    "PriceReader",
    "PricedBatch",
    "Prices",
    "ReportAt",
    "read_amount",
    "render_table",
    "summary_lines",
    "units_for",
]


@dataclass(frozen=True)
class Price:
    """The price found for one kind of task."""

    each: float  # in the provider's unit, per task (or per image where the provider says)
    indicative: bool  # from the built-in table, not the user's prices


class _Capped(Protocol):
    @property
    def max_units(self) -> float | None: ...


class _Priced(Protocol):
    @property
    def request(self) -> TaskRequest: ...


class PricedBatch(Protocol):
    """What an estimate reads of a batch (a loaded manifest is one): the items' requests, the
    prices and ``limits.max_units``. A protocol, so that prices need not know manifests."""

    @property
    def items(self) -> Iterable[_Priced]: ...

    @property
    def pricing(self) -> Prices: ...

    @property
    def limits(self) -> _Capped: ...


class Prices(Protocol):
    """A batch's prices: the manifest's ``pricing:`` over the provider's built-in table."""

    @property
    def unit(self) -> str:
        """What ``limits.max_units`` and every figure count: "units", "USD"."""
        ...

    def price(self, request: TaskRequest) -> Price | None:
        """What one submission of this request costs; None when no table prices it."""
        ...

    def label(self, request: TaskRequest) -> str:
        """How messages name this kind of task: ``kling-v3 pro 5 s + sound``."""
        ...

    def estimate_text(self, batch: PricedBatch) -> str:
        """``validate --estimate``: a table of what the batch costs, a total, what is missing."""
        ...


#: (where in the manifest, message): report a located problem
ReportAt = Callable[[DocPath, str], None]
#: (the ``pricing:`` section or None, report, the item rules of this load) -> the batch's
#: prices, or None when the section is invalid (every problem reported)
PriceReader = Callable[[Any, ReportAt, Any], "Prices | None"]


def units_for(request: TaskRequest, prices: Prices) -> float | None:
    """What one submission of this request costs, in the prices' unit; None when unpriced."""
    price = prices.price(request)
    return price.each if price is not None else None


@dataclass(frozen=True)
class _Unpriced:
    """No prices at all: a provider without a price table (``pricing:`` refused)."""

    unit: str = "units"

    def price(self, request: TaskRequest) -> Price | None:
        return None

    def label(self, request: TaskRequest) -> str:
        return f"{request.fields.get('model', '?')} {request.kind}"

    def estimate_text(self, batch: PricedBatch) -> str:
        tasks = sum(1 for _ in batch.items)
        return f"{plural(tasks, 'task')}, none priced: this provider has no price table\n"


UNPRICED: Final[Prices] = _Unpriced()


def read_amount(value: Any, what: str) -> float | str:
    """A price a manifest gives (a number, 0 or more, finite), or what is wrong with it.
    ``what``: the unit, as messages say it ("units", "USD per second")."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"must be a number of {what} (got {got(value)})"
    try:
        number = float(value)
    except OverflowError:
        number = float("inf")
    if number != number or number in (float("inf"), float("-inf")) or number < 0:
        return f"must be a finite number of {what}, 0 or more (got {got(value)})"
    return number


# -- the look of every estimate


def amount(value: float) -> str:
    """``1,234.5``: thousands separated, at most three decimals, no trailing zeros."""
    text = f"{value:,.3f}".rstrip("0").rstrip(".")
    return text or "0"


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def render_table(rows: Sequence[Sequence[str]], right: frozenset[int]) -> list[str]:
    """Rows of cells as aligned lines: the columns in ``right`` right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def summary_lines(
    *,
    tasks: int,
    total: float,
    unit: str,
    unpriced_tasks: int,
    indicative: bool,
    unpriced_hint: str,
    max_units: float | None,
) -> list[str]:
    """The lines under an estimate table: the total, what it counts, what is missing, the cap."""
    line = f"total: {plural(tasks, 'task')}, {amount(total)} {unit}"
    if unpriced_tasks:
        line += f" (+ {plural(unpriced_tasks, 'unpriced task')}, not counted)"
    out = [line, "each item counted once: a retried generation is a new paid task"]
    if indicative:
        out.append(
            "* built-in INDICATIVE price, not your contract's: set your prices under "
            "'pricing:' in the manifest"
        )
    if unpriced_tasks:
        out.append(
            f"{plural(unpriced_tasks, 'task')} without a price: add the model under "
            f"'pricing:' in the manifest, e.g. {unpriced_hint}"
        )
    if max_units is not None:
        verdict = (
            "the estimate exceeds it, so the batch will stop early (raise it and rerun to go on)"
            if total > max_units
            else "the estimate is within it"
        )
        out.append(f"limits.max_units: {amount(max_units)}: {verdict}")
    return out
