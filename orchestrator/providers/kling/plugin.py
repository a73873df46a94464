"""Kling as a plug-in: credentials from the environment (JWT or API key), the client of both its
APIs, its item schema and catalogue, and the bundled simulator."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Final

import httpx
from pydantic import BeforeValidator, Field

from orchestrator.providers.base import Provider
from orchestrator.providers.item_schema import ItemSchema
from orchestrator.providers.kling.auth import JwtAuth, auth_from_env
from orchestrator.providers.kling.catalogue import (
    API_CHOICES,
    Catalogue,
    catalogue,
    markdown_table,
)
from orchestrator.providers.kling.client import KlingProvider
from orchestrator.providers.kling.prices import read_pricing
from orchestrator.providers.kling.schema import (
    CSV_FLAGS,
    CSV_JSON,
    CSV_NUMBERS,
    FIELD_MODELS,
    IMAGE_FIELDS,
    ItemRules,
    Settings,
)
from orchestrator.providers.kling.starter import STARTER
from orchestrator.providers.plugin import ProviderPlugin, SimulateCommand, SimulatedAccount
from orchestrator.validators import Flag, JsonRule, OneOf, Strict

DEFAULT_BASE_URL: Final = "https://api-singapore.klingai.com"


class Options(Strict):
    """The provider section's Kling keys."""

    api: Annotated[
        str, BeforeValidator(OneOf(API_CHOICES)), JsonRule({"enum": list(API_CHOICES)})
    ] = Field(
        "auto",
        description="Which of Kling's APIs a create goes to: auto (the legacy /v1 where the "
        "model has it, else API 2.0), v1, or v2 (API 2.0 wherever the model has it).",
    )
    allow_unknown_models: Flag = Field(
        False,
        description="Send a model this version's catalogue does not know (one Kling released "
        "since) with the generic field checks only: no per-model rules, no defaults filled in.",
    )


def rules(options: Any, cat: Catalogue | None = None) -> ItemRules:
    return ItemRules(
        Settings(
            cat if cat is not None else catalogue(),
            api=options.api,
            allow_unknown_models=options.allow_unknown_models,
        )
    )


def credentials(env: Mapping[str, str], redact: Callable[[str], None]) -> httpx.Auth | None:
    auth = auth_from_env(env, on_token=redact)
    for secret in auth.secrets() if auth is not None else ():
        redact(secret)
    return auth


def connect(base_url: str, auth: httpx.Auth, timeout: float, options: Any) -> Provider:
    return KlingProvider(base_url, auth, timeout=timeout, api=options.api)


@contextlib.contextmanager
def simulated(
    state_file: Path | None, redact: Callable[[str], None]
) -> Iterator[SimulatedAccount]:
    from orchestrator.simulator import SimConfig, Simulator

    config = SimConfig(state_file=state_file)
    redact(config.secret_key)
    auth = JwtAuth(config.access_key, config.secret_key, on_token=redact)
    with Simulator(config) as sim:
        yield SimulatedAccount(sim.url, auth)


def models() -> str:
    return (
        markdown_table()
        + f"\n(catalogue checked against Kling on {catalogue().checked})\n"
    )


SCHEMA: Final = ItemSchema(
    kinds=tuple(FIELD_MODELS),
    field_models=FIELD_MODELS,
    image_fields=IMAGE_FIELDS,
    rules=rules,
    options=Options,
    open_models="allow_unknown_models",
    csv_numbers=CSV_NUMBERS,
    csv_flags=CSV_FLAGS,
    csv_json=CSV_JSON,
)

def simulate_command() -> SimulateCommand:
    """``simulate --provider kling`` (loaded when the command line is built)."""
    from orchestrator.simulator.cli import command

    return command()


PLUGIN = ProviderPlugin(
    name="kling",
    title="Kling",
    default_base_url=DEFAULT_BASE_URL,
    schema=SCHEMA,
    credentials=credentials,
    credentials_help="set KLING_ACCESS_KEY and KLING_SECRET_KEY (or KLING_API_KEY) in the "
    "environment",
    connect=connect,
    provider_class=KlingProvider,
    simulated=simulated,
    simulate=simulate_command,
    prices=read_pricing,
    keeps_files="Kling keeps generated files for 30 days",
    models=models,
    starter=STARTER,
)
