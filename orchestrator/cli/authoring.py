"""The commands that help write a manifest: ``schema`` (its JSON Schema, or the field reference
rendered from it) and ``init`` (a starter manifest and its schema beside it). They read and send
nothing."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import TextIO

from orchestrator.cli.common import Exit, Usage
from orchestrator.cli.parser import program_name
from orchestrator.config.field_docs import field_reference
from orchestrator.config.json_schema import manifest_schema, schema_text
from orchestrator.config.sections import batch_name_problem
from orchestrator.config.starter import schema_file_name, starter_manifest
from orchestrator.providers import registry

#: The manifest ``init`` writes when it is given no path.
DEFAULT_MANIFEST = "manifest.yaml"
#: The batch name of a manifest whose file name cannot be one.
DEFAULT_NAME = "my-batch"


def cmd_schema(args: argparse.Namespace, out: TextIO) -> Exit:
    if args.markdown:
        text = field_reference(manifest_schema(args.provider))
    else:
        text = schema_text(args.provider)
    if args.output is None:
        out.write(text)
    else:
        _write(args.output, text)
    return Exit.OK


def cmd_init(args: argparse.Namespace, out: TextIO) -> Exit:
    path: Path = args.path
    if path.is_dir():
        path = path / DEFAULT_MANIFEST
    if path.exists() and not args.force:
        raise _exists(path)
    name = args.name if args.name is not None else _name_of(path)
    problem = batch_name_problem(name)
    if problem is not None:
        raise Usage(f"--name {name!r}: {problem}")
    commands = program_name()
    shown = shlex.quote(path.name)
    schema_path = path.parent / schema_file_name(args.provider)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise Usage(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    # Always this version's: the manifest's first line points at it.
    _write(schema_path, schema_text(args.provider))
    manifest = starter_manifest(args.provider, name=name, commands=commands, file_name=shown)
    _write(path, manifest, replace=args.force)
    plugin = registry.plugin(args.provider)
    quoted = shlex.quote(str(path))
    out.write(
        f"Wrote {path} (batch '{name}' for {plugin.title}: example items, every key "
        f"explained) and {schema_path} beside it (its JSON Schema: editors check the manifest "
        "as you type).\n"
        "Next:\n"
        f"  1. {plugin.credentials_help}\n"
        f"  2. edit the items in {path}\n"
        f"  3. {commands} validate {quoted}\n"
        f"  4. {commands} run {quoted} --dry-run    (what it would send, and where)\n"
        f"  5. {commands} run {quoted}\n"
    )
    return Exit.OK


def _name_of(path: Path) -> str:
    """The batch name a manifest's file name gives, if it can be one."""
    stem = path.stem
    if path.name == DEFAULT_MANIFEST or batch_name_problem(stem) is not None:
        return DEFAULT_NAME
    return stem


def _exists(path: Path) -> Usage:
    return Usage(
        f"{path} exists: init does not overwrite a manifest. Give another path, or --force to "
        "replace it."
    )


def _write(path: Path, text: str, *, replace: bool = True) -> None:
    """Write a file the user reads and edits (with the umask's permissions, not atomically:
    nothing depends on it whole); ``replace``: over an existing one."""
    try:
        with path.open("w" if replace else "x", encoding="utf-8") as file:
            file.write(text)
    except FileExistsError:
        raise _exists(path) from None
    except OSError as exc:
        raise Usage(f"cannot write {path}: {exc.strerror or exc}") from None
