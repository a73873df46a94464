"""Kling credentials as ``httpx.Auth``: a JWT from an access/secret key pair, or a plain API key.

Auth lives here and only here: the provider never touches the Authorization header. Neither
class shows a credential in its repr or in an exception; ``secrets()`` hands them to the log
redactor instead.
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Callable, Generator, Mapping

import httpx
import jwt

from orchestrator.providers.bearer import BearerAuth, check_header_safe
from orchestrator.providers.kling.codes import RENEW_CODES, parse_code

ENV_ACCESS_KEY = "KLING_ACCESS_KEY"
ENV_SECRET_KEY = "KLING_SECRET_KEY"
ENV_API_KEY = "KLING_API_KEY"


def _envelope_code(response: httpx.Response) -> int | None:
    # Runs inside httpx's auth flow, outside the provider's error translation: nothing may
    # escape from here (deeply nested JSON raises RecursionError, not ValueError).
    try:
        body = json.loads(response.content)
    except (ValueError, RecursionError):
        return None
    return parse_code(body.get("code")) if isinstance(body, dict) else None


class JwtAuth(httpx.Auth):
    """``Authorization: Bearer <jwt>``, the JWT signed HS256 with the secret key.

    Tokens are cached and re-minted ``renew_margin`` seconds before they expire. A 401 with code
    1003/1004 (token not yet valid / expired) gets one fresh token and one resend: a 401 means
    Kling rejected the request without acting on it, so resending even a create is safe.
    """

    requires_response_body = True
    #: where the keys came from, for ``validate`` and ``run --dry-run`` (never the keys)
    source = "KLING_ACCESS_KEY + KLING_SECRET_KEY (JWT)"

    def __init__(
        self,
        access_key: str,
        secret_key: str,
        *,
        clock: Callable[[], float] = time.time,
        ttl: float = 1800,
        renew_margin: float = 300,
        on_token: Callable[[str], None] | None = None,
    ) -> None:
        check_header_safe(access_key, "the access key")
        if not secret_key:
            raise ValueError("the secret key is empty")
        if not 0 <= renew_margin < ttl:
            raise ValueError("renew_margin must be at least 0 and less than ttl")
        self._access_key = access_key
        self._secret_key = secret_key
        self._clock = clock
        self._ttl = ttl
        self._renew_margin = renew_margin
        self._on_token = on_token
        self._token: str | None = None
        self._expires_at = 0.0
        # Minting holds no await, so this only matters for sync clients shared across threads.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return "JwtAuth(<credentials hidden>)"

    __str__ = __repr__

    def secrets(self) -> tuple[str, ...]:
        """Values the log redactor must mask (the access key too: it names the account)."""
        return (self._secret_key, self._access_key)

    def token(self) -> str:
        """The cached token, minted anew when it is within ``renew_margin`` of expiry."""
        with self._lock:
            if self._token is None or self._clock() >= self._expires_at - self._renew_margin:
                return self._mint()
            return self._token

    def _renew(self, rejected: str) -> str:
        # Concurrent requests rejected with the same stale token share one new token.
        with self._lock:
            if self._token is None or self._token == rejected:
                return self._mint()
            return self._token

    def _mint(self) -> str:
        now = self._clock()
        expires_at = int(now + self._ttl)
        payload = {"iss": self._access_key, "exp": expires_at, "nbf": int(now - 5)}
        with warnings.catch_warnings():
            # Kling issues the secret key; its length is not the user's to fix.
            warnings.filterwarnings("ignore", message=r"The HMAC key is", category=UserWarning)
            token = jwt.encode(
                payload, self._secret_key, algorithm="HS256",
                headers={"alg": "HS256", "typ": "JWT"},
            )
        self._token = token
        self._expires_at = float(expires_at)
        if self._on_token is not None:
            self._on_token(token)
        return token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.token()
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401 and _envelope_code(response) in RENEW_CODES:
            request.headers["Authorization"] = f"Bearer {self._renew(token)}"
            yield request


class ApiKeyAuth(BearerAuth):
    """``Authorization: Bearer <API key>``, the console's newer plain keys."""

    source = "KLING_API_KEY"


def auth_from_env(
    env: Mapping[str, str], *, on_token: Callable[[str], None] | None = None
) -> JwtAuth | ApiKeyAuth | None:
    """Credentials from the environment the CLI passes in: AK+SK (JWT) first, then an API key.

    Returns None when none are set. Values are stripped, since keys pasted into a .env file often
    carry a trailing newline. Raises ValueError, naming the variable but never its value.
    """
    access_key = env.get(ENV_ACCESS_KEY, "").strip()
    secret_key = env.get(ENV_SECRET_KEY, "").strip()
    api_key = env.get(ENV_API_KEY, "").strip()
    if access_key and secret_key:
        try:
            return JwtAuth(access_key, secret_key, on_token=on_token)
        except ValueError as exc:
            raise ValueError(f"{ENV_ACCESS_KEY}/{ENV_SECRET_KEY}: {exc}") from None
    if access_key or secret_key:
        missing = ENV_SECRET_KEY if access_key else ENV_ACCESS_KEY
        present = ENV_ACCESS_KEY if access_key else ENV_SECRET_KEY
        raise ValueError(
            f"{present} is set but {missing} is not: set both for JWT auth, or unset {present} "
            f"and set {ENV_API_KEY}"
        )
    if api_key:
        try:
            return ApiKeyAuth(api_key)
        except ValueError as exc:
            raise ValueError(f"{ENV_API_KEY}: {exc}") from None
    return None
