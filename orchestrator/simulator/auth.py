"""Kling's Bearer authentication: a plain API key, or an HS256 JWT signed with the secret key.

The signature is verified by PyJWT; ``exp``/``nbf`` are checked here against the wall clock plus
the configured skew, because the skew is the point (simulating a client whose clock is off) and
PyJWT would check against the real clock. Tokens never appear in an error message.
"""

from __future__ import annotations

import json
import time
from typing import Any

import jwt
from jwt.algorithms import HMACAlgorithm

from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.wire import ApiError


class _DemoKeyHS256(HMACAlgorithm):
    """HS256 without PyJWT's short-key warning: the demo secret is short by design, and the
    warning would otherwise be printed from a handler thread on every request."""

    def __init__(self) -> None:
        super().__init__(HMACAlgorithm.SHA256)

    def check_key_length(self, key: bytes) -> str | None:
        return None


def _verifier() -> jwt.PyJWS:
    verifier = jwt.PyJWS(algorithms=[])
    verifier.register_algorithm("HS256", _DemoKeyHS256())
    return verifier


_VERIFIER = _verifier()


def check_authorization(header: str | None, config: SimConfig) -> None:
    """Raise the ApiError Kling would answer, or return if the request is authenticated."""
    if header is None or not header.strip():
        raise ApiError(1001, "Authorization header is empty")
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(1002, "Authorization is invalid: expected 'Bearer <token>'")
    if config.api_key is not None and token == config.api_key:
        return
    claims = _verified_claims(token, config.secret_key)
    if claims.get("iss") != config.access_key:
        raise ApiError(1000, "authentication failed: unknown access key")
    now = time.time() + config.clock_skew
    expires = _number(claims.get("exp"))
    if expires is None:
        raise ApiError(1002, "Authorization is invalid: token has no numeric exp")
    not_before = _number(claims.get("nbf", now))
    if not_before is None:
        raise ApiError(1002, "Authorization is invalid: nbf is not a number")
    if not_before > now:
        raise ApiError(1003, "token is not yet valid (nbf is in the future)")
    if expires <= now:
        raise ApiError(1004, "token has expired")


def _verified_claims(token: str, secret_key: str) -> dict[str, Any]:
    invalid = ApiError(1002, "Authorization is invalid")
    try:
        decoded = _VERIFIER.decode_complete(token, secret_key, algorithms=["HS256"])
        claims = json.loads(decoded["payload"])
    except (jwt.InvalidTokenError, ValueError):
        raise invalid from None
    header = decoded["header"]
    if header.get("typ") != "JWT" or header.get("alg") != "HS256" or not isinstance(claims, dict):
        raise invalid
    return claims


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)
