"""Command line: parse, load, call the engine, map outcomes to exit codes.

Exit codes (DESIGN.md): 0 every item succeeded; 1 finished with failed or partial items;
2 invalid manifest/arguments/credentials (nothing sent); 3 stopped by an account-level error,
or by a failure of this machine's files (disk full, I/O error...: local_failures.py), resumable;
4 another run of the same batch holds the lock (nothing sent); 130 interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from orchestrator.cli.common import Exit, LocalStop, Usage
from orchestrator.cli.inspect import cmd_dry_run, cmd_state, cmd_status, cmd_validate
from orchestrator.cli.parser import build_parser, program_name
from orchestrator.cli.run import cmd_run
from orchestrator.providers import registry


def _terminated(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    # SIGTERM like SIGINT from the start (cron's kill, a service stop): before the engine
    # installs its own handling nothing was sent, and the exit code is 130 either way.
    signal.signal(signal.SIGTERM, _terminated)
    args = build_parser(program_name()).parse_args(argv)
    try:
        if args.command == "run":
            if args.dry_run:
                return int(cmd_dry_run(args, sys.stdout, sys.stderr))
            return int(cmd_run(args, sys.stderr, sys.stdout))
        if args.command == "status":
            return int(cmd_status(args, sys.stdout))
        if args.command == "state":
            return int(cmd_state(args, sys.stdout))
        if args.command == "report":
            from orchestrator.cli.reporting import cmd_report

            return int(cmd_report(args, sys.stdout, sys.stderr))
        if args.command == "models":
            table = registry.plugin(args.provider).models
            sys.stdout.write(table() if table is not None else "no catalogue\n")
            return int(Exit.OK)
        if args.command in ("schema", "init"):
            from orchestrator.cli.authoring import cmd_init, cmd_schema

            command = cmd_schema if args.command == "schema" else cmd_init
            return int(command(args, sys.stdout))
        if args.command == "simulate":
            from orchestrator.cli.simulate import cmd_simulate

            return cmd_simulate(args, sys.stdout)
        return int(cmd_validate(args, sys.stderr, sys.stdout))
    except Usage as exc:
        if exc.args:
            sys.stderr.write(f"{exc.args[0]}\n")
        return int(Exit.INVALID)
    except LocalStop as exc:
        sys.stderr.write(f"{exc}\n")
        return int(Exit.ACCOUNT_STOP)
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error worth a traceback.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silences the exit-time flush
        return int(Exit.OK)
    except KeyboardInterrupt:
        # Before the engine's own signal handling is in place: nothing was sent yet.
        sys.stderr.write("\nInterrupted.\n")
        return int(Exit.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
