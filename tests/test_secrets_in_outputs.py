"""Credentials a server echoes (a proxy appending the API key to asset URLs, an error text
quoting it) reach none of the outputs: not the ledger, report.json, results.jsonl, report.md or
the status output; the run still downloads from the URLs as they were sent."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from orchestrator import logs, report, status
from orchestrator.downloads import Downloader
from orchestrator.engine import Engine
from orchestrator.errors import Category, ErrorInfo
from orchestrator.ledger import Ledger
from orchestrator.providers.base import Asset, Task, TaskStatus
from orchestrator.simulator.media import video_mp4
from tests.test_engine import FakeClock, FakeProvider, manifest

pytestmark = pytest.mark.anyio

SECRET = "sk-live-0123456789abcdef"


def files_under(directory: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}


async def test_an_echoed_key_is_in_no_output(tmp_path: Path) -> None:
    clock = FakeClock()
    provider = FakeProvider(clock)

    def answer(task: Task) -> Task:
        if task.task_id == "T2":  # a failure whose text quotes the key
            return Task(task.task_id, TaskStatus.FAILED, message=f"bad key {SECRET}",
                        failure=ErrorInfo(Category.TASK_FAILED, f"bad key {SECRET}",
                                          retryable=False, hint="h"))
        url = f"https://cdn.test/{task.task_id}.mp4?api_key={SECRET}"
        return Task(task.task_id, TaskStatus.SUCCEEDED, assets=(Asset(0, url, "video"),))

    provider.status = answer
    served: list[str] = []

    def cdn(request: httpx.Request) -> httpx.Response:
        served.append(str(request.url))
        if SECRET not in str(request.url):  # the proxy needs the key it appended
            return httpx.Response(403)
        return httpx.Response(200, content=video_mp4("T", 0))

    redactor = logs.Redactor()
    redactor.add(SECRET)
    out = tmp_path / "out"
    m = manifest(tmp_path, ["a", "b"])
    state = out / "state.sqlite3"
    with Ledger(state, "t", clock=clock.time, scrub=redactor.clean) as ledger:
        downloader = Downloader(out, transport=httpx.MockTransport(cdn), sleep=clock.sleep)
        engine = Engine(m, provider, ledger, sleep=clock.sleep, clock=clock.time,
                        rand=lambda: 1.0, downloader=downloader)
        async with downloader:
            outcome = await engine.run()
        report.write_report(
            out / "report.json", batch="t", manifest=m.path,
            records=ledger.iter_items(["a", "b"]), started_at="s", finished_at="f",
            extra={"stopped_by": None, "requests": dict(outcome.requests)},
            scrub=redactor.clean,
        )
        assert ledger.get("a").assets[0].path == "a/0.mp4"  # downloaded, from the live URL
    assert all(SECRET in url for url in served)
    rows = status.status_rows(Ledger.read_only(state)[1], ["a", "b"])
    rendered = status.render_status_text(rows, batch="t", state_path=state)
    rendered += status.render_status_json(rows, batch="t", state_path=state)
    assert SECRET not in rendered
    leaks = [p for p, data in files_under(out).items() if SECRET.encode() in data]
    assert leaks == [], leaks
    data = json.loads((out / "report.json").read_text())
    assert "[REDACTED]" in data["items"][0]["assets"][0]["url"]
    assert "[REDACTED]" in data["items"][1]["error"]["message"]
