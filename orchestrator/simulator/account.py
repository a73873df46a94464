"""The account's resource packs, as ``GET /account/costs?start_time=&end_time=`` reports them.

By default the account holds one online video pack, bought some time before the simulator
started. Its remaining units fall as tasks are committed (each holds its INDICATIVE price from
the catalogue; a failed task gives its units back), and it reads ``runOut`` with nothing left
once the billing stop is reached (``SimConfig.billing_after``, a count of tasks rather than of
units: that is what makes creates answer 1102). Kling filters packs by purchase time, so a
window that does not reach back to the purchase shows none: a client must ask wide (400 days).
With ``SimConfig.resource_packs`` off the answer is the live body of an account without packs.
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qs

from orchestrator.simulator.fields import value_is_invalid
from orchestrator.simulator.state import PackUsage
from orchestrator.simulator.wire import invalid

DAY_MS: Final = 86_400_000
#: The simulated video pack: its size, and when it was bought and expires around the
#: simulator's start (days before and after).
PACK_UNITS: Final = 100_000
PACK_ID: Final = "sim-video-pack-0001"
PACK_NAME: Final = "Video generation pack (simulator)"
PURCHASED_DAYS_AGO: Final = 30
VALID_DAYS: Final = 365


def window(query: str) -> tuple[int, int]:
    """``start_time`` and ``end_time`` (Unix ms), both required."""
    params = parse_qs(query)
    values: list[int] = []
    for key in ("start_time", "end_time"):
        raw = params.get(key)
        if not raw:
            raise invalid("start_time and end_time are required (Unix ms)")
        if not raw[0].isascii() or not raw[0].isdigit():
            raise invalid(value_is_invalid(key, raw[0]))
        values.append(int(raw[0]))
    if values[0] > values[1]:
        raise invalid("start_time must not be after end_time")
    return values[0], values[1]


def _number(units: float) -> int | float:
    return int(units) if units == int(units) else round(units, 4)


def costs(usage: PackUsage, *, purchased_ms: int, start_ms: int, end_ms: int) -> dict[str, Any]:
    """The ``data`` of an account with the simulated pack, for the window asked."""
    data: dict[str, Any] = {"code": 0, "msg": "success"}
    if not start_ms <= purchased_ms <= end_ms:
        return data
    remaining = 0.0 if usage.exhausted else max(0.0, PACK_UNITS - usage.units)
    data["resource_pack_subscribe_infos"] = [
        {
            "resource_pack_name": PACK_NAME,
            "resource_pack_id": PACK_ID,
            "resource_pack_type": "video",
            "total_quantity": PACK_UNITS,
            "remaining_quantity": _number(remaining),
            "purchase_time": purchased_ms,
            "effective_time": purchased_ms,
            "invalid_time": purchased_ms + VALID_DAYS * DAY_MS,
            "status": "online" if remaining > 0 else "runOut",
        }
    ]
    return data


#: What an account without packs answers (live body: no request_id, no pack list).
NO_PACKS: Final = {"code": 0, "message": "SUCCEED", "data": {"code": 0, "msg": "success"}}
