"""The items file (``items_from``): a CSV or JSONL file of items, read into plain item data.

Items may come from a CSV or JSONL file, appended after the manifest's own ``items`` and held to
the same rules: a row is turned into the same plain data as a YAML item (CSV cells are text, so
numeric fields are read from it and structured ones as JSON) and goes through the same per-item
code. ``items_from.columns`` reads an item field from a column of another name, and
``items_from.ignore_columns`` leaves columns out; any other column must be an item field. The
rows' problems are located by the file and its line (:attr:`Problem.source`), and so are those
of the file as a whole (its encoding, its header). Paths in the manifest, ``items_from``
included, are relative to the manifest; image paths in an items file are relative to the items
file (they travel with it).

This module reads; it does not judge an item: :func:`rows` yields each row's plain data for the
per-item code, one row at a time, so that a 100,000-row file is never held as plain data whole.
What the item fields are called, and how each is read from a cell, is the item schema's
(:class:`ItemColumns`).
"""

from __future__ import annotations

import csv
import difflib
import functools
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from orchestrator.config.problems import ProblemSink
from orchestrator.validators import (
    DocPath,
    any_case,
    choice_message,
    got,
    scalar_hint,
    suggest,
    unknown_key,
)

_ITEMS_FROM_KEYS: Final = ("path", "columns", "format", "ignore_columns")
_ITEMS_FILE_FORMATS: Final = ("csv", "jsonl")
_FORMAT_OF_SUFFIX: Final = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_INT_TEXT: Final = re.compile(r"[+-]?\d+")
#: How a CSV cell spells a boolean (what YAML would read as one); anything else is refused as
#: text by the field ("must be true or false").
_CSV_FLAGS: Final = {"true": True, "false": False, "yes": True, "no": False}
_NOT_FINITE: Final = frozenset(("nan", "inf", "infinity"))
_FLOAT_TEXT: Final = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")

#: One row for the per-item code: where it is (``("items_from", index)``), its plain data, and
#: how many problems had been found before the reader looked at it (a row the reader found
#: fault with gives no item).
Row = tuple[DocPath, Any, int]


@dataclass(frozen=True)
class ItemColumns:
    """What an items file's columns may be, as the item schema says: every key an item may
    have, and how a field is read from a CSV cell (text): as a number, as a boolean, as JSON."""

    keys: tuple[str, ...]  # id, kind, then every field
    numbers: frozenset[str]
    flags: frozenset[str]
    json: Mapping[str, str]  # field -> an example of it written as JSON, for messages

    @functools.cached_property
    def key_set(self) -> frozenset[str]:
        return frozenset(self.keys)


@dataclass(frozen=True)
class ItemsFile:
    """What ``items_from`` says: a CSV or JSONL file of items, and how to read its columns."""

    at: DocPath  # where its path is written in the manifest
    written: str
    path: Path
    display: str  # the file as problems name it
    format: str
    columns: Mapping[str, str]  # column name -> item field (items_from.columns, inverted)
    ignore: frozenset[str]

    @functools.cached_property
    def column_of(self) -> dict[str, str]:
        """items_from.columns as written: {item field: column}."""
        return {item_field: column for column, item_field in self.columns.items()}


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of duplicate keys silently, as YAML would: refuse them alike.
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _json_problem(exc: Exception) -> str:
    if isinstance(exc, _DuplicateKey):
        return f"duplicate key '{exc.key}': JSON would silently keep only the last one"
    if isinstance(exc, json.JSONDecodeError):
        return f"is not valid JSON: {exc.msg} (column {exc.colno})"
    if isinstance(exc, RecursionError):
        return "is not valid JSON: nested too deeply"
    return f"is not valid JSON: {exc}"


def _lines(text: str) -> Iterator[str]:
    """The lines of a text, ends kept, one at a time.

    Split at "\\n" only: not str.splitlines(), which also splits at U+2028 and other characters
    that JSON strings and CSV values may hold; and not io.StringIO, which would keep a second,
    four-bytes-a-character copy of a whole items file.
    """
    start = 0
    while start < len(text):
        end = text.find("\n", start)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def _csv_number(cell: str) -> Any:
    """A number written in a CSV cell; the text itself when it is none (the field says why)."""
    text = cell.strip()
    try:
        if _INT_TEXT.fullmatch(text):
            return int(text)
        if _FLOAT_TEXT.fullmatch(text) or text.lower().lstrip("+-") in _NOT_FINITE:
            # NaN and infinities as JSON Lines reads them: refused by the field for the
            # same reason, in the same words.
            return float(text)
    except ValueError:  # beyond int-to-str's digit limit
        pass
    return cell


def items_from_schema(item_keys: tuple[str, ...]) -> dict[str, Any]:
    """What ``items_from`` may be, in JSON Schema's words (``orchestrator schema``):
    ``item_keys`` are the provider's (id, kind and every field). What the file holds only
    validation can tell."""
    suffixes = "|".join(any_case(suffix.lstrip(".")) for suffix in _FORMAT_OF_SUFFIX)
    named = {"pattern": f"\\.({suffixes})$"}
    path = {
        "type": "string",
        "pattern": "\\S",
        "not": {"anyOf": [{"pattern": "^~"}, {"pattern": "://"}]},
        "description": "The CSV or JSONL file, relative to the manifest.",
    }
    column = {"type": "string", "pattern": "\\S"}
    return {
        "anyOf": [
            {**path, "allOf": [named]},
            {
                "type": "object",
                "additionalProperties": False,
                "required": ["path"],
                "properties": {
                    "path": path,
                    "columns": {
                        "type": ["object", "null"],
                        "propertyNames": {"enum": list(item_keys)},
                        "additionalProperties": column,
                        "description": "Item fields read from a column of another name: "
                        "{field: column}.",
                    },
                    "format": {
                        "enum": [*_ITEMS_FILE_FORMATS, None],
                        "description": "csv or jsonl; when left out, the path's suffix says "
                        f"({', '.join(_FORMAT_OF_SUFFIX)}).",
                    },
                    "ignore_columns": {
                        "type": ["array", "null"],
                        "items": column,
                        "description": "Columns of the file that are not item fields.",
                    },
                },
                # The format from the path's suffix when the mapping does not say it.
                "if": {"properties": {"format": {"type": "string"}}, "required": ["format"]},
                "else": {"properties": {"path": named}},
            },
        ]
    }


def read_items_from(
    raw: Any, sink: ProblemSink, item_columns: ItemColumns, manifest_dir: Path, display_dir: Path
) -> ItemsFile | None:
    """Check what ``items_from`` says (the file itself is read by :func:`rows`); None when it
    cannot be read (reported). ``display_dir``: the manifest's directory as the user named it,
    from which problems name the file."""
    return _Spec(sink, item_columns).read(raw, manifest_dir, display_dir)


class _Spec:
    def __init__(self, sink: ProblemSink, item_columns: ItemColumns) -> None:
        self.sink = sink
        self.item_columns = item_columns

    def read(self, raw: Any, manifest_dir: Path, display_dir: Path) -> ItemsFile | None:
        at: DocPath = ("items_from",)
        if at in self.sink.unreadable:
            return None
        if raw is None:
            self.sink.report(
                at, "has no value: give the path of a CSV or JSONL file, or remove the key"
            )
            return None
        before = len(self.sink.found)
        spec: dict[str, Any]
        if isinstance(raw, str):
            spec, path_at = {"path": raw}, at
        elif isinstance(raw, dict):
            spec, path_at = raw, (*at, "path")
            for key in raw:
                if key not in _ITEMS_FROM_KEYS:
                    self.sink.report((*at, key), unknown_key(key, _ITEMS_FROM_KEYS))
        else:
            self.sink.report(
                at,
                "must be the path of a CSV or JSONL file of items, or a mapping with path, "
                f"columns, format and ignore_columns (got {got(raw)})",
            )
            return None
        written = spec.get("path")
        if written is None:
            if path_at not in self.sink.unreadable:
                self.sink.report(path_at, "is required: the CSV or JSONL file of items")
        elif not isinstance(written, str) or not written.strip():
            self.sink.report(path_at, f"must be a file path (got {got(written)})")
            written = None
        elif written.startswith("~"):
            self.sink.report(
                path_at,
                "'~' is not expanded here: write the full path, or one relative to the manifest",
            )
        elif "://" in written:
            self.sink.report(
                path_at,
                f"must be a local file path, relative to the manifest (got {got(written)})",
            )
        columns = self._columns(spec.get("columns"))
        ignore = self._ignore_columns(spec.get("ignore_columns"), columns)
        fmt = spec.get("format")
        if fmt is not None and fmt not in _ITEMS_FILE_FORMATS:
            self.sink.report((*at, "format"), choice_message(fmt, _ITEMS_FILE_FORMATS))
        elif fmt is None and isinstance(written, str):
            fmt = _FORMAT_OF_SUFFIX.get(Path(written).suffix.lower())
            if fmt is None:
                how = (
                    "or add 'format: csv' or 'format: jsonl'"
                    if isinstance(raw, dict)
                    else ("or write items_from: {path: ..., format: csv}")
                )
                self.sink.report(
                    path_at,
                    f"cannot tell the format of {written!r} from its name: end it in .csv, "
                    f".jsonl or .ndjson, {how}",
                )
        if len(self.sink.found) > before or not isinstance(written, str) or fmt is None:
            return None
        # Relative to the manifest, as every path in it.
        return ItemsFile(
            at=path_at,
            written=written,
            path=Path(os.path.normpath(manifest_dir / written)),
            display=os.path.normpath(display_dir / written),
            format=str(fmt),
            columns=columns,
            ignore=ignore,
        )

    def _columns(self, raw: Any) -> dict[str, str]:
        """items_from.columns, {item field: column}, inverted to {column: item field}."""
        at: DocPath = ("items_from", "columns")
        if raw is None or at in self.sink.unreadable:
            return {}
        if not isinstance(raw, dict):
            self.sink.report(
                at,
                "must map item fields to the file's column names, e.g. {prompt: description} "
                f"(got {got(raw)})",
            )
            return {}
        columns: dict[str, str] = {}
        keys, key_set = self.item_columns.keys, self.item_columns.key_set
        for item_field, column in raw.items():
            path = (*at, item_field)
            if item_field not in key_set:
                self.sink.report(
                    path, f"unknown item field '{item_field}'{suggest(item_field, keys)}"
                )
            elif not isinstance(column, str) or not column.strip():
                self.sink.report(
                    path, f"must be a column name (got {got(column)}){scalar_hint(column)}"
                )
            elif column.strip() in columns:
                self.sink.report(
                    path, f"column '{column}' is already read as {columns[column.strip()]}"
                )
            else:
                columns[column.strip()] = item_field
        return columns

    def _ignore_columns(self, raw: Any, columns: Mapping[str, str]) -> frozenset[str]:
        at: DocPath = ("items_from", "ignore_columns")
        if raw is None or at in self.sink.unreadable:
            return frozenset()
        if not isinstance(raw, list):
            self.sink.report(at, f"must be a list of column names (got {got(raw)})")
            return frozenset()
        names = set()
        for index, name in enumerate(raw):
            if not isinstance(name, str) or not name.strip():
                self.sink.report((*at, index), f"must be a column name (got {got(name)})")
            elif name.strip() in columns:
                self.sink.report(
                    (*at, index),
                    f"column '{name}' is read as {columns[name.strip()]} (items_from.columns)",
                )
            else:
                names.add(name.strip())
        return frozenset(names)

def rows(spec: ItemsFile, sink: ProblemSink, item_columns: ItemColumns) -> Iterator[Row]:
    """The items file's rows, read one at a time as they are asked for; problems with the file
    and its rows go to ``sink`` (which names the file from now on)."""
    sink.items_file = spec.display
    sink.columns = spec.column_of
    return _Reader(spec, sink, item_columns).rows()


class _Reader:
    def __init__(self, spec: ItemsFile, sink: ProblemSink, item_columns: ItemColumns) -> None:
        self.spec = spec
        self.sink = sink
        self.item_columns = item_columns

    def rows(self) -> Iterator[Row]:
        spec = self.spec
        try:
            data = spec.path.read_bytes()
        except (OSError, ValueError) as exc:  # ValueError: a NUL character in the path
            if isinstance(exc, FileNotFoundError):
                reason = "file not found"
            elif isinstance(exc, IsADirectoryError):
                reason = "it is a directory"
            elif isinstance(exc, OSError):
                reason = exc.strerror or str(exc)
            else:
                reason = str(exc)
            self.sink.report(
                spec.at,
                f"cannot read {spec.written!r} ({spec.path}): {reason}; the path is relative "
                "to the manifest",
            )
            return
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            self.sink.report_file("the file is not UTF-8 text: save it as UTF-8", line)
            return
        del data
        if spec.format == "csv":
            yield from self._csv_rows(text)
        else:
            yield from self._jsonl_rows(text)

    def _csv_rows(self, text: str) -> Iterator[Row]:
        sink = self.sink
        reader = csv.reader(_lines(text))
        try:
            header = next(reader, None)
            while header is not None and not any(cell.strip() for cell in header):
                header = next(reader, None)  # blank lines before the header
        except csv.Error as exc:
            sink.report_file(f"cannot read the CSV header: {exc}", reader.line_num)
            return
        if header is None:
            sink.report_file(
                "the file is empty: it needs a header row naming the columns (id, prompt, ...)", 1
            )
            return
        used = self._csv_header([cell.strip() for cell in header], reader.line_num)
        if used is None:
            return
        lines, found, unreadable = sink.lines, sink.found, sink.unreadable
        numbers, flags, as_json = (
            self.item_columns.numbers, self.item_columns.flags, self.item_columns.json
        )
        width = len(header)
        start = reader.line_num + 1
        index = 0
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                sink.report_file(f"cannot read the CSV: {exc}", reader.line_num)
                break
            line, start = start, reader.line_num + 1
            if not any(cells):
                continue  # a blank line, or an empty spreadsheet row
            at: DocPath = ("items_from", index)
            index += 1
            lines[at] = line
            before = len(found)
            shifted = len(cells) > width and any(cell.strip() for cell in cells[width:])
            if shifted:
                sink.report(
                    at,
                    f"has {len(cells)} values but the header names {width} columns: put "
                    'values that contain commas in double quotes ("a, b")',
                )
            count = len(cells)
            raw: dict[str, Any] = {}
            for column, name in used:
                cell = cells[column] if column < count else ""
                if shifted and name != "id":
                    # Past the stray comma every value is in the wrong column: what they would
                    # say about model or mode is noise; the count above is the cause.
                    unreadable.add((*at, name))
                    continue
                if not cell:
                    continue  # an empty cell: the field is absent, a default applies
                if name in numbers:
                    raw[name] = _csv_number(cell)
                elif name in flags:
                    raw[name] = _CSV_FLAGS.get(cell.strip().lower(), cell)
                elif name in as_json:
                    try:
                        raw[name] = json.loads(cell, object_pairs_hook=_json_object)
                    except (ValueError, RecursionError) as exc:
                        sink.report(
                            (*at, name),
                            f"{_json_problem(exc)}; in a CSV cell it is written as JSON, "
                            f"e.g. {as_json[name]}",
                        )
                        unreadable.add((*at, name))
                else:
                    raw[name] = cell
            yield at, raw, before

    def _csv_header(self, names: list[str], line: int) -> list[tuple[int, str]] | None:
        """The columns to read, as (position, item field); None when rows cannot be read."""
        spec = self.spec
        keys, key_set = self.item_columns.keys, self.item_columns.key_set
        column_of = spec.column_of
        used: list[tuple[int, str]] = []
        seen: dict[str, int] = {}
        readable = True
        # A mapped column missing from the header is most likely misspelt in the mapping (or
        # in the header): one problem for it, not three (the column it meant is then "unknown",
        # and the column named like the field "not read").
        present = set(names)
        missing = {column: field for column, field in spec.columns.items() if column not in present}
        meant = {
            close
            for column in missing
            for close in difflib.get_close_matches(column, names, n=1, cutoff=0.6)
        }
        for position, name in enumerate(names):
            if not name:
                self.sink.report_file(f"column {position + 1} has no name in the header row", line)
                readable = False
            elif name in seen:
                self.sink.report_file(
                    f"column '{name}' is named twice in the header (columns {seen[name] + 1} "
                    f"and {position + 1})",
                    line,
                )
                readable = False
            elif name in spec.ignore:
                pass
            elif name in spec.columns:
                used.append((position, spec.columns[name]))
            elif name in key_set and name not in column_of:
                used.append((position, name))
            elif name in key_set:
                if column_of[name] in missing:
                    continue
                self.sink.report_file(
                    f"column '{name}' is not read: items_from.columns reads {name} from column "
                    f"'{column_of[name]}' (list '{name}' under items_from.ignore_columns to "
                    "leave it out)",
                    line,
                )
            elif name in meant:
                pass
            else:
                hint = ""
                separated = ";" in name or "\t" in name
                if separated and len(names) == 1:
                    sep = "';'" if ";" in name else "tabs"
                    self.sink.report_file(
                        "the header reads as one column: save the file with commas between "
                        f"values (it separates them with {sep}: {name!r})",
                        line,
                    )
                    return None
                if separated:
                    hint = (
                        "; the header reads as one column: save the file with commas between values"
                    )
                else:
                    suggestion = suggest(name, (*keys, *spec.columns))
                    hint = suggestion or (
                        ": columns are item fields (id, kind, prompt, ...); map others with "
                        "items_from.columns or list them under items_from.ignore_columns"
                    )
                self.sink.report_file(f"unknown column '{name}'{hint}", line)
            seen.setdefault(name, position)
        for column, item_field in missing.items():
            self.sink.report(
                ("items_from", "columns", item_field),
                f"column '{column}' is not in the header of {spec.written!r}"
                f"{suggest(column, [n for n in names if n])}",
            )
            readable = False
        if readable and not any(name == "id" for _, name in used):
            self.sink.report_file(
                "no 'id' column: every item needs a unique, stable id (or map a column to it: "
                "items_from.columns: {id: COLUMN})",
                line,
            )
            readable = False
        return used if readable else None

    def _jsonl_rows(self, text: str) -> Iterator[Row]:
        spec = self.spec
        sink = self.sink
        lines, found = sink.lines, sink.found
        column_of = spec.column_of
        rename = bool(spec.columns or spec.ignore)
        index = 0
        for number, line in enumerate(_lines(text), 1):
            if not line.strip():
                continue
            at: DocPath = ("items_from", index)
            index += 1
            lines[at] = number
            before = len(found)
            try:
                raw = json.loads(line, object_pairs_hook=_json_object)
            except (ValueError, RecursionError) as exc:
                sink.report(at, _json_problem(exc))
                continue
            if rename and isinstance(raw, dict):
                renamed: dict[str, Any] = {}
                for key, value in raw.items():
                    if key in spec.ignore:
                        continue
                    if key in spec.columns:
                        renamed[spec.columns[key]] = value
                    elif key in column_of:
                        sink.report(
                            at,
                            f"key '{key}' is not read: items_from.columns reads {key} from "
                            f"'{column_of[key]}' (list '{key}' under items_from.ignore_columns "
                            "to leave it out)",
                        )
                    else:
                        renamed[key] = value
                raw = renamed
            yield at, raw, before
