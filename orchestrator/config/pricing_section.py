"""The manifest's ``pricing:`` section and the ``limits.max_units`` check, in Kling's units.

``pricing:`` sets the user's own (contract) prices over the built-in, indicative table: video
prices by model, mode and duration (or per second, and a sound surcharge per second), image
prices by model. Every model, mode and duration named must be one that Kling's catalogue has,
so that a typo does not leave a price unused. ``limits.max_units`` needs a price for every task
of the batch: one without would slip past the cap. The table, the lookups and the estimate live
in :mod:`orchestrator.pricing`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, Final

from orchestrator.config.problems import ProblemSink
from orchestrator.pricing import BUILTIN_PRICES, PriceTable, TaskKey, lookup, task_key
from orchestrator.pricing import label as price_label
from orchestrator.providers.base import TaskRequest
from orchestrator.providers.kling.catalogue import ALL_MODES
from orchestrator.providers.kling.schema import Settings
from orchestrator.validators import DocPath, got, suggest, unknown_key

_INT_TEXT: Final = re.compile(r"[+-]?\d+")


def read_pricing(raw: Any, sink: ProblemSink, settings: Settings) -> PriceTable | None:
    """The manifest's prices over the built-in table; None when they are invalid (reported).

    ``settings``: the catalogue and ``provider.allow_unknown_models``, as the items see them."""
    return _Prices(sink, settings).read(raw)


class _Prices:
    def __init__(self, sink: ProblemSink, settings: Settings) -> None:
        self.sink = sink
        self.settings = settings

    def read(self, raw: Any) -> PriceTable | None:
        """The manifest's prices over the built-in table; None when they are invalid."""
        at: DocPath = ("pricing",)
        if at in self.sink.unreadable:
            return None
        if not raw:
            return BUILTIN_PRICES
        if not isinstance(raw, dict):
            self.sink.report(
                at, f"must be a mapping with video and/or image prices (got {got(raw)})"
            )
            return None
        before = len(self.sink.found)
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
                    self.sink.report((*at, key), f"must be true or false (got {got(value)})")
            elif key == "video":
                self._video_prices(value, video, per_second, sound)
            elif key == "image":
                self._image_prices(value, image)
            else:
                self.sink.report((*at, key), unknown_key(key, ("video", "image", "builtin")))
        if len(self.sink.found) > before:
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
        self.sink.report(path, message)
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
        problem = None
        if isinstance(value, bool) or not isinstance(value, int | float):
            problem = f"must be a number of units (got {got(value)})"
        else:
            try:
                units = float(value)
            except OverflowError:
                units = float("inf")
            if units != units or units in (float("inf"), float("-inf")) or units < 0:
                problem = f"must be a finite number of units, 0 or more (got {got(value)})"
        if problem is not None:
            self.sink.report(path, problem)
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
            self.sink.report(
                at, f"must map video models to modes to prices, {example} (got {got(raw)})"
            )
            return
        for model, modes in raw.items():
            model_at = (*at, model)
            if not self._price_model(model_at, model, "video"):
                continue
            model_modes, duration_problem = self._video_price_rules(model)
            if not isinstance(modes, dict):
                self.sink.report(
                    model_at,
                    f"must map modes ({', '.join(model_modes)}) and sound to prices, {example} "
                    f"(got {got(modes)})",
                )
                continue
            for mode, prices in modes.items():
                mode_at = (*model_at, mode)
                if mode == "sound":
                    if not isinstance(prices, dict) or set(prices) != {"per_second"}:
                        self.sink.report(mode_at, "must be {per_second: UNITS}: the surcharge per "
                                    "second of video with sound on")
                        continue
                    units = self._units((*mode_at, "per_second"), prices["per_second"])
                    if units is not None:
                        sound[model] = units
                    continue
                if mode not in model_modes:
                    known = ", ".join(model_modes)
                    self.sink.report(
                        mode_at,
                        f"unknown mode '{mode}' for {model}{suggest(mode, model_modes)}: "
                        f"{known}, or sound",
                    )
                    continue
                if not isinstance(prices, dict):
                    self.sink.report(
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
                        self.sink.report(
                            price_at,
                            f"must be a duration in whole seconds, or per_second (got '{seconds}')",
                        )
                        continue
                    problem = duration_problem(int(seconds))
                    if problem is not None:
                        self.sink.report(price_at, f"duration {problem}")
                        continue
                    units = self._units(price_at, value)
                    if units is not None:
                        video[(model, mode, int(seconds))] = units

    def _image_prices(self, raw: Any, image: dict[str, float]) -> None:
        at: DocPath = ("pricing", "image")
        if not isinstance(raw, dict):
            self.sink.report(
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


def check_max_units(
    requests: Iterable[TaskRequest], pricing: PriceTable, sink: ProblemSink
) -> None:
    """``limits.max_units`` needs a price for every task of the batch."""
    # A task without a price would slip past the cap unnoticed: refuse the batch instead.
    priced: dict[TaskKey, bool] = {}
    unpriced: dict[str, int] = {}
    for request in requests:
        key = task_key(request)
        known = priced.get(key)
        if known is None:
            known = priced[key] = lookup(pricing, *key) is not None
        if not known:
            name = price_label(request)
            unpriced[name] = unpriced.get(name, 0) + 1
    if unpriced:
        count = sum(unpriced.values())
        which = ", ".join(f"{label}: {n:,}" for label, n in unpriced.items())
        sink.report(
            ("limits", "max_units"),
            f"needs a price for every task, and {count:,} {'has' if count == 1 else 'have'} "
            f"none ({which}): add them under 'pricing:', or remove max_units",
        )
