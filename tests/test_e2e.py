"""End to end: the CLI, as a user runs it, against the simulator on loopback.

What was paid for is checked from the simulator's own accounting, not from our report.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.simulator import FaultRule, SimConfig, Simulator, make_config
from tests.conftest import cli_env, png_bytes, run_cli, start_cli, write_manifest


def load_report(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "out" / "report.json").read_text())
    return data


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in report["items"]}


def text_items(n: int, prefix: str = "clip") -> list[dict[str, Any]]:
    return [{"id": f"{prefix}-{i:03d}", "prompt": f"{prefix} prompt number {i}"} for i in range(n)]


def assert_each_prompt_paid_once(sim: Simulator, prompts: list[str]) -> None:
    stats = sim.stats()
    assert stats.duplicate_external_ids == ()
    assert {p: stats.by_prompt.get(p, 0) for p in prompts} == dict.fromkeys(prompts, 1)
    assert stats.tasks_created == len(prompts)


def test_mixed_batch_succeeds(tmp_path: Path, sim: Simulator) -> None:
    (tmp_path / "cat.png").write_bytes(png_bytes(512, 384))
    items: list[dict[str, Any]] = [
        {"id": "drone", "prompt": "Aerial drone shot over misty mountains"},
        {"id": "cat", "kind": "image2video", "image": "cat.png", "prompt": "The cat turns"},
        {"id": "mug", "kind": "image", "model": "kling-v2-1", "prompt": "A mug", "n": 3},
    ]
    manifest = write_manifest(tmp_path, sim, items)
    result = run_cli(["run", str(manifest)], cli_env(sim))
    assert result.code == 0, result.stderr
    report = load_report(tmp_path)
    assert report["counts"]["succeeded"] == 3
    items_by_id = by_id(report)
    assert len(items_by_id["mug"]["assets"]) == 3
    assert items_by_id["cat"]["kind"] == "image2video"
    assert all(item["attempts"] == 1 and item["error"] is None for item in report["items"])
    assert_each_prompt_paid_once(sim, [i["prompt"] for i in items])
    # The simulator checks the wire format (duration as a string, raw base64): a wrong body
    # would have been a 400, so three creates means three well-formed requests.
    assert sim.stats().create_requests == 3
    assert "3 succeeded" in result.stderr

    # A rerun of a finished batch sends nothing at all.
    before = sim.stats()
    rerun = run_cli(["run", str(manifest)], cli_env(sim))
    assert rerun.code == 0, rerun.stderr
    after = sim.stats()
    assert (after.create_requests, after.query_requests, after.list_requests) == (
        before.create_requests,
        before.query_requests,
        before.list_requests,
    )


def test_504_after_commit_is_looked_up_not_resubmitted(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(
        FaultRule(
            op="create", effect="error_after_commit", match="flaky", times=1,
            http_status=504, code=5002, message="internal timeout",
        )
    )
    items = [{"id": "flaky", "prompt": "a flaky gateway"}, {"id": "calm", "prompt": "calm sea"}]
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
    assert result.code == 0, result.stderr
    assert_each_prompt_paid_once(sim, ["a flaky gateway", "calm sea"])
    assert sim.stats().create_requests == 2
    report = by_id(load_report(tmp_path))
    assert report["flaky"]["status"] == "succeeded"


def test_old_create_is_found_through_the_list_past_the_thousand_newest(tmp_path: Path) -> None:
    # The query path does not take external ids here, so a lookup must read the list. The run
    # that got a 504 after commit could not look the task up (the list failed); by the rerun,
    # 1200 newer tasks of other clients bury it on page 3. Was: only 2 pages were read, the
    # task looked absent and was sent again: paid twice.
    config = SimConfig(task_duration=(0.1, 0.3), query_by_external_id=False)
    with Simulator(config) as sim, httpx.Client(base_url=sim.url) as other_client:
        sim.add_fault(FaultRule(op="create", effect="error_after_commit", match="buried",
                                times=1, http_status=504, code=5002, message="timeout"))
        sim.add_fault(FaultRule(op="list", effect="error", times=1))
        items = [{"id": "old", "prompt": "buried under newer tasks"}]
        manifest = write_manifest(tmp_path, sim, items, retry={"max_attempts": 1})
        first = run_cli(["run", str(manifest)], cli_env(sim))
        assert first.code == 1, first.stderr
        assert by_id(load_report(tmp_path))["old"]["error"]["message"].startswith(
            "could not confirm")

        headers = {"Authorization": f"Bearer {sim.config.api_key}"}
        for i in range(1200):
            answer = other_client.post(
                "/v1/videos/text2video", headers=headers,
                json={"model_name": "kling-v2-5-turbo", "prompt": f"someone else's {i}"},
            )
            assert answer.json()["code"] == 0
        lists_before = sim.stats().list_requests

        rerun = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
        assert rerun.code == 0, rerun.stderr
        stats = sim.stats()
    assert stats.by_prompt["buried under newer tasks"] == 1
    assert stats.create_requests == 1 + 1200  # the item's create was never sent again
    assert stats.list_requests - lists_before >= 3  # found on the third page
    assert by_id(load_report(tmp_path))["old"]["status"] == "succeeded"


def test_connection_dropped_after_commit_is_looked_up(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(FaultRule(op="create", effect="drop_after_commit", match="dropped", times=1))
    items = [{"id": "d", "prompt": "dropped connection"}]
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
    assert result.code == 0, result.stderr
    assert_each_prompt_paid_once(sim, ["dropped connection"])


def test_500_before_commit_is_resubmitted_after_lookup(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(FaultRule(op="create", effect="error", match="hiccup", times=1))
    items = [{"id": "h", "prompt": "a server hiccup"}]
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
    assert result.code == 0, result.stderr
    stats = sim.stats()
    assert stats.create_requests == 2  # the first never committed: sent again
    assert stats.creates_reusing_external_id_without_lookup == 0
    assert_each_prompt_paid_once(sim, ["a server hiccup"])


def test_rate_limited_create_is_retried(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(
        FaultRule(
            op="create", effect="error", match="busy", times=2,
            http_status=429, code=1302, message="request too fast", retry_after="0",
        )
    )
    items = [{"id": "r", "prompt": "busy hour"}]
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
    assert result.code == 0, result.stderr
    assert sim.stats().create_requests == 3
    assert_each_prompt_paid_once(sim, ["busy hour"])


def test_fewer_assets_is_partial(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(FaultRule(op="create", effect="fewer_assets", match="mugs", assets=2))
    items = [{"id": "mugs", "kind": "image", "model": "kling-v2-1", "prompt": "mugs", "n": 4}]
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
    assert result.code == 1, result.stderr
    item = by_id(load_report(tmp_path))["mugs"]
    assert item["status"] == "partial"
    assert item["expected_assets"] == 4
    assert len(item["assets"]) == 2
    assert item["error"]["category"] == "asset_mismatch"
    assert "2 of 4" in item["error"]["message"]
    assert sim.stats().tasks_created == 1  # partial is not resubmitted (it was paid)


def test_zero_assets_is_failed(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(FaultRule(op="create", effect="fewer_assets", match="empty", assets=0))
    items = [{"id": "e", "prompt": "empty result"}]
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
    assert result.code == 1
    item = by_id(load_report(tmp_path))["e"]
    assert (item["status"], item["error"]["category"]) == ("failed", "asset_mismatch")


def test_content_policy_failure_is_not_retried(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(
        FaultRule(
            op="create", effect="task_failed", match="forbidden",
            message="Failure to pass the risk control system: content safety policy",
        )
    )
    items = [{"id": "bad", "prompt": "something forbidden"}, {"id": "ok", "prompt": "a meadow"}]
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
    assert result.code == 1, result.stderr
    report = by_id(load_report(tmp_path))
    assert report["bad"]["status"] == "failed"
    assert report["bad"]["error"]["category"] == "policy"
    assert report["bad"]["error"]["retryable"] is False
    assert report["bad"]["error"]["hint"]
    assert report["ok"]["status"] == "succeeded"
    assert sim.stats().by_prompt["something forbidden"] == 1
    assert "bad" in result.stderr and "policy" in result.stderr


def test_generation_timeout_failure_gets_a_new_attempt(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(
        FaultRule(
            op="create", effect="task_failed", match="slow", times=1,
            message="Generation timeout, please try again",
        )
    )
    items = [{"id": "s", "prompt": "slow render"}]
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
    assert result.code == 0, result.stderr
    stats = sim.stats()
    assert stats.by_prompt["slow render"] == 2  # a failed generation, then a new one
    assert stats.duplicate_external_ids == ()  # each attempt has its own external id
    assert by_id(load_report(tmp_path))["s"]["attempts"] == 2


def test_billing_exhaustion_stops_the_batch(tmp_path: Path, sim: Simulator) -> None:
    sim.set_billing_after(3)
    items = text_items(12)
    manifest = write_manifest(
        tmp_path, sim, items, limits={"concurrency": 2, "requests_per_minute": 6000}
    )
    result = run_cli(["run", str(manifest)], cli_env(sim))
    assert result.code == 3, result.stderr
    stats = sim.stats()
    assert stats.tasks_created == 3
    # One refused create stops the batch: not one failed create per remaining item.
    assert stats.create_requests <= 3 + 2
    report = load_report(tmp_path)
    assert report["counts"]["succeeded"] == 3  # running tasks were allowed to finish
    assert report["counts"]["not_run"] == 9
    assert report["stopped_by"]["category"] == "billing"
    assert report["stopped_by"]["code"] == 1102
    assert "1102" in result.stderr and "What to do" in result.stderr

    # After "topping up", the rerun finishes the batch without resubmitting anything.
    sim.set_billing_after(None)
    rerun = run_cli(["run", str(manifest)], cli_env(sim))
    assert rerun.code == 0, rerun.stderr
    assert_each_prompt_paid_once(sim, [i["prompt"] for i in items])


def test_auth_failure_stops_with_exit_3(tmp_path: Path, sim: Simulator) -> None:
    env = cli_env(sim)
    env["KLING_SECRET_KEY"] = "not-the-secret-key-at-all"
    items = text_items(5)
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], env)
    assert result.code == 3, result.stderr
    assert sim.stats().tasks_created == 0
    assert sim.stats().create_requests <= 2
    assert load_report(tmp_path)["counts"]["not_run"] == 5
    assert "not-the-secret-key-at-all" not in result.stderr


def test_clock_skew_stops_the_batch_with_exit_3_and_a_clock_hint(tmp_path: Path) -> None:
    # Was: 1003 counted as a retryable item error, so each item was retried up to max_attempts,
    # each try two requests (JwtAuth renews once): 3 items gave 18 creates, then exit 1.
    with Simulator(make_config("clock-skew", seed=0, task_duration=(0.1, 0.3))) as skewed:
        items = text_items(3, prefix="skew")
        result = run_cli(["run", str(write_manifest(tmp_path, skewed, items))], cli_env(skewed))
        stats = skewed.stats()
    assert result.code == 3, result.stderr
    assert stats.tasks_created == 0
    # At most one create per item in flight when the first refusal stopped the batch, each sent
    # twice (the fresh token's resend): never a retry.
    assert stats.create_requests <= 2 * len(items)
    report = load_report(tmp_path)
    assert (report["stopped_by"]["category"], report["stopped_by"]["code"]) == ("auth", 1003)
    assert "NTP" in report["stopped_by"]["hint"]
    assert "NTP" in result.stderr
    assert report["counts"]["not_run"] == 3


def test_expired_tokens_renewed_once_never_stop_the_batch(tmp_path: Path) -> None:
    # The 'auth' profile refuses 5% of requests as "token expired"; each gets one fresh token
    # and one resend, which the simulator never refuses again (a fresh token cannot have
    # expired). So the batch must finish: an exit 3 here would mean a renewable refusal was
    # taken for clock skew.
    with Simulator(make_config("auth", seed=11, task_duration=(0.05, 0.1))) as sim:
        items = text_items(60, prefix="renewed")
        result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
        stats = sim.stats()
    assert result.code == 0, result.stderr
    assert stats.faults_fired.get("create error 401/1004", 0) > 0, stats.faults_fired
    assert_each_prompt_paid_once(sim, [i["prompt"] for i in items])


def test_expired_api_key_stops_the_batch_without_retries(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(FaultRule(op="create", effect="error", http_status=401, code=1004,
                            message="token has expired"))
    env = {k: v for k, v in cli_env(sim).items() if not k.startswith("KLING_")}
    assert sim.config.api_key is not None
    env["KLING_API_KEY"] = sim.config.api_key
    items = text_items(3, prefix="apikey")
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], env)
    assert result.code == 3, result.stderr
    assert sim.stats().create_requests <= len(items)  # an API key cannot be renewed: no resend
    assert load_report(tmp_path)["stopped_by"]["code"] == 1004
    assert "NTP" in result.stderr and sim.config.api_key not in result.stderr


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


def test_sigkill_mid_batch_then_rerun_pays_each_item_once(tmp_path: Path, sim: Simulator) -> None:
    items = text_items(30)
    # One create is held by the server for a while: the kill lands while it is in flight, after
    # the ledger recorded the intent and before any answer. The server still commits it.
    sim.add_fault(FaultRule(op="create", effect="delay", match="number 7", delay=1.0, times=1))
    manifest = write_manifest(
        tmp_path, sim, items, limits={"concurrency": 6, "requests_per_minute": 6000}
    )
    env = cli_env(sim)
    for kill_at in (8, 19):
        proc = start_cli(["run", str(manifest)], env)
        wait_for(lambda at=kill_at: sim.stats().create_requests >= at)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    result = run_cli(["run", str(manifest)], env)
    assert result.code == 0, result.stderr
    report = load_report(tmp_path)
    assert report["counts"]["succeeded"] == 30
    assert_each_prompt_paid_once(sim, [i["prompt"] for i in items])
    assert sim.stats().creates_reusing_external_id_without_lookup == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_exits_130_and_rerun_collects(
    tmp_path: Path, sim: Simulator, signum: signal.Signals
) -> None:
    """Ctrl-C, or cron's/systemd's SIGTERM: the same orderly stop."""
    items = text_items(20)
    manifest = write_manifest(
        tmp_path, sim, items, limits={"concurrency": 3, "requests_per_minute": 600}
    )
    env = cli_env(sim)
    proc = start_cli(["run", str(manifest)], env)
    wait_for(lambda: sim.stats().create_requests >= 4)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    report = load_report(tmp_path)
    assert report["interrupted"] is True
    assert report["counts"]["not_run"] > 0
    result = run_cli(["run", str(manifest)], env)
    assert result.code == 0, result.stderr
    assert_each_prompt_paid_once(sim, [i["prompt"] for i in items])


def test_second_run_of_same_batch_is_refused(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(FaultRule(op="create", effect="delay", delay=1.5, times=1))
    manifest = write_manifest(tmp_path, sim, text_items(2))
    env = cli_env(sim)
    first = start_cli(["run", str(manifest)], env)
    wait_for(lambda: sim.stats().create_requests >= 1)
    second = run_cli(["run", str(manifest)], env)
    assert second.code == 4
    assert "another run" in second.stderr
    first.communicate(timeout=30)
    assert first.returncode == 0
    assert sim.stats().tasks_created == 2


INVALID: dict[str, tuple[list[dict[str, Any]], str]] = {
    "duplicate ids": (
        [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}],
        "duplicate",
    ),
    "unknown key": ([{"id": "a", "prompt": "x", "duraton": 5}], "duraton"),
    "bad duration": ([{"id": "a", "prompt": "x", "duration": 7}], "duration"),
    "prompt too long": ([{"id": "a", "prompt": "x" * 2501}], "prompt"),
    "missing image": (
        [{"id": "a", "kind": "image2video", "image": "nope.png", "prompt": "x"}],
        "image",
    ),
    "n too large": (
        [{"id": "a", "kind": "image", "model": "kling-v2-1", "prompt": "x", "n": 10}],
        "n",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_manifest_exits_2_and_sends_nothing(
    tmp_path: Path, sim: Simulator, case: str
) -> None:
    items, needle = INVALID[case]
    manifest = write_manifest(tmp_path, sim, [*text_items(3), *items])
    for command in ("validate", "run"):
        result = run_cli([command, str(manifest)], cli_env(sim))
        assert result.code == 2, (command, result.stderr)
        assert needle in result.stderr
        assert "item 'a'" in result.stderr
        assert "Traceback" not in result.stderr
    stats = sim.stats()
    assert stats.create_requests + stats.query_requests + stats.list_requests == 0
    assert not (tmp_path / "out" / "state.sqlite3").exists()


def test_missing_credentials_exit_2(tmp_path: Path, sim: Simulator) -> None:
    env = {k: v for k, v in cli_env(sim).items() if not k.startswith("KLING_")}
    result = run_cli(["run", str(write_manifest(tmp_path, sim, text_items(1)))], env)
    assert result.code == 2
    assert "KLING_ACCESS_KEY" in result.stderr
    assert sim.stats().create_requests == 0


def test_secrets_never_written(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(FaultRule(op="create", effect="error", match="number 1", times=1,
                            http_status=401, code=1004, message="token expired"))
    manifest = write_manifest(tmp_path, sim, text_items(3))
    result = run_cli(["run", str(manifest)], cli_env(sim))
    assert result.code == 0, result.stderr
    secret = sim.config.secret_key
    outputs = [result.stdout, result.stderr]
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file():
            outputs.append(path.read_bytes().decode("utf-8", "replace"))
    for text in outputs:
        assert secret not in text
        assert "eyJhbGciOi" not in text  # no JWT (base64 of '{"alg":')
    log_files = list((tmp_path / "out" / "logs").glob("*.jsonl"))
    assert log_files and all(os.stat(p).st_mode & 0o077 == 0 for p in log_files)


def test_create_committed_after_the_client_gave_up_is_not_paid_twice(
    tmp_path: Path, sim: Simulator
) -> None:
    # The server holds the create 1.5 s, then commits; the client times out at 1 s.
    sim.add_fault(FaultRule(op="create", effect="delay", match="held", delay=1.5, times=1))
    items = [{"id": "h", "prompt": "held by a slow gateway"}]
    manifest = write_manifest(
        tmp_path, sim, items, provider={"name": "kling", "base_url": sim.url, "timeout": 1}
    )
    result = run_cli(["run", str(manifest)], cli_env(sim))
    assert result.code == 0, result.stderr
    assert_each_prompt_paid_once(sim, ["held by a slow gateway"])
    assert sim.stats().create_requests == 1


def test_status_and_results_files(tmp_path: Path, sim: Simulator) -> None:
    sim.add_fault(
        FaultRule(op="create", effect="task_failed", match="refused",
                  message="Failure to pass the risk control system")
    )
    items = [{"id": "good", "prompt": "a calm lake"}, {"id": "bad", "prompt": "refused thing"}]
    manifest = write_manifest(tmp_path, sim, items)
    env = cli_env(sim)
    before = run_cli(["status", str(manifest)], env)
    assert before.code == 0, before.stderr
    assert "2 pending" in before.stdout
    assert run_cli(["run", str(manifest)], env).code == 1
    requests = sim.stats().create_requests + sim.stats().query_requests

    text = run_cli(["status", str(manifest)], env)
    assert text.code == 0, text.stderr
    assert "good" in text.stdout and "succeeded" in text.stdout
    assert "policy" in text.stdout  # the last error of 'bad'
    as_json = json.loads(run_cli(["status", str(manifest), "--json"], env).stdout)
    assert as_json["totals"]["succeeded"] == 1 and as_json["totals"]["failed"] == 1
    assert {i["id"]: i["state"] for i in as_json["items"]} == {"good": "succeeded", "bad": "failed"}
    failed = run_cli(["status", str(manifest), "--failed"], env)
    assert failed.code == 0, failed.stderr
    assert "Showing 1 of 2 items (partial, failed, unresolved):" in failed.stdout
    assert "bad " in failed.stdout and "good " not in failed.stdout
    only = json.loads(run_cli(["status", str(manifest), "--status", "succeeded", "--json"],
                              env).stdout)
    assert [i["id"] for i in only["items"]] == ["good"] and only["showing"] == ["succeeded"]
    assert sim.stats().create_requests + sim.stats().query_requests == requests  # no network

    report = load_report(tmp_path)
    lines = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == report["items"]
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "| bad | failed | policy |" in markdown


def test_units_cap_stops_submitting_and_is_resumable(tmp_path: Path, sim: Simulator) -> None:
    items = text_items(6, prefix="capped")
    # Every item costs 2 units here (an explicit price, not the built-in table).
    pricing = {"video": {"kling-v2-5-turbo": {"std": {5: 2}}}}
    manifest = write_manifest(
        tmp_path, sim, items, limits={"concurrency": 1, "max_units": 7}, pricing=pricing
    )
    estimate = run_cli(["validate", "--estimate", str(manifest)], cli_env(sim))
    assert estimate.code == 0, estimate.stderr
    lines = estimate.stdout.splitlines()
    rows = [line.split() for line in lines if line.startswith("text2video")]
    # kind, model, mode, duration, sound, tasks, units each, units: 6 tasks x 2 units
    assert rows == [
        ["text2video", "kling-v2-5-turbo", "std", "5", "s", "off", "6", "2/task", "12"]
    ]
    assert "total: 6 tasks, 12 units" in lines

    first = run_cli(["run", str(manifest)], cli_env(sim))
    assert first.code == 3, first.stderr
    assert sim.stats().tasks_created == 3  # 3 x 2 = 6 <= 7; a fourth would make 8
    data = load_report(tmp_path)
    assert data["stopped_by"]["category"] == "billing"
    assert "max_units" in data["stopped_by"]["message"]
    assert data["units_submitted"] == 6
    assert data["counts"] == {"succeeded": 3, "partial": 0, "failed": 0, "not_run": 3,
                              "running": 0, "unresolved": 0}

    again = run_cli(["run", str(manifest)], cli_env(sim))
    assert again.code == 3  # still capped: nothing new is sent
    assert sim.stats().tasks_created == 3

    raised = write_manifest(
        tmp_path, sim, items, limits={"concurrency": 1, "max_units": 12}, pricing=pricing
    )
    final = run_cli(["run", str(raised)], cli_env(sim))
    assert final.code == 0, final.stderr
    assert_each_prompt_paid_once(sim, [i["prompt"] for i in items])


MIXED_PRICES = {"video": {"kling-v2-5-turbo": {"std": {5: 2, 10: 4}}}}


def sized(durations: list[int]) -> list[dict[str, Any]]:
    """Items of 2 units (5 s) and 4 units (10 s) under MIXED_PRICES."""
    return [{"id": f"sized-{i}", "prompt": f"sized prompt {i}", "duration": d}
            for i, d in enumerate(durations)]


def test_the_units_cap_sends_every_attempt_that_fits_before_it_stops(
    tmp_path: Path, sim: Simulator
) -> None:
    # Three at once: 2 + 4 fit a cap of 6, the third (2 more) does not. Every item that
    # fitted is sent; before, the third's refusal stopped the batch before any create left.
    manifest = write_manifest(tmp_path, sim, sized([5, 10, 5]),
                              limits={"concurrency": 3, "max_units": 6}, pricing=MIXED_PRICES)
    result = run_cli(["run", str(manifest)], cli_env(sim))
    assert result.code == 3, result.stderr
    assert sim.stats().tasks_created == 2
    data = load_report(tmp_path)
    assert data["units_submitted"] == 6
    assert data["stopped_by"]["code"] == "max_units"
    assert data["counts"]["succeeded"] == 2 and data["counts"]["not_run"] == 1
    assert "STOPPED by your limits.max_units: your limits.max_units (6 units) is reached" in (
        result.stderr
    )
    assert "account-level" not in result.stderr
    assert "Stopped by your limits.max_units" in (tmp_path / "out" / "report.md").read_text()


def test_the_units_cap_stops_at_the_first_item_past_it(tmp_path: Path, sim: Simulator) -> None:
    # In the manifest's order: 2 units sent, 4 more would pass 5, and the 2 after it are not
    # sent either, although they would fit: the cap is where the batch stops.
    manifest = write_manifest(tmp_path, sim, sized([5, 10, 5]),
                              limits={"concurrency": 1, "max_units": 5}, pricing=MIXED_PRICES)
    result = run_cli(["run", str(manifest)], cli_env(sim))
    assert result.code == 3, result.stderr
    assert sim.stats().tasks_created == 1
    data = load_report(tmp_path)
    assert data["units_submitted"] == 2
    assert "item 'sized-1' needs 4 more" in data["stopped_by"]["message"]


def test_csv_manifest_runs_and_bad_rows_name_file_and_line(
    tmp_path: Path, sim: Simulator
) -> None:
    rows = ["clip_id,text,duration,notes"]
    rows += [f"row-{i},csv prompt {i},{5 if i % 2 else 10},note {i}" for i in range(8)]
    (tmp_path / "prompts.csv").write_text("\n".join(rows) + "\n")
    manifest = write_manifest(
        tmp_path, sim, [],
        items_from={"path": "prompts.csv", "columns": {"id": "clip_id", "prompt": "text"},
                    "ignore_columns": ["notes"]},
    )
    result = run_cli(["run", str(manifest)], cli_env(sim))
    assert result.code == 0, result.stderr
    assert load_report(tmp_path)["counts"]["succeeded"] == 8
    assert_each_prompt_paid_once(sim, [f"csv prompt {i}" for i in range(8)])

    before = sim.stats().create_requests
    (tmp_path / "prompts.csv").write_text(
        "\n".join([*rows, "row-bad,csv prompt bad,7,oops"]) + "\n"
    )
    bad = run_cli(["run", str(manifest)], cli_env(sim))
    assert bad.code == 2
    assert "prompts.csv:10: item 'row-bad', field 'duration'" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert sim.stats().create_requests == before


def test_report_says_what_concurrency_the_account_sustained(tmp_path: Path) -> None:
    """8 configured, 2 real slots: the cap comes down on 1303 and the report says 2, the
    simulator's own peak, not what our pool held."""
    config = SimConfig(task_duration=(0.2, 0.4), concurrency_slots=2)
    with Simulator(config) as slots2:
        items = text_items(16, "slot")
        manifest = write_manifest(
            tmp_path, slots2, items,
            limits={"concurrency": 8, "requests_per_minute": 6000},
            retry={"max_attempts": 30},
        )
        result = run_cli(["run", str(manifest)], cli_env(slots2))
        assert result.code == 0, result.stderr
        stats = slots2.stats()
    report = load_report(tmp_path)
    conc = report["concurrency"]
    assert stats.peak_slots == 2
    assert conc["configured"] == 8
    assert conc["over_capacity_cuts"] >= 1
    assert conc["lowest"] < 8
    assert conc["sustained"] == 2
    # The refusals showed the limit: the summary advises it.
    assert conc["limit_found"] == 2
    assert "its limit looks like 2" in result.stderr
    assert "consider limits.concurrency: 2" in result.stderr


def test_each_resource_pack_has_its_own_limit(tmp_path: Path) -> None:
    """Kling counts video and image tasks against different packs: refusals of image tasks
    (a pack of 2) cut only the image tasks' cap; video tasks keep the configured 10."""
    config = SimConfig(task_duration=(0.2, 0.4), concurrency_slots=50, image_concurrency_slots=2)
    with Simulator(config) as packs:
        items: list[dict[str, Any]] = [
            *text_items(20, "video"),
            *({"id": f"still-{i:02d}", "kind": "image", "model": "kling-v2-1",
               "prompt": f"still number {i}"} for i in range(10)),
        ]
        manifest = write_manifest(
            tmp_path, packs, items,
            limits={"concurrency": 10, "requests_per_minute": 6000},
            retry={"max_attempts": 30},
        )
        result = run_cli(["run", str(manifest)], cli_env(packs))
        assert result.code == 0, result.stderr
        stats = packs.stats()
    conc = load_report(tmp_path)["concurrency"]
    groups = conc["groups"]
    assert groups["image"]["limit_found"] == 2
    assert groups["image"]["over_capacity_cuts"] >= 1
    assert groups["video"]["over_capacity_cuts"] == 0 and groups["video"]["final"] == 10
    assert conc["limit_found"] is None  # no one number to advise
    assert "image tasks: limit looks like 2; video tasks: limit not reached" in result.stderr
    assert "consider limits.concurrency" not in result.stderr
    assert stats.peak_slots <= 10
    assert_each_prompt_paid_once(packs, [i["prompt"] for i in items])
    page = (tmp_path / "out" / "report.md").read_text()
    assert "| capacity group |" in page and "| image " in page
