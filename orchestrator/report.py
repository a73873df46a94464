"""report.json (the contract in DESIGN.md) and the short human summary printed at the end."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from orchestrator.errors import ErrorInfo
from orchestrator.ledger import ItemRecord, ItemState

#: Report statuses. "running" appears only when a batch was interrupted or stopped while tasks
#: were in flight: a rerun collects them.
STATUSES = ("succeeded", "partial", "failed", "not_run", "running")


def item_status(rec: ItemRecord) -> str:
    if rec.state is ItemState.SUCCEEDED:
        return "succeeded"
    if rec.state is ItemState.PARTIAL:
        return "partial"
    if rec.state is ItemState.FAILED:
        return "failed"
    if rec.state is ItemState.PENDING:
        return "not_run"
    if rec.state is ItemState.SUBMITTING and rec.error is not None:
        return "failed"  # create outcome unknown this run; the rerun reconciles it
    return "running"


def item_entry(rec: ItemRecord) -> dict[str, Any]:
    return {
        "id": rec.id,
        "status": item_status(rec),
        "kind": rec.kind,
        "attempts": rec.tasks_created,
        "task_id": rec.task_id,
        "external_task_id": rec.external_task_id,
        "expected_assets": rec.expected_assets,
        "assets": [
            {
                "index": a.get("index"),
                "url": a.get("url"),
                "path": a.get("path"),
                "bytes": a.get("bytes"),
                "sha256": a.get("sha256"),
            }
            for a in rec.assets
        ],
        "error": error_entry(rec.error),
    }


def error_entry(info: ErrorInfo | None) -> dict[str, Any] | None:
    if info is None:
        return None
    data = info.to_dict()
    data.pop("scope", None)
    return data


def build_report(
    *,
    batch: str,
    manifest: Path,
    item_ids: Iterable[str],
    records: Iterable[ItemRecord],
    started_at: str,
    finished_at: str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Items in manifest order (results are matched by id; the order is only for people)."""
    by_id = {r.id: r for r in records}
    items = [item_entry(by_id[i]) for i in item_ids if i in by_id]
    counts = Counter(item["status"] for item in items)
    report: dict[str, Any] = {
        "batch": batch,
        "manifest": str(manifest),
        "started_at": started_at,
        "finished_at": finished_at,
        "counts": {status: counts.get(status, 0) for status in STATUSES},
        "items": items,
    }
    if extra:
        report.update(extra)
    return report


def write_json_atomic(path: Path, data: Any) -> None:
    """Readers never see a half-written report: write a temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, ensure_ascii=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def summary(report: dict[str, Any], *, report_path: Path, stop: ErrorInfo | None) -> str:
    counts = report["counts"]
    total = len(report["items"])
    shown = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    lines = [f"Batch '{report['batch']}': {total} items: {shown or 'nothing to do'}."]
    if stop is not None:
        code = f" (code {stop.code})" if stop.code is not None else ""
        lines.append(f"STOPPED by an account-level error: {stop.category}{code}: {stop.message}")
        lines.append(f"  What to do: {stop.hint}")
        lines.append("  Rerun the same command afterwards: finished items are not resubmitted.")
    if report.get("deadline_reached"):
        lines.append(
            f"Deadline reached: nothing was submitted after it; {counts['not_run']} items not "
            "run. Rerun to continue."
        )
    conc = report.get("concurrency") or {}
    if conc.get("over_capacity_cuts"):
        lines.append(
            f"The account refused concurrency {conc['configured']} (Kling 1303): it sustained "
            f"{conc['sustained']} tasks at once; consider limits.concurrency: {conc['sustained']}."
        )
    if report.get("retries_denied"):
        lines.append(
            f"The provider kept failing: {report['retries_denied']} retries were skipped to "
            "avoid a storm (retry budget). Rerun later: those items are retried."
        )
    problems = [i for i in report["items"] if i["status"] in ("failed", "partial")]
    for item in problems[:20]:
        err = item["error"] or {}
        code = f" code {err['code']}" if err.get("code") is not None else ""
        lines.append(
            f"  {item['status']:7} {item['id']}: {err.get('category', '?')}{code}: "
            f"{err.get('message', '')}"
        )
        if err.get("hint"):
            lines.append(f"          -> {err['hint']}")
    if len(problems) > 20:
        lines.append(f"  ... and {len(problems) - 20} more: see the report.")
    lines.append(f"Report: {report_path}")
    return "\n".join(lines)
