"""The command line's conventions: --version, a description and the exit codes in every
command's --help, and the program named as the user called it."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from orchestrator.cli.parser import CONSOLE_SCRIPT, EXIT_CODES, build_parser, program_name, version
from tests.conftest import REPO


def test_version_names_the_program_and_the_installed_version() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "--version"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"python -m orchestrator {version()}"
    assert version()[0].isdigit()  # installed (pip install -e .): pyproject's version


def test_the_program_is_named_as_it_was_called() -> None:
    assert program_name("/usr/local/bin/orchestrator") == CONSOLE_SCRIPT == "orchestrator"
    assert program_name("/repo/orchestrator/__main__.py") == "python -m orchestrator"
    assert program_name("/venv/bin/pytest") == "python -m orchestrator"
    assert build_parser("orchestrator").format_usage().startswith("usage: orchestrator ")


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("name", ["run", "validate", "status"])
def test_every_batch_command_says_what_it_does_and_its_exit_codes(name: str) -> None:
    command = _commands(build_parser())[name]
    text = command.format_help()
    assert command.description and command.description.split()[0] in text
    assert EXIT_CODES in text  # the table as written, not rewrapped
    assert "3    stopped by the account" in text
    positional = next(a for a in command._actions if a.dest == "manifest")
    assert positional.help


def test_every_command_has_a_description() -> None:
    for name, command in _commands(build_parser()).items():
        assert command.description, name
    assert EXIT_CODES in build_parser().format_help()
