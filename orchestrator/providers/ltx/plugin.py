"""LTX Video as a plug-in: credentials from LTX_API_KEY, the v2 client, its item schema and
USD prices, its simulator."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from orchestrator.providers.base import Provider
from orchestrator.providers.bearer import BearerAuth
from orchestrator.providers.ltx.catalogue import markdown_table
from orchestrator.providers.ltx.client import DEFAULT_BASE_URL, LtxProvider
from orchestrator.providers.ltx.prices import read_pricing
from orchestrator.providers.ltx.schema import SCHEMA
from orchestrator.providers.ltx.starter import STARTER
from orchestrator.providers.plugin import ProviderPlugin, SimulateCommand, SimulatedAccount

ENV_API_KEY = "LTX_API_KEY"


def credentials(env: Mapping[str, str], redact: Callable[[str], None]) -> httpx.Auth | None:
    key = env.get(ENV_API_KEY, "").strip()
    if not key:
        return None
    try:
        auth = BearerAuth(key)
    except ValueError as exc:
        raise ValueError(f"{ENV_API_KEY}: {exc}") from None
    auth.source = ENV_API_KEY
    redact(key)
    return auth


def connect(base_url: str, auth: httpx.Auth, timeout: float, options: Any) -> Provider:
    return LtxProvider(base_url, auth, timeout=timeout)


@contextlib.contextmanager
def simulated(
    state_file: Path | None, redact: Callable[[str], None]
) -> Iterator[SimulatedAccount]:
    from orchestrator.providers.ltx.simulator import LtxSimConfig, LtxSimulator

    config = LtxSimConfig(state_file=state_file)
    redact(config.api_key)
    with LtxSimulator(config) as sim:
        yield SimulatedAccount(sim.url, BearerAuth(config.api_key))


def models() -> str:
    return markdown_table() + "\n(catalogue read from LTX's documentation, 2026-08 to 2026-10)\n"


def simulate_command() -> SimulateCommand:
    """``simulate --provider ltx`` (loaded when the command line is built)."""
    from orchestrator.providers.ltx.simulator.cli import command

    return command()


PLUGIN = ProviderPlugin(
    name="ltx",
    title="LTX",
    default_base_url=DEFAULT_BASE_URL,
    schema=SCHEMA,
    credentials=credentials,
    credentials_help=f"set {ENV_API_KEY} (a key from the LTX console) in the environment",
    connect=connect,
    provider_class=LtxProvider,
    simulated=simulated,
    simulate=simulate_command,
    default_concurrency=2,
    prices=read_pricing,
    keeps_files="LTX keeps a job and its video for 24 hours after it ends",
    models=models,
    starter=STARTER,
)
