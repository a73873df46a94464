"""``simulate --provider ltx``: serve the LTX simulator on loopback until SIGINT/SIGTERM.

The ``simulate`` command (``orchestrator.cli.simulate``) owns the options every simulator
takes; this module adds the ones only the LTX simulator takes, turns the command's options
(and ``--profile``) into an :class:`LtxSimConfig`, and runs it in the foreground (signals only
set a flag; the final counts are printed after the stop).
"""

from __future__ import annotations

import argparse
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from orchestrator.providers.ltx.simulator import profiles
from orchestrator.providers.ltx.simulator.config import LtxSimConfig
from orchestrator.providers.ltx.simulator.server import LtxSimulator
from orchestrator.providers.plugin import SimulateCommand, StopOnSignals

#: How often the foreground loop looks for a stop request.
_STOP_POLL = 0.1
#: The options only the LTX simulator takes: dest -> (default, flag).
OPTIONS: dict[str, tuple[object, str]] = {
    "host": (None, "--host"),
    "task_duration": (None, "--task-duration"),
    "requests_per_second": (None, "--requests-per-second"),
    "state_file": (None, "--state-file"),
}


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


def config_from_args(args: argparse.Namespace) -> LtxSimConfig:
    """The LtxSimConfig the options ask for; ValueError when they do not make one."""
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


def command() -> SimulateCommand:
    return SimulateCommand(
        add_options=add_ltx_arguments,
        options=OPTIONS,
        profiles={name: found.description for name, found in profiles.PROFILES.items()},
        slots="429 concurrency_limit_error, default 2",
        billing="402 insufficient_funds_error, default: the profile's, 'billing' uses 20, the "
        "others never run out",
        run=cmd_simulate_ltx,
    )


def cmd_simulate_ltx(
    args: argparse.Namespace,
    out: TextIO,
    stop: threading.Event,
    stop_on_signals: StopOnSignals,
) -> int:
    """Run the LTX simulator in the foreground; 0 after SIGINT/SIGTERM (or ``stop``), 2 when
    the options or the port do not do."""
    try:
        config = config_from_args(args)
    except ValueError as exc:
        out.write(f"error: {exc}\n")
        out.flush()
        return 2
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
