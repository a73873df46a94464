"""The manifest's JSON Schema: a valid draft 2020-12 schema that accepts what validation accepts
and refuses what it refuses, as far as JSON Schema can say; and the field reference rendered
from it, committed in docs/, equal to what the code renders today."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from orchestrator.config import ManifestError, load_manifest
from orchestrator.config.field_docs import field_reference
from orchestrator.config.json_schema import DIALECT, manifest_schema
from orchestrator.config.starter import starter_manifest
from orchestrator.providers import registry
from orchestrator.providers.kling.catalogue import catalogue as kling_catalogue
from orchestrator.providers.ltx.catalogue import catalogue as ltx_catalogue
from tests.conftest import REPO
from tests.test_images import png_bytes

PROVIDERS = registry.NAMES
DELETE = object()

Doc = dict[str, Any]
#: (path in the document, new value or DELETE)
Edits = list[tuple[tuple[str | int, ...], Any]]


def validator(provider: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(manifest_schema(provider))


def starter(provider: str) -> Doc:
    text = starter_manifest(
        provider, name="t", commands="python -m orchestrator", file_name="m.yaml"
    )
    doc: Doc = yaml.safe_load(text)
    return doc


def edited(doc: Doc, edits: Edits) -> Doc:
    doc = copy.deepcopy(doc)
    for path, value in edits:
        node: Any = doc
        for key in path[:-1]:
            node = node[key]
        if value is DELETE:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return doc


def validation_accepts(doc: Doc, directory: Path) -> bool:
    path = directory / "m.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    try:
        load_manifest(path)
    except ManifestError:
        return False
    return True


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "cat.png").write_bytes(png_bytes(512, 384))
    return tmp_path


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_schema_is_a_draft_2020_12_schema_in_its_own_keywords(provider: str) -> None:
    schema = manifest_schema(provider)
    assert schema["$schema"] == DIALECT
    jsonschema.Draft202012Validator.check_schema(schema)
    # pydantic states a bound that follows a validator function by its own name ("gt"): an
    # editor would ignore it. Every keyword must be one JSON Schema knows.
    meta = jsonschema.Draft202012Validator.META_SCHEMA
    known = {"$schema", "$defs", "$ref", "$comment", "title", "description", "default",
             "examples", "type", "enum", "const", "properties", "additionalProperties",
             "required", "items", "minItems", "maxItems", "minLength", "maxLength", "pattern",
             "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "anyOf", "oneOf",
             "allOf", "not", "if", "then", "else", "contains", "propertyNames",
             "maxProperties"}
    assert meta["$schema"] == DIALECT
    assert set(keywords(schema)) <= known


def keywords(node: Any, *, names: bool = False) -> Iterator[str]:
    if isinstance(node, list):
        for value in node:
            yield from keywords(value)
    elif isinstance(node, dict):
        for key, value in node.items():
            if not names:
                yield key
            yield from keywords(value, names=not names and key in ("properties", "$defs"))


@pytest.mark.parametrize(
    ("provider", "path"),
    [
        ("kling", "manifests/demo.yaml"),
        ("ltx", "manifests/demo-ltx.yaml"),
        ("kling", "manifests/examples/from-csv.yaml"),
    ],
)
def test_the_schema_accepts_the_bundled_manifests(provider: str, path: str) -> None:
    doc = yaml.safe_load((REPO / path).read_text(encoding="utf-8"))
    assert [e.message for e in validator(provider).iter_errors(doc)] == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_schema_accepts_the_starter_manifest(provider: str, folder: Path) -> None:
    doc = starter(provider)
    assert validation_accepts(doc, folder)
    assert [e.message for e in validator(provider).iter_errors(doc)] == []


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_unknown_top_level_key_and_a_wrong_type_are_refused(
    provider: str, folder: Path
) -> None:
    check = validator(provider)
    unknown_key: Edits = [(("prioirty",), 1)]
    wrong_type: Edits = [(("poll", "interval"), "5")]
    for edits in (unknown_key, wrong_type):
        doc = edited(starter(provider), edits)
        assert not validation_accepts(doc, folder)
        assert not check.is_valid(doc)


# (provider, edits of the starter manifest, whether validation accepts them). The schema must
# say the same: what an editor flags is what validate refuses.
CASES: list[tuple[str, Edits, bool]] = [
    ("kling", [(("version",), 2)], False),
    ("kling", [(("version",), "1")], False),
    ("kling", [(("version",), 1.0)], True),
    ("kling", [(("version",), DELETE)], False),
    ("kling", [(("name",), "two words")], False),
    ("kling", [(("name",), "..")], False),
    ("kling", [(("name",), None)], False),
    ("kling", [(("provider",), None)], True),
    ("kling", [(("provider", "name"), "veo")], False),
    ("kling", [(("provider", "base_url"), "http://example.com")], False),
    ("kling", [(("provider", "base_url"), "http://localhost:8080/")], True),
    ("kling", [(("provider", "base_url"), "https://proxy.example.com/kling/")], True),
    ("kling", [(("provider", "base_url"), "ftp://example.com")], False),
    ("kling", [(("provider", "base_url"), "simulator")], True),
    ("kling", [(("provider", "api"), "v3")], False),
    ("kling", [(("provider", "allow_unknown_models"), "yes")], False),
    ("kling", [(("limits", "concurrency"), 0)], False),
    ("kling", [(("limits", "concurrency"), None)], True),
    ("kling", [(("limits", "deadline"), "1h30m")], True),
    ("kling", [(("limits", "deadline"), "2026-11-22T06:00:00Z")], True),
    ("kling", [(("limits", "deadline"), "2026-11-22T06:00:00")], False),
    ("kling", [(("limits", "deadline"), "tomorrow")], False),
    ("kling", [(("retry", "max_attempts"), 3.0)], True),
    ("kling", [(("retry", "max_attempts"), 2.5)], False),
    ("kling", [(("retry", "max_attempts"), 101)], False),
    ("kling", [(("retry", "base_delay"), True)], False),
    ("kling", [(("poll", "interval"), 0)], False),
    ("kling", [(("poll", "extra"), 1)], False),
    ("kling", [(("output", "dir"), "~/out")], False),
    ("kling", [(("output", "download"), "no")], False),
    ("kling", [(("defaults", "id"), "x")], False),
    ("kling", [(("defaults", "mode"), None)], False),
    ("kling", [(("defaults", "kind"), "video")], False),
    ("kling", [(("items",), [])], False),
    ("kling", [(("items",), None)], False),
    ("kling", [(("items", 0, "id"), "a/b")], False),
    ("kling", [(("items", 0, "id"), "trailing.")], False),
    ("kling", [(("items", 0, "id"), DELETE)], False),
    ("kling", [(("items", 0, "kind"), "video")], False),
    ("kling", [(("items", 0, "bogus"), 1)], False),
    ("kling", [(("items", 0, "n"), 2)], False),  # a field of another kind
    ("kling", [(("items", 2, "mode"), "std")], False),  # image items have no mode
    ("kling", [(("items", 0, "mode"), "8k")], False),
    ("kling", [(("items", 0, "prompt"), "   ")], False),
    ("kling", [(("items", 0, "prompt"), "x" * 2501)], False),
    ("kling", [(("items", 0, "prompt"), None)], False),  # no default to opt out of
    ("kling", [(("items", 0, "mode"), None)], True),  # opts out of the default
    ("kling", [(("items", 0, "duration"), 5.5)], False),
    ("kling", [(("items", 0, "aspect_ratio"), 969)], False),  # 16:9 unquoted
    ("kling", [(("items", 0, "model"), "kling-v1")], False),  # retired
    ("kling", [(("items", 0, "model"), "kling-v3-omni")], False),  # not a text2video model
    ("kling", [(("items", 0, "model"), "kling-2.6"), (("items", 0, "mode"), "pro")], True),
    ("kling", [(("items", 0, "model"), "kling-v9")], False),
    ("kling", [(("items", 0, "model"), "kling-v9"),
               (("provider", "allow_unknown_models"), True)], True),
    ("kling", [(("defaults", "model"), DELETE)], False),  # no item names one
    ("kling", [(("defaults", "model"), "kling-v3-omni")], False),  # the text2video items'
    ("kling", [(("defaults", "kind"), "image"), (("items",), [{"id": "a", "prompt": "p"}])],
     True),
    ("kling", [(("defaults", "kind"), "image"),
               (("items",), [{"id": "a", "prompt": "p", "mode": "std"}])], False),
    ("kling", [(("items", 0, "camera_control"), {"type": "simple", "config": {"zoom": 2}})],
     True),
    ("kling", [(("items", 0, "camera_control"), {"type": "simple"})], False),
    ("kling", [(("items", 0, "camera_control"),
                {"type": "simple", "config": {"zoom": 2, "pan": 1}})], False),
    ("kling", [(("items", 0, "camera_control"), {"type": "down_back", "config": {"pan": 1}})],
     False),
    ("kling", [(("items", 0, "callback_url"), "example.com/done")], False),
    ("kling", [(("items", 0, "kind"), "image2video"), (("items", 0, "image"), "images/cat.png")],
     True),
    ("kling", [(("items", 0, "kind"), "image2video"),
               (("items", 0, "image"), "https://example.com/cat.png")], True),
    ("kling", [(("items", 0, "kind"), "image2video"),
               (("items", 0, "image"), "data:image/png;base64,AAAA")], False),
    ("kling", [(("items", 0, "kind"), "image2video"),
               (("items", 0, "image"), "s3://bucket/cat.png")], False),
    ("kling", [(("items_from",), "prompts.txt")], False),  # no format from its name
    ("kling", [(("items_from",), {"path": "p.csv", "extra": 1})], False),
    ("ltx", [(("provider", "name"), DELETE)], False),  # then it is a Kling manifest
    ("ltx", [(("provider", "api"), "v1")], False),  # a Kling option
    ("ltx", [(("items", 0, "camera_motion"), "orbit")], False),
    ("ltx", [(("items", 0, "fps"), 121)], False),
    ("ltx", [(("items", 0, "resolution"), "1920\u00d71080")], True),
    ("ltx", [(("items", 0, "resolution"), "1920 by 1080")], False),
    ("ltx", [(("items", 0, "model"), "ltx-2-fast")], False),  # removed
    ("ltx", [(("items", 0, "kind"), "image")], False),  # not an LTX kind
    ("ltx", [(("items", 0, "kind"), "image2video"),
             (("items", 0, "image"), "http://example.com/cat.png")], False),  # https only
    ("ltx", [(("items", 0, "kind"), "image2video"),
             (("items", 0, "image"), "https://example.com/cat.png")], True),
]


@pytest.mark.parametrize(("provider", "edits", "accepted"), CASES)
def test_the_schema_refuses_what_validation_refuses(
    provider: str, edits: Edits, accepted: bool, folder: Path
) -> None:
    doc = edited(starter(provider), edits)
    assert validation_accepts(doc, folder) is accepted
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator(provider).iter_errors(doc)]
    assert (not errors) is accepted, errors


def kling_names() -> list[str]:
    cat = kling_catalogue()
    return [*cat.models, *cat.aliases, "kling-v9"]


def ltx_names() -> list[str]:
    return [*ltx_catalogue().models, "ltx-9"]


@pytest.mark.parametrize(("provider", "names"), [("kling", kling_names()), ("ltx", ltx_names())])
def test_the_model_names_are_those_validation_accepts_for_each_kind(
    provider: str, names: list[str], folder: Path
) -> None:
    check = validator(provider)
    verdicts = set()
    for kind in registry.plugin(provider).schema.kinds:
        for name in names:
            item = {"id": "a", "kind": str(kind), "model": name, "prompt": "a cat"}
            if kind == "image2video":
                item["image"] = "https://example.com/cat.png"
            # Without the starter's defaults: a model's own rules (its modes) aside.
            doc = edited(starter(provider), [(("defaults",), None), (("items",), [item])])
            accepted = validation_accepts(doc, folder)
            assert check.is_valid(doc) is accepted, (kind, name)
            verdicts.add(accepted)
    assert verdicts == {True, False}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_committed_field_reference_is_what_the_code_renders(provider: str) -> None:
    committed = REPO / "docs" / f"fields-{provider}.md"
    command = (
        f"python -m orchestrator schema --provider {provider} --markdown --output "
        f"docs/fields-{provider}.md"
    )
    rendered = field_reference(manifest_schema(provider))
    assert committed.is_file(), f"docs/fields-{provider}.md is missing: run `{command}`"
    assert committed.read_text(encoding="utf-8") == rendered, (
        f"docs/fields-{provider}.md is out of date with the models: run `{command}`"
    )


def test_the_field_reference_says_each_fields_type_default_and_choices() -> None:
    text = field_reference(manifest_schema("kling"))
    assert "| `max_attempts` | whole number | `5` | 1 to 100 |" in text
    assert "| `base_url` | text | `https://api-singapore.klingai.com` |" in text
    assert "| `camera_control.config.zoom` | number | `0` | -10 to 10 |" in text
    assert "| `multi_prompt[].prompt` | text |  | 1 to 512 characters | Required." in text
    # The catalogue's models for the kind, and not a retired one.
    row = next(line for line in text.splitlines() if line.startswith("| `model` | text"))
    assert "`kling-v3`" in row and "kling-v1`" not in row
    ltx = field_reference(manifest_schema("ltx"))
    assert "| `concurrency` | whole number | `2` |" in ltx  # LTX's account limit
    assert "| `name` | text |  | `ltx` | Required." in ltx


def test_the_schema_text_is_json_with_the_providers_defaults() -> None:
    schema = json.loads(json.dumps(manifest_schema("ltx")))
    section = schema["$defs"][schema["properties"]["provider"]["$ref"].rsplit("/", 1)[-1]]
    assert section["properties"]["base_url"]["default"] == "https://api.ltx.video"
    assert "provider" in schema["required"]
