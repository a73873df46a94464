"""``python -m orchestrator.simulator``: run the simulator in the foreground until Ctrl-C."""

from __future__ import annotations

import argparse
import contextlib
import signal
import threading

from orchestrator.simulator import SimConfig, Simulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.simulator",
        description="Run the bundled Kling-compatible simulator on loopback.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: any free)")
    parser.add_argument("--seed", type=int, default=0, help="seed for ids and task durations")
    parser.add_argument(
        "--concurrency-slots", type=int, default=None, help="account slot limit (default: none)"
    )
    args = parser.parse_args(argv)
    config = SimConfig(port=args.port, seed=args.seed, concurrency_slots=args.concurrency_slots)
    with Simulator(config) as sim:
        # The demo credentials are the simulator's public defaults, not secrets.
        print(f"Kling simulator listening on {sim.url}")
        print(f"# set provider.base_url: {sim.url} in the manifest, then:")
        print(f"export KLING_ACCESS_KEY={config.access_key}")
        print(f"export KLING_SECRET_KEY={config.secret_key}")
        print(f"# or instead: export KLING_API_KEY={config.api_key}")
        print("Press Ctrl-C to stop.", flush=True)
        stop = threading.Event()
        # SIGTERM too, so a supervisor (or a background job whose SIGINT is ignored) can end it
        # cleanly.
        signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
