"""``init`` and ``schema`` as a user runs them: a starter manifest that validates with no demo
warning, for every provider, and is never written over by accident; a schema an editor (here
the jsonschema package) can use."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
import yaml

from orchestrator.config import load_manifest
from orchestrator.config.starter import schema_file_name
from orchestrator.providers import registry
from tests.conftest import REPO, run_cli

#: Credentials of the right shape: validate checks they are set, and sends nothing.
CREDENTIALS = {
    "KLING_ACCESS_KEY": "ak-test",
    "KLING_SECRET_KEY": "sk-test",
    "LTX_API_KEY": "ltx-test",
}


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LTX_", "KLING_"))}
    return {**clean, "PYTHONPATH": str(REPO), **extra}


@pytest.mark.parametrize("provider", registry.NAMES)
def test_init_writes_a_production_manifest_that_validates(provider: str, tmp_path: Path) -> None:
    manifest = tmp_path / "launch.yaml"
    result = run_cli(["init", "--provider", provider, str(manifest)], env())
    assert result.code == 0, result.stderr
    plugin = registry.plugin(provider)
    # What to do next: credentials, validate, a dry run.
    assert plugin.credentials_help in result.stdout
    assert f"validate {manifest}" in result.stdout
    assert f"run {manifest} --dry-run" in result.stdout

    text = manifest.read_text(encoding="utf-8")
    schema_file = schema_file_name(provider)
    assert text.splitlines()[0] == f"# yaml-language-server: $schema={schema_file}"
    schema = json.loads((tmp_path / schema_file).read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    assert jsonschema.Draft202012Validator(schema).is_valid(yaml.safe_load(text))

    validated = run_cli(["validate", str(manifest)], env(**CREDENTIALS))
    assert validated.code == 0, validated.stderr
    assert "warning" not in validated.stderr
    assert "OK: batch 'launch'" in validated.stdout

    loaded = load_manifest(manifest)
    assert loaded.provider.name == provider
    assert loaded.provider.base_url == plugin.default_base_url  # the real API, not a simulator
    assert loaded.warnings == ()
    assert len(loaded.items) >= 2


def test_init_refuses_to_overwrite_a_manifest_unless_forced(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("mine\n", encoding="utf-8")
    refused = run_cli(["init", str(manifest)], env())
    assert refused.code == 2
    assert f"{manifest} exists" in refused.stderr and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert manifest.read_text(encoding="utf-8") == "mine\n"

    forced = run_cli(["init", "--force", "--provider", "ltx", str(manifest)], env())
    assert forced.code == 0, forced.stderr
    assert load_manifest(manifest).provider.name == "ltx"


def test_init_in_a_folder_writes_manifest_yaml_and_names_the_batch(tmp_path: Path) -> None:
    result = run_cli(["init", str(tmp_path), "--name", "teasers"], env())
    assert result.code == 0, result.stderr
    assert load_manifest(tmp_path / "manifest.yaml").name == "teasers"
    bad = run_cli(["init", str(tmp_path / "other.yaml"), "--name", "two words"], env())
    assert bad.code == 2 and "--name" in bad.stderr
    assert not (tmp_path / "other.yaml").exists()


def test_schema_prints_the_json_schema_or_writes_it(tmp_path: Path) -> None:
    printed = run_cli(["schema", "--provider", "ltx"], env())
    assert printed.code == 0, printed.stderr
    schema = json.loads(printed.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    demo = yaml.safe_load((REPO / "manifests" / "demo-ltx.yaml").read_text(encoding="utf-8"))
    assert jsonschema.Draft202012Validator(schema).is_valid(demo)

    output = tmp_path / "kling.schema.json"
    written = run_cli(["schema", "--output", str(output)], env())
    assert written.code == 0 and written.stdout == ""
    assert json.loads(output.read_text(encoding="utf-8"))["title"] == "Kling batch manifest"

    markdown = run_cli(["schema", "--markdown"], env())
    committed = (REPO / "docs" / "fields-kling.md").read_text(encoding="utf-8")
    assert markdown.code == 0 and markdown.stdout == committed


def test_schema_and_init_refuse_bad_arguments(tmp_path: Path) -> None:
    assert run_cli(["schema", "--provider", "veo"], env()).code == 2
    assert run_cli(["init", "--provider", "veo", str(tmp_path / "m.yaml")], env()).code == 2
    assert not (tmp_path / "m.yaml").exists()
