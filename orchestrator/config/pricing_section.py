"""The manifest's ``pricing:`` section and the ``limits.max_units`` check.

``pricing:`` is the chosen provider's own (its plug-in's ``prices`` reads it: Kling's units by
model, mode and duration, LTX's USD per second by model and resolution); this module asks the
plug-in for the batch's prices and checks ``limits.max_units`` against them: the cap needs a
price for every task of the batch, since one without would slip past it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from orchestrator.config.problems import ProblemSink
from orchestrator.pricing import UNPRICED, Prices
from orchestrator.providers.base import TaskRequest
from orchestrator.providers.plugin import ProviderPlugin
from orchestrator.validators import DocPath


def read_prices(raw: Any, sink: ProblemSink, plugin: ProviderPlugin, rules: Any) -> Prices | None:
    """The batch's prices: the manifest's ``pricing:`` over the provider's built-in table;
    None when the section is invalid (reported)."""
    at: DocPath = ("pricing",)
    if at in sink.unreadable:
        return None
    if plugin.prices is not None:
        return plugin.prices(raw, sink.report, rules)
    if raw:
        sink.report(
            at,
            f"cannot be set for {plugin.title} yet: its tasks are not priced by this tool; "
            "remove the section (and limits.max_units)",
        )
        return None
    return UNPRICED


def check_max_units(requests: Iterable[TaskRequest], prices: Prices, sink: ProblemSink) -> None:
    """``limits.max_units`` needs a price for every task of the batch."""
    # A task without a price would slip past the cap unnoticed: refuse the batch instead.
    priced: dict[str, bool] = {}
    unpriced: dict[str, int] = {}
    for request in requests:
        name = prices.label(request)
        known = priced.get(name)
        if known is None:
            known = priced[name] = prices.price(request) is not None
        if not known:
            unpriced[name] = unpriced.get(name, 0) + 1
    if unpriced:
        count = sum(unpriced.values())
        which = ", ".join(f"{label}: {n:,}" for label, n in unpriced.items())
        sink.report(
            ("limits", "max_units"),
            f"needs a price for every task, and {count:,} {'has' if count == 1 else 'have'} "
            f"none ({which}): add them under 'pricing:', or remove max_units",
        )
