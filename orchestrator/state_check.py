"""``state check`` and ``state recover``: what a state file holds, and how a batch goes on when
it cannot be read.

A ledger is never replaced silently: a run refuses a file it cannot read (it may be a damaged
ledger whose external ids name paid tasks, or another program's file). :func:`diagnose` says,
without writing anything and without the run lock, what the file is and what the next run
will do with it. :func:`recover` moves an unreadable file aside (kept, with its SQLite
companions, under a name that says when and why) so that the next run starts a new ledger; the
batch's identity beside its outputs (``batch.json``) then makes that run look every item's
tasks up by their external ids and adopt them before anything is created: nothing is paid
for twice.
"""

from __future__ import annotations

import enum
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import identity
from orchestrator.layout import LOCK_SUFFIX, OUTPUT_LOCK, SQLITE_SUFFIXES, state_files
from orchestrator.ledger import Ledger, LedgerError, LedgerNotStarted
from orchestrator.locks import Held, RunLock, holder

__all__ = [
    "Condition",
    "Diagnosis",
    "RecoverRefused",
    "Recovered",
    "diagnose",
    "recover",
]

#: Suffix of a file moved aside by :func:`recover`: ``<state>.unreadable-<UTC time>``.
ASIDE = ".unreadable-"


class Condition(enum.StrEnum):
    #: no state file: the batch has not run with it
    MISSING = "missing"
    #: created by a run killed (or out of space) before it recorded anything: rebuilt by a run
    PARTLY_CREATED = "partly-created"
    HEALTHY = "healthy"
    #: a readable ledger, of another batch than the manifest's
    OTHER_BATCH = "other-batch"
    #: not a ledger, a damaged one, or a file SQLite cannot open: a run refuses it
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Diagnosis:
    state: Path
    condition: Condition
    #: one line: what the file is
    summary: str
    #: what else is worth knowing (counts, a run in progress, the output folder's identity)
    details: tuple[str, ...] = ()
    #: what the next ``run`` of the manifest will do with it
    next_run: str = ""
    #: items by the state the ledger records (a healthy ledger only)
    items: dict[str, int] = field(default_factory=dict)

    @property
    def usable(self) -> bool:
        """Whether a run can go on with the file as it is."""
        return self.condition in (Condition.MISSING, Condition.PARTLY_CREATED, Condition.HEALTHY)

    def to_json(self) -> dict[str, object]:
        return {
            "state": str(self.state),
            "condition": str(self.condition),
            "usable": self.usable,
            "summary": self.summary,
            "details": list(self.details),
            "next_run": self.next_run,
            "items": self.items,
        }


def _earlier_runs(output_dir: Path) -> bool:
    """Whether the output folder shows that the batch ran there, as a run decides it."""
    return identity.shows_earlier_runs(output_dir, identity.read_identity(output_dir))


def _adoption(output_dir: Path) -> str:
    if _earlier_runs(output_dir):
        return (
            f"{output_dir} holds earlier runs of the batch: the next run starts a new ledger and "
            "looks every item's tasks up by their external ids before creating anything, "
            "adopting those that exist (nothing is paid for twice)"
        )
    return "the next run starts the batch with a new ledger"


def _open_read_only(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    db.execute("PRAGMA busy_timeout=5000")
    return db


def _damage(path: Path) -> str | None:
    """Why SQLite finds the file damaged (its quick check), or None when it reads it whole."""
    try:
        db = _open_read_only(path)
        try:
            rows = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)").fetchall()]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    if rows == ["ok"]:
        return None
    return "damaged: " + "; ".join(rows)


def _meta_and_runs(path: Path) -> tuple[dict[str, str], int | None]:
    """A ledger's meta rows, and the runs it recorded (None: a version that did not count)."""
    db = _open_read_only(path)
    try:
        meta = {str(k): str(v) for k, v in db.execute("SELECT key, value FROM meta")}
        try:
            runs: int | None = int(db.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        except sqlite3.Error:
            runs = None
        return meta, runs
    finally:
        db.close()


def _in_progress(state: Path, output_dir: Path) -> str | None:
    for lock in (state.with_name(state.name + LOCK_SUFFIX), output_dir / OUTPUT_LOCK):
        held = holder(lock)
        if held is not None:
            return f"a run of the batch is in progress{held.who}: it holds {lock}"
    return None


def diagnose(state: Path, batch: str, output_dir: Path, item_ids: Sequence[str]) -> Diagnosis:
    """What ``state`` is for the batch ``batch`` whose outputs are in ``output_dir`` and whose
    manifest lists ``item_ids``. Reads only: no file is written, no lock taken."""
    notes: list[str] = []
    running = _in_progress(state, output_dir)
    if running is not None:
        notes.append(running)
    if not state.exists():
        return Diagnosis(
            state, Condition.MISSING, f"no state file at {state}", tuple(notes),
            _adoption(output_dir),
        )
    if not state.is_file():
        return Diagnosis(
            state,
            Condition.UNREADABLE,
            f"{state} is not a file",
            tuple(notes),
            "the next run refuses it: give --state a file's path",
        )
    refused = "the next run refuses it (nothing is sent)"
    damage = _damage(state)
    try:
        owner, records = Ledger.read_only(state)
    except LedgerNotStarted:
        return Diagnosis(
            state,
            Condition.PARTLY_CREATED,
            f"{state} was only partly created (a run was killed or ran out of space while "
            "creating it): it holds nothing",
            tuple(notes),
            "the next run makes it again; " + _adoption(output_dir),
        )
    except LedgerError as exc:
        why = str(exc)
        return Diagnosis(
            state, Condition.UNREADABLE, why, tuple(notes), refused + "; " + _after_recover(state)
        )
    if damage is not None:
        return Diagnosis(
            state,
            Condition.UNREADABLE,
            f"state file {state} is a ledger of batch '{owner}', but SQLite finds it {damage}",
            tuple(notes),
            "a run may stop on it at any moment; " + _after_recover(state),
        )
    if owner != batch:
        return Diagnosis(
            state,
            Condition.OTHER_BATCH,
            f"{state} is the ledger of batch '{owner}', not of this manifest's batch '{batch}'",
            tuple(notes),
            "the next run refuses it: give this batch's state file (or none, for the default)",
        )
    meta, runs = _meta_and_runs(state)
    counts = Counter(str(rec.state) for rec in records)
    known = {rec.id for rec in records}
    listed = set(item_ids)
    version = meta.get("schema_version", "?")
    notes.append(
        f"a ledger of batch '{batch}' (schema version {version}"
        + (f", {runs} run{'s' if runs != 1 else ''} recorded" if runs is not None else "")
        + f"): {len(records)} item{'s' if len(records) != 1 else ''}"
        + (" (" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ")" if counts else "")
    )
    if listed - known:
        notes.append(f"{len(listed - known)} item(s) of the manifest not started yet")
    if known - listed:
        notes.append(f"{len(known - listed)} item(s) in the ledger no longer in the manifest")
    found = identity.read_identity(output_dir)
    next_run = "the next run resumes from it"
    if found is not None and found.ledger_id not in (None, meta.get("ledger_id")):
        was = f" ({found.state})" if found.state else ""
        notes.append(f"the output folder's last run used another state file{was}")
        next_run += (
            ", looking every item's tasks up by their external ids first (the folder's "
            "last run used another ledger)"
        )
    return Diagnosis(
        state, Condition.HEALTHY, f"{state} is a healthy ledger", tuple(notes), next_run,
        dict(counts),
    )


def _after_recover(state: Path) -> str:
    return (
        f"`state recover` moves it aside (kept as {state.name}{ASIDE}<time>) and the next "
        "run starts a new ledger that looks every item's tasks up by their external ids and "
        "adopts them instead of paying again"
    )


class RecoverRefused(Exception):
    """Nothing was moved; the message says why (``locked``: a run holds the batch)."""

    def __init__(self, message: str, *, locked: bool = False) -> None:
        super().__init__(message)
        self.locked = locked


@dataclass(frozen=True)
class Recovered:
    diagnosis: Diagnosis
    #: (from, to) for every file moved aside; empty when there was nothing to recover
    moved: tuple[tuple[Path, Path], ...] = ()


def _stamp(now: float) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))


def recover(
    state: Path,
    batch: str,
    output_dir: Path,
    item_ids: Sequence[str],
    *,
    clock: Callable[[], float] = time.time,
) -> Recovered:
    """Move an unreadable state file (and SQLite's files beside it) aside, holding both run
    locks so that no run starts meanwhile. A usable file is left alone; a ledger of another
    batch is refused. Nothing is deleted."""
    locks: list[RunLock] = []
    try:
        for lock in (output_dir / OUTPUT_LOCK, state.with_name(state.name + LOCK_SUFFIX)):
            if not lock.parent.is_dir():
                continue
            try:
                locks.append(RunLock(lock))
            except Held as exc:
                raise RecoverRefused(
                    f"a run of the batch is in progress{exc.who}: it holds {lock}. Wait for "
                    "it to finish; nothing was moved.",
                    locked=True,
                ) from None
        found = diagnose(state, batch, output_dir, item_ids)
        if found.condition is Condition.OTHER_BATCH:
            raise RecoverRefused(f"{found.summary}; it was left as it is.")
        if found.usable:
            return Recovered(found)
        stamp = _stamp(clock())
        moved: list[tuple[Path, Path]] = []
        # The companions first: a -wal left beside a new file of the same name would be
        # replayed into it.
        for path in reversed(state_files(state)[: 1 + len(SQLITE_SUFFIXES)]):
            if not os.path.lexists(path):
                continue
            suffix = path.name[len(state.name):]
            target = path.with_name(f"{state.name}{ASIDE}{stamp}{suffix}")
            n = 1
            while os.path.lexists(target):
                n += 1
                target = path.with_name(f"{state.name}{ASIDE}{stamp}.{n}{suffix}")
            os.rename(path, target)
            moved.append((path, target))
        return Recovered(found, tuple(reversed(moved)))
    finally:
        for held in locks:
            held.release()


def render(found: Diagnosis) -> str:
    lines = [f"{found.condition}: {found.summary}"]
    lines += [f"  - {note}" for note in found.details]
    if found.next_run:
        lines.append(f"Next run: {found.next_run}.")
    return "\n".join(lines)
