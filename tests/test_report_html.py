"""report.html: one card per item, escaped, offline, filtered by status, and what a real
browser (headless Chromium) shows of it after its script ran."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from orchestrator import logs, report, report_html
from orchestrator.errors import Category, ErrorInfo
from orchestrator.ledger import AssetRecord, ItemState, Ledger
from orchestrator.report_html import ItemText
from orchestrator.simulator import FaultRule, Simulator
from tests.conftest import cli_env, run_cli, write_manifest
from tests.test_report import mixed_report

HOSTILE = "<script>document.title='owned'</script><img src=x onerror=alert(1)> & \"quoted\" 'too'"
SECRET = "sk-live-0123456789abcdef"

POLICY = ErrorInfo(
    category=Category.POLICY,
    message="flagged <b>by</b> the filter",
    retryable=False,
    hint="Change the prompt, then rerun with a new item id.",
    code=1301,
    http_status=400,
)
MISMATCH = ErrorInfo(
    category=Category.ASSET_MISMATCH,
    message="2 of 4 images returned",
    retryable=False,
    hint="Submit a new item.",
)


# -- reading a page back ----------------------------------------------------------------------

_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
         "track", "wbr"}  # fmt: skip


@dataclass
class Card:
    attrs: dict[str, str | None]
    #: text by the class of the element holding it (an element's text includes its children's)
    text: dict[str, str] = field(default_factory=dict)
    #: (tag, attributes) of every img, video and a inside the card
    media: list[tuple[str, dict[str, str | None]]] = field(default_factory=list)

    @property
    def status(self) -> str | None:
        return self.attrs.get("data-status")

    @property
    def hidden(self) -> bool:
        return "hidden" in self.attrs


class Page(HTMLParser):
    """The cards of a page (as written, or as Chromium's --dump-dom serialises the DOM)."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.cards: list[Card] = []
        self.scripts = 0
        self.title = ""
        self.shown = ""
        self._open: list[tuple[str, list[str]]] = []
        self._in: str | None = None
        self.feed(source)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        classes = (found.get("class") or "").split()
        if tag == "script":
            self.scripts += 1
        if tag in ("title", "script") or found.get("id") == "shown":
            self._in = "shown" if found.get("id") == "shown" else tag
        if tag == "article" and "card" in classes:
            self.cards.append(Card(found))
            self._open = []
        if not self.cards or (tag != "article" and not self._open):
            return
        if tag in ("img", "video", "a"):
            self.cards[-1].media.append((tag, found))
        if tag not in _VOID:
            self._open.append((tag, classes))

    def handle_endtag(self, tag: str) -> None:
        self._in = None
        if self._open and self._open[-1][0] == tag:
            self._open.pop()

    def handle_data(self, data: str) -> None:
        if self._in == "title":
            self.title += data
        elif self._in == "shown":
            self.shown += data
        for _, classes in self._open:
            for name in classes:
                text = self.cards[-1].text
                text[name] = text.get(name, "") + data

    def by_id(self) -> dict[str, Card]:
        return {str(c.attrs["id"]).removeprefix("item-"): c for c in self.cards}


# -- Chromium ---------------------------------------------------------------------------------

#: Seconds one Chromium launch may take before the test gives up on it.
CHROMIUM_TIMEOUT = 60


def chromium_binary() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "Chromium is not installed: install the chromium package "
            "(apt-get install -y chromium; .ci/run does so for CI).",
            pytrace=False,
        )
    return found


def chromium(url: str, profile: Path, *args: str) -> str:
    """Run headless Chromium on ``url`` with ``args``; its stdout. Bounded by a timeout; its
    own process group is ended whatever happens (it starts helpers of its own)."""
    command = [
        chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={profile}", "--virtual-time-budget=3000",
        *args, url,
    ]  # fmt: skip
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=CHROMIUM_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"Chromium did not finish in {CHROMIUM_TIMEOUT} s: {' '.join(command)}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-2000:]
    return out


def dump_dom(page: Path, profile: Path, fragment: str = "") -> Page:
    return Page(chromium(page.as_uri() + fragment, profile, "--dump-dom"))


def png_rows(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Width, height, bytes per pixel and the pixel rows of an 8-bit RGB(A) PNG: enough of a
    decoder to look at a screenshot."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    header: tuple[int, ...] = ()
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    width, height, depth, colour, _, _, interlace = header
    assert (depth, interlace) == (8, 0) and colour in (2, 6), header
    bpp = 3 if colour == 2 else 4
    raw = zlib.decompress(b"".join(idat))
    stride = width * bpp
    prev = bytearray(stride)
    rows: list[bytes] = []
    for y in range(height):
        kind_of = raw[y * (stride + 1)]
        row = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride) if kind_of else ():
            a = row[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            if kind_of == 1:
                row[i] = (row[i] + a) & 255
            elif kind_of == 2:
                row[i] = (row[i] + b) & 255
            elif kind_of == 3:
                row[i] = (row[i] + ((a + b) >> 1)) & 255
            else:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row[i] = (row[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(row))
        prev = row
    return width, height, bpp, rows


# -- unit: one card, one page -----------------------------------------------------------------


def _item(item_id: str, status: str, **fields: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id, "status": status, "kind": "text2video", "attempts": 1,
        "task_id": f"T-{item_id}", "external_task_id": None, "expected_assets": 1,
        "assets": [], "error": None, "submitted_at": None, "finished_at": None,
        "task_seconds": None, "charged_units": None,
    }  # fmt: skip
    item.update(fields)
    return item


def _asset(index: int, path: str | None) -> dict[str, Any]:
    return {"index": index, "url": f"https://cdn.example/{index}?sig=s3cr3t", "path": path,
            "bytes": 10 if path else None, "sha256": "ab" if path else None}  # fmt: skip


def test_a_card_escapes_every_text_it_shows() -> None:
    error = report.error_entry(POLICY)
    assert error is not None
    error["hint"] = "Remove </p><script>x()</script> from it"
    item = _item("bad", "failed", error=error)
    card = report_html.render_card(item, ItemText(prompt=HOSTILE, model="<i>kling</i>"))
    assert "<script" not in card and "<img src=x" not in card and "<i>" not in card
    assert "<b>by</b>" not in card
    assert html.escape(HOSTILE, quote=True) in card
    parsed = Page(card).by_id()["bad"]
    assert parsed.text["prompt"] == HOSTILE  # the prompt reads back exactly, as text
    assert parsed.text["category"] == "policy"
    assert parsed.text["code"] == "1301"
    assert parsed.text["hint"] == "What to do: Remove </p><script>x()</script> from it"
    assert parsed.text["message"] == "flagged <b>by</b> the filter"
    assert parsed.media == []


def test_media_are_linked_by_relative_paths_and_load_lazily() -> None:
    video = _item("clip", "succeeded", assets=[_asset(0, "clip/0.mp4")])
    stills = _item(
        "mug", "partial", kind="image", expected_assets=4,
        assets=[_asset(0, "mug/0.png"), _asset(1, "mug/1.jpg"), _asset(2, None)],
    )  # fmt: skip
    odd = _item("odd", "succeeded", assets=[_asset(0, "javascript:alert(1)//a b.mp4")])

    card = report_html.render_card(video, None)
    assert '<video controls preload="none" src="clip/0.mp4"' in card
    assert "poster" not in card  # no cover is kept: the first frame shows
    assert report_html.render_card(video, None, "../out").count('src="../out/clip/0.mp4"') == 1

    page = Page(report_html.render_card(stills, None)).by_id()["mug"]
    images = [attrs for tag, attrs in page.media if tag == "img"]
    assert [(i["src"], i["loading"]) for i in images] == [
        ("mug/0.png", "lazy"),
        ("mug/1.jpg", "lazy"),
    ]
    assert page.text["count"] == "2 of 4 files"
    assert "file 2 not downloaded" in page.text["files"]

    links = [a["href"] for tag, a in Page(report_html.render_card(odd, None)).cards[0].media
             if tag == "a"]  # fmt: skip
    assert links == ["javascript%3Aalert%281%29//a%20b.mp4"]  # a relative path, never a scheme
    for card in (report_html.render_card(i, None) for i in (video, stills, odd)):
        assert "https://" not in card and "s3cr3t" not in card  # never the provider's URLs


def test_the_page_heads_with_the_counts_and_a_filter_per_status() -> None:
    data = mixed_report()
    texts = {"p1": ItemText(prompt="a <forbidden> prompt", model="kling-v3")}
    page_html = report_html.render_html(data, texts)
    page = Page(page_html)
    assert [c.attrs["id"] for c in page.cards] == [f"item-{i['id']}" for i in data["items"]]
    assert Counter(c.status for c in page.cards) == Counter(
        {k: v for k, v in data["counts"].items() if v}
    )
    assert not any(c.hidden for c in page.cards)
    assert page.by_id()["p1"].text["prompt"] == "a <forbidden> prompt"
    assert "model kling-v3" in page.by_id()["p1"].text["meta"]
    assert page.by_id()["s1"].text["prompt"] == "no prompt"

    assert "12 items: 6 succeeded, 1 partial, 3 failed, 1 not_run, 1 running." in page_html
    boxes = re.findall(r'<input type="checkbox" name="status" value="(\w+)">\w+ '
                       r'<span class="n">(\d+)</span>', page_html)  # fmt: skip
    assert boxes == [("succeeded", "6"), ("partial", "1"), ("failed", "3"), ("not_run", "1"),
                     ("running", "1")]  # fmt: skip
    assert 'data-set="failed,partial,unresolved">Needs attention <span class="n">4</span>' in (
        page_html
    )
    assert "Deadline reached" in page_html
    assert page.scripts == 1
    # Offline: nothing outside the folder is referenced.
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page_html)
    assert "@import" not in page_html and "url(" not in page_html


def test_the_policy_runs_only_the_pages_own_script_and_style() -> None:
    page_html = report_html.render_html(mixed_report())
    script = re.search(r"<script>(.*?)</script>", page_html, re.S)
    style = re.search(r"<style>(.*?)</style>", page_html, re.S)
    assert script is not None and style is not None

    def digest(text: str) -> str:
        return base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()

    policy = html.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"',
                                     page_html)[1])  # type: ignore[index]  # fmt: skip
    assert f"script-src 'sha256-{digest(script[1])}'" in policy
    assert f"style-src 'sha256-{digest(style[1])}'" in policy
    assert "default-src 'none'" in policy and "unsafe-inline" not in policy


def _ledger_with_every_outcome(path: Path) -> Ledger:
    ledger = Ledger(path, "b")
    ledger.sync_items([("ok", "text2video", 1), ("bad", "text2video", 1), ("mug", "image", 4),
                       ("later", "text2video", 1)])  # fmt: skip
    for n, item_id in enumerate(("ok", "bad", "mug")):
        ledger.record_intent(item_id, 1, ledger.external_task_id(item_id, 1))
        ledger.record_submitted(item_id, f"T{n}")
    ledger.finish("ok", ItemState.SUCCEEDED, assets=[AssetRecord(0, "u0")])
    ledger.record_assets("ok", [AssetRecord(0, "u0", path="ok/0.mp4", sha256="a")], None)
    ledger.finish("bad", ItemState.FAILED, error=POLICY)
    stills = [AssetRecord(k, f"u{k}") for k in range(2)]
    ledger.finish("mug", ItemState.PARTIAL, assets=stills, error=MISMATCH)
    ledger.record_assets(
        "mug", [AssetRecord(k, f"u{k}", path=f"mug/{k}.png", sha256="b") for k in range(2)], None
    )
    return ledger


def test_the_run_writes_the_page_beside_the_report_from_the_same_items(tmp_path: Path) -> None:
    redactor = logs.Redactor()
    redactor.add(SECRET)
    prompts = {"ok": f"calm lake {SECRET}", "bad": HOSTILE, "mug": "mugs", "later": "soon"}
    elsewhere = tmp_path / "reports" / "report.json"  # --report outside the output directory
    with _ledger_with_every_outcome(tmp_path / "out" / "state.sqlite3") as ledger:
        written = report.write_report(
            elsewhere, batch="b", manifest=Path("m.yaml"),
            records=ledger.iter_items(["ok", "bad", "mug", "later"]),
            started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:01:00+00:00",
            output_dir=tmp_path / "out",
            texts=lambda i: ItemText(prompt=prompts[i], model="kling-v3"),
            scrub=redactor.clean,
        )  # fmt: skip
    page_html = (tmp_path / "reports" / "report.html").read_text(encoding="utf-8")
    assert SECRET not in page_html
    cards = Page(page_html).by_id()
    assert {i: c.status for i, c in cards.items()} == {
        "ok": "succeeded", "bad": "failed", "mug": "partial", "later": "not_run",
    }  # fmt: skip
    assert written.counts["failed"] == 1  # the statuses report.json has
    assert cards["ok"].text["prompt"] == "calm lake [REDACTED]"
    assert cards["bad"].text["prompt"] == HOSTILE
    assert [a["src"] for t, a in cards["ok"].media if t == "video"] == ["../out/ok/0.mp4"]
    assert [a["src"] for t, a in cards["mug"].media if t == "img"] == [
        "../out/mug/0.png",
        "../out/mug/1.png",
    ]
    markdown = (tmp_path / "reports" / "report.md").read_text(encoding="utf-8")
    assert "- `mug` (partial): [mug/0.png](../out/mug/0.png), [mug/1.png](../out/mug/1.png)" in (
        markdown
    )


# -- in a real browser ------------------------------------------------------------------------


@pytest.fixture
def batch_page(tmp_path: Path, sim: Simulator) -> Iterator[Path]:
    """report.html of a batch run by the CLI on the simulator: succeeded, failed, partial."""
    sim.add_fault(FaultRule(op="create", effect="fewer_assets", match="mugs", assets=2))
    sim.add_fault(
        FaultRule(op="create", effect="task_failed", match="forbidden",
                  message="Failure to pass the risk control system: content safety policy")
    )  # fmt: skip
    items: list[dict[str, Any]] = [
        {"id": "ok", "prompt": "a calm lake at dawn"},
        {"id": "bad", "prompt": "something forbidden"},
        {"id": "mugs", "kind": "image", "model": "kling-v2-1", "prompt": "mugs", "n": 4},
        {"id": "odd", "prompt": HOSTILE},
    ]
    result = run_cli(["run", str(write_manifest(tmp_path, sim, items))], cli_env(sim))
    assert result.code == 1, result.stderr
    yield tmp_path / "out" / "report.html"


def test_chromium_shows_a_card_per_item_and_filters_by_the_address(
    batch_page: Path, tmp_path: Path
) -> None:
    profile = tmp_path / "chromium-profile"
    page = dump_dom(batch_page, profile)
    cards = page.by_id()
    assert list(cards) == ["ok", "bad", "mugs", "odd"]
    assert {i: c.status for i, c in cards.items()} == {
        "ok": "succeeded", "bad": "failed", "mugs": "partial", "odd": "succeeded",
    }  # fmt: skip
    assert not any(c.hidden for c in page.cards)
    assert page.shown == "Showing 4 of 4"
    bad = cards["bad"]
    assert bad.text["category"] == "policy"
    assert bad.text["hint"].startswith("What to do: ") and len(bad.text["hint"]) > 20
    assert cards["mugs"].text["category"] == "asset_mismatch"
    assert "2 of 4" in cards["mugs"].text["message"]
    # The hostile prompt stayed text: no script of its own ran, the title is the page's.
    assert cards["odd"].text["prompt"] == HOSTILE
    assert page.scripts == 1 and page.title == "Batch report: e2e"
    video = next(a for t, a in cards["ok"].media if t == "video")
    assert video["src"] == "ok/0.mp4" and (batch_page.parent / "ok" / "0.mp4").is_file()
    assert video["preload"] == "metadata"  # on screen: woken by the script

    failed = dump_dom(batch_page, profile, "#status=failed")
    assert [c.status for c in failed.cards if not c.hidden] == ["failed"]
    assert all(c.hidden for c in failed.cards if c.status != "failed")
    assert failed.shown == "Showing 1 of 4 (failed)"

    several = dump_dom(batch_page, profile, "#status=failed,partial")
    assert sorted(str(c.status) for c in several.cards if not c.hidden) == ["failed", "partial"]


def test_chromium_screenshot_shows_the_cards(batch_page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    chromium(batch_page.as_uri(), tmp_path / "chromium-profile",
             f"--screenshot={shot}", "--window-size=1280,900")  # fmt: skip
    data = shot.read_bytes()
    assert len(data) > 20_000, f"{shot} is {len(data)} bytes: a blank page?"
    width, height, bpp, rows = png_rows(data)
    assert (width, height) == (1280, 900)
    colours = Counter(
        row[x : x + 3] for row in rows[::4] for x in range(0, width * bpp, 4 * bpp)
    )
    assert len(colours) > 50, f"{shot} has {len(colours)} colours: not a rendered page"
    # The status badges: the failed card's red and the succeeded cards' green are drawn.
    assert colours[bytes((0xCF, 0x22, 0x2E))] > 10
    assert colours[bytes((0x1A, 0x7F, 0x37))] > 10
