"""LTX Video's model catalogue: ``catalogue.toml`` read into typed, frozen rules.

The data file says which models LTX serves, which (resolution, fps, duration) combinations each
accepts (LTX answers 400 to every other one), which take a last frame, which were removed and
what replaces them, and the list price in USD per second of output by resolution class. Manifest
validation, the price table and the simulator read it through this module; a model LTX adds or
removes is a change to the data file.

:func:`catalogue` loads the packaged file once; :func:`load` reads another (tests).
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import functools
import itertools
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from orchestrator.providers.base import Kind

PATH: Final = Path(__file__).with_name("catalogue.toml")
#: The kinds LTX's v2 API serves (text-to-video and image-to-video endpoints).
KINDS: Final = (Kind.TEXT2VIDEO, Kind.IMAGE2VIDEO)


class CatalogueError(Exception):
    """The data file is not a valid catalogue (a packaging or editing mistake)."""


class Status(enum.StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


def _span(value: Any, where: str) -> frozenset[int]:
    """A list of integers, or ``{from, to[, step]}``: every step-th integer, both ends in."""
    if isinstance(value, list) and value and all(type(v) is int for v in value):
        return frozenset(value)
    if isinstance(value, dict) and set(value) <= {"from", "to", "step"}:
        low, high, step = value.get("from"), value.get("to"), value.get("step", 1)
        if (
            isinstance(low, int)
            and isinstance(high, int)
            and isinstance(step, int)
            and step > 0
            and low <= high
        ):
            return frozenset(range(low, high + 1, step))
    raise CatalogueError(f"{where}: a list of integers or {{from, to, step}}")


def _spans(values: frozenset[int]) -> str:
    """``6, 8, ... 20`` style text for a set of integers."""
    ordered = sorted(values)
    if len(ordered) > 4:
        steps = {b - a for a, b in itertools.pairwise(ordered)}
        if len(steps) == 1:
            step = steps.pop()
            every = "" if step == 1 else f" in steps of {step}"
            return f"{ordered[0]} to {ordered[-1]}{every}"
    return ", ".join(str(v) for v in ordered)


@dataclass(frozen=True)
class Mode:
    """One row of a model's support matrix: every combination of its values is served."""

    resolutions: frozenset[str]
    fps: frozenset[int]
    durations: frozenset[int]

    def serves(self, resolution: str, fps: int, duration: int) -> bool:
        return resolution in self.resolutions and fps in self.fps and duration in self.durations

    def describe(self) -> str:
        return (
            f"{', '.join(sorted(self.resolutions))} at {_spans(self.fps)} fps: "
            f"{_spans(self.durations)} s"
        )


@dataclass(frozen=True)
class Model:
    name: str
    status: Status
    kinds: frozenset[Kind]
    modes: tuple[Mode, ...]
    last_frame: bool
    #: USD per second of output, by resolution class ("1080p"); empty: no published price.
    price: Mapping[str, float]
    removed: dt.date | None = None
    replacement: str | None = None

    @property
    def resolutions(self) -> frozenset[str]:
        return frozenset(r for mode in self.modes for r in mode.resolutions)

    def serves(self, resolution: str, fps: int, duration: int) -> bool:
        return any(mode.serves(resolution, fps, duration) for mode in self.modes)

    def blame(self, resolution: str, fps: int) -> str:
        """The field a refused combination is about: "resolution" when the model never makes
        it, "fps" when it does not at that resolution, else "duration"."""
        if resolution not in self.resolutions:
            return "resolution"
        if not any(resolution in mode.resolutions and fps in mode.fps for mode in self.modes):
            return "fps"
        return "duration"

    def problem(self, resolution: str, fps: int, duration: int) -> str | None:
        """Why LTX would refuse this combination (naming what it takes), or None."""
        if self.serves(resolution, fps, duration):
            return None
        if resolution not in self.resolutions:
            return (
                f"{self.name} does not make {resolution} videos; it makes "
                f"{', '.join(sorted(self.resolutions))}"
            )
        rows = [mode for mode in self.modes if resolution in mode.resolutions]
        at = [mode for mode in rows if fps in mode.fps]
        if not at:
            fps_values = frozenset(v for mode in rows for v in mode.fps)
            return f"{self.name} at {resolution} takes fps {_spans(fps_values)}, not {fps}"
        durations = frozenset(v for mode in at for v in mode.durations)
        return (
            f"{self.name} at {resolution} and {fps} fps takes a duration of "
            f"{_spans(durations)} s, not {duration}"
        )

    def describe(self) -> str:
        return "; ".join(mode.describe() for mode in self.modes)


@dataclass(frozen=True)
class Catalogue:
    models: Mapping[str, Model]
    #: "WxH" -> its resolution class ("1920x1080" -> "1080p").
    classes: Mapping[str, str]

    def model(self, name: str) -> Model | None:
        return self.models.get(name)

    def usable(self, kind: Kind) -> list[str]:
        return [
            name
            for name, model in self.models.items()
            if model.status is Status.ACTIVE and kind in model.kinds
        ]

    def suggest(self, name: str, kind: Kind) -> str | None:
        found = difflib.get_close_matches(name, self.usable(kind), n=1, cutoff=0.6)
        return found[0] if found else None

    def resolution_class(self, resolution: str) -> str | None:
        return self.classes.get(resolution)

    @property
    def grades(self) -> tuple[str, ...]:
        """Every resolution class, in the data file's order ("720p", "1080p", ...)."""
        return tuple(dict.fromkeys(self.classes.values()))

    def grades_of(self, resolutions: Iterable[str]) -> tuple[str, ...]:
        """The resolution classes these "WxH" values fall in, in the data file's order."""
        found = {self.classes.get(size) for size in resolutions}
        return tuple(grade for grade in self.grades if grade in found)

    def price_per_second(self, model: str, resolution: str) -> float | None:
        """The list price in USD per second of output, or None where none is published."""
        found = self.models.get(model)
        grade = self.classes.get(resolution)
        if found is None or grade is None:
            return None
        return found.price.get(grade)


def _model(name: str, data: Any, classes: Mapping[str, list[str]]) -> Model:
    where = f"models.{name}"
    if not isinstance(data, dict):
        raise CatalogueError(f"{where}: a table")
    unknown = set(data) - {
        "status", "removed", "replacement", "last_frame", "kinds", "modes", "price"
    }
    if unknown:
        raise CatalogueError(f"{where}: unknown keys {sorted(unknown)}")
    try:
        status = Status(str(data.get("status")))
        kinds = frozenset(Kind(kind) for kind in data.get("kinds", ()))
    except ValueError as exc:
        raise CatalogueError(f"{where}: {exc}") from None
    if not kinds or not kinds <= set(KINDS):
        raise CatalogueError(f"{where}.kinds: some of {[str(k) for k in KINDS]}")
    modes: list[Mode] = []
    for index, row in enumerate(data.get("modes", ())):
        at = f"{where}.modes[{index}]"
        if not isinstance(row, dict) or set(row) != {"resolutions", "fps", "durations"}:
            raise CatalogueError(f"{at}: resolutions, fps and durations")
        resolutions: set[str] = set()
        for grade in row["resolutions"]:
            if grade not in classes:
                raise CatalogueError(f"{at}.resolutions: {grade!r} is not a class")
            resolutions.update(classes[grade])
        modes.append(
            Mode(
                frozenset(resolutions),
                _span(row["fps"], f"{at}.fps"),
                _span(row["durations"], f"{at}.durations"),
            )
        )
    if status is Status.ACTIVE and not modes:
        raise CatalogueError(f"{where}: an active model needs modes")
    if status is Status.RETIRED and not isinstance(data.get("removed"), dt.date):
        raise CatalogueError(f"{where}.removed: the date it was removed")
    price = data.get("price", {})
    if not isinstance(price, dict) or not all(
        grade in classes and isinstance(usd, int | float) and usd >= 0
        for grade, usd in price.items()
    ):
        raise CatalogueError(f"{where}.price: USD per second by resolution class")
    replacement = data.get("replacement")
    return Model(
        name=name,
        status=status,
        kinds=kinds,
        modes=tuple(modes),
        last_frame=bool(data.get("last_frame", False)),
        price=MappingProxyType({grade: float(usd) for grade, usd in price.items()}),
        removed=data.get("removed"),
        replacement=replacement if isinstance(replacement, str) else None,
    )


def load(path: Path) -> Catalogue:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CatalogueError(f"{path}: {exc}") from None
    classes = data.get("classes")
    if not isinstance(classes, dict) or not all(
        isinstance(sizes, list) and all(isinstance(size, str) for size in sizes)
        for sizes in classes.values()
    ):
        raise CatalogueError("classes: resolution class -> list of WxH")
    models = {name: _model(name, body, classes) for name, body in data.get("models", {}).items()}
    for model in models.values():
        if model.replacement is not None and model.replacement not in models:
            raise CatalogueError(f"models.{model.name}.replacement: unknown model")
    return Catalogue(
        models=MappingProxyType(models),
        classes=MappingProxyType(
            {size: grade for grade, sizes in classes.items() for size in sizes}
        ),
    )


@functools.cache
def catalogue() -> Catalogue:
    return load(PATH)


def markdown_table(cat: Catalogue | None = None) -> str:
    """docs/providers.md's LTX model table, from the catalogue (a test keeps them equal)."""
    cat = cat or catalogue()
    grades = cat.grades
    header = ["model", "status", "kinds", "resolution, fps: duration (s)", "last frame",
              f"USD/s ({', '.join(grades)})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model in cat.models.values():
        if model.status is Status.RETIRED:
            status = f"removed {model.removed}, use {model.replacement}"
            cells = ["", "", ""]
        else:
            status = str(model.status)
            matrix = "; ".join(
                f"{', '.join(cat.grades_of(m.resolutions))} at {_spans(m.fps)} fps: "
                f"{_spans(m.durations)}"
                for m in model.modes
            )
            cells = [matrix, "yes" if model.last_frame else "no",
                     " / ".join(f"{model.price[g]:g}" if g in model.price else "-" for g in grades)
                     if model.price else "not published"]
        kinds = ", ".join(str(k) for k in KINDS if k in model.kinds)
        lines.append("| " + " | ".join([f"`{model.name}`", status, kinds, *cells]) + " |")
    return "\n".join(lines) + "\n"
