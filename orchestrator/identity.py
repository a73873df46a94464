"""A batch's identity, kept beside its outputs so that it outlives its state file.

Two things make a batch recognisable whatever happens to the ledger:

- :func:`external_task_id`: each attempt's id is derived from the batch's name, the item, the
  fingerprint of what is sent and the attempt's number among those of that fingerprint. A lost,
  emptied or replaced ledger sends the same ids again; a changed request gets new ones.
- ``<output.dir>/batch.json`` (:class:`OutputDir`): which batch owns the folder, when it first
  ran, and the ledger its last run used. A run that opens the folder with another ledger (a new
  state file, ``--state`` elsewhere) knows the batch ran before without it, and looks every
  item's ids up before creating anything (the engine's adoption); a manifest of another batch
  is refused, naming both.

``<output.dir>/batch.lock`` is the folder's run lock (``flock``): two runs never write into one
output folder, wherever their state files are. A lock file removed while a run holds it is
noticed (:meth:`OutputDir.still_held`): the run takes it again, or stops when another run
already has.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from orchestrator.atomic_files import atomic_file, remove_leftovers
from orchestrator.layout import IDENTITY_FILE, OUTPUT_LOCK
from orchestrator.locks import Held, RunLock

#: Hex digits of the digest in an external id: with the prefix and the attempt number the id
#: stays about 26 characters, as Kling's examples are.
_ID_DIGITS = 20


def external_task_id(batch: str, item_id: str, fingerprint: str, seq: int) -> str:
    """``orc-<digest>-<seq>``: the same for the same (batch, item, request, attempt number of
    that request) on every machine and in every ledger."""
    digest = hashlib.sha256(f"{batch}\0{item_id}\0{fingerprint}".encode()).hexdigest()
    return f"orc-{digest[:_ID_DIGITS]}-{seq}"


class OutputRefused(Exception):
    """The output folder belongs to another batch: nothing may be written into it."""


class OutputLocked(Exception):
    """Another run is writing into the output folder."""


@dataclass(frozen=True)
class Identity:
    """What ``batch.json`` says."""

    batch: str
    #: when a run of the batch first started here (Unix time): no create of the batch is older
    first_run_at: float
    #: the ledger the last run used (its random id), and where it was
    ledger_id: str | None = None
    state: str | None = None
    runs: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "first_run_at": self.first_run_at,
            "ledger_id": self.ledger_id,
            "state": self.state,
            "runs": self.runs,
        }


def _read(path: Path) -> Identity | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Identity(
            batch=str(data["batch"]),
            first_run_at=float(data["first_run_at"]),
            ledger_id=data.get("ledger_id"),
            state=data.get("state"),
            runs=int(data.get("runs", 0)),
        )
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None  # damaged: the outputs beside it still say the batch ran (see earlier_runs)


def read_identity(directory: Path) -> Identity | None:
    """What ``batch.json`` in ``directory`` says, without its lock; None when it is missing or
    cannot be read."""
    return _read(directory / IDENTITY_FILE)


def shows_earlier_runs(directory: Path, found: Identity | None) -> bool:
    """Whether ``directory`` shows runs of its batch: its identity ``found`` there, or outputs a
    run leaves (a report, logs) when the identity was lost with the ledger."""
    if found is not None and found.runs > 0:
        return True
    return any((directory / name).exists() for name in ("report.json", "results.jsonl", "logs"))


def _write(path: Path, identity: Identity) -> None:
    with atomic_file(path) as fh:
        json.dump(identity.to_json(), fh, indent=2)
        fh.write("\n")


class OutputDir:
    """The output folder of one run: its lock held, its identity read and kept up to date."""

    def __init__(self, directory: Path, batch: str, *, clock: Any = time.time) -> None:
        self.directory = directory
        self.batch = batch
        self._clock = clock
        self._lock_path = directory / OUTPUT_LOCK
        self._path = directory / IDENTITY_FILE
        directory.mkdir(parents=True, exist_ok=True)
        try:
            self._lock = RunLock(self._lock_path)
        except Held as exc:
            raise OutputLocked(
                f"another run is writing into {directory}{exc.who}: it holds {self._lock_path}. "
                "Wait for it to finish; two runs writing into one folder are refused so that "
                "nothing is submitted twice."
            ) from None
        try:
            found = _read(self._path)
            if found is not None and found.batch != batch:
                raise OutputRefused(
                    f"{directory} holds the outputs of batch '{found.batch}' ({self._path}); "
                    f"this manifest is batch '{batch}': give it its own output.dir (or --state "
                    "and --report elsewhere will not do: the item folders would mix). Nothing "
                    "was sent."
                )
            self.found = found
        except BaseException:
            self.close()
            raise

    def earlier_runs(self) -> bool:
        """Whether the folder shows runs of this batch (see :func:`shows_earlier_runs`)."""
        return shows_earlier_runs(self.directory, self.found)

    def first_run_at(self) -> float | None:
        """When the batch first ran here, as well as the folder can tell (None: unknown)."""
        if self.found is not None:
            return self.found.first_run_at
        times = []
        logs = self.directory / "logs"
        with contextlib.suppress(OSError):
            times += [entry.stat().st_mtime for entry in os.scandir(logs) if entry.is_file()]
        with contextlib.suppress(OSError):
            times.append((self.directory / "report.json").stat().st_mtime)
        # A file is written after the run it belongs to started: the oldest is an upper
        # bound only, so an hour of margin goes with it.
        return min(times) - 3600 if times else None

    def last_activity(self) -> float | None:
        """When an earlier run last wrote here (its newest log file): a create it had in flight
        when it was killed may commit until some time after that."""
        times = []
        with contextlib.suppress(OSError):
            times += [e.stat().st_mtime for e in os.scandir(self.directory / "logs") if e.is_file()]
        return max(times) if times else None

    def starting(
        self, ledger_id: str, state: Path | str, *, runs: int | None = None
    ) -> Identity:
        """Record that a run starts with this ledger; returns the identity written. ``runs``:
        the runs before this one the folder counts from now on (default: those it counted)."""
        now = self._clock()
        previous = self.found or Identity(self.batch, first_run_at=now)
        before = previous.runs if runs is None else runs
        current = replace(
            previous,
            ledger_id=ledger_id,
            state=str(state.resolve()) if isinstance(state, Path) else state,
            runs=before + 1,
        )
        # The folder's lock is held: no other writer of batch.json runs, so what a killed one
        # left is garbage.
        remove_leftovers(self.directory, [IDENTITY_FILE])
        _write(self._path, current)
        return current

    def still_held(self) -> bool:
        """Whether the folder's lock is still this run's (see :class:`RunLock`)."""
        return self._lock.still_held()

    def close(self) -> None:
        self._lock.release()
