"""Field validators that speak plain English, for the manifest and the providers' item schemas.

Each validator either returns the value (converted where YAML's reading needs it) or raises a
pydantic error whose message says what was expected and what was written, in YAML's own
spelling ("(got true)", "(got '16:9')"), with a did-you-mean where one helps. :func:`validate`
runs a pydantic model over plain data and also returns what was valid, so that one bad field
does not hide the problems of the others; :func:`describe` turns pydantic's errors into the
same plain English.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Annotated, Any, NoReturn, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationError,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, ErrorDetails, PydanticCustomError

DocPath = tuple[str | int, ...]


def got(value: object) -> str:
    """A short rendering of a user's value for "(got ...)", in YAML's spelling where it differs."""
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        try:
            text = str(value)
        except ValueError:  # beyond int-to-str's digit limit
            return "an enormous number"
        return text if len(text) <= 24 else f"{text[:12]}... ({len(text)} digits)"
    if isinstance(value, float):
        return number_text(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    if isinstance(value, bytes):
        return "binary data"
    return f"a value of type {type(value).__name__}"


def number_text(value: object) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def fail(message: str) -> NoReturn:
    # The message travels in ctx, not in the template: user text may contain "{...}".
    raise PydanticCustomError("manifest", "{message}", {"message": message})


def suggest(key: str, candidates: Iterable[str]) -> str:
    return _suggestion(key, tuple(candidates))


# A typo repeated on 100,000 rows of an items file is looked up once, not 100,000 times.
@functools.lru_cache(maxsize=1024)
def _suggestion(key: str, options: tuple[str, ...]) -> str:
    # A truncated name ("kling-v2-5") is nearer its full form than what difflib's ratio prefers.
    close = [c for c in options if key and c.startswith(key)]
    close = close or difflib.get_close_matches(key, options, n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown_key(key: str, candidates: Iterable[str]) -> str:
    return f"unknown key '{key}'{suggest(key, candidates)}"


def choices(allowed: Iterable[object]) -> str:
    return ", ".join(str(a) for a in allowed)


def scalar_hint(value: object) -> str:
    # YAML turns unquoted 1984, yes, 2024-01-01 into numbers, booleans and dates.
    if isinstance(value, bool | int | float | date):
        return "; put it in quotes"
    return ""


def as_text(value: object) -> str:
    if not isinstance(value, str):
        fail(f"must be text (got {got(value)}){scalar_hint(value)}")
    return value




#: A finite number written as text: JSON's and YAML's spelling, signs and exponents included.
_NUMBER_TEXT = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")


def quoted_number_hint(value: object) -> str:
    """A number in quotes (JSON Lines ``"duration": "5"``, YAML ``duration: "5"``) is text
    there, while a CSV cell, which is always text, is read as a number: say what to change."""
    if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
        return f"; write it without quotes ({value.strip()})"
    return ""


def as_number(value: object) -> float:
    # bool is an int subclass: "true" must not pass as 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(f"must be a number (got {got(value)}){quoted_number_hint(value)}")
    try:
        number = float(value)
    except OverflowError:
        fail(f"is far too large (got {got(value)})")
    if number != number or number in (float("inf"), float("-inf")):
        fail(f"must be a finite number (got {got(value)})")
    return number


def as_whole(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail(f"must be a whole number (got {got(value)}){quoted_number_hint(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            fail(f"must be a whole number (got {got(value)})")
        return int(value)
    return value


def as_bool(value: object) -> bool:
    if not isinstance(value, bool):
        fail(f"must be true or false (got {got(value)})")
    return value


class OneOf:
    """Before-validator for a closed set of strings, with a did-you-mean and YAML gotchas."""

    def __init__(
        self, allowed: tuple[str, ...], foreign: tuple[str, ...] = (), foreign_note: str = ""
    ) -> None:
        self.allowed = allowed
        # The accepted value is returned as this one shared string: 100,000 rows of an items
        # file saying "std" then hold one string, not 100,000.
        self._canonical = {name: name for name in allowed}
        # Values valid elsewhere (a video model on an image item): say so instead of guessing.
        self.foreign = foreign
        self.foreign_note = foreign_note

    def __call__(self, value: object) -> str:
        if isinstance(value, str) and value in self._canonical:
            return self._canonical[value]
        if isinstance(value, str) and value in self.foreign:
            fail(
                f"must be one of {choices(self.allowed)} (got {got(value)}, {self.foreign_note})"
            )
        fail(choice_message(value, self.allowed))


def choice_message(value: object, allowed: tuple[str, ...]) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 60:
        # YAML 1.1 reads unquoted 16:9 as the base-60 number 969.
        as_ratio = f"{value // 60}:{value % 60}"
        if as_ratio in allowed:
            return (
                f"must be in quotes: YAML reads {as_ratio} without quotes as the number {value}; "
                f'write "{as_ratio}"'
            )
    if len(allowed) == 1:
        message = f"must be {allowed[0]} (got {got(value)})"
    else:
        message = f"must be one of {choices(allowed)} (got {got(value)})"
    if isinstance(value, str):
        message += suggest(value, allowed)
    return message


def http_url_problem(text: str) -> str | None:
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError:
        return "is not a valid URL"
    if parts.scheme.lower() not in ("http", "https") or not host:
        return f"must be an http(s) URL such as https://example.com/path (got {got(text)})"
    if any(ch.isspace() for ch in text):
        return "must not contain spaces (write them as %20)"
    return None


def any_case(word: str) -> str:
    """``word`` as a regular expression that matches it in any letter case ("http" ->
    "[Hh][Tt][Tt][Pp]"): JSON Schema's patterns have no flags. Letters, digits, ':' and '/'
    only, which both Python's and ECMAScript's syntax (the one editors use) read alike."""
    assert all(ch.isalnum() or ch in ":/" for ch in word), word
    return "".join(f"[{ch.upper()}{ch.lower()}]" if ch.isalpha() else ch for ch in word)


def url_pattern(*schemes: str, padded: bool = False) -> str:
    """A JSON Schema pattern for a URL of one of ``schemes`` (in any letter case) with a host
    and no space, as :func:`http_url_problem` wants one (what the host itself may be is left to
    validation); ``padded``: spaces around it too (the value is stripped before it is read)."""
    space = "\\s*" if padded else ""
    scheme = "|".join(any_case(name) for name in schemes)
    return f"^{space}({scheme})://[^\\s/?#]+\\S*{space}$"


#: http_url's rule as a JSON Schema pattern.
HTTP_URL_PATTERN = url_pattern("http", "https")


def http_url(value: object) -> str:
    text = as_text(value)
    problem = http_url_problem(text)
    if problem:
        fail(problem)
    return text


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class JsonRule:
    """A validator's rule in JSON Schema's words, as ``Annotated`` metadata: pydantic's schema
    says the type a before-validator returns, not what it accepts (a closed set, a pattern).
    Validation is unchanged; ``orchestrator schema`` says the rule to editors.

    ``Annotated[str, BeforeValidator(OneOf(MODES)), JsonRule({"enum": list(MODES)})]``
    """

    def __init__(self, keywords: Mapping[str, Any]) -> None:
        self.keywords = dict(keywords)

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.update(self.keywords)
        return schema


Positive = Annotated[float, BeforeValidator(as_number), Field(gt=0)]
NonNegative = Annotated[float, BeforeValidator(as_number), Field(ge=0)]
Fraction = Annotated[float, BeforeValidator(as_number), Field(ge=0, le=1)]
WholeNumber = Annotated[int, BeforeValidator(as_whole)]
HttpUrl = Annotated[str, BeforeValidator(http_url), JsonRule({"pattern": HTTP_URL_PATTERN})]
Flag = Annotated[bool, BeforeValidator(as_bool)]


class Strict(BaseModel):
    # extra="forbid": a misspelt key must be an error, never a silently dropped parameter.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


_M = TypeVar("_M", bound=BaseModel)


def _without(data: Any, loc: DocPath) -> Any:
    """A copy of data without the value at loc (whole lists go: their indexes would shift)."""
    if not loc or not isinstance(data, dict) or loc[0] not in data:
        return data
    copy = dict(data)
    rest = loc[1:]
    if not rest or isinstance(rest[0], int):
        del copy[loc[0]]
    else:
        copy[loc[0]] = _without(data[loc[0]], rest)
    return copy


def validate(
    model: type[_M], data: dict[str, Any], context: Mapping[str, Any]
) -> tuple[_M | None, list[ErrorDetails]]:
    """Validate, and on errors also return a model of the values that were fine.

    The cross-field checks that follow need the valid part: one bad field must not hide the
    problems of the others.
    """
    try:
        # The validator itself, not model.model_validate(): the same call without a wrapper
        # that costs a microsecond per item of a big batch.
        return model.__pydantic_validator__.validate_python(data, context=context), []
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    trimmed = data
    for error in errors:
        trimmed = _without(trimmed, tuple(error["loc"]))
    try:
        return model.model_validate(trimmed, context=context), errors
    except ValidationError as exc:
        more = exc.errors(include_url=False)
    # Fall back to dropping the whole top-level key of every error (required sub-keys missing).
    bad = {error["loc"][0] for error in (*errors, *more) if error["loc"]}
    trimmed = {key: value for key, value in data.items() if key not in bad}
    try:
        return model.model_validate(trimmed, context=context), errors
    except ValidationError:
        return None, errors


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _keys_at(model: type[BaseModel], loc: DocPath) -> list[str]:
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        if current is None or part not in current.model_fields:
            return []
        current = _model_in(current.model_fields[part].annotation)
    return list(current.model_fields) if current is not None else []


def describe(error: ErrorDetails, model: type[BaseModel]) -> str:
    """Plain English for a pydantic error (our own validators already speak it)."""
    kind = error["type"]
    ctx = error.get("ctx", {})
    value = error.get("input")
    loc = tuple(error["loc"])
    if kind == "manifest":
        return str(ctx["message"])
    if kind == "extra_forbidden":
        return unknown_key(str(loc[-1]), _keys_at(model, loc[:-1]))
    if kind == "missing":
        return "is required"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"must be a mapping of keys to values (got {got(value)})"
    if kind == "list_type":
        return f"must be a list (got {got(value)})"
    if kind == "too_short":
        count = ctx.get("min_length")
        return f"must have at least {count} {'entry' if count == 1 else 'entries'}"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} entries"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in ("string_too_long", "too_long") and isinstance(value, str):
        return f"must be at most {ctx.get('max_length')} characters (got {len(value)})"
    bounds = {
        "greater_than": ("greater than", "gt"),
        "greater_than_equal": ("at least", "ge"),
        "less_than": ("less than", "lt"),
        "less_than_equal": ("at most", "le"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {number_text(ctx.get(key))} (got {got(value)})"
    return f"{error['msg']} (got {got(value)})"
