"""A simulator that outlives its process: committed tasks in an append-only JSON-lines file.

The demo runs the simulator inside the orchestrator's process, so a killed or interrupted demo
took its simulated account with it, and the rerun found none of the tasks it had paid for. With
``SimConfig.state_file`` set, every committed task is appended as one line, flushed and fsynced
BEFORE its create is answered (so a kill loses at most a task whose create was never answered,
which the client then finds absent and sends again), and reloaded when a simulator starts on
the same file: tasks continue their lifecycle by wall-clock time from their ``created_at``.
The port the simulator last listened on is recorded too, so that a restart can listen there
again and asset URLs handed out before the kill still work.

Lines::

    {"task": {"task_id": ..., "api": "v1", "family": "videos/text2video", "spec": {...},
              "created_at_ms": ..., "duration": ..., "outcome": ..., "failure_message": ...,
              "assets": ..., "asset_ids": [...]}}
    {"port": 50123}

API 2.0 tasks are written alike, with ``"api": "v2"`` and their API 2.0 path as the family
(``"text-to-video"``). A line written before a field existed reads with its default (a legacy
task, no mode, no price known).

A torn last line (the process died mid-write) is cut off on load; any other line that does not
parse is skipped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.providers.kling.catalogue import V1, V2
from orchestrator.simulator.api2 import V2_FAMILIES
from orchestrator.simulator.families import FAMILIES, CreateSpec, Family
from orchestrator.simulator.state import TaskRecord

__all__ = ["Journal", "Loaded", "task_from_json", "task_to_json"]


@dataclass(frozen=True)
class Loaded:
    """What a journal held: its tasks (as written) and the port last listened on."""

    tasks: tuple[Mapping[str, Any], ...]
    port: int | None


class Journal:
    """The append-only file behind a durable simulator. Safe to call from one thread at a time
    (the simulator's state lock serialises appends)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> Loaded:
        """Read every line; cut a torn last line off the file so the next append starts clean."""
        try:
            content = self.path.read_bytes()
        except FileNotFoundError:
            return Loaded((), None)
        complete = content[: content.rfind(b"\n") + 1]
        if len(complete) != len(content):
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))
        tasks: list[Mapping[str, Any]] = []
        port: int | None = None
        for line in complete.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if not isinstance(entry, dict):
                continue
            if isinstance(entry.get("task"), dict):
                tasks.append(entry["task"])
            elif type(entry.get("port")) is int and 0 < entry["port"] < 65536:
                port = entry["port"]
        return Loaded(tuple(tasks), port)

    def append(self, entry: Mapping[str, Any]) -> None:
        """One line, on disk when this returns. Raises OSError (the caller must not answer)."""
        line = json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            data = line.encode("utf-8")
            while data:
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        finally:
            os.close(fd)


#: The families of each API, by the path a journal line names.
_FAMILIES: Mapping[str, Mapping[str, Family]] = {V1: FAMILIES, V2: V2_FAMILIES}


def task_to_json(task: TaskRecord) -> dict[str, Any]:
    spec = task.spec
    return {
        "task_id": task.task_id,
        "api": task.family.api,
        "family": task.family.path,
        "spec": {
            "model_name": spec.model_name,
            "prompt": spec.prompt,
            "assets": spec.assets,
            "slots": spec.slots,
            "external_task_id": spec.external_task_id,
            "video_duration": spec.video_duration,
            "mode": spec.mode,
            "seconds": spec.seconds,
            "sound": spec.sound,
            "units": spec.units,
        },
        "created_at_ms": task.created_at_ms,
        "duration": task.duration,
        "outcome": task.outcome,
        "failure_message": task.failure_message,
        "assets": task.assets,
        "asset_ids": list(task.asset_ids),
    }


def _optional(value: Any, kind: type[Any]) -> Any:
    return None if value is None else kind(value)


def task_from_json(data: Mapping[str, Any], *, clock_now: float, wall_now: float) -> TaskRecord:
    """The task a journal line describes, its lifecycle placed on the simulator's clock from
    its wall-clock ``created_at``. Raises (KeyError, TypeError, ValueError) when malformed."""
    family = _FAMILIES[str(data.get("api", V1))][str(data["family"])]
    spec = data["spec"]
    created_at_ms = int(data["created_at_ms"])
    return TaskRecord(
        task_id=str(data["task_id"]),
        family=family,
        spec=CreateSpec(
            model_name=str(spec["model_name"]),
            prompt=str(spec["prompt"]),
            assets=int(spec["assets"]),
            slots=int(spec["slots"]),
            external_task_id=_optional(spec["external_task_id"], str),
            video_duration=_optional(spec["video_duration"], str),
            mode=_optional(spec.get("mode"), str),
            seconds=_optional(spec.get("seconds"), int),
            sound=bool(spec.get("sound", False)),
            units=_optional(spec.get("units"), float),
        ),
        created_at_ms=created_at_ms,
        started=clock_now - (wall_now - created_at_ms / 1000),
        duration=float(data["duration"]),
        outcome=str(data["outcome"]),
        failure_message=str(data["failure_message"]),
        assets=int(data["assets"]),
        asset_ids=tuple(str(i) for i in data["asset_ids"]),
    )
