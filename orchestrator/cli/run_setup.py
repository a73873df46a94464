"""The checks a run makes before anything is sent: its own files apart from the items'
folders, and whether the batch ran before without this state file (adopt its tasks, or refuse
to pay again where they cannot be looked up)."""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator import (
    layout,
)
from orchestrator.cli.common import Usage
from orchestrator.config import Manifest
from orchestrator.engine import IN_FLIGHT_TIMEOUTS
from orchestrator.identity import OutputDir

if TYPE_CHECKING:
    from orchestrator.state_location import AnyLedger


def check_own_files(manifest: Manifest, state_path: Path | None, report_path: Path) -> None:
    """The files of ``--state`` (None: the ledger is in a database) and ``--report`` must not
    take the place of an item's folder in output.dir (nor of a directory, nor of each other):
    refused before anything is created or sent. The default names are reserved by the
    manifest's id rule."""
    state_files = layout.state_files(state_path) if state_path is not None else []
    own = [
        *(("--state", p) for p in state_files),
        *(("--report", p) for p in layout.report_files(report_path)),
    ]
    for flag, path in own:
        if path.is_dir():
            raise Usage(f"{flag}: {path} is a directory; give a file path. Nothing was sent.")
    clash = layout.item_folder_clash(
        manifest.output_dir, (p for _, p in own), (item.id for item in manifest.items)
    )
    if clash is not None:
        path, item_id = clash
        flag = next(f for f, p in own if p == path)
        raise Usage(
            f"{flag}: {path} would be in the folder of item '{item_id}' "
            f"({manifest.output_dir / item_id}), where that item's files are downloaded; "
            "put it outside the item folders. Nothing was sent."
        )
    resolved = {p.resolve() for p in state_files}
    for path in layout.report_files(report_path):
        if path.resolve() in resolved:
            raise Usage(
                f"--report: {path} would overwrite the state file or one of its companions "
                f"({state_path}); choose another path. Nothing was sent."
            )


def settled_at(output: OutputDir, manifest: Manifest) -> float | None:
    """When no create an earlier (killed) run had in flight can still commit: twice the client
    timeout after it last wrote, as for a create this run lost the answer to."""
    last = output.last_activity()
    if last is None:
        return None
    return last + IN_FLIGHT_TIMEOUTS * manifest.provider.timeout + manifest.retry.lookup_grace


def adopting(output: OutputDir, ledger: AnyLedger) -> bool:
    """Whether the batch ran before without this ledger: its items are then looked up by their
    external ids before anything is created (nothing is paid for twice)."""
    known = output.found
    counted = len(ledger.runs())  # the runs this ledger recorded before this one
    # A ledger that existed before this run, with no identity beside the outputs to say
    # otherwise (one written by an older version), is the batch's history.
    other = ledger.created or (
        known is not None
        and (
            known.ledger_id != ledger.ledger_id
            or counted < known.runs  # the same ledger, but it lost writes (its -wal, say)
        )
    )
    return output.earlier_runs() and other


def adoption_note(output: OutputDir, state_path: Path | str) -> str:
    known = output.found
    before = f" (it used {known.state})" if known is not None and known.state else ""
    return (
        f"Note: {output.directory} holds earlier runs of this batch, but the state file "
        f"{state_path} does not know them{before}: every item is looked up by its external id "
        "before anything is sent, so no task is paid for twice.\n"
    )


def _with_results(output_dir: Path, item_ids: Sequence[str]) -> list[str]:
    """The items whose folder in ``output_dir`` holds a file: results of an earlier run."""
    found = []
    for item_id in item_ids:
        with contextlib.suppress(OSError):
            if any(entry.is_file() for entry in os.scandir(output_dir / item_id)):
                found.append(item_id)
    return found


def refuse_new_batch(manifest: Manifest, state_path: Path | str) -> str:
    """Why a run is refused over earlier runs it cannot adopt: the items it would pay again."""
    ids = _with_results(manifest.output_dir, [item.id for item in manifest.items])
    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
    paid = (
        f"{len(ids)} item{'s' if len(ids) != 1 else ''} with results there ({shown}) and every "
        "other item whose task an earlier run created"
        if ids
        else "every item whose task an earlier run created"
    )
    return (
        f"{manifest.output_dir} holds earlier runs of batch '{manifest.name}', but the state "
        f"file {state_path} does not know them, and this provider cannot look tasks up to "
        f"adopt them: starting over would pay again for {paid}. Restore the state file the "
        "earlier runs used (or give it with --state), or rerun with --new-batch to start "
        "afresh and pay again. Nothing was sent."
    )


def check_chosen_items(manifest: Manifest, args: argparse.Namespace) -> None:
    """``--only`` and ``--retry-failed`` name items of the manifest; ``--force`` goes with
    ``--retry-failed``. Refused before anything is sent."""
    known = {item.id for item in manifest.items}
    for flag, ids in (("--only", args.only), ("--retry-failed", args.retry_failed)):
        unknown = [i for i in ids or () if i not in known]
        if unknown:
            shown = ", ".join(repr(i) for i in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise Usage(
                f"{flag}: no item {shown}{more} in {manifest.path} (ids are matched exactly); "
                "nothing was sent."
            )
    if args.force and args.retry_failed is None:
        raise Usage("--force goes with --retry-failed (it allows one attempt past "
                    "retry.max_attempts); nothing was sent.")
