"""What a provider tells the manifest about its items: their fields, and the rules its models set.

The manifest's generic sections are the same for every provider; an item's fields are the
provider's. A provider hands the manifest an :class:`ItemSchema`:

    kinds          the kinds it makes (text2video, image2video, ...)
    field_models   per kind, a pydantic model (``extra="forbid"``) of the fields' shapes: types,
                   closed sets, ranges, the local image files themselves
    image_fields   fields holding file paths (resolved against where they are written)
    csv_*          how an items-file cell (text) is read for a field: number, flag, JSON
    options        the provider section's own keys (Kling: api, allow_unknown_models)
    rules          a factory of the per-model rules for one manifest load (:class:`ItemRules`)
    open_models    the option that lets any model name through (allow_unknown_models), if any

The manifest runs each item through its kind's field model, then through ``rules.check``, which
reports problems per field (with the item's own values, its defaults, and the model's catalogue),
then asks ``rules.defaults`` for what the provider would assume, so the request says exactly
what will be generated, and ``rules.finish`` for the last touches of the fields sent.

:func:`local_image` is the image-field reader both providers share: a path is resolved against
the right folder and its header read once per load; the provider adds its own limits.
:func:`image_rule` says the same in JSON Schema's words.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationInfo

from orchestrator.images import ImageError, ImageInfo, read_image_info
from orchestrator.providers.base import ImageSource, Kind
from orchestrator.validators import (
    JsonRule,
    Strict,
    any_case,
    fail,
    got,
    http_url_problem,
    url_pattern,
)

__all__ = ["Draft", "ItemRules", "ItemSchema", "Report", "image_rule", "local_image"]


@dataclass(slots=True)
class Draft:
    """One item between its shape check and its per-model rules."""

    at: tuple[str | int, ...]  # ("items", index) or ("items_from", row index)
    kind: Kind
    given: tuple[str, ...]  # in file order, defaults last
    from_defaults: frozenset[str]
    bad: frozenset[str]
    values: Any  # the kind's fields model, with the fields that failed left out

    def ok(self, name: str) -> bool:
        return name in self.given and name not in self.bad


#: (field, message, conflict): a problem with one field of the item; ``conflict`` when it clashes
#: with another of the item's own fields (it can then be settled on the item).
Report = Callable[[str, str, bool], None]


class ItemRules(Protocol):
    """The per-model rules of one batch's items (one instance per manifest load)."""

    #: what is allowed but worth saying once (a deprecated model): key -> message
    warnings: dict[str, str]

    def check(self, draft: Draft, report: Report) -> None:
        """Report every problem of the item that depends on its model (and on its other
        fields); a missing model is reported as a problem of the field "model"."""
        ...

    def missing_model(self, kind: Kind) -> str:
        """The message for items of ``kind`` that name no model."""
        ...

    def models(self, kind: Kind) -> tuple[str, ...]:
        """The model names ``check`` accepts on an item of ``kind`` (aliases included), the
        catalogue's; any other is refused unless ``ItemSchema.open_models`` is set."""
        ...

    def defaults(self, kind: Kind, name: str) -> Mapping[str, Any]:
        """What the provider assumes for fields an item leaves out, spelled out."""
        ...

    def canonical(self, kind: Kind, name: str) -> str:
        """The model's own name (an alias resolved)."""
        ...

    def finish(self, kind: Kind, name: str, fields: dict[str, Any]) -> None:
        """Last touches of the request's fields (drop what the model would refuse as
        redundant), in place."""
        ...


@dataclass(frozen=True, eq=False)  # hashed by identity: the manifest caches what it derives
class ItemSchema:
    #: the kinds it makes; the first is an item's kind when neither it nor defaults say
    kinds: tuple[Kind, ...]
    field_models: Mapping[Kind, type[Strict]]
    image_fields: frozenset[str]
    #: the rules of one load: (an ``options`` instance, a catalogue to use instead of the
    #: packaged one or None) -> ItemRules
    rules: Callable[[Any, Any], ItemRules]
    #: the provider section's own keys, beside name, base_url and timeout
    options: type[Strict]
    #: the option of ``options`` (a flag) that lets model names the catalogue does not know
    #: through, if there is one
    open_models: str | None = None
    csv_numbers: frozenset[str] = frozenset()
    csv_flags: frozenset[str] = frozenset()
    #: JSON-valued fields, with an example for the message when a cell is not JSON
    csv_json: Mapping[str, str] = field(default_factory=dict)

    @property
    def kind_fields(self) -> Mapping[Kind, tuple[str, ...]]:
        """Fields of each kind, in the order they are written to TaskRequest.fields."""
        return {kind: tuple(model.model_fields) for kind, model in self.field_models.items()}


def image_rule(*url_schemes: str) -> JsonRule:
    """:func:`local_image`'s rule in JSON Schema's words: a path or a URL of ``url_schemes``
    (the provider's), never a data: URI. Whether the file is there and within the provider's
    limits only validation can tell."""
    return JsonRule({
        "type": "string",
        "pattern": "\\S",
        "not": {"pattern": f"^\\s*{any_case('data')}:"},
        "anyOf": [
            {"pattern": url_pattern(*url_schemes, padded=True)},
            {"not": {"pattern": "://"}},
        ],
    })


def local_image(
    value: object,
    info: ValidationInfo,
    *,
    data_uri: str,
    limits: Callable[[ImageInfo], list[str]],
    field_name: str | None = None,
) -> ImageSource:
    """An image field's value: an http(s) URL as written, or a local JPEG/PNG whose header
    reads and whose ``limits`` (the provider's: size, sides, ratio) hold. ``data_uri``: the
    message for a ``data:`` URI (give the file instead). ``field_name``: the field whose
    inheritance decides the folder (a nested value's own name is not it).

    Needs ``context={'base_dir': Path}``; ``inherited``/``defaults_dir`` for rows of an items
    file (their own paths are relative to it, inherited ones to the manifest); ``image_cache``
    to read each file's header once per load.
    """
    if not isinstance(value, str):
        fail(f"must be a file path or an http(s) URL (got {got(value)})")
    text = value.strip()
    if not text:
        fail("must not be empty")
    lowered = text.lower()
    if lowered.startswith("data:"):
        fail(data_uri)
    if lowered.startswith(("http://", "https://")):
        problem = http_url_problem(text)
        if problem:
            fail(problem)
        return ImageSource(url=text)
    if "://" in text:
        fail(f"must be a local file path or an http(s) URL (got {got(text)})")
    context = info.context
    if not isinstance(context, Mapping) or not isinstance(context.get("base_dir"), Path):
        raise TypeError("image fields are validated with context={'base_dir': Path}")
    base_dir: Path = context["base_dir"]
    inherited = context.get("inherited")
    if inherited:
        # A row of an items file resolves its own paths against the file's directory, and
        # the values it inherits from the manifest's defaults against the manifest's.
        name = field_name or info.field_name
        if name in inherited:
            base_dir = context["defaults_dir"]
    # normpath, not resolve(): no filesystem access, and symlinks keep the name the user chose.
    path = Path(os.path.normpath(base_dir / text))
    cache = context.get("image_cache")
    # Many rows of a big batch share an image: read each file's header once per load.
    found = cache.get(path) if cache is not None else None
    if found is None:
        try:
            found = read_image_info(path)
        except ImageError as exc:
            found = str(exc)
        if cache is not None:
            cache[path] = found
    if isinstance(found, str):
        hint = " ('~' is not expanded: write the full path)" if text.startswith("~") else ""
        fail(f"{found}{hint}")
    problems = limits(found)
    if problems:
        fail(f"{text!r} " + " and ".join(problems))
    return ImageSource(path=path)
