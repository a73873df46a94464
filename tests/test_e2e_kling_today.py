"""End to end against the strict simulator: Kling as it is late 2026.

The simulator reads the same catalogue and refuses what Kling refuses (retired models, std on
kling-v2-6, durations a model does not take, sound where there is none, a reused external id).
What was paid for is judged from the simulator's own accounting.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.simulator import FaultRule, SimConfig, Simulator
from tests.conftest import cli_env, run_cli, write_manifest


def load_report(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "out" / "report.json").read_text())
    return data


def fast_clock(speed: float) -> Callable[[], float]:
    """The simulator's clock, running ``speed`` times faster than real time: a 12 s read lag
    passes in 12 / speed real seconds (task durations are on the same clock)."""
    start = time.monotonic()
    return lambda: start + (time.monotonic() - start) * speed


@pytest.fixture
def strict() -> Iterator[Simulator]:
    with Simulator(SimConfig(task_duration=(0.1, 0.3))) as simulator:
        yield simulator


def assert_one_task_per_prompt(sim: Simulator, prompts: list[str]) -> None:
    stats = sim.stats()
    assert {p: stats.by_prompt.get(p, 0) for p in prompts} == dict.fromkeys(prompts, 1)
    assert stats.tasks_created == len(prompts)


MIXED: list[dict[str, Any]] = [
    {"id": "v3-4k", "model": "kling-v3", "mode": "4k", "duration": 7,
     "prompt": "A paper boat drifts down a rain gutter, macro lens"},
    {"id": "v26-sound", "model": "kling-v2-6", "mode": "pro", "sound": True,
     "prompt": "A blacksmith hammers a glowing blade, sparks fly"},
    {"id": "turbo", "model": "kling-v2-5-turbo", "prompt": "Clouds race over a wheat field"},
    {"id": "stills", "kind": "image", "model": "kling-v3", "n": 2,
     "prompt": "A ceramic teapot on a linen cloth, morning light"},
    {"id": "turbo-v2", "model": "kling-3.0-turbo", "duration": 7,
     "prompt": "A hummingbird hovers at a red flower"},
]


def test_a_batch_of_current_models_succeeds_on_the_strict_simulator(
    tmp_path: Path, strict: Simulator
) -> None:
    manifest = write_manifest(tmp_path, strict, MIXED)
    result = run_cli(["run", str(manifest)], cli_env(strict))
    assert result.code == 0, result.stderr
    report = load_report(tmp_path)
    assert report["counts"]["succeeded"] == len(MIXED)
    assert_one_task_per_prompt(strict, [i["prompt"] for i in MIXED])
    stats = strict.stats()
    # kling-3.0-turbo exists only on API 2.0: created and polled there.
    assert stats.v2_create_requests == 1
    assert stats.batch_query_requests >= 1
    rows = {row["prompt"]: row for row in stats.tasks}
    assert rows[MIXED[0]["prompt"]]["model_name"] == "kling-v3"
    items = {item["id"]: item for item in report["items"]}
    assert len(items["stills"]["assets"]) == 2
    # What Kling charged (final_unit_deduction, API 2.0 billing) sits beside the estimate.
    assert all(items[i["id"]]["charged_units"] is not None for i in MIXED if i["id"] != "stills")
    assert report["units"]["charged"] == pytest.approx(
        sum(items[i["id"]]["charged_units"] or 0 for i in MIXED)
    )
    assert report["units"]["estimated"] > 0


@pytest.mark.parametrize(
    ("item", "field", "message"),
    [
        ({"model": "kling-v1"}, "model", "was retired by Kling on 2026-09-15"),
        ({"model": "kling-v2-6", "mode": "std"}, "mode", "must be pro for kling-v2-6"),
        ({"model": "kling-v2-6", "duration": 7}, "duration",
         "must be 5 or 10 seconds for kling-v2-6 (got 7)"),
        ({"model": "kling-v2-5-turbo", "sound": True}, "sound",
         "is not available on kling-v2-5-turbo"),
    ],
)
def test_what_kling_refuses_exits_2_before_anything_is_sent(
    tmp_path: Path, strict: Simulator, item: dict[str, Any], field: str, message: str
) -> None:
    items = [{"id": "fine", "prompt": "fine"}, {"id": "bad", "prompt": "bad", **item}]
    manifest = write_manifest(tmp_path, strict, items)
    result = run_cli(["run", str(manifest)], cli_env(strict))
    assert result.code == 2, result.stderr
    assert f"item 'bad', field '{field}': " in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
    stats = strict.stats()
    assert stats.create_requests == stats.query_requests == stats.account_requests == 0


def test_lagging_reads_and_lost_answers_pay_each_item_once(tmp_path: Path) -> None:
    """Reads by external id lag 12 s behind the create, and every create's answer is lost
    (504 after the task was committed): a lookup right after finds nothing, the resend is
    refused as already existing, and the engine finds the task once the reads catch up."""
    speed = 8.0
    config = SimConfig(
        read_lag=12.0,
        clock=fast_clock(speed),
        task_duration=(0.5 * speed, 1.0 * speed),
        faults=(
            FaultRule(op="create", effect="error_after_commit", http_status=504, code=5002,
                      message="internal timeout"),
        ),
    )
    with Simulator(config) as sim:
        items = [{"id": f"lag-{i:02d}", "prompt": f"lagging prompt {i}"} for i in range(20)]
        manifest = write_manifest(
            tmp_path, sim, items,
            limits={"concurrency": 20},
            retry={"lookup_grace": 0.1, "max_delay": 0.4},
        )
        result = run_cli(["run", str(manifest)], cli_env(sim), timeout=120)
        assert result.code == 0, result.stderr
        report = load_report(tmp_path)
        assert report["counts"]["succeeded"] == 20
        assert_one_task_per_prompt(sim, [i["prompt"] for i in items])
        stats = sim.stats()
        # The path really ran: resends were refused as existing, none created a second task.
        assert stats.creates_refused_as_existing >= 1
        assert all(n <= 2 for n in stats.external_id_counts.values())
        assert all(item["attempts"] == 1 for item in report["items"])


def test_task_failures_are_judged_from_their_text(tmp_path: Path, strict: Simulator) -> None:
    strict.add_fault(FaultRule(op="create", effect="task_failed", match="glitch", times=1,
                               message="Internal generation error"))
    strict.add_fault(FaultRule(op="create", effect="task_failed", match="forbidden",
                               message="prompt 含违规内容"))
    items = [
        {"id": "glitch", "prompt": "a glitch in the first render"},
        {"id": "forbidden", "prompt": "a forbidden scene"},
    ]
    manifest = write_manifest(tmp_path, strict, items)
    result = run_cli(["run", str(manifest)], cli_env(strict))
    assert result.code == 1, result.stderr
    items_by_id = {item["id"]: item for item in load_report(tmp_path)["items"]}
    # Transient: a new attempt (a new paid task) that succeeds.
    assert items_by_id["glitch"]["status"] == "succeeded"
    assert items_by_id["glitch"]["attempts"] == 2
    # Policy, in Chinese: never retried.
    assert items_by_id["forbidden"]["status"] == "failed"
    assert items_by_id["forbidden"]["attempts"] == 1
    assert items_by_id["forbidden"]["error"]["category"] == "policy"
    assert strict.stats().by_prompt["a forbidden scene"] == 1


def test_api_2_0_create_batch_query_and_lookup(tmp_path: Path, strict: Simulator) -> None:
    """provider.api: v2 sends kling-v2-6 on API 2.0 too; a lost create is found by its
    external id there (GET /tasks?external_task_ids=), not resent."""
    strict.add_fault(FaultRule(op="create", effect="error_after_commit", match="lost",
                               times=2, http_status=504, code=5002, message="timeout"))
    items = [
        {"id": f"v2-{i}", "model": "kling-v2-6", "prompt": f"api two prompt {i}"}
        for i in range(4)
    ] + [{"id": "lost-1", "model": "kling-v2-6", "prompt": "lost answer one"},
         {"id": "lost-2", "model": "kling-3.0-turbo", "prompt": "lost answer two"}]
    manifest = write_manifest(
        tmp_path, strict, items,
        provider={"api": "v2"},
        defaults={"kind": "text2video", "model": "kling-v2-6", "duration": 5},
    )
    result = run_cli(["run", str(manifest)], cli_env(strict))
    assert result.code == 0, result.stderr
    assert_one_task_per_prompt(strict, [i["prompt"] for i in items])
    stats = strict.stats()
    assert stats.v2_create_requests == stats.create_requests == 6
    assert stats.query_requests == stats.list_requests == 0  # nothing on /v1
    assert stats.batch_query_requests >= 2  # polls, and the lookups of the lost ones
    report = load_report(tmp_path)
    assert report["requests"]["lookup"] >= 1


def test_an_unknown_model_runs_only_when_allowed(tmp_path: Path) -> None:
    # Kling ships kling-v4 before this catalogue knows it.
    with Simulator(SimConfig(task_duration=(0.1, 0.3), extra_models=("kling-v4",))) as sim:
        items = [{"id": "new", "model": "kling-v4", "mode": "pro", "duration": 5,
                  "prompt": "a new model's first shot"}]
        manifest = write_manifest(tmp_path, sim, items)
        refused = run_cli(["run", str(manifest)], cli_env(sim))
        assert refused.code == 2 and "provider.allow_unknown_models: true" in refused.stderr
        assert sim.stats().create_requests == 0
        manifest = write_manifest(tmp_path, sim, items, provider={"allow_unknown_models": True})
        allowed = run_cli(["run", str(manifest)], cli_env(sim))
        assert allowed.code == 0, allowed.stderr
        assert sim.stats().tasks[0]["model_name"] == "kling-v4"


def test_an_account_without_packs_is_warned_about_and_the_run_goes_on(tmp_path: Path) -> None:
    with Simulator(SimConfig(task_duration=(0.1, 0.3), resource_packs=False)) as sim:
        manifest = write_manifest(tmp_path, sim, [{"id": "a", "prompt": "a"}])
        result = run_cli(["run", str(manifest)], cli_env(sim))
        assert result.code == 0, result.stderr
        report = load_report(tmp_path)
        assert report["account_warning"] and "1102" in report["account_warning"]
        assert "Account: " in result.stderr
        assert sim.stats().account_requests == 1
