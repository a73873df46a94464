"""How a task looks on the wire: the legacy task object.

It is rendered from a :class:`~orchestrator.simulator.state.TaskRecord` at the moment of the
read (its status follows the clock), as Kling gives it: video ``duration`` "5.1" for a 5 s
request, a ``watermark_url`` beside every ``url``, and the units charged once the task has
ended (``final_unit_deduction``). What a failed task reports: 0
units charged (a failed generation is not charged; Kling's docs say nothing of it, so a client
must not rely on the field at all: it is absent whenever the catalogue has no price).

``sign`` maps an asset path to the query string that signs it (see
:class:`~orchestrator.simulator.assets.AssetSigner`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from orchestrator.simulator.state import SUBMITTED_SHARE, TaskRecord

Signer = Callable[[str], str] | None

#: Whether the answer's assets carry Kling's watermark (we never ask for one).
_WATERMARK_INFO: Final = {"enabled": False}


def units_text(units: float) -> str:
    """Units as Kling writes them, a string number: "2.5", "3", "0"."""
    text = f"{round(units, 4):f}".rstrip("0").rstrip(".")
    return text or "0"


def _updated_ms(task: TaskRecord, status: str) -> int:
    if status == "submitted":
        changed = 0.0
    elif status == "processing":
        changed = SUBMITTED_SHARE * task.duration
    else:
        changed = task.duration
    return task.created_at_ms + int(changed * 1000)


def _assets(task: TaskRecord, base_url: str, sign: Signer) -> list[dict[str, Any]]:
    """Each asset's ``url`` and ``watermark_url`` (plus its video id and duration)."""
    assets: list[dict[str, Any]] = []
    for index in range(task.assets):
        asset: dict[str, Any] = {
            "url": task.asset_url(base_url, index, sign),
            "watermark_url": task.asset_url(base_url, index, sign, watermarked=True),
        }
        if task.family.media == "video":
            asset = {"id": task.asset_ids[index], **asset,
                     "duration": task.spec.video_duration}
        else:
            asset = {"index": index, **asset}
        assets.append(asset)
    return assets


def legacy_task(task: TaskRecord, now: float, base_url: str, sign: Signer = None) -> dict[str, Any]:
    """The task object of the legacy ``/v1`` API."""
    status = task.status(now)
    task_info = {}
    if task.spec.external_task_id is not None:
        task_info["external_task_id"] = task.spec.external_task_id
    wire: dict[str, Any] = {
        "task_id": task.task_id,
        "task_status": status,
        "task_status_msg": task.failure_message if status == "failed" else "",
        "task_info": task_info,
        "created_at": task.created_at_ms,
        "updated_at": _updated_ms(task, status),
        "watermark_info": dict(_WATERMARK_INFO),
    }
    charged = task.charged(now)
    if charged is not None:
        wire["final_unit_deduction"] = units_text(charged)
    if status == "succeed":
        wire["task_result"] = {f"{task.family.media}s": _assets(task, base_url, sign)}
    return wire
