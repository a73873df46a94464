"""Kling: its client (legacy /v1 and API 2.0), credentials, error codes and model catalogue."""

from orchestrator.providers.kling.auth import ApiKeyAuth, JwtAuth, auth_from_env
from orchestrator.providers.kling.client import KlingProvider
from orchestrator.providers.kling.v1 import FAMILIES, Family, build_body

__all__ = [
    "FAMILIES",
    "ApiKeyAuth",
    "Family",
    "JwtAuth",
    "KlingProvider",
    "auth_from_env",
    "build_body",
]
