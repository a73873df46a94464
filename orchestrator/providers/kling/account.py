"""Kling's account costs (``GET /account/costs``): whether any resource pack has units left.

The answer lists the account's packs bought within the asked window (Kling filters them by
purchase time, so the window is wide: a pack bought a year ago may still be online). The
decision is a pure function of that ``data``: a warning only when the answer plainly says
nothing is left; an answer it cannot read is "could not tell", never a warning.
"""

from __future__ import annotations

from typing import Final

from orchestrator.providers.kling.codes import NO_PACK_WARNING, parse_code

COSTS_PATH: Final = "account/costs"
#: Packs bought this long ago may still be online (yearly packs, and some slack).
WINDOW_DAYS: Final = 400
#: A pack that can pay for tasks now.
ONLINE: Final = "online"


def costs_params(now: float) -> dict[str, str]:
    """The query of a costs request at Unix time ``now``: ``WINDOW_DAYS`` back to now, in ms."""
    end = int(now * 1000)
    start = end - WINDOW_DAYS * 86_400_000
    return {"start_time": str(start), "end_time": str(end)}


#: The statuses Kling documents for a pack (online, used up, expired, not yet online).
_KNOWN_STATUSES: Final = frozenset({ONLINE, "runOut", "expired", "toBeOnline"})


def _can_pay(pack: dict[str, object]) -> bool | None:
    """Whether a pack can pay for a task now; None when its entry cannot be read."""
    status = pack.get("status")
    if status not in _KNOWN_STATUSES:
        return None
    if status != ONLINE:
        return False
    remaining = pack.get("remaining_quantity")
    if isinstance(remaining, bool) or not isinstance(remaining, int | float):
        return None
    return remaining > 0


def pack_warning(data: object) -> str | None:
    """NO_PACK_WARNING when the costs answer's ``data`` lists no pack, or none online with
    units remaining; None when some pack can pay or the answer cannot be read."""
    if not isinstance(data, dict):
        return None
    inner_code = data.get("code")
    if inner_code is not None and parse_code(inner_code) != 0:
        return None
    packs = data.get("resource_pack_subscribe_infos")
    if packs is None:
        # The live answer of an account without packs: {"code": 0, "msg": "success"}.
        return NO_PACK_WARNING
    if not isinstance(packs, list):
        return None
    for pack in packs:
        verdict = _can_pay(pack) if isinstance(pack, dict) else None
        if verdict is not False:
            return None  # a pack that pays, or one we cannot read: no warning
    return NO_PACK_WARNING
