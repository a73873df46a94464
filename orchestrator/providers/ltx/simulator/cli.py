"""``simulate --provider ltx``: serve the LTX simulator on loopback until SIGINT/SIGTERM.

The ``simulate`` command (``orchestrator.simulator.cli``) owns the parser and the Kling
simulator; this module adds the options only the LTX simulator takes, turns the command's
options into an :class:`LtxSimConfig`, and runs it in the foreground the way the Kling branch
does (signals only set a flag; the final counts are printed after the stop).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import textwrap
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from orchestrator.providers.ltx.simulator import profiles
from orchestrator.providers.ltx.simulator.config import LtxSimConfig
from orchestrator.providers.ltx.simulator.server import LtxSimulator

#: How often the foreground loop looks for a stop request.
_STOP_POLL = 0.1
#: The ``simulate`` options that serve the Kling simulator only: dest -> (default, flag).
KLING_ONLY: dict[str, tuple[object, str]] = {
    "slow_reply": (None, "--slow-reply"),
    "query_by_external_id": (True, "--no-external-id-query"),
    "read_lag": (0.0, "--read-lag"),
    "extra_models": ([], "--accept-model"),
    "resource_packs": (True, "--no-resource-packs"),
}
#: The options added here (each defaults to None: "not given").
LTX_ONLY: dict[str, str] = {
    "host": "--host",
    "task_duration": "--task-duration",
    "requests_per_second": "--requests-per-second",
    "state_file": "--state-file",
}


def print_profiles(out: TextIO, named: Mapping[str, Any]) -> None:
    """Each profile's name and what it does (``simulate --list``), for either simulator."""
    for found in named.values():
        out.write(f"{found.name}\n")
        out.write(
            textwrap.fill(found.description, 96, initial_indent="    ", subsequent_indent="    ")
            + "\n"
        )
    out.flush()


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def _rate(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def add_ltx_arguments(parser: argparse.ArgumentParser) -> None:
    """The options only ``--provider ltx`` takes (on the ``simulate`` parser)."""
    parser.add_argument(
        "--host", default=None, help="(ltx) address to bind (default: 127.0.0.1)"
    )
    parser.add_argument(
        "--task-duration",
        type=_seconds,
        nargs=2,
        default=None,
        metavar=("LOW", "HIGH"),
        help="(ltx) seconds a job takes, drawn uniformly from LOW..HIGH (default: 0.3 0.8)",
    )
    parser.add_argument(
        "--requests-per-second",
        type=_rate,
        default=None,
        metavar="N",
        help="(ltx) submits admitted per sliding second, then 429 (default: unlimited)",
    )
    parser.add_argument(
        "--state-file",
        type=Path,
        default=None,
        metavar="PATH",
        help="(ltx) keep the account's jobs in this file: a restarted simulator takes them back",
    )


def ltx_only_options(args: argparse.Namespace) -> list[str]:
    """The LTX-only options given (the Kling simulator refuses them)."""
    return [flag for dest, flag in LTX_ONLY.items() if getattr(args, dest, None) is not None]


def _kling_only_options(args: argparse.Namespace) -> list[str]:
    return [
        flag
        for dest, (default, flag) in KLING_ONLY.items()
        if getattr(args, dest, default) != default
    ]


def config_from_args(args: argparse.Namespace) -> LtxSimConfig:
    """The LtxSimConfig the options ask for; ValueError when they do not make one."""
    stray = _kling_only_options(args)
    if stray:
        raise ValueError(f"{', '.join(stray)}: only with --provider kling")
    defaults = LtxSimConfig()
    duration = getattr(args, "task_duration", None)
    base = LtxSimConfig(
        host=getattr(args, "host", None) or defaults.host,
        port=getattr(args, "port", 0),
        seed=getattr(args, "seed", 0),
        task_duration=(duration[0], duration[1]) if duration else defaults.task_duration,
        state_file=getattr(args, "state_file", None),
    )
    return profiles.profile(getattr(args, "profile", "clean")).config(
        base,
        concurrency_slots=getattr(args, "concurrency_slots", None),
        requests_per_second=getattr(args, "requests_per_second", None),
        billing_after=getattr(args, "billing_after", None),
    )


def cmd_simulate_ltx(
    args: argparse.Namespace,
    out: TextIO,
    *,
    stop: threading.Event | None,
    stop_on_signals: Callable[[], contextlib.AbstractContextManager[list[int]]],
) -> int:
    """Run the LTX simulator in the foreground; 0 after SIGINT/SIGTERM (or ``stop``), 2 when
    the options or the port do not do."""
    if getattr(args, "list", False):
        print_profiles(out, profiles.PROFILES)
        return 0
    try:
        config = config_from_args(args)
    except ValueError as exc:
        out.write(f"error: {exc}\n")
        out.flush()
        return 2
    stop = stop if stop is not None else threading.Event()
    sim = LtxSimulator(config)
    try:
        url = sim.start()
    except OSError as exc:
        out.write(f"error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}\n")
        out.flush()
        return 2
    try:
        with stop_on_signals() as signalled:
            name = getattr(args, "profile", "clean")
            out.write("\n".join(_banner(config, url, name)) + "\n")
            out.flush()
            while not signalled and not stop.wait(_STOP_POLL):
                pass
        stats = sim.stats()
    finally:
        sim.stop()
    answers = ", ".join(f"{label}: {n}" for label, n in sorted(stats.answers.items()))
    out.write(
        f"Stopped. submits: {stats.submit_requests} ({answers or 'none'}); "
        f"jobs created: {stats.jobs_created}; status queries: {stats.status_requests}; "
        f"peak slots: {stats.peak_slots}\n"
    )
    out.flush()
    return 0


def _banner(config: LtxSimConfig, url: str, profile: str) -> Iterator[str]:
    low, high = config.task_duration
    slots = config.concurrency_slots
    account = f"seed {config.seed}, jobs take {low:g}-{high:g} s, "
    account += "unlimited concurrency" if slots is None else f"{slots} concurrent jobs"
    if config.requests_per_second is not None:
        account += f", {config.requests_per_second:g} submits/s"
    if config.billing_after is not None:
        account += f", submits refused (402) after {config.billing_after} jobs"
    if config.state_file is not None:
        account += f", jobs kept in {config.state_file}"
    yield f"LTX simulator listening on {url}"
    yield f"account: {account}"
    yield f"profile: {profile}; --provider ltx --list describes them all"
    yield f"# point the LTX provider at this URL (provider.base_url: {url}), then:"
    # The demo key is the simulator's public default, not a secret.
    yield f"export LTX_API_KEY={config.api_key}"
    yield "Press Ctrl-C to stop."
