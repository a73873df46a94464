"""The items: each one's fields checked through the provider's item schema, and made an Item.

What a schema cannot say is checked here, per item: defaults merged per kind (a default applies
only where it means something: video settings in ``defaults`` must not break image items), a
``null`` that opts out of a default, unknown and misplaced keys, unique ids (case-insensitively:
ids name directories), and, through the schema's per-model rules (:class:`ItemRules`), what
depends on the model. A problem in a value an item inherited is blamed on its default, once for
all the items it breaks. The same code reads the manifest's own ``items`` and the rows of its
items file (``items_from``); paths a row inherits from ``defaults`` stay relative to the
manifest.

That per-item code runs 100,000 times for a big items file, so it is kept lean: measured, most of
an item's time is Python around the pydantic call, not pydantic itself (see :meth:`_item`).

The item schema is the provider's (its plug-in's ``schema``, providers/item_schema.py): its field
models per kind, how they read from a CSV cell and its per-model rules. :class:`ItemShape` is
what this module derives from a schema once (the keys an item may have, per kind), shared by the
defaults, the items and the items file's columns.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel

from orchestrator.config.items_file import ItemColumns, Row
from orchestrator.config.problems import MAX_NAMED, ProblemSink
from orchestrator.config.sections import NAME_CHARS
from orchestrator.images import ImageInfo
from orchestrator.layout import check_item_id, own_name_clash
from orchestrator.providers.base import Kind, TaskRequest
from orchestrator.providers.item_schema import Draft, ItemRules, ItemSchema
from orchestrator.validators import (
    DocPath,
    Strict,
    choice_message,
    got,
    scalar_hint,
    unknown_key,
    validate,
)


@dataclass(frozen=True)
class Item:
    """One item of a batch: its id and the request it sends. Defined here, where items are
    made (the package exports it with :class:`Manifest`)."""

    id: str
    request: TaskRequest
    #: Line in the manifest, or in ``source`` for an item read from an items file.
    line: int | None = None
    #: The items file (``items_from``) the item was read from; None for the manifest's own.
    source: Path | None = None


_ID_RE: Final = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: What an id may be, in JSON Schema's words (Windows' device names and the tool's own file
#: names, which check_item_id and own_name_clash refuse, left to validation).
ID_SCHEMA: Final = {
    "type": "string",
    "pattern": f"^{_ID_RE.pattern}$",
    "not": {"pattern": "\\.$"},
    "description": f"Unique and stable: results, state and folders are matched by id, never by "
    f"order. 1-128 {NAME_CHARS}, not ending in a dot; it names the item's folder.",
}


@dataclass(frozen=True)
class ItemShape:
    """What the manifest derives once from a provider's item schema."""

    schema: ItemSchema
    kinds: tuple[Kind, ...]
    #: per kind, its fields in the order they are written to TaskRequest.fields
    kind_fields: Mapping[Kind, tuple[str, ...]]
    kind_field_sets: Mapping[Kind, frozenset[str]]
    #: every field an item may have, mapped to the kinds it belongs to
    field_kinds: Mapping[str, tuple[Kind, ...]]
    #: every key an item may have: id, kind, then the fields
    item_keys: tuple[str, ...]
    #: the items file's columns: the same keys, and how the fields read from a cell
    columns: ItemColumns

    @property
    def field_models(self) -> Mapping[Kind, type[Strict]]:
        return self.schema.field_models


@functools.cache
def item_shape(schema: ItemSchema) -> ItemShape:
    """The shape of ``schema``'s items (derived once per schema)."""
    kind_fields = schema.kind_fields
    field_kinds = {
        name: tuple(kind for kind in kind_fields if name in kind_fields[kind])
        for name in dict.fromkeys(name for names in kind_fields.values() for name in names)
    }
    item_keys = ("id", "kind", *field_kinds)
    return ItemShape(
        schema=schema,
        kinds=schema.kinds,
        kind_fields=kind_fields,
        kind_field_sets={kind: frozenset(names) for kind, names in kind_fields.items()},
        field_kinds=field_kinds,
        item_keys=item_keys,
        columns=ItemColumns(
            item_keys, schema.csv_numbers, schema.csv_flags, dict(schema.csv_json)
        ),
    )

#: Field values that _plain turns into plain data (a tuple: isinstance is faster with one).
_NESTED: Final = (BaseModel, list)
_NO_NAMES: Final[frozenset[str]] = frozenset()
# Enum members as plain names: on Python 3.11 each Kind.X lookup costs a quarter microsecond,
# a measurable share of the per-item time of a 100,000-row items file.
_IMAGE: Final = Kind.IMAGE


@dataclass
class Defaults:
    """What ``defaults`` says: item fields for every item that does not say otherwise."""

    shape: ItemShape
    values: dict[str, Any] = field(default_factory=dict)
    kind: Kind | None = None
    kind_invalid: bool = False
    _for_kind: dict[Kind, tuple[str, ...]] = field(default_factory=dict)

    def for_kind(self, kind: Kind) -> tuple[str, ...]:
        """The defaults that reach items of this kind (a default only where it means something)."""
        keys = self._for_kind.get(kind)
        if keys is None:
            allowed = self.shape.kind_field_sets[kind]
            keys = self._for_kind[kind] = tuple(key for key in self.values if key in allowed)
        return keys


def read_defaults(raw: Any, sink: ProblemSink, shape: ItemShape) -> Defaults:
    """What ``defaults`` says; its problems go to ``sink``."""
    defaults = Defaults(shape)
    item_keys = shape.item_keys
    if raw is None:
        return defaults
    if not isinstance(raw, dict):
        sink.report(("defaults",), f"must be a mapping of item fields (got {got(raw)})")
        return defaults
    for key, value in raw.items():
        path: DocPath = ("defaults", key)
        if key == "id":
            sink.report(path, "cannot have a default: every item needs its own unique id")
        elif key not in item_keys:
            sink.report(path, unknown_key(key, item_keys))
        elif value is None:
            sink.report(path, "has no value: write one, or remove the key")
        elif key == "kind":
            defaults.kind = _kind_of(value, shape.kinds)
            if defaults.kind is None:
                defaults.kind_invalid = True
                sink.report(path, choice_message(value, shape.kinds))
        else:
            defaults.values[key] = value
    return defaults


def _kind_of(value: object, kinds: tuple[Kind, ...]) -> Kind | None:
    """The kind ``value`` names among the provider's ``kinds``; None when it names none."""
    if not isinstance(value, str):
        return None
    try:
        kind = Kind(value)
    except ValueError:
        return None
    return kind if kind in kinds else None


def _plain(value: Any) -> Any:
    """Nested models as dicts; ImageSource and scalars as they are."""
    if isinstance(value, BaseModel):
        return {
            name: _plain(getattr(value, name))
            for name in type(value).model_fields
            if getattr(value, name) is not None
        }
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _not_a_field(key: str, kind: Kind, shape: ItemShape) -> str:
    if key == "aspect_ratio" and kind is Kind.IMAGE2VIDEO:
        return "'aspect_ratio' is not a field of kind image2video: the video follows the image"
    kinds = " and ".join(str(k) for k in shape.field_kinds[key])
    return f"'{key}' is not a field of kind {kind} (it belongs to {kinds})"


class ItemChecker:
    """The items of one manifest, checked and made :class:`Item` objects, one at a time."""

    def __init__(
        self, sink: ProblemSink, rules: ItemRules, defaults: Defaults, manifest_dir: Path
    ) -> None:
        self.sink = sink
        self.rules = rules
        self.defaults = defaults
        self.shape = defaults.shape
        self.manifest_dir = manifest_dir
        self.image_cache: dict[Path, ImageInfo | str] = {}
        self.context: Mapping[str, Any] = {
            "base_dir": manifest_dir,
            "image_cache": self.image_cache,
        }
        #: Case-folded id -> the id as written and where its item is: ids are unique across
        #: the manifest's items and the items file's.
        self.first_seen: dict[str, tuple[str, DocPath]] = {}
        #: items that name no model, by kind: reported once for all (see report_missing_model)
        self.missing_model: dict[Kind, list[DocPath]] = {}

    def items(self, raw: Any, *, optional: bool = False) -> list[Item]:
        """The manifest's own items; ``optional`` when an items file may bring them all."""
        unreadable = self.sink.unreadable
        if ("items",) in unreadable:
            return []
        if raw is None:
            if not optional:
                self.sink.report(
                    ("items",), "is required: list at least one item (or name a file: items_from)"
                )
            return []
        if not isinstance(raw, list):
            self.sink.report(("items",), f"must be a list of items (got {got(raw)})")
            return []
        if not raw:
            if not optional:
                self.sink.report(("items",), "must list at least one item")
            return []
        items = []
        for index, entry in enumerate(raw):
            # Each entry's plain data is let go once it is an Item: at 100,000 items the two
            # together would be the load's peak memory.
            raw[index] = None
            if ("items", index) in unreadable:
                continue
            item = self._item(("items", index), entry, self.context)
            if item is not None:
                items.append(item)
        return items

    def file_items(self, source: Path, rows: Iterable[Row]) -> list[Item]:
        """The items of an items file's rows (``source``: the file), as its reader yields them."""
        # Paths in rows are relative to the items file's directory (they travel with it);
        # paths inherited from the manifest's defaults stay relative to the manifest.
        context: dict[str, Any] = {"base_dir": source.parent, "image_cache": self.image_cache}
        found = self.sink.found
        items: list[Item] = []
        for at, raw, before in rows:
            item = self._item(at, raw, context, source)
            if item is not None and len(found) == before:
                items.append(item)
        return items

    def report_missing_model(self) -> None:
        """One problem for the items that name no model: on the item when it is the only one,
        else at ``defaults.model``, where one line fixes them all."""
        paths = [path for paths in self.missing_model.values() for path in paths]
        if not paths:
            return
        kind = next(iter(self.missing_model))
        message = self.rules.missing_model(kind)
        if len(paths) == 1:
            self.sink.report((*paths[0], "model"), message)
            return
        names = [self.sink.item_name(path) for path in paths[:MAX_NAMED]]
        if len(paths) > MAX_NAMED:
            names.append(f"and {len(paths) - MAX_NAMED:,} more")
        self.sink.report(
            ("defaults", "model"),
            f"{message}; {len(paths):,} items name none ({', '.join(names)}): set it here for "
            "all of them, or on each item",
        )

    def _item_id(self, at: DocPath, raw: dict[str, Any]) -> str | None:
        sink = self.sink
        path: DocPath = (*at, "id")
        if sink.unreadable and path in sink.unreadable:
            return None
        value = raw.get("id")
        if value is None:
            sink.report(path, "is required: every item needs a unique, stable id")
            return None
        if not isinstance(value, str):
            sink.report(path, f"must be text (got {got(value)}){scalar_hint(value)}")
            return None
        if not _ID_RE.fullmatch(value) or not value.strip("."):
            sink.report(
                path,
                f"must be 1-128 characters of {NAME_CHARS}, and not only dots: it names the "
                f"item's directory and is part of its external task id (got {got(value)})",
            )
            return None
        try:
            # The rule for the item's directory name on every OS (the downloader applies it
            # too): refused here, offline, rather than after the task was paid for.
            check_item_id(value)
        except ValueError as exc:
            sink.report(path, f"{exc}: choose another id")
            return None
        clash = own_name_clash(value)
        if clash is not None:
            # Its folder would take the place of the report, the state or the logs (a crash at
            # the end of every run, or assets among the logs): refused before anything is paid.
            sink.report(path, f"'{value}' {clash}: choose another id")
            return None
        sink.item_ids[at] = value
        # Ids name directories; macOS and Windows file systems ignore letter case.
        folded = value.casefold()
        first_seen = self.first_seen
        first = first_seen.get(folded)
        if first is None:
            first_seen[folded] = (value, at)
            return value
        first_value, first_at = first
        where = sink.where(first_at, at)
        if first_value == value:
            sink.report(path, f"duplicate id: '{value}' is already used on {where}")
        else:
            sink.report(
                path,
                f"duplicate id: '{value}' differs from '{first_value}' on {where} only in letter "
                "case, and ids name directories on case-insensitive file systems",
            )
        return value

    def _item_kind(self, at: DocPath, raw: dict[str, Any]) -> Kind | None:
        kinds = self.shape.kinds
        if "kind" in raw:
            kind = _kind_of(raw["kind"], kinds)
            if kind is None:
                self.sink.report((*at, "kind"), choice_message(raw["kind"], kinds))
            return kind
        defaults = self.defaults
        if defaults.kind_invalid:
            return None
        return defaults.kind or kinds[0]

    def _item(
        self,
        at: DocPath,
        raw: Any,
        context: Mapping[str, Any],
        source: Path | None = None,
    ) -> Item | None:
        # Runs once per item, 100,000 times for a big items file: kept lean on purpose.
        sink = self.sink
        if not isinstance(raw, dict):
            what = "a JSON object" if source is not None else "a mapping"
            sink.report(at, f"must be {what} with at least an id and a prompt (got {got(raw)})")
            return None
        problems_before = len(sink.found)
        item_id = self._item_id(at, raw)
        kind = self._item_kind(at, raw)
        defaults = self.defaults
        shape = self.shape
        field_kinds = shape.field_kinds
        allowed = shape.kind_field_sets[kind] if kind is not None else field_kinds
        default_values = defaults.values
        merged: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "id" or key == "kind":
                continue
            if key in allowed:
                if value is not None:
                    merged[key] = value
                elif key not in default_values:
                    # null only opts out of a default; anywhere else it is a forgotten value.
                    sink.report((*at, key), "has no value: write one, or remove the key")
            elif kind is not None and key in field_kinds:
                sink.report((*at, key), _not_a_field(key, kind, shape))
            else:
                sink.report((*at, key), unknown_key(key, shape.item_keys))
        if kind is None:
            return None
        # A default applies only where it means something: video settings in defaults must
        # not break image items.
        inherited = [key for key in defaults.for_kind(kind) if key not in raw]
        for key in inherited:
            merged[key] = default_values[key]
        from_defaults = frozenset(inherited)
        if source is not None and not from_defaults.isdisjoint(shape.schema.image_fields):
            context = {
                **context,
                "inherited": from_defaults,
                "defaults_dir": self.manifest_dir,
            }
        # Written but unreadable (reported already): present, so no "is required" on top.
        broken = (
            [key for key in shape.kind_fields[kind] if (*at, key) in sink.unreadable]
            if sink.unreadable
            else []
        )
        schema = shape.field_models[kind]
        values, errors = validate(schema, merged, context)
        if errors:
            sink.report_errors(errors, schema, at, from_defaults)
        name: str | None = None
        if values is not None:
            draft = Draft(  # at, kind, given, from_defaults, bad, values
                at,
                kind,
                (*merged, *broken) if broken else tuple(merged),
                from_defaults,
                frozenset((*broken, *(str(e["loc"][0]) for e in errors if e["loc"])))
                if errors or broken
                else _NO_NAMES,
                values,
            )

            def report(field_name: str, message: str, conflict: bool) -> None:
                self._field_problem(draft, field_name, message, conflict)

            self.rules.check(draft, report)
            name = getattr(values, "model", None)
        if (
            len(sink.found) > problems_before
            or broken
            or values is None
            or item_id is None
            or name is None  # reported for all such items at once
        ):
            return None
        builtin = self.rules.defaults(kind, name)
        fields: dict[str, Any] = {}
        # The model's fields, in declaration order (pydantic keeps them so in __dict__).
        for field_name, value in values.__dict__.items():
            if value is None:
                value = builtin.get(field_name)
                if value is None:
                    continue
            elif isinstance(value, _NESTED):
                value = _plain(value)
            fields[field_name] = value
        canonical = fields["model"] = self.rules.canonical(kind, name)
        self.rules.finish(kind, canonical, fields)
        expected = int(fields["n"]) if kind is _IMAGE else 1
        # Positional: keyword arguments cost measurably at 100,000 items.
        return Item(item_id, TaskRequest(kind, fields, expected), sink.lines.get(at), source)

    def _field_problem(
        self, draft: Draft, name: str, message: str, conflict: bool = False
    ) -> None:
        path: DocPath = (*draft.at, name)
        if name == "model" and name not in draft.given:
            # Missing everywhere: one problem for all the items it affects
            # (report_missing_model).
            self.missing_model.setdefault(draft.kind, []).append(draft.at)
            return
        if name not in draft.from_defaults:
            self.sink.report(path, message)
            return
        if conflict:
            # The clash is with this item's own choice: it can be settled on the item.
            message += f"; write '{name}: null' on the item to not inherit it"
        self.sink.report(path, message, default=(name,))

