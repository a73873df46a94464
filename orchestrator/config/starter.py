"""The manifest ``orchestrator init`` writes: every key explained, production values.

The sections (provider, limits, retry, poll, output) are written from the manifest's JSON
Schema (json_schema.py): each key with its description as a comment and its default as the
value: the values that suit the real provider (config/demo_values.py warns of the demo's), its
base URL and its account's concurrency included. A key without a default is shown commented
out, with its schema's example. The ``defaults`` and ``items`` are the provider's examples
(its plug-in's ``starter``). The first line points editors at the schema file.
"""

from __future__ import annotations

import json
import re
import textwrap
from typing import Any, Final

import yaml

from orchestrator.config.json_schema import Schema, manifest_schema
from orchestrator.providers import registry

__all__ = ["schema_file_name", "starter_manifest"]

_WIDTH: Final = 96
_SECTIONS: Final = ("provider", "limits", "retry", "poll", "output")
_PLAIN: Final = re.compile(r"[A-Za-z0-9_./:-]+")


def schema_file_name(provider: str) -> str:
    """The schema file ``init`` writes beside a manifest: one per provider, shared by every
    manifest of the folder."""
    return f"orchestrator-{provider}.schema.json"


def starter_manifest(provider: str, *, name: str, commands: str, file_name: str) -> str:
    """The starter manifest for ``provider``: batch ``name``, the file ``file_name``;
    ``commands``: how the user calls the orchestrator (``python -m orchestrator``)."""
    plugin = registry.plugin(provider)
    schema = manifest_schema(provider)
    schema_file = schema_file_name(provider)
    defs = schema["$defs"]
    top = schema["properties"]
    credentials = plugin.credentials_help.removeprefix("set ")
    lines = [
        f"# yaml-language-server: $schema={schema_file}",
        "#",
        *_comment(
            f"A batch for {plugin.title}, written by `{commands} init`. Each key is explained "
            "above it; the values are the defaults, meant for the real API."
        ),
        "#",
        *_comment(
            f"The first line points editors with a YAML language server (VS Code's YAML "
            f"extension, among others) at {schema_file} beside this file: completion, help "
            "on hover, and errors as you type. It is this version's schema: after an upgrade, "
            f"write it again with `{commands} schema --provider {provider} --output "
            f"{schema_file}`. Every field: `{commands} schema --provider {provider} "
            f"--markdown`; the models: `{commands} models --provider {provider}`."
        ),
        "#",
        *_comment(f"Next: set {credentials}, then"),
        f"#   {commands} validate {file_name}",
        f"#   {commands} run {file_name} --dry-run",
        f"#   {commands} run {file_name}",
        "",
        *_key("version", top["version"], 1),
        *_key("name", top["name"], name),
    ]
    for section in _SECTIONS:
        lines += ["", f"{section}:"]
        for key, node in _definition(top[section], defs)["properties"].items():
            lines += _key(key, node, _value(node), indent="  ")
    for section, body in plugin.starter.items():
        lines += ["", *_comment(top[section]["description"]), f"{section}:", body.rstrip("\n")]
    return "\n".join(lines) + "\n"


_NO_VALUE: Final = object()


def _value(node: Schema) -> Any:
    if node.get("default") is not None:
        return node["default"]
    if "const" in node:
        return node["const"]
    return _NO_VALUE


def _key(key: str, node: Schema, value: Any, *, indent: str = "") -> list[str]:
    """A key with its description above it; commented out, with an example, when it has no
    default."""
    lines = _comment(node.get("description", ""), indent)
    if value is _NO_VALUE:
        return [*lines, f"{indent}# {key}: {_scalar(node['examples'][0])}"]
    return [*lines, f"{indent}{key}: {_scalar(value)}"]


def _definition(node: Schema, defs: Schema) -> Schema:
    ref = node.get("$ref") or next(option["$ref"] for option in node["anyOf"] if "$ref" in option)
    found: Schema = defs[ref.rsplit("/", 1)[-1]]
    return found


def _comment(text: str, indent: str = "") -> list[str]:
    return textwrap.wrap(
        text, _WIDTH, initial_indent=f"{indent}# ", subsequent_indent=f"{indent}# ",
        break_on_hyphens=False, break_long_words=False,
    )


def _scalar(value: Any) -> str:
    """``value`` as YAML reads it back: plain where it can be, else in double quotes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and yaml.safe_load(text) == text:
        return text
    return json.dumps(text)
