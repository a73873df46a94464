"""``python -m orchestrator.simulator``: the ``simulate`` command on its own (see cli.py)."""

from __future__ import annotations

import argparse
import sys

from orchestrator.cli.simulate import add_simulate_arguments, cmd_simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.simulator",
        description="Run a bundled provider simulator (Kling's by default) on loopback until "
        "Ctrl-C.",
    )
    add_simulate_arguments(parser)
    return cmd_simulate(parser.parse_args(argv), sys.stdout)


if __name__ == "__main__":
    raise SystemExit(main())
