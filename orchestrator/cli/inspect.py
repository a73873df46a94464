"""The commands that read and send nothing: ``validate``, ``status``, ``state check`` and
``state recover``."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import TextIO

from orchestrator import (
    logs,
    state_check,
    status,
)
from orchestrator.cli import common
from orchestrator.cli.common import (
    Exit,
    Usage,
    cannot,
    credentials,
    load,
    recovery_hint,
    state_of,
)
from orchestrator.ledger import LedgerError, LedgerLocked, LedgerUnreadable
from orchestrator.report import PROBLEM_STATUSES, counts_text
from orchestrator.state_location import locate


def cmd_validate(args: argparse.Namespace, err: TextIO, out: TextIO) -> Exit:
    manifest = load(args.manifest, err)
    auth = credentials(manifest, lambda secret: None)
    kinds: dict[str, int] = {}
    for item in manifest.items:
        kinds[str(item.request.kind)] = kinds.get(str(item.request.kind), 0) + 1
    detail = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    out.write(
        f"{args.manifest}: OK: batch '{manifest.name}', {len(manifest.items)} items ({detail}).\n"
        f"It will send to {common.destination(manifest, auth)}.\n"
    )
    for warning in manifest.warnings:
        err.write(f"{args.manifest}: warning: {warning}\n")
    if args.estimate:
        out.write(manifest.pricing.estimate_text(manifest) + "\n")
    return Exit.OK


def cmd_status(args: argparse.Namespace, out: TextIO) -> Exit:
    manifest = load(args.manifest, sys.stderr)
    state = state_of(args, manifest)
    try:
        records = status.load_records(state, manifest.name)
    except FileNotFoundError:
        records = []  # nothing has run yet: every item is pending
    except LedgerUnreadable as exc:
        raise Usage(f"{exc} {recovery_hint(args.manifest, args.state)}") from None
    except LedgerError as exc:
        raise Usage(str(exc)) from None
    rows = status.status_rows(records, [item.id for item in manifest.items])
    # What a ledger of an older version may hold of an echoed credential is not shown either.
    redactor = logs.Redactor()
    with contextlib.suppress(ValueError):
        common.plugin_of(manifest).credentials(os.environ, redactor.add)
    rows = redactor.clean(rows)
    statuses: set[str] | None = set(args.status) if args.status else None
    if args.failed:
        statuses = (statuses or set()) | set(PROBLEM_STATUSES)
    render = status.render_status_json if args.json else status.render_status_text
    out.write(
        render(rows, batch=manifest.name, state_path=state.describe(), statuses=statuses) + "\n"
    )
    return Exit.OK


def cmd_migrate(args: argparse.Namespace, out: TextIO) -> Exit:
    """``state migrate --from FILE --to URL``."""
    target = locate(args.target, args.source)
    if target.url is None:
        raise Usage(f"--to {args.target}: give a postgresql:// URL. Nothing was moved.")
    try:
        from orchestrator.state_migrate import migrate
    except ImportError:
        raise Usage(
            "a PostgreSQL ledger needs the PostgreSQL driver: pip install "
            "'kling-batch-orchestrator[postgres]'. Nothing was moved."
        ) from None
    try:
        done = migrate(args.source, target.url)
    except LedgerLocked as exc:
        sys.stderr.write(f"Refused: {exc}\n")
        return Exit.LOCKED
    except LedgerError as exc:
        raise Usage(str(exc)) from None
    out.write(
        f"Moved batch '{done.batch}' into {target.describe()}: {done.items} items, "
        f"{done.attempts} attempts, {done.runs} runs. The file is kept as {done.moved_to}.\n"
        f"Run it with --state {target.describe()} (or ORCHESTRATOR_STATE); the password, "
        "if any, as you gave it.\n"
    )
    return Exit.OK


def cmd_state(args: argparse.Namespace, out: TextIO) -> Exit:
    if args.state_command == "migrate":
        return cmd_migrate(args, out)
    manifest = load(args.manifest, sys.stderr)
    state = state_of(args, manifest)
    if state.path is None:
        raise Usage(
            f"state {args.state_command} reads a SQLite state file; {state.describe()} is a "
            "PostgreSQL database, which keeps its own integrity: `python -m orchestrator status "
            f"{args.manifest}` shows what it holds."
        )
    state_path = state.path
    ids = [item.id for item in manifest.items]
    if args.state_command == "check":
        found = state_check.diagnose(state_path, manifest.name, manifest.output_dir, ids)
        moved: tuple[tuple[Path, Path], ...] = ()
    else:
        try:
            done = state_check.recover(state_path, manifest.name, manifest.output_dir, ids)
        except state_check.RecoverRefused as exc:
            sys.stderr.write(f"Refused: {exc}\n")
            return Exit.LOCKED if exc.locked else Exit.INVALID
        except OSError as exc:
            raise cannot("move the state file aside", state_path, exc) from None
        found, moved = done.diagnosis, done.moved
    if args.json:
        data = found.to_json()
        if args.state_command == "recover":
            data["moved"] = [{"from": str(a), "to": str(b)} for a, b in moved]
        out.write(json.dumps(data, indent=2) + "\n")
    else:
        out.write(state_check.render(found) + "\n")
        if args.state_command == "recover":
            if moved:
                out.write("Moved aside (kept; delete them once the batch is whole again):\n")
                out.writelines(f"  {a} -> {b}\n" for a, b in moved)
                out.write(
                    "Run the batch again: it starts a new ledger, looks every item's tasks "
                    "up by their external ids and adopts them.\n"
                )
            else:
                out.write("Nothing to recover: the state file was left as it is.\n")
    if found.condition is state_check.Condition.OTHER_BATCH:
        return Exit.INVALID
    if args.state_command == "check" and not found.usable:
        return Exit.ITEMS_FAILED
    return Exit.OK


def cmd_dry_run(args: argparse.Namespace, out: TextIO, err: TextIO) -> Exit:
    """``run --dry-run``: what the run would do and where it would send, from the manifest,
    the environment and the state file alone; nothing is sent, nothing is written."""
    manifest = load(args.manifest, err)
    auth = credentials(manifest, lambda secret: None)
    for warning in manifest.warnings:
        err.write(f"{args.manifest}: warning: {warning}\n")
    models = Counter(
        f"{item.request.kind} {item.request.fields.get('model', '?')}" for item in manifest.items
    )
    limits = manifest.limits
    state = state_of(args, manifest)
    lines = [
        f"Dry run of batch '{manifest.name}': nothing is sent, nothing is written.",
        f"provider: {common.destination(manifest, auth)}",
        f"items: {len(manifest.items)}: "
        + ", ".join(f"{n} {what}" for what, n in sorted(models.items())),
        f"limits: concurrency {limits.concurrency}, {limits.requests_per_minute:g} creates a "
        "minute"
        + (f", max_units {limits.max_units:g}" if limits.max_units is not None else "")
        + (", deadline set" if limits.deadline is not None else ""),
        f"output: {manifest.output_dir} (state: {state.describe()})",
    ]
    try:
        records = status.load_records(state, manifest.name)
    except FileNotFoundError:
        lines.append("state: none yet: every item would be sent")
    except LedgerError as exc:
        lines.append(f"state: cannot be used as it is: {exc}")
    else:
        rows = status.status_rows(records, [item.id for item in manifest.items])
        lines.append(
            f"state: a rerun: {counts_text(status.totals(rows))} (finished items are not sent "
            "again)"
        )
    out.write("\n".join(lines) + "\n")
    out.write(manifest.pricing.estimate_text(manifest) + "\n")
    return Exit.OK
