"""``simulate``: serve a provider's bundled simulator on loopback with a named fault profile until
SIGINT/SIGTERM, to rehearse a batch. ``python -m orchestrator.simulator`` runs the same command
on its own.

The options every simulator takes are here; each provider's plug-in brings its own
(``SimulateCommand``), its profiles and how it is served. An option of one simulator given
with another is refused, naming the simulator it belongs to.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import textwrap
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

from orchestrator.cli.common import whole_number
from orchestrator.providers import registry
from orchestrator.providers.plugin import SimulateCommand

__all__ = [
    "add_simulate_arguments",
    "add_simulate_parser",
    "cmd_simulate",
    "non_negative_int",
    "print_profiles",
    "stop_on_signals",
]


non_negative_int = whole_number(0)


def _commands() -> dict[str, SimulateCommand]:
    """Every provider's simulator, by provider name."""
    found = {}
    for name in registry.NAMES:
        load = registry.plugin(name).simulate
        if load is not None:
            found[name] = load()
    return found


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``simulate`` options, on any parser (a sub-command's or a standalone one)."""
    commands = _commands()
    default = registry.DEFAULT_PROVIDER

    def each(say: Callable[[SimulateCommand], str]) -> str:
        """What every simulator says about an option, for its help."""
        return "; ".join(f"{name}: {say(command)}" for name, command in commands.items())

    parser.add_argument(
        "--provider",
        choices=tuple(commands),
        default=default,
        help=f"which simulator to serve (default: {default}); an option marked (NAME) is "
        "that simulator's only",
    )
    parser.add_argument(
        "--profile",
        default="clean",
        choices=tuple(dict.fromkeys(p for c in commands.values() for p in c.profiles)),
        metavar="NAME",
        help=f"fault profile to serve (default: clean; {each(lambda c: ', '.join(c.profiles))})",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="print the chosen simulator's profiles and what they do, then exit",
    )
    parser.add_argument(
        "--port", type=non_negative_int, default=0, help="port to bind (default: any free)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for ids, task durations and fault draws (default: 0)",
    )
    parser.add_argument(
        "--concurrency-slots",
        type=non_negative_int,
        default=None,
        metavar="N",
        help=f"account slot limit ({each(lambda c: c.slots)})",
    )
    parser.add_argument(
        "--billing-after",
        type=non_negative_int,
        default=None,
        metavar="K",
        help=f"after K committed tasks every create is refused as billing "
        f"({each(lambda c: c.billing)})",
    )
    for command in commands.values():
        command.add_options(parser)


def add_simulate_parser(subparsers: Any) -> None:
    """Add the ``simulate`` sub-command to ``parser.add_subparsers(...)``'s result."""
    parser = subparsers.add_parser(
        "simulate",
        help="run a bundled provider simulator with a fault profile, to rehearse a batch",
        description=(
            "Serve a provider's API (Kling's by default) on loopback with a named fault "
            "profile until Ctrl-C. Put the printed URL in the manifest's provider.base_url."
        ),
    )
    add_simulate_arguments(parser)


def cmd_simulate(
    args: argparse.Namespace, out: TextIO, *, stop: threading.Event | None = None
) -> int:
    """Run the chosen simulator in the foreground; 0 after SIGINT/SIGTERM (or ``stop``), 2 when
    the options do not do. Signal handlers are installed only on the main thread; from another
    thread, pass ``stop``."""
    commands = _commands()
    chosen = getattr(args, "provider", registry.DEFAULT_PROVIDER)
    for name, other in commands.items():
        if name == chosen:
            continue
        stray = [
            flag for dest, (default, flag) in other.options.items()
            if getattr(args, dest, default) != default
        ]
        if stray:
            out.write(f"error: {', '.join(stray)}: only with --provider {name}\n")
            out.flush()
            return 2
    command = commands[chosen]
    if getattr(args, "list", False):
        print_profiles(out, command.profiles)
        return 0
    return command.run(args, out, stop if stop is not None else threading.Event(),
                       stop_on_signals)


def print_profiles(out: TextIO, profiles: Mapping[str, str]) -> None:
    """Each profile's name and what it does (``simulate --list``)."""
    for name, description in profiles.items():
        out.write(f"{name}\n")
        out.write(
            textwrap.fill(description, 96, initial_indent="    ", subsequent_indent="    ")
            + "\n"
        )
    out.flush()


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[int]]:
    """Yield a list that SIGINT/SIGTERM append to, on the main thread; restore on exit.

    The handlers only append (no lock, no exception raised mid-statement), so a signal can
    neither deadlock nor interrupt the shutdown halfway.
    """
    signalled: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield signalled
        return
    previous = {
        signum: signal.signal(signum, lambda number, frame: signalled.append(number))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield signalled
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
