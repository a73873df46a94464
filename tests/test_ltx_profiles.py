"""The LTX simulator's named fault profiles: each one served as data, and a batch rehearsed
against the flaky one as a user would (``simulate --provider ltx --profile flaky``)."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from orchestrator.cli.simulate import add_simulate_parser, cmd_simulate
from orchestrator.providers.ltx.simulator import LtxSimConfig, LtxSimulator
from orchestrator.providers.ltx.simulator.cli import config_from_args
from orchestrator.providers.ltx.simulator.profiles import PROFILES, profile
from tests.conftest import run_cli
from tests.test_e2e_ltx import by_id, env_for, write_manifest


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m orchestrator")
    add_simulate_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def test_the_profiles_are_the_ones_a_user_rehearses() -> None:
    assert list(PROFILES) == [
        "clean", "flaky", "rate-limited", "task-failures", "billing", "content-filter", "chaos"
    ]
    assert profile("clean").faults == ()
    effects = {rule.effect for rule in profile("flaky").faults}
    assert {"error", "error_after_commit", "drop_after_commit", "truncate"} <= effects
    assert {r.error_type for r in profile("task-failures").faults} == {
        "api_error", "content_filtered_error", "invalid_request_error"
    }
    assert profile("billing").billing_after == 20
    assert {r.http_status for r in profile("content-filter").faults} == {422}
    chaos = profile("chaos")
    assert len(chaos.faults) == sum(len(profile(n).faults) for n in
                                    ("flaky", "rate-limited", "task-failures"))
    with pytest.raises(ValueError, match="known: clean, flaky"):
        profile("auth")


@pytest.mark.parametrize("name", list(PROFILES))
def test_every_profile_serves_a_valid_account(name: str) -> None:
    config = config_from_args(parse("simulate", "--provider", "ltx", "--profile", name))
    assert config.faults == profile(name).faults
    assert config.concurrency_slots == profile(name).concurrency_slots
    assert config.billing_after == profile(name).billing_after


def test_the_command_line_wins_over_the_profile() -> None:
    config = config_from_args(parse(
        "simulate", "--provider", "ltx", "--profile", "rate-limited", "--concurrency-slots", "5",
        "--requests-per-second", "9", "--billing-after", "3", "--seed", "4",
    ))
    assert (config.concurrency_slots, config.requests_per_second) == (5, 9.0)
    assert (config.billing_after, config.seed) == (3, 4)
    assert config_from_args(parse("simulate", "--provider", "ltx", "--profile", "billing",
                                  "--billing-after", "0")).billing_after == 0


def test_list_prints_the_ltx_profiles() -> None:
    out = io.StringIO()
    assert cmd_simulate(parse("simulate", "--provider", "ltx", "--list"), out) == 0
    text = f"\n{out.getvalue()}"
    for name, found in PROFILES.items():
        assert f"\n{name}\n" in text
        assert found.description.split()[0] in text
    assert "\nclock-skew\n" not in text  # Kling's


def test_a_batch_on_the_flaky_profile_pays_no_job_twice_and_says_what_was_lost(
    tmp_path: Path,
) -> None:
    config = profile("flaky").config(LtxSimConfig(task_duration=(0.05, 0.15), seed=7))
    sim = LtxSimulator(config)
    sim.start()
    try:
        items = [{"id": f"clip-{i:02}", "prompt": f"flaky prompt {i:02}"} for i in range(40)]
        path = write_manifest(tmp_path, sim, items, limits={"concurrency": 2})
        result = run_cli(["run", str(path), "--no-progress"], env_for(sim), timeout=240)
        assert result.code in (0, 1), result.stderr
        stats = sim.stats()
        fired = stats.faults_fired
        # The profile really misbehaved, on creates before and after a job was made.
        submit_faults = {k: n for k, n in fired.items() if k.startswith("submit ")}
        made = sum(n for k, n in submit_faults.items() if "after_commit" in k)
        assert made and sum(submit_faults.values()) > made, fired
        assert max(stats.by_prompt.values()) == 1  # no job paid twice
        report = by_id(tmp_path)
        statuses = {item["status"] for item in report.values()}
        assert statuses <= {"succeeded", "unresolved"}, statuses
        # A submit answered 5xx or not at all may have made its job, and LTX cannot be asked:
        # each one is held unresolved, whether or not the job exists, and none is resent.
        lost = [item for item in report.values() if item["status"] == "unresolved"]
        assert len(lost) == sum(submit_faults.values())
        for item in lost:
            assert "--resubmit-unresolved" in item["error"]["hint"]
        done = sum(1 for item in report.values() if item["status"] == "succeeded")
        assert done + len(lost) == len(items)
        assert stats.jobs_created == len(stats.by_prompt) == done + made
    finally:
        sim.stop()
