"""How a task looks on the wire: the legacy task object, and API 2.0's.

Both are rendered from the same :class:`~orchestrator.simulator.state.TaskRecord` at the moment
of the read (its status follows the clock), as Kling gives them: video ``duration`` "5.1" for a
5 s request, a ``watermark_url`` beside every ``url``, and the units charged once the task has
ended (``final_unit_deduction`` on /v1, ``billing`` on API 2.0). What a failed task reports: 0
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

#: API 2.0 spells the legacy "succeed" in full.
V2_STATUS: Final = {"succeed": "succeeded"}
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


def v2_created(task: TaskRecord, now: float) -> dict[str, Any]:
    """What an API 2.0 create answers in ``data``."""
    status = task.status(now)
    data: dict[str, Any] = {
        "id": task.task_id,
        "status": V2_STATUS.get(status, status),
        "create_time": task.created_at_ms,
        "update_time": _updated_ms(task, status),
    }
    if task.spec.external_task_id is not None:
        data["external_id"] = task.spec.external_task_id
    return data


def v2_task(task: TaskRecord, now: float, base_url: str, sign: Signer = None) -> dict[str, Any]:
    """The task object of API 2.0 (``GET /tasks``, ``POST /tasks``)."""
    status = task.status(now)
    wire = v2_created(task, now)
    wire["message"] = task.failure_message if status == "failed" else ""
    media = task.family.media
    outputs = []
    if status == "succeed":
        for asset in _assets(task, base_url, sign):
            # API 2.0 names every output by an id: a video's own, an image's index.
            ident = asset.pop("id") if media == "video" else asset.pop("index")
            outputs.append({"type": media, "id": str(ident), **asset})
    wire["outputs"] = outputs
    charged = task.charged(now)
    wire["billing"] = (
        [{"charge_type": "unit", "amount": units_text(charged), "package_type": media}]
        if charged is not None
        else []
    )
    return wire
