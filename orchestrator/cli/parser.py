"""The command line's arguments: every command and its options."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from pathlib import Path

from orchestrator import (
    layout,
)
from orchestrator.cli.common import whole_number
from orchestrator.providers import registry
from orchestrator.report import STATUSES
from orchestrator.state_location import ENV

positive_int = whole_number(1)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


#: The distribution this package is installed as (pyproject.toml's project name).
DISTRIBUTION = "kling-batch-orchestrator"
#: The console script pyproject.toml installs.
CONSOLE_SCRIPT = "orchestrator"
#: What every command's --help ends with.
STATE_HELP = (
    f"the ledger: a file (default: <output.dir>/{layout.STATE_FILE}) or a postgresql:// URL of "
    f"a database several hosts share (default: ${ENV} when set)"
)

EXIT_CODES = """exit codes:
  0    every item succeeded
  1    the batch finished with failed or partial items (see the report)
  2    bad manifest, arguments or credentials: nothing was sent
  3    stopped by the account (billing, credentials) or by this machine (disk full);
       fix the cause and rerun: it resumes
  4    another run of this batch holds its lock: nothing was sent
  130  interrupted (Ctrl-C, SIGTERM): rerun to resume"""


class _Formatter(argparse.HelpFormatter):
    """Descriptions wrapped to the terminal; the exit code table kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith("exit codes:"):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def program_name(argv0: str | None = None) -> str:
    """How the user called us: by the console script (``orchestrator``, pyproject.toml's
    [project.scripts]), or ``python -m orchestrator``."""
    called = os.path.basename(argv0 if argv0 is not None else sys.argv[0])
    return CONSOLE_SCRIPT if called == CONSOLE_SCRIPT else "python -m orchestrator"


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog or "python -m orchestrator",
        description="Run batches of generation tasks (Kling, LTX Video) resumably, never paying "
        "twice.",
        epilog=EXIT_CODES,
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, what: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=what, description=description, epilog=EXIT_CODES,
            formatter_class=_Formatter,
        )

    run = command(
        "run", "run (or resume) a batch",
        "Submit the manifest's items under its limits, poll them to the end, verify and "
        "download what they made, and write report.json, results.jsonl and report.md. A rerun "
        "resumes: finished items are not sent again, tasks in flight are polled, and a create "
        "whose answer was lost is settled before anything is resent.",
    )
    run.add_argument("manifest", type=Path, help="the batch's manifest (YAML)")
    run.add_argument(
        "--state", help=STATE_HELP
    )
    run.add_argument(
        "--report", type=Path, help=f"report path (default: <output.dir>/{layout.REPORT_FILE})"
    )
    run.add_argument("--concurrency", type=positive_int, help="override limits.concurrency")
    run.add_argument("--rpm", type=positive_float, help="override limits.requests_per_minute")
    run.add_argument(
        "--verify-files",
        action="store_true",
        help="hash every downloaded file of the finished items and download again those whose "
        "sha256 differs from the record (by default only files whose size or modification "
        "time changed are hashed)",
    )
    run.add_argument(
        "--no-progress",
        action="store_true",
        help="on a terminal, print every event instead of the live progress line",
    )
    run.add_argument(
        "--new-batch",
        action="store_true",
        help="with a provider that cannot look tasks up: start the batch afresh in an output "
        "folder whose earlier runs this state file does not know, paying again for every item "
        "(without it such a run is refused)",
    )
    run.add_argument(
        "--rerun-changed",
        action="store_true",
        help="give a new attempt (a new paid task) to the items whose definition in the manifest "
        "changed since their result was made; without it they are only reported",
    )

    run.add_argument(
        "--resubmit-unresolved",
        action="store_true",
        help="send again the items left unresolved by a provider that cannot look tasks up (a "
        "create sent whose answer was lost): this MAY PAY TWICE for each of them; where the "
        "provider can look tasks up they are looked up first, whatever this says",
    )

    run.add_argument(
        "--json",
        action="store_true",
        help="at the end, print one JSON line on stdout: the batch, the exit code and reason, "
        "the counts, what stopped it, the report and log paths (for scripts and cron)",
    )
    quiet = run.add_mutually_exclusive_group()
    quiet.add_argument(
        "-q", "--quiet", action="store_true",
        help="on stderr, errors only and the line a stop ends with (no summary); the log file "
        "keeps everything",
    )
    quiet.add_argument(
        "-v", "--verbose", action="store_true",
        help="on stderr, every event the log file gets (retries that may still succeed "
        "included)",
    )
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="say what the run would do and where it would send (provider, host, the items' "
        "kinds and models, limits, what the state file holds, the estimate), then exit: "
        "nothing is sent or written",
    )
    run.add_argument(
        "--retry-failed",
        nargs="*",
        metavar="ID",
        default=None,
        help="give the failed items (those named, or every failed item) a new attempt, a new "
        "paid task, whatever their failure was (a refusal you have dealt with, say); within "
        "retry.max_attempts over all runs",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help="with --retry-failed: one attempt more even past retry.max_attempts",
    )
    run.add_argument(
        "--only",
        nargs="+",
        metavar="ID",
        default=None,
        help="send, poll and download these items alone; the others are left as they are (the "
        "report still describes the whole batch)",
    )

    validate = command(
        "validate", "check a manifest offline; sends nothing",
        "Check the manifest as a run would (every item against its provider's model rules, "
        "the images it names, the credentials in the environment) without sending anything; "
        "--estimate adds what the batch will cost.",
    )
    validate.add_argument("manifest", type=Path, help="the batch's manifest (YAML)")
    validate.add_argument(
        "--estimate",
        action="store_true",
        help="also print the units the batch will consume (from the price table)",
    )

    state = command(
        "status", "what the ledger knows of a batch; no network",
        "Each item's state as the ledger last recorded it (a running batch's included), from "
        "the state file alone: nothing is sent.",
    )
    state.add_argument("manifest", type=Path, help="the batch's manifest (YAML)")
    state.add_argument(
        "--state", help=STATE_HELP
    )
    state.add_argument("--json", action="store_true", help="machine-readable output")
    state.add_argument(
        "--failed",
        action="store_true",
        help="list only the items that need you: failed, partial and unresolved (the totals "
        "still count every item)",
    )
    state.add_argument(
        "--status",
        action="append",
        choices=STATUSES,
        metavar="STATUS",
        help=f"list only the items of this report status ({', '.join(STATUSES)}); repeat for "
        "several",
    )

    again = command(
        "report", "write the batch's report from its ledger now; no network",
        "Write report.json, results.jsonl, report.md and report.html from the ledger alone, as "
        "a run writes them at its end (marked snapshot), from any host that reaches it: while "
        "a run is going, or after one. Nothing is sent.",
    )
    again.add_argument("manifest", type=Path, help="the batch's manifest (YAML)")
    again.add_argument("--state", help=STATE_HELP)
    again.add_argument(
        "--report", type=Path, help=f"report path (default: <output.dir>/{layout.REPORT_FILE})"
    )

    state_cmd = sub.add_parser(
        "state",
        help="check a batch's state file, or move an unreadable one aside; no network",
        description="check: what the state file is and what the next run will do with it "
        "(exit 0: a run can go on with it; 1: it cannot be read, see recover; 2: it is not "
        "this batch's). recover: move an unreadable state file aside (kept, renamed "
        "<state>.unreadable-<time>) so that the next run starts a new ledger that looks every "
        "item's tasks up by their external ids and adopts them: nothing is paid for twice.",
    )
    state_sub = state_cmd.add_subparsers(dest="state_command", required=True, metavar="ACTION")
    for action, what in (
        ("check", "what the state file is; reads only"),
        ("recover", "move an unreadable state file aside; nothing is deleted"),
    ):
        one = state_sub.add_parser(action, help=what)
        one.add_argument("manifest", type=Path, help="the batch's manifest (YAML)")
        one.add_argument(
            "--state", help=STATE_HELP
        )
        one.add_argument("--json", action="store_true", help="machine-readable output")
    move = state_sub.add_parser(
        "migrate",
        help="move a batch's SQLite ledger into a PostgreSQL database (whole: every intent)",
        description="Move the ledger at --from (a state file) into the database at --to, "
        "whole: items, attempts with their external ids, charges, file digests, runs and the "
        "ledger's id. A batch stopped mid-way moves with its intents (a create in flight is "
        "looked up on the next run). The file is renamed aside, kept. Then run the batch with "
        "--state URL (or ORCHESTRATOR_STATE).",
    )
    move.add_argument("--from", dest="source", type=Path, required=True,
                      help="the SQLite state file")
    move.add_argument("--to", dest="target", required=True,
                      help="the postgresql:// URL of the database")

    models = sub.add_parser(
        "models",
        help="the models this version knows of a provider, and what each takes (the "
        "tables of docs/providers.md)",
        description="Print a provider's model catalogue as a Markdown table. Kling: status "
        "(with retirement dates), modes, durations, sound, end frames, multi-shot, image "
        "options and API. LTX: status, kinds, resolutions, fps and durations, last frames and "
        "list prices.",
    )
    models.add_argument(
        "--provider", choices=registry.NAMES, default=registry.DEFAULT_PROVIDER,
        help=f"whose models (default: {registry.DEFAULT_PROVIDER})",
    )

    _add_authoring(sub)

    from orchestrator.cli.simulate import add_simulate_parser

    add_simulate_parser(sub)
    return parser


#: What schema's and init's --help end with: they write files, they send nothing.
WRITER_EXIT_CODES = """exit codes:
  0    written
  2    bad arguments, or a file that cannot be written (init: the manifest exists)"""


def _add_authoring(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``schema`` and ``init``: what a new user needs to write a manifest."""
    names = registry.NAMES
    schema = sub.add_parser(
        "schema",
        help="a provider's manifest JSON Schema (for editors), or its field reference",
        description="Print the JSON Schema (draft 2020-12) of a manifest for the provider, "
        "made from the models that validate manifests: point an editor at it and it flags "
        "what validate would (unknown keys, types, ranges, closed sets, model names) as you "
        "type. --markdown prints the field reference rendered from it instead (the tables of "
        "docs/fields-<provider>.md).",
        epilog=WRITER_EXIT_CODES,
        formatter_class=_Formatter,
    )
    schema.add_argument(
        "--provider", choices=names, default=registry.DEFAULT_PROVIDER,
        help=f"whose manifest (default: {registry.DEFAULT_PROVIDER})",
    )
    schema.add_argument(
        "--markdown", action="store_true",
        help="the field reference (Markdown tables) instead of the schema",
    )
    schema.add_argument(
        "--output", type=Path, metavar="FILE", help="write it to FILE (default: stdout)"
    )

    init = sub.add_parser(
        "init",
        help="write a starter manifest, every key explained, and its schema beside it",
        description="Write a commented starter manifest for the provider: production values "
        "(the provider's API, poll and retry settings meant for it), a couple of example "
        "items, and a first line that points editors at the manifest's JSON Schema, written "
        "beside it (orchestrator-<provider>.schema.json, shared by the folder's manifests). "
        "Then it says what to do next. An existing manifest is not overwritten without "
        "--force; the schema file is always written anew.",
        epilog=WRITER_EXIT_CODES,
        formatter_class=_Formatter,
    )
    init.add_argument(
        "path", type=Path, nargs="?", default=Path("manifest.yaml"),
        help="the manifest to write (default: manifest.yaml; a folder: manifest.yaml in it)",
    )
    init.add_argument(
        "--provider", choices=names, default=registry.DEFAULT_PROVIDER,
        help=f"whose batch (default: {registry.DEFAULT_PROVIDER})",
    )
    init.add_argument(
        "--name",
        help="the batch's name (default: the file's name; my-batch for manifest.yaml)",
    )
    init.add_argument(
        "--force", action="store_true", help="replace the manifest if it exists"
    )
