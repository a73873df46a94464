"""The ``simulate`` command: serve a fault profile on loopback until SIGINT/SIGTERM.

Wired into ``python -m orchestrator`` with::

    add_simulate_parser(sub)                      # sub = parser.add_subparsers(...)
    ...
    if args.command == "simulate":
        return cmd_simulate(args, sys.stdout)

``python -m orchestrator.simulator`` runs the same command on its own.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any, TextIO

from orchestrator.providers.ltx.simulator.profiles import PROFILES as LTX_PROFILES
from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.profiles import DELAY_EFFECTS, PROFILES, make_config
from orchestrator.simulator.server import Simulator

#: How often the foreground loop looks for a stop request (signals only set a flag).
_STOP_POLL = 0.1


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``simulate`` options, on any parser (a sub-command's or a standalone one)."""
    parser.add_argument(
        "--provider",
        choices=("kling", "ltx"),
        default="kling",
        help="which simulator to serve (default: kling); options marked (ltx) are for ltx only",
    )
    parser.add_argument(
        "--profile",
        default="clean",
        choices=tuple(dict.fromkeys([*PROFILES, *LTX_PROFILES])),
        metavar="NAME",
        help=f"fault profile to serve (default: clean; kling: {', '.join(PROFILES)}; ltx: "
        f"{', '.join(LTX_PROFILES)})",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="print the chosen simulator's profiles and what they do, then exit",
    )
    parser.add_argument(
        "--port", type=_non_negative_int, default=0, help="port to bind (default: any free)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed for ids, task durations and fault draws (default: 0)",
    )
    parser.add_argument(
        "--slow-reply",
        type=_non_negative_float,
        default=None,
        metavar="SECONDS",
        help="how long the profile's slow replies wait; make it longer than provider.timeout",
    )
    parser.add_argument(
        "--concurrency-slots",
        type=_non_negative_int,
        default=None,
        metavar="N",
        help="account slot limit (Kling: 429/1303 over it, default: the profile's, most have "
        "none; ltx: 429 concurrency_limit_error, default 2)",
    )
    parser.add_argument(
        "--billing-after",
        type=_non_negative_int,
        default=None,
        metavar="K",
        help="after K committed tasks every create is refused as billing (Kling: 429/1102, "
        "resource pack depleted, default: the profile's, 'billing' uses 20, the others never "
        "run out; ltx: 402 insufficient_funds_error, default never)",
    )
    parser.add_argument(
        "--no-external-id-query",
        dest="query_by_external_id",
        action="store_false",
        help="GET /v1/<family>/<id> finds tasks by task id only, not by external_task_id "
        "(some clients report Kling's does not): lookups must go through the list",
    )
    parser.add_argument(
        "--read-lag",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="a new task stays invisible to reads by external id and to lists for this long "
        "(reads by task id see it at once; a create reusing its external id is refused at "
        "once) (default: 0)",
    )
    parser.add_argument(
        "--accept-model",
        dest="extra_models",
        action="append",
        default=[],
        metavar="NAME",
        help="accept creates naming NAME, a model the catalogue does not know (as if Kling had "
        "just shipped it), with the checks every model gets; repeat for several",
    )
    parser.add_argument(
        "--no-resource-packs",
        dest="resource_packs",
        action="store_false",
        help="GET /account/costs answers as an account without resource packs (default: one "
        "video pack, its units falling as tasks are committed)",
    )
    from orchestrator.providers.ltx.simulator.cli import add_ltx_arguments

    add_ltx_arguments(parser)


def add_simulate_parser(subparsers: Any) -> None:
    """Add the ``simulate`` sub-command to ``parser.add_subparsers(...)``'s result."""
    parser = subparsers.add_parser(
        "simulate",
        help="run the bundled Kling simulator with a fault profile, to rehearse a batch",
        description=(
            "Serve a Kling-compatible API on loopback with a named fault profile until "
            "Ctrl-C. Put the printed URL in the manifest's provider.base_url."
        ),
    )
    add_simulate_arguments(parser)


def cmd_simulate(
    args: argparse.Namespace, out: TextIO, *, stop: threading.Event | None = None
) -> int:
    """Run the simulator in the foreground; return 0 after SIGINT/SIGTERM (or ``stop``).

    Signal handlers are installed only on the main thread; from another thread, pass ``stop``.
    """
    from orchestrator.providers.ltx.simulator import cli as ltx_cli

    if getattr(args, "provider", "kling") == "ltx":
        return ltx_cli.cmd_simulate_ltx(args, out, stop=stop, stop_on_signals=_stop_on_signals)
    stray = ltx_cli.ltx_only_options(args)
    if stray:
        out.write(f"error: {', '.join(stray)}: only with --provider ltx\n")
        out.flush()
        return 2
    if getattr(args, "list", False):
        ltx_cli.print_profiles(out, PROFILES)
        return 0
    try:
        config = _config(args)
    except ValueError as exc:  # e.g. --accept-model naming a model the catalogue has
        out.write(f"error: {exc}\n")
        out.flush()
        return 2
    stop = stop if stop is not None else threading.Event()
    sim = Simulator(config)
    try:
        url = sim.start()
    except OSError as exc:
        out.write(f"error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}\n")
        out.flush()
        return 2
    try:
        with _stop_on_signals() as signalled:
            delays = sorted({r.delay for r in config.faults if r.effect in DELAY_EFFECTS})
            slow = f", slow replies wait {'/'.join(f'{d:g}' for d in delays)} s" if delays else ""
            if config.billing_after is not None:
                slow += f", creates refused (1102) after {config.billing_after} tasks"
            if not config.query_by_external_id:
                slow += ", query path takes task ids only"
            if config.read_lag:
                slow += f", reads by external id lag {config.read_lag:g} s"
            if config.extra_models:
                slow += f", also accepts {', '.join(config.extra_models)}"
            if not config.resource_packs:
                slow += ", no resource packs"
            # The demo credentials are the simulator's public defaults, not secrets.
            lines = [
                f"Kling simulator listening on {url}",
                f"profile: {args.profile} (seed {args.seed}{slow}); --list describes them all",
                f"# put this URL in the manifest (provider.base_url: {url}), then:",
                f"export KLING_ACCESS_KEY={config.access_key}",
                f"export KLING_SECRET_KEY={config.secret_key}",
                f"# or instead: export KLING_API_KEY={config.api_key}",
                "Press Ctrl-C to stop.",
            ]
            out.write("\n".join(lines) + "\n")
            out.flush()
            while not signalled and not stop.wait(_STOP_POLL):
                pass
        stats = sim.stats()
    finally:
        sim.stop()
    answers = ", ".join(f"{code}: {n}" for code, n in sorted(stats.create_answers.items()))
    out.write(
        f"Stopped. creates: {stats.create_requests} ({answers or 'none'}); "
        f"tasks created: {stats.tasks_created}; queries: {stats.query_requests}; "
        f"peak slots: {stats.peak_slots}\n"
    )
    out.flush()
    return 0


def _config(args: argparse.Namespace) -> SimConfig:
    """The SimConfig the command's options ask for; ValueError when they do not make one."""
    return make_config(
        args.profile,
        seed=args.seed,
        port=args.port,
        slow_reply=getattr(args, "slow_reply", None),
        concurrency_slots=getattr(args, "concurrency_slots", None),
        query_by_external_id=getattr(args, "query_by_external_id", True),
        billing_after=getattr(args, "billing_after", None),
        read_lag=getattr(args, "read_lag", 0.0),
        extra_models=tuple(getattr(args, "extra_models", ())),
        resource_packs=getattr(args, "resource_packs", True),
    )


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[list[int]]:
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
