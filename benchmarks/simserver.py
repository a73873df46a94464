"""The simulator in a process of its own, with the settings a benchmark needs.

``python -m orchestrator.simulator`` has no flag for the task duration or the create rate, so this
launcher builds the :class:`SimConfig` itself. It prints one JSON line (URL and demo credentials)
on stdout once it listens, then serves until its stdin is closed (the parent exited or closed
the pipe) or it gets SIGTERM/SIGINT. Running it in its own process keeps its CPU out of the
orchestrator's figures, and lets the parent read the simulator's own rusage when it ends.

    python -m benchmarks.simserver --slots 200 --duration-min 1 --duration-max 2
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from types import FrameType

from orchestrator.simulator import SimConfig, Simulator


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.simserver")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slots", type=int, default=None, help="account slots (default: none)")
    parser.add_argument("--duration-min", type=float, default=1.0)
    parser.add_argument("--duration-max", type=float, default=2.0)
    parser.add_argument(
        "--creates-per-second",
        type=float,
        default=None,
        help="create requests admitted per sliding second (default: unlimited)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = SimConfig(
        port=args.port,
        seed=args.seed,
        concurrency_slots=args.slots,
        task_duration=(args.duration_min, args.duration_max),
        requests_per_second=args.creates_per_second,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def watch_stdin() -> None:
        # EOF on stdin: the benchmark that started us is gone (or done); stop serving.
        while sys.stdin.buffer.read(4096):
            pass
        stop.set()

    threading.Thread(target=watch_stdin, name="stdin-watch", daemon=True).start()
    with Simulator(config) as sim:
        # The demo credentials are the simulator's public defaults, not secrets.
        hello = {
            "url": sim.url,
            "access_key": config.access_key,
            "secret_key": config.secret_key,
            "api_key": config.api_key,
        }
        sys.stdout.write(json.dumps(hello) + "\n")
        sys.stdout.flush()
        while not stop.wait(0.2):
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
