"""Located problems: what is wrong with a manifest, and where, as the user has to fix it.

A manifest is checked completely before anything is sent, and every problem is reported at once
(with the item id, the field and the line) so that one ``validate`` run is enough to fix a batch.
Every piece of the loading reports into one :class:`ProblemSink`: a problem is found at a
document path (``("items", 3, "duration")``), and the sink holds the map from paths to lines
that the YAML reader (and the items-file reader) keep, so that the problem is placed at the line
nearest to it. At the end :meth:`ProblemSink.problems` turns what was found into
:class:`Problem` lines: an item's field is named relative to the item, a bad default shared by
many items becomes one line naming them, and the items file's problems follow the manifest's,
each in line order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from orchestrator.validators import DocPath, describe

#: Where items are: the manifest's list, and the rows of the items file (``items_from``).
ITEM_LISTS: Final = ("items", "items_from")
#: A bad default shared by many items names this many of them.
MAX_NAMED: Final = 10


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest, located as precisely as the YAML allows."""

    message: str
    field: str | None = None
    item_id: str | None = None
    line: int | None = None
    #: The file the line is in when it is not the manifest: the items file of ``items_from``.
    source: str | None = None

    def format(self, source: str) -> str:
        """One line, located as ``file:line:``; ``source`` names the manifest."""
        if self.source is not None:
            source = self.source
        where = f"{source}:{self.line}" if self.line is not None else source
        parts = []
        if self.item_id is not None:
            parts.append(f"item '{self.item_id}'")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        prefix = ", ".join(parts)
        return f"{where}: {prefix}: {self.message}" if prefix else f"{where}: {self.message}"


class ManifestError(Exception):
    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        super().__init__("\n".join(p.format(source) for p in problems))


@dataclass
class _Found:
    path: DocPath
    message: str
    line: int | None
    #: Where in ``defaults`` the faulty value came from, if it did.
    default: DocPath | None = None
    #: The items file, for a problem with the file as a whole (its header, its encoding).
    source: str | None = None


def dotted(path: DocPath) -> str:
    """A document path as the user reads it: ``items[3].duration``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


class ProblemSink:
    """The problems found in one manifest (and its items file), and the lines to place them."""

    def __init__(self, manifest_path: Path) -> None:
        self.manifest_path = manifest_path
        #: Document path -> line; the YAML reader's own map (shared, not copied), to which the
        #: items-file reader adds its rows.
        self.lines: dict[DocPath, int] = {}
        #: Where a value was reported unreadable and left out: it was written, just not usable.
        self.unreadable: set[DocPath] = set()
        self.found: list[_Found] = []
        #: Item ids by where the item is: ("items", index) or ("items_from", row index).
        self.item_ids: dict[DocPath, str] = {}
        #: The items file as problems name it, once it is read; and its columns by item field.
        self.items_file: str | None = None
        self.columns: dict[str, str] = {}

    # -- reporting

    def report(
        self,
        path: DocPath,
        message: str,
        line: int | None = None,
        *,
        default: DocPath | None = None,
    ) -> None:
        if line is None:
            line = self.line_of(path if default is None else ("defaults", *default))
        self.found.append(_Found(path, message, line, default))

    def report_file(self, message: str, line: int | None) -> None:
        """A problem with the items file as a whole, at a line of it."""
        assert self.items_file is not None
        self.found.append(_Found(("items_from",), message, line, source=self.items_file))

    def report_errors(
        self,
        errors: list[ErrorDetails],
        model: type[BaseModel],
        at: DocPath = (),
        from_defaults: frozenset[str] = frozenset(),
    ) -> None:
        """Pydantic's errors for ``model`` validated at ``at``; an error in a field the item
        inherited is blamed on its default."""
        for error in errors:
            loc = tuple(error["loc"])
            message = describe(error, model)
            if loc and loc[0] in from_defaults:
                self.report(at + loc, message, default=loc)
            else:
                self.report(at + loc, message)

    def line_of(self, path: DocPath) -> int | None:
        for end in range(len(path), 0, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None

    # -- the problems, as the user reads them

    def problems(self) -> list[Problem]:
        result: dict[Problem, None] = {}  # ordered set: aliases can repeat a problem
        # A bad default usually breaks every item it reaches: one line for all of them, not
        # one per item, yet naming them (the same value can be fine for other kinds or models).
        shared: dict[tuple[DocPath, str, int | None], list[DocPath]] = {}
        for found in self.found:
            if found.default is not None:
                shared.setdefault((found.default, found.message, found.line), []).append(found.path)
        for found in self.found:
            if found.source is not None:
                result.setdefault(
                    Problem(found.message, line=found.line, source=found.source), None
                )
                continue
            if found.default is None:
                result.setdefault(self._problem(found.path, found.message, found.line), None)
                continue
            paths = shared.get((found.default, found.message, found.line))
            if paths is None:
                continue  # already reported with its group
            del shared[(found.default, found.message, found.line)]
            if len(paths) == 1:
                path = paths[0]
                where = ""
                if path[0] == "items_from":
                    where = f"; the item is on {self.item_name(path[:2], by_id=False)}"
                message = f"{found.message} (from defaults{where})"
                problem = self._problem(path, message, found.line, in_manifest=True)
            else:
                names = [self.item_name(path) for path in paths[:MAX_NAMED]]
                if len(paths) > MAX_NAMED:
                    names.append(f"and {len(paths) - MAX_NAMED:,} more")
                problem = Problem(
                    f"{found.message} (from defaults; affects items {', '.join(names)})",
                    field=dotted(("defaults", *found.default)),
                    line=found.line,
                )
            result.setdefault(problem, None)
        # The manifest's problems first, then the items file's, each in line order.
        return sorted(result, key=lambda p: (p.source is not None, p.line or 0))

    def _problem(
        self, path: DocPath, message: str, line: int | None, *, in_manifest: bool = False
    ) -> Problem:
        if len(path) >= 2 and path[0] in ITEM_LISTS and isinstance(path[1], int):
            item_id = self.item_ids.get(path[:2])
            if path[0] == "items_from" and self.items_file is not None:
                # A row is located by its line: the field is relative to it, id known or not.
                field_name = dotted(path[2:]) or None
                column = self.columns.get(str(path[2])) if len(path) > 2 else None
                if field_name is not None and column is not None:
                    field_name += f" (column '{column}')"
                source = None if in_manifest else self.items_file
                return Problem(message, field_name, item_id, line, source)
            # Within an item with a known id, the field is relative to the item.
            rest = path[2:] if item_id is not None else path
            return Problem(message, dotted(rest) or None, item_id, line)
        return Problem(message, dotted(path) or None, None, line)

    # -- naming items in messages

    def item_name(self, path: DocPath, *, by_id: bool = True) -> str:
        """The item at ``path`` as a message names it: its id, else where it is."""
        at = path[:2]
        item_id = self.item_ids.get(at)
        if item_id is not None and by_id:
            return f"'{item_id}'"
        if at[0] == "items_from" and self.items_file is not None:
            return f"{self.items_file}:{self.lines.get(at)}"
        return dotted(at)

    def where(self, first: DocPath, here: DocPath) -> str:
        """Where the item at ``first`` is, as seen from a problem with the item at ``here``."""
        line = self.line_of((*first, "id"))
        if line is None:
            return "another item"
        if first[0] == here[0]:
            return f"line {line}"
        if first[0] == "items_from" and self.items_file is not None:
            return f"line {line} of {Path(self.items_file).name}"
        return f"line {line} of {self.manifest_path.name}"
