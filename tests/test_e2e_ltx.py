"""LTX Video end to end, the CLI run as a user runs it, judged by the LTX simulator's account.

The behaviour every provider shares (lost creates, billing stops, Retry-After, SIGKILL) is in
the contract suite (test_contract.py); these are LTX's own: the demo batch (image2video from a
local file, a 20 s video, a 4K one), the concurrency 429 that lowers the cap, a refused request
that fails its item unretried, and prices in USD against what the account billed.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.providers.ltx.simulator import LtxFaultRule, LtxSimConfig, LtxSimulator
from tests.conftest import REPO, run_cli, write_doc
from tests.media_structure import check_asset_file


def env_for(sim: LtxSimulator | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LTX_", "KLING_"))}
    env["PYTHONPATH"] = str(REPO)
    if sim is not None:
        env["LTX_API_KEY"] = sim.config.api_key
    return env


def demo_copy(directory: Path, base_url: str = "simulator") -> Path:
    """manifests/demo-ltx.yaml and its image, its base_url pointed at ``base_url``."""
    shutil.copytree(REPO / "manifests" / "images", directory / "images")
    doc = yaml.safe_load((REPO / "manifests" / "demo-ltx.yaml").read_text())
    doc["provider"]["base_url"] = base_url
    doc["output"]["dir"] = "out"
    path = directory / "demo-ltx.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_manifest(directory: Path, sim: LtxSimulator, items: list[dict[str, Any]],
                   **sections: Any) -> Path:
    return write_doc(
        directory,
        {"name": "ltx", "base_url": sim.url, "timeout": 5},
        {"model": "ltx-2-3-fast", "generate_audio": False},
        items,
        name="ltx-e2e",
        **sections,
    )


def report(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "out" / "report.json").read_text())
    return data


def by_id(directory: Path) -> dict[str, dict[str, Any]]:
    return {item["id"]: item for item in report(directory)["items"]}


@pytest.fixture
def sim_factory() -> Iterator[Any]:
    started: list[LtxSimulator] = []

    def start(**config: Any) -> LtxSimulator:
        sim = LtxSimulator(LtxSimConfig(task_duration=(0.05, 0.15), **config))
        sim.start()
        started.append(sim)
        return sim

    yield start
    for sim in started:
        sim.stop()


def test_the_demo_runs_on_the_bundled_simulator_with_no_account(tmp_path: Path) -> None:
    # As the README says: no key, no network; the simulator keeps its account beside the ledger.
    path = demo_copy(tmp_path)
    result = run_cli(["run", str(path), "--no-progress"], env_for(None), timeout=120)
    assert result.code == 0, result.stderr
    items = by_id(tmp_path)
    assert {i: item["status"] for i, item in items.items()} == dict.fromkeys(
        ("drone-sunrise", "long-take", "cat-turns", "city-4k"), "succeeded"
    )
    journal = (tmp_path / "out" / "simulator-state.jsonl").read_text().splitlines()
    jobs = [entry["task"] for entry in map(json.loads, journal) if "task" in entry]
    assert sorted(job["spec"]["endpoint"] for job in jobs) == [
        "image-to-video", "text-to-video", "text-to-video", "text-to-video"
    ]
    assert sorted(job["spec"]["duration"] for job in jobs) == [6, 6, 8, 20]
    for item in items.values():
        (asset,) = item["assets"]
        assert asset["path"].endswith(".mp4")
        check_asset_file(tmp_path / "out" / asset["path"])  # a video a browser plays


def test_the_demo_on_a_running_simulator_pays_each_item_once_at_its_estimate(
    tmp_path: Path, sim_factory: Any
) -> None:
    sim: LtxSimulator = sim_factory(concurrency_slots=2)
    path = demo_copy(tmp_path, sim.url)
    estimate = run_cli(["validate", "--estimate", str(path)], env_for(sim))
    assert estimate.code == 0, estimate.stderr
    assert "total: 4 tasks, 4.48 USD" in estimate.stdout
    result = run_cli(["run", str(path), "--no-progress"], env_for(sim), timeout=120)
    assert result.code == 0, result.stderr
    stats = sim.stats()
    assert stats.jobs_created == 4 and set(stats.by_prompt.values()) == {1}
    # The image travelled inline (a small local file): no upload.
    assert stats.upload_requests == 0
    assert stats.peak_slots <= 2
    units = report(tmp_path)["units"]
    assert units["unit"] == "USD" and units["indicative"]
    assert units["estimated"] == pytest.approx(stats.billed_usd) == pytest.approx(4.48)


def test_a_concurrency_429_lowers_the_cap_and_nothing_is_paid_twice(
    tmp_path: Path, sim_factory: Any
) -> None:
    sim: LtxSimulator = sim_factory(concurrency_slots=1, retry_after="1")
    items = [{"id": f"clip-{i}", "prompt": f"concurrency prompt {i}"} for i in range(4)]
    path = write_manifest(tmp_path, sim, items, limits={"concurrency": 3})
    result = run_cli(["run", str(path), "--no-progress"], env_for(sim), timeout=120)
    assert result.code == 0, result.stderr
    stats = sim.stats()
    assert stats.answers.get("429 concurrency_limit_error", 0) >= 1
    assert stats.jobs_created == 4 and set(stats.by_prompt.values()) == {1}
    data = report(tmp_path)
    assert data["concurrency"]["over_capacity_cuts"] >= 1
    assert data["concurrency"]["lowest"] < 3
    assert data["requests"]["create"] == stats.submit_requests


def test_a_bad_request_fails_its_item_unretried(tmp_path: Path, sim_factory: Any) -> None:
    rule = LtxFaultRule(op="submit", effect="error", http_status=400, match="refused here",
                        error_type="invalid_request_error", message="prompt is invalid",
                        times=None)
    sim: LtxSimulator = sim_factory(faults=(rule,))
    items = [{"id": "bad", "prompt": "refused here"}, {"id": "good", "prompt": "a fox"}]
    path = write_manifest(tmp_path, sim, items)
    result = run_cli(["run", str(path), "--no-progress"], env_for(sim))
    assert result.code == 1, result.stderr
    bad = by_id(tmp_path)["bad"]
    assert bad["status"] == "failed"
    assert bad["error"]["code"] == "invalid_request_error"
    assert "prompt is invalid" in bad["error"]["message"]
    assert bad["error"]["hint"]
    answers = Counter(sim.stats().answers)
    assert answers["400 invalid_request_error"] == 1  # never sent again
    assert by_id(tmp_path)["good"]["status"] == "succeeded"
