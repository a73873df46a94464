"""The account check before a batch: GET /account/costs, a warning only when no pack can pay."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from orchestrator.providers.kling.account import pack_warning
from orchestrator.providers.kling.codes import NO_PACK_WARNING
from tests.test_kling_provider import NOW, Answer, Server, fail, ok, provider_for

DAY_MS = 86_400_000


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def pack(status: str = "online", remaining: object = 100, **extra: Any) -> dict[str, Any]:
    return {"resource_pack_name": "Video pack", "resource_pack_id": "p1",
            "resource_pack_type": "video", "total_quantity": 1000,
            "remaining_quantity": remaining, "purchase_time": NOW * 1000 - 30 * DAY_MS,
            "effective_time": NOW * 1000 - 30 * DAY_MS, "invalid_time": NOW * 1000 + DAY_MS,
            "status": status, **extra}


def costs(*packs: object) -> dict[str, Any]:
    return {"code": 0, "msg": "success", "resource_pack_subscribe_infos": list(packs)}


@pytest.mark.anyio
async def test_an_account_without_packs_is_warned_about() -> None:
    # The live body (kling-responses/account_costs_no_packs_live.json).
    server = Server(httpx.Response(
        200, json={"code": 0, "message": "SUCCEED", "data": {"code": 0, "msg": "success"}}))
    async with provider_for(server) as provider:
        warning = await provider.account_warning()
    assert warning == NO_PACK_WARNING
    assert "1102" in warning and "buy or renew a pack" in warning
    assert warning.count(". ") == 0 and warning.endswith(".")  # one sentence
    sent = server.requests[0]
    assert (sent.method, sent.url.path) == ("GET", "/account/costs")
    end = int(NOW * 1000)
    assert dict(sent.url.params) == {"start_time": str(end - 400 * DAY_MS),
                                     "end_time": str(end)}
    assert sent.extensions["timeout"]["read"] <= 10.0  # it may not hold the start for long
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    ("data", "warns"),
    [
        (costs(pack()), False),
        (costs(pack("runOut", 0), pack("online", 5)), False),
        (costs(pack("online", 0.5)), False),
        (costs(), True),
        (costs(pack("runOut", 0)), True),
        (costs(pack("expired", 50)), True),
        (costs(pack("online", 0)), True),
        (costs(pack("toBeOnline", 100), pack("runOut", 0)), True),
        # cannot tell: no warning
        (costs(pack("suspended", 100)), False),
        (costs(pack("online", "100")), False),
        (costs(pack("online", None)), False),
        (costs(pack("online", True)), False),
        (costs(pack("runOut", 0), "junk"), False),
        ({"code": 0, "resource_pack_subscribe_infos": {"status": "online"}}, False),
        ({"code": 1, "msg": "failed"}, False),
        ({"code": "x"}, False),
        (None, False),
        ([], False),
        ("nothing", False),
    ],
)
def test_pack_warning(data: object, warns: bool) -> None:
    assert (pack_warning(data) is not None) is warns


@pytest.mark.anyio
@pytest.mark.parametrize(
    "answer",
    [
        ok(costs(pack())),
        fail(401, 1002, "api key not found"),
        fail(429, 1102, "Account balance not enough"),
        fail(500, 5000, "internal"),
        httpx.Response(502, text="<html>Bad Gateway</html>"),
        httpx.Response(200, content=b"\xff garbage"),
        ok("garbled"),
        httpx.ConnectError("refused"),
        httpx.ReadTimeout("slow"),
        ConnectionResetError("reset"),
    ],
    ids=["packs-left", "1002", "1102", "5xx", "html", "binary", "garbled", "connect",
         "timeout", "os-error"],
)
async def test_anything_but_a_plain_no_is_no_warning_and_never_raises(answer: Answer) -> None:
    server = Server(answer)
    async with provider_for(server) as provider:
        assert await provider.account_warning() is None
    assert len(server.requests) == 1
