"""An LTX account that outlives its process: committed jobs in an append-only JSON-lines file.

With ``LtxSimConfig.state_file`` set, every committed job is appended as one line, flushed and
fsynced BEFORE its submit is answered, and taken back when a simulator starts on the same file:
jobs go on by wall-clock time from their ``created_at`` (one that ended meanwhile is completed,
or expired once ``result_ttl`` has passed). The port last listened on is kept too, so a
restarted simulator listens there again and the video URLs it handed out keep working.

The file is the Kling simulator's journal format (:class:`orchestrator.simulator.journal.Journal`:
append, fsync, a torn last line cut off on load), with LTX jobs as its entries::

    {"task": {"provider": "ltx", "id": ..., "spec": {...}, "created_at_ms": ..., "run": ...,
              "outcome": ..., "error_type": ..., "error_message": ..., "usd": ...}}
    {"port": 50123}

An entry that is not an LTX job, or does not parse, is skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict
from typing import Any

from orchestrator.providers.ltx.simulator.state import JobRecord
from orchestrator.providers.ltx.simulator.validation import ENDPOINTS, JobSpec
from orchestrator.simulator.journal import Journal, Loaded

__all__ = ["Journal", "Loaded", "job_from_json", "job_to_json", "revive"]

PROVIDER = "ltx"


def job_to_json(job: JobRecord) -> dict[str, Any]:
    return {
        "provider": PROVIDER,
        "id": job.job_id,
        "spec": asdict(job.spec),
        "created_at_ms": job.created_at_ms,
        "run": job.run,
        "outcome": job.outcome,
        "error_type": job.error_type,
        "error_message": job.error_message,
        "usd": job.usd,
    }


def job_from_json(data: Mapping[str, Any], *, clock_now: float, wall_now: float) -> JobRecord:
    """The job a journal entry describes, its lifecycle placed on the simulator's clock from its
    wall-clock ``created_at``. Raises (KeyError, TypeError, ValueError) when malformed."""
    if data.get("provider") != PROVIDER:
        raise ValueError("not an LTX job")
    spec = data["spec"]
    endpoint = str(spec["endpoint"])
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}")
    camera_motion = spec.get("camera_motion")
    created_at_ms = int(data["created_at_ms"])
    return JobRecord(
        job_id=str(data["id"]),
        spec=JobSpec(
            endpoint=endpoint,
            model=str(spec["model"]),
            prompt=str(spec["prompt"]),
            duration=int(spec["duration"]),
            resolution=str(spec["resolution"]),
            fps=int(spec.get("fps", 24)),
            generate_audio=bool(spec.get("generate_audio", True)),
            camera_motion=None if camera_motion is None else str(camera_motion),
            last_frame=bool(spec.get("last_frame", False)),
        ),
        created_at_ms=created_at_ms,
        started=clock_now - (wall_now - created_at_ms / 1000),
        run=float(data["run"]),
        outcome=str(data["outcome"]),
        error_type=str(data.get("error_type", "")),
        error_message=str(data.get("error_message", "")),
        usd=float(data.get("usd", 0.0)),
    )


def revive(
    entries: Iterable[Mapping[str, Any]], *, clock_now: float, wall_now: float
) -> Iterator[JobRecord]:
    """The jobs among a journal's entries; the others (damaged, another simulator's) skipped."""
    for entry in entries:
        try:
            yield job_from_json(entry, clock_now=clock_now, wall_now=wall_now)
        except (KeyError, TypeError, ValueError):
            continue
