"""Kling auth: JWT minting, caching and renewal; API keys; credentials from the environment."""

from __future__ import annotations

import json
from collections.abc import Callable

import anyio
import httpx
import jwt
import pytest

from orchestrator.errors import Category, ProviderError
from orchestrator.providers.base import Kind
from orchestrator.providers.kling import KlingProvider
from orchestrator.providers.kling.auth import ApiKeyAuth, JwtAuth, auth_from_env
from tests.conftest import request_of

AK = "ak-test-0123456789abcdef"
SK = "sk-test-secret-0123456789abcdefghijkl"
API_KEY = "apikey-test-0123456789abcdefghijkl"
T0 = 1_700_000_000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def decode(token: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(
        token, SK, algorithms=["HS256"], options={"verify_exp": False, "verify_nbf": False}
    )
    return claims


def bearer(request: httpx.Request) -> str:
    scheme, _, token = request.headers["Authorization"].partition(" ")
    assert scheme == "Bearer"
    return token


def envelope(code: int, message: str = "", data: object = None) -> bytes:
    return json.dumps(
        {"code": code, "message": message, "request_id": "req-1", "data": data}
    ).encode()


TASK = {"task_id": "t1", "task_status": "processing"}


def test_jwt_header_and_payload() -> None:
    auth = JwtAuth(AK, SK, clock=Clock())
    token = auth.token()
    assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
    assert decode(token) == {"iss": AK, "exp": int(T0) + 1800, "nbf": int(T0) - 5}


def test_jwt_ttl_is_configurable_and_claims_are_ints() -> None:
    auth = JwtAuth(AK, SK, clock=Clock(T0 + 0.7), ttl=600, renew_margin=60)
    claims = decode(auth.token())
    assert claims["exp"] == int(T0) + 600 and claims["nbf"] == int(T0) - 5
    assert all(isinstance(v, int) for k, v in claims.items() if k != "iss")


def test_jwt_is_cached_then_renewed_before_expiry() -> None:
    clock = Clock()
    minted: list[str] = []
    auth = JwtAuth(AK, SK, clock=clock, on_token=minted.append)
    first = auth.token()
    clock.now = T0 + 1499  # exp - margin - 1
    assert auth.token() == first
    clock.now = T0 + 1500  # exp - margin: renew now, well before Kling would reject it
    second = auth.token()
    assert second != first
    assert decode(second)["exp"] == int(T0) + 1500 + 1800
    assert minted == [first, second]


def test_invalid_renew_margin_is_rejected() -> None:
    with pytest.raises(ValueError, match="renew_margin"):
        JwtAuth(AK, SK, ttl=60, renew_margin=60)


def make_provider(
    auth: httpx.Auth, handler: Callable[[httpx.Request], httpx.Response]
) -> KlingProvider:
    return KlingProvider("https://kling.test", auth, transport=httpx.MockTransport(handler))


@pytest.mark.anyio
async def test_one_resend_with_a_fresh_token_after_1004() -> None:
    clock = Clock()
    auth = JwtAuth(AK, SK, clock=clock)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(bearer(request))
        if len(seen) == 1:
            clock.now += 10  # a fresh token differs from the rejected one
            return httpx.Response(401, content=envelope(1004, "token expired"))
        return httpx.Response(200, content=envelope(0, "SUCCEED", TASK))

    async with make_provider(auth, handler) as provider:
        task = await provider.query(request_of(Kind.TEXT2VIDEO), "t1")
    assert task.task_id == "t1"
    assert len(seen) == 2 and seen[0] != seen[1]
    assert decode(seen[1])["exp"] == int(T0) + 10 + 1800


@pytest.mark.anyio
@pytest.mark.parametrize("code", [1003, 1004])
async def test_second_rejection_surfaces_as_auth_error_without_another_resend(code: int) -> None:
    auth = JwtAuth(AK, SK, clock=Clock())
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(401, content=envelope(code, "token rejected"))

    async with make_provider(auth, handler) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.query(request_of(Kind.TEXT2VIDEO), "t1")
    assert calls == 2
    assert caught.value.info.category is Category.AUTH
    assert caught.value.info.code == code
    assert SK not in str(caught.value) and SK not in repr(caught.value)


@pytest.mark.anyio
@pytest.mark.parametrize("code", [1000, 1001, 1002])
async def test_bad_credentials_are_not_resent(code: int) -> None:
    auth = JwtAuth(AK, SK, clock=Clock())
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(401, content=envelope(code, "authentication failed"))

    async with make_provider(auth, handler) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.query(request_of(Kind.TEXT2VIDEO), "t1")
    assert calls == 1
    assert caught.value.info.category is Category.AUTH and not caught.value.info.retryable


@pytest.mark.anyio
async def test_concurrent_rejections_share_one_new_token() -> None:
    minted: list[str] = []
    clock = Clock()
    auth = JwtAuth(AK, SK, clock=clock, on_token=minted.append)
    first = auth.token()
    clock.now += 10

    def handler(request: httpx.Request) -> httpx.Response:
        if bearer(request) == first:
            return httpx.Response(401, content=envelope(1004, "token expired"))
        return httpx.Response(200, content=envelope(0, "SUCCEED", TASK))

    async with make_provider(auth, handler) as provider, anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(provider.query, request_of(Kind.TEXT2VIDEO), "t1")
    assert len(minted) == 2  # the first token and exactly one replacement


# Found by tests/test_properties_provider.py: JwtAuth reads the code of every 401 inside httpx's
# auth flow, where the provider's error translation does not reach; these bodies made it raise
# RecursionError / ValueError out of provider calls.
@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000, b'{"code":' + b"[" * 100_000, json.dumps({"code": "²"}).encode(),
     b'{"code": "--5"}', b'{"code": "' + b"9" * 5000 + b'"}'],
    ids=["deep-array", "deep-code", "superscript-code", "double-minus-code", "huge-code"],
)
async def test_odd_401_bodies_are_an_auth_error_not_a_crash(body: bytes) -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(401, content=body)

    async with make_provider(JwtAuth(AK, SK, clock=Clock()), handler) as provider:
        with pytest.raises(ProviderError) as caught:
            await provider.query(request_of(Kind.TEXT2VIDEO), "t1")
    assert calls == 1  # not a renewal code: no resend
    assert caught.value.info.category is Category.AUTH and caught.value.info.http_status == 401


def test_jwt_auth_works_with_a_sync_client_too() -> None:
    auth = JwtAuth(AK, SK, clock=Clock())
    tokens: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(bearer(request))
        return httpx.Response(200, content=envelope(0, "SUCCEED", TASK))

    with httpx.Client(auth=auth, transport=httpx.MockTransport(handler)) as client:
        client.get("https://kling.test/v1/videos/text2video/t1")
    assert decode(tokens[0])["iss"] == AK


@pytest.mark.anyio
async def test_api_key_header() -> None:
    headers: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        headers.append(request.headers["Authorization"])
        return httpx.Response(200, content=envelope(0, "SUCCEED", TASK))

    async with make_provider(ApiKeyAuth(API_KEY), handler) as provider:
        await provider.query(request_of(Kind.IMAGE), "t1")
    assert headers == [f"Bearer {API_KEY}"]


def test_secrets_are_listed_but_never_shown() -> None:
    jwt_auth = JwtAuth(AK, SK)
    key_auth = ApiKeyAuth(API_KEY)
    assert SK in jwt_auth.secrets()
    assert key_auth.secrets() == (API_KEY,)
    for auth, secret in ((jwt_auth, SK), (jwt_auth, AK), (key_auth, API_KEY)):
        assert secret not in repr(auth) and secret not in str(auth)


@pytest.mark.parametrize("bad", ["", "has space", "non-ascii-é", "line\nbreak"])
def test_unsendable_api_key_is_refused_without_echoing_it(bad: str) -> None:
    with pytest.raises(ValueError) as caught:
        ApiKeyAuth(bad)
    if bad:
        assert bad not in str(caught.value)


def test_auth_from_env_prefers_access_and_secret_key() -> None:
    auth = auth_from_env(
        {"KLING_ACCESS_KEY": AK, "KLING_SECRET_KEY": SK, "KLING_API_KEY": API_KEY}
    )
    assert isinstance(auth, JwtAuth)
    assert decode(auth.token())["iss"] == AK


def test_auth_from_env_api_key_and_stripping() -> None:
    auth = auth_from_env({"KLING_API_KEY": f" {API_KEY}\n"})
    assert isinstance(auth, ApiKeyAuth) and auth.secrets() == (API_KEY,)


def test_auth_from_env_nothing_set() -> None:
    assert auth_from_env({}) is None
    assert auth_from_env({"KLING_API_KEY": "  "}) is None


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"KLING_ACCESS_KEY": AK}, "KLING_SECRET_KEY"),
        ({"KLING_SECRET_KEY": SK}, "KLING_ACCESS_KEY"),
    ],
)
def test_auth_from_env_half_a_key_pair_names_the_missing_variable(
    env: dict[str, str], missing: str
) -> None:
    with pytest.raises(ValueError) as caught:
        auth_from_env({**env, "KLING_API_KEY": API_KEY})
    text = str(caught.value)
    assert f"{missing} is not" in text
    assert AK not in text and SK not in text and API_KEY not in text


def test_auth_from_env_registers_minted_tokens() -> None:
    minted: list[str] = []
    auth = auth_from_env({"KLING_ACCESS_KEY": AK, "KLING_SECRET_KEY": SK}, on_token=minted.append)
    assert isinstance(auth, JwtAuth)
    assert minted == [auth.token()]
