"""``simulate --provider kling``: Kling's simulator served on loopback until SIGINT/SIGTERM, its
own options and its fault profiles (the ``simulate`` command itself is orchestrator.cli.simulate).
"""

from __future__ import annotations

import argparse
import threading
from typing import TextIO

from orchestrator.providers.plugin import SimulateCommand, StopOnSignals
from orchestrator.simulator.config import SimConfig
from orchestrator.simulator.profiles import DELAY_EFFECTS, PROFILES, make_config
from orchestrator.simulator.server import Simulator

#: How often the foreground loop looks for a stop request (signals only set a flag).
_STOP_POLL = 0.1
#: The options only Kling's simulator takes: dest -> (default, flag).
OPTIONS: dict[str, tuple[object, str]] = {
    "slow_reply": (None, "--slow-reply"),
    "query_by_external_id": (True, "--no-external-id-query"),
    "read_lag": (0.0, "--read-lag"),
    "extra_models": ([], "--accept-model"),
    "resource_packs": (True, "--no-resource-packs"),
    "image_concurrency_slots": (None, "--image-concurrency-slots"),
}


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def add_options(parser: argparse.ArgumentParser) -> None:
    """The options only ``--provider kling`` takes."""
    parser.add_argument(
        "--slow-reply",
        type=_non_negative_float,
        default=None,
        metavar="SECONDS",
        help="(kling) how long the profile's slow replies wait; make it longer than "
        "provider.timeout",
    )
    parser.add_argument(
        "--no-external-id-query",
        dest="query_by_external_id",
        action="store_false",
        help="(kling) GET /v1/<family>/<id> finds tasks by task id only, not by external_task_id "
        "(some clients report Kling's does not): lookups must go through the list",
    )
    parser.add_argument(
        "--read-lag",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="(kling) a new task stays invisible to reads by external id and to lists for "
        "this long (reads by task id see it at once; a create reusing its external id is "
        "refused at once) (default: 0)",
    )
    parser.add_argument(
        "--accept-model",
        dest="extra_models",
        action="append",
        default=[],
        metavar="NAME",
        help="(kling) accept creates naming NAME, a model the catalogue does not know (as if "
        "Kling had just shipped it), with the checks every model gets; repeat for several",
    )
    parser.add_argument(
        "--no-resource-packs",
        dest="resource_packs",
        action="store_false",
        help="(kling) GET /account/costs answers as an account without resource packs "
        "(default: one video pack, its units falling as tasks are committed)",
    )
    parser.add_argument(
        "--image-concurrency-slots",
        type=int,
        default=None,
        metavar="N",
        help="(kling) the image pack's own slot limit (Kling counts each resource-pack type "
        "apart; default: the same as --concurrency-slots, each pack its own)",
    )


def command() -> SimulateCommand:
    return SimulateCommand(
        add_options=add_options,
        options=OPTIONS,
        profiles={name: profile.description for name, profile in PROFILES.items()},
        slots="429/1303 over it, default: the profile's, most have none",
        billing="429/1102, resource pack depleted, default: the profile's, 'billing' uses 20, "
        "the others never run out",
        run=serve,
    )


def serve(
    args: argparse.Namespace,
    out: TextIO,
    stop: threading.Event,
    stop_on_signals: StopOnSignals,
) -> int:
    """Run Kling's simulator in the foreground; 0 after SIGINT/SIGTERM (or ``stop``), 2 when
    the options or the port do not do."""
    try:
        config = _config(args)
    except ValueError as exc:  # e.g. --accept-model naming a model the catalogue has
        out.write(f"error: {exc}\n")
        out.flush()
        return 2
    sim = Simulator(config)
    try:
        url = sim.start()
    except OSError as exc:
        out.write(f"error: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}\n")
        out.flush()
        return 2
    try:
        with stop_on_signals() as signalled:
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
        image_concurrency_slots=getattr(args, "image_concurrency_slots", None),
    )
