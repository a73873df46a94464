"""A provider as a plug-in: everything the rest of the orchestrator needs to know about one.

    name, title         "ltx", "LTX" (the manifest's provider.name; the name in messages)
    default_base_url    where provider.base_url points when the manifest names none
    schema              its items' fields and per-model rules (item_schema.ItemSchema)
    credentials         the environment -> an httpx.Auth (None when none are set; ValueError,
                        naming the variable but never its value, when they are half set)
    connect             (base_url, auth, timeout, options) -> a Provider
    provider_class      the class ``connect`` builds: its capabilities (TaskFinder, BatchReader,
                        ...) are the class's, so they can be asked before anything is built
    simulated           a context manager running the provider's simulator in this process
                        (``provider.base_url: simulator``), yielding its URL and credentials
    default_concurrency the account's own limit when the manifest sets none
    keeps_files         how long the provider keeps generated files, as hints say it
    models              ``models --provider NAME``: the catalogue as a Markdown table (that of
                        docs/providers.md), and where its facts come from
    prices              reads the manifest's ``pricing:`` over the built-in table, in the
                        provider's own unit (pricing.PriceReader); None while the provider has
                        no price table, its items then unpriced and ``pricing:`` refused
    simulate            loads the ``simulate --provider NAME`` part (SimulateCommand): the
                        simulator's own options, its fault profiles, how it is served
    starter             the ``defaults`` and ``items`` of the manifest ``init`` writes: YAML,
                        commented, that validates as it is

The engine never asks for a provider by name: it asks a Provider what it can do. Only the
registry names concrete plug-ins.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx

from orchestrator.pricing import PriceReader
from orchestrator.providers.base import Provider
from orchestrator.providers.item_schema import ItemSchema

__all__ = ["ProviderPlugin", "SimulatedAccount"]


@dataclass(frozen=True)
class SimulatedAccount:
    """A provider's simulator running in this process: where it listens, how to sign in."""

    base_url: str
    auth: httpx.Auth


#: (state file or None, redact) -> the simulator, running while the context is open; ``redact``
#: is told every secret it hands out.
Simulated = Callable[[Path | None, Callable[[str], None]], AbstractContextManager[SimulatedAccount]]
#: (environment, redact) -> credentials, or None when none are set
Credentials = Callable[[Mapping[str, str], Callable[[str], None]], httpx.Auth | None]
#: (base_url, auth, timeout, options) -> the provider's client
Connect = Callable[[str, httpx.Auth, float, Any], Provider]


#: () -> a context yielding the list SIGINT/SIGTERM append to (the foreground loop watches it)
StopOnSignals = Callable[[], AbstractContextManager[list[int]]]


@dataclass(frozen=True)
class SimulateCommand:
    """What ``simulate --provider NAME`` serves: the options only this simulator takes, its
    named fault profiles, and the command that runs it in the foreground until a signal (or
    ``stop``) and returns the exit code."""

    #: adds this simulator's own options to the ``simulate`` parser (help marked with its name)
    add_options: Callable[[argparse.ArgumentParser], None]
    #: those options, dest -> (default, flag): given with another simulator they are refused
    options: Mapping[str, tuple[object, str]]
    #: profile name -> what it does
    profiles: Mapping[str, str]
    #: what the simulator answers over ``--concurrency-slots``, and its default
    slots: str
    #: what it answers after ``--billing-after`` jobs, and its default
    billing: str
    run: Callable[[argparse.Namespace, TextIO, threading.Event, StopOnSignals], int]


@dataclass(frozen=True)
class ProviderPlugin:
    name: str
    title: str
    default_base_url: str
    schema: ItemSchema
    credentials: Credentials
    #: what to set when no credentials are found ("set LTX_API_KEY in the environment")
    credentials_help: str
    connect: Connect
    provider_class: type
    simulated: Simulated
    default_concurrency: int = 5
    keeps_files: str = "the provider deletes generated files after a while"
    models: Callable[[], str] | None = None
    prices: PriceReader | None = None
    #: the ``simulate`` command's part for this provider, loaded when the CLI is built
    simulate: Callable[[], SimulateCommand] | None = None
    #: top-level key (defaults, items) -> its YAML body in the manifest ``init`` writes
    starter: Mapping[str, str] = field(default_factory=dict)
