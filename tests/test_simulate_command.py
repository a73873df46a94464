"""The ``simulate`` command serves whichever simulator a provider's plug-in brings: a third
provider's options, profiles and serving plug in without the command naming it."""

from __future__ import annotations

import argparse
import dataclasses
import io
import threading
from typing import Any, TextIO

import pytest

from orchestrator.cli import simulate
from orchestrator.providers import registry
from orchestrator.providers.plugin import SimulateCommand, StopOnSignals


class ThirdSimulator:
    def __init__(self) -> None:
        self.served: list[argparse.Namespace] = []

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--third-knob", type=int, default=None, help="(third) a knob")

    def serve(self, args: argparse.Namespace, out: TextIO, stop: threading.Event,
              stop_on_signals: StopOnSignals) -> int:
        self.served.append(args)
        with stop_on_signals() as signalled:
            assert signalled == []
        return 0

    def command(self) -> SimulateCommand:
        return SimulateCommand(
            add_options=self.add_options,
            options={"third_knob": (None, "--third-knob")},
            profiles={"clean": "All is well.", "storm": "Everything fails, loudly."},
            slots="503 over it",
            billing="403, default never",
            run=self.serve,
        )


@pytest.fixture
def third(monkeypatch: pytest.MonkeyPatch) -> ThirdSimulator:
    sim = ThirdSimulator()
    plugins = dict(registry.plugins())
    plugins["third"] = dataclasses.replace(plugins["kling"], name="third", simulate=sim.command)
    monkeypatch.setattr(registry, "NAMES", (*registry.NAMES, "third"))
    monkeypatch.setattr(registry, "plugin", plugins.__getitem__)
    return sim


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orchestrator")
    simulate.add_simulate_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def run(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    return simulate.cmd_simulate(parse("simulate", *argv), out), out.getvalue()


def test_a_third_simulator_is_served_with_its_own_options_and_profiles(
    third: ThirdSimulator,
) -> None:
    assert run("--provider", "third", "--profile", "storm", "--third-knob", "3")[0] == 0
    (args,) = third.served
    assert (args.profile, args.third_knob, args.port) == ("storm", 3, 0)
    code, text = run("--provider", "third", "--list")
    assert code == 0 and "\nstorm\n    Everything fails, loudly.\n" in f"\n{text}"


def test_each_simulators_options_stay_its_own(third: ThirdSimulator) -> None:
    assert run("--third-knob", "3") == (2, "error: --third-knob: only with --provider third\n")
    code, text = run("--provider", "third", "--read-lag", "2")
    assert (code, text) == (2, "error: --read-lag: only with --provider kling\n")
    assert third.served == []


def test_the_shared_options_say_what_each_simulator_answers(third: ThirdSimulator) -> None:
    parser = argparse.ArgumentParser()
    simulate.add_simulate_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert "third: 503 over it" in text and "third: 403, default never" in text
    assert "kling: 429/1303 over it" in text and "ltx: 429 concurrency_limit_error" in text
    assert "third: clean, storm" in text


def test_every_bundled_provider_brings_a_simulator() -> None:
    for name in registry.NAMES:
        load: Any = registry.plugin(name).simulate
        assert load is not None and set(load().profiles) >= {"clean", "flaky", "billing"}
