"""JSON laid out exactly as ``json.dump(value, fh, indent=2, ensure_ascii=False)`` lays it out,
at any depth, several times faster: Python 3.11's json indents in pure Python, and the report
runs this for every item of a batch (streamed: see report.write_report).
"""

from __future__ import annotations

import json
import math
from json.encoder import encode_basestring
from typing import Any

__all__ = ["nested_json"]

#: json's C encoder (used when there is no indent): for what :func:`nested_json` leaves to it.
_SCALAR_JSON = json.JSONEncoder(ensure_ascii=False)

#: indent -> (the indent one level deeper, the separator between its elements)
_LEVELS: dict[str, tuple[str, str]] = {}

#: dict keys as JSON strings (the report repeats a dozen keys per item; capped)
_KEYS: dict[str, str] = {}


def nested_json(value: Any, indent: str) -> str:
    """``value`` exactly as ``json.dump(..., indent=2, ensure_ascii=False)`` writes it at the
    depth whose lines start with ``indent``.

    The same text as ``json.dumps(value, indent=2, ensure_ascii=False)`` with ``indent`` after
    each newline, several times faster and with a fraction of the allocations: Python 3.11's
    json indents in pure Python, and this runs for every item of the report.
    """
    parts: list[str] = []
    _put_json(parts, value, indent)
    return "".join(parts)


def _put_json(parts: list[str], value: Any, indent: str) -> None:
    """Append the pieces of ``value``'s indented JSON to ``parts`` (see :func:`nested_json`).

    Containers and the common scalars are laid out here exactly as json lays them out;
    anything else (NaN, subclasses, keys that are not strings) is left to json itself.
    """
    if isinstance(value, str):
        parts.append(encode_basestring(value))
    elif value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif type(value) is int:
        parts.append(int.__repr__(value))
    elif type(value) is float and math.isfinite(value):
        parts.append(float.__repr__(value))
    elif isinstance(value, dict | list | tuple) and value:
        level = _LEVELS.get(indent)
        if level is None:
            level = _LEVELS.setdefault(indent, (indent + "  ", ",\n" + indent + "  "))
        inner, separator = level
        start = len(parts)
        if isinstance(value, dict):
            parts.append("{\n")
            for key, item in value.items():
                if not isinstance(key, str):  # json's own key conversions
                    del parts[start:]
                    parts.append(
                        json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n" + indent)
                    )
                    return
                encoded = _KEYS.get(key)
                if encoded is None:
                    encoded = encode_basestring(key)
                    if len(_KEYS) < 1024:
                        _KEYS[key] = encoded
                parts.append(inner if len(parts) == start + 1 else separator)
                parts.append(encoded)
                parts.append(": ")
                _put_json(parts, item, inner)
            parts.append("\n")
            parts.append(indent)
            parts.append("}")
        else:
            parts.append("[\n")
            for item in value:
                parts.append(inner if len(parts) == start + 1 else separator)
                _put_json(parts, item, inner)
            parts.append("\n")
            parts.append(indent)
            parts.append("]")
    elif isinstance(value, dict):
        parts.append("{}")
    elif isinstance(value, list | tuple):
        parts.append("[]")
    else:
        parts.append(_SCALAR_JSON.encode(value))
