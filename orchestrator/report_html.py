"""report.html: the batch as a page of cards, one per item, that works from the folder alone.

No server and nothing from the network: the style and the script are inline, and each item's
files are linked by paths relative to the page (never by the provider's URLs). A card shows the
item's images or video, its prompt and model (the manifest's: report.json does not carry them,
so the caller passes them as :class:`ItemText`), its status and, when it has one, its error:
category, code and what to do. The counts head the page, with a filter by status that the
address keeps (``report.html#status=failed,partial``), so a link opens the page filtered.

The items are the report's own (:func:`~orchestrator.report_items.item_entry`, scrubbed of
credentials like the rest of the report), so a card never disagrees with report.json.

Every text from the manifest or the provider is escaped (:func:`html.escape`). The page's
Content-Security-Policy runs only its own script and style (by hash) and loads only local
media, so even a text that slipped past escaping could neither run nor fetch anything.

Large batches stay usable: cards are written one at a time (:class:`HtmlSpool`), images load
lazily (``loading="lazy"``), a video fetches nothing (``preload="none"``) until its card nears
the screen, then its metadata and first frame (the providers' cover images are not kept, so the
first frame is the poster), and cards off screen are not laid out (``content-visibility``).
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orchestrator.atomic_files import atomic_file
from orchestrator.media_formats import by_extension
from orchestrator.report_items import PROBLEM_STATUSES, STATUSES
from orchestrator.report_md import asset_href, counts_text, error_line, stop_cause
from orchestrator.report_stats import ItemStats


@dataclass(frozen=True)
class ItemText:
    """What the manifest says of an item that its card shows."""

    prompt: str | None = None
    model: str | None = None

    @classmethod
    def of(cls, fields: Mapping[str, Any]) -> ItemText:
        """From an item's request fields (the manifest's names)."""
        prompt, model = fields.get("prompt"), fields.get("model")
        return cls(
            prompt=None if prompt is None else str(prompt),
            model=None if model is None else str(model),
        )


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


# -- one card ---------------------------------------------------------------------------------


def _media(item_id: str, assets: Sequence[Mapping[str, Any]], base: str) -> str:
    shown: list[str] = []
    for asset in assets:
        path = asset.get("path")
        if not path:
            continue
        fmt = by_extension(str(path))
        href = _e(asset_href(base, str(path)))
        label = _e(f"{item_id} file {asset.get('index')}")
        if fmt is not None and fmt.media == "video":
            shown.append(
                f'<video controls preload="none" src="{href}" aria-label="{label}"></video>'
            )
        elif fmt is not None and fmt.media == "image":
            shown.append(
                f'<a href="{href}"><img loading="lazy" decoding="async" src="{href}" '
                f'alt="{label}"></a>'
            )
    if not shown:
        return '<div class="media none">no preview</div>'
    many = " many" if len(shown) > 1 else ""
    return f'<div class="media{many}">{"".join(shown)}</div>'


def _error(err: Mapping[str, Any] | None, status: str) -> str:
    if not err:
        return ""
    facts = [f'<b class="category">{_e(err.get("category"))}</b>']
    if err.get("code") is not None:
        facts.append(f'code <b class="code">{_e(err["code"])}</b>')
    if err.get("http_status") is not None:
        facts.append(f"HTTP {_e(err['http_status'])}")
    parts = [f'<p>{" · ".join(facts)}</p>']
    if err.get("message"):
        parts.append(f'<p class="message">{_e(err["message"])}</p>')
    if err.get("hint"):
        parts.append(f'<p class="hint">What to do: {_e(err["hint"])}</p>')
    kind = "error" if status in PROBLEM_STATUSES else "note"
    return f'<div class="{kind}">{"".join(parts)}</div>'


def _files(assets: Sequence[Mapping[str, Any]], expected: Any, base: str) -> str:
    rows: list[str] = []
    for asset in assets:
        path = asset.get("path")
        if path:
            rows.append(f'<li><a href="{_e(asset_href(base, str(path)))}">{_e(path)}</a></li>')
        else:
            rows.append(f"<li>file {_e(asset.get('index'))} not downloaded</li>")
    on_disk = sum(1 for a in assets if a.get("path"))
    head = f'<p class="count">{on_disk} of {_e(expected)} files</p>'
    return head + (f'<ul class="files">{"".join(rows)}</ul>' if rows else "")


def render_card(item: Mapping[str, Any], text: ItemText | None, assets_base: str = "") -> str:
    """One item's card: ``item`` is a report item, ``text`` what the manifest says of it."""
    item_id = str(item.get("id"))
    status = str(item.get("status"))
    assets: Sequence[Mapping[str, Any]] = item.get("assets") or []
    text = text or ItemText()
    meta = [f"model <b>{_e(text.model)}</b>"] if text.model else []
    meta.append(_e(item.get("kind")))
    attempts = item.get("attempts")
    if attempts:
        meta.append(f"{_e(attempts)} attempt{'s' if attempts != 1 else ''}")
    prompt = (
        f'<p class="prompt">{_e(text.prompt)}</p>'
        if text.prompt
        else '<p class="prompt none">no prompt</p>'
    )
    return (
        f'<article class="card" data-status="{_e(status)}" id="item-{_e(item_id)}">'
        f"{_media(item_id, assets, assets_base)}"
        '<div class="body">'
        f'<h2><span class="id">{_e(item_id)}</span> '
        f'<span class="status s-{_e(status)}">{_e(status)}</span></h2>'
        f"{prompt}"
        f'<p class="meta">{" · ".join(meta)}</p>'
        f"{_error(item.get('error'), status)}"
        f"{_files(assets, item.get('expected_assets'), assets_base)}"
        "</div></article>\n"
    )


# -- the page ---------------------------------------------------------------------------------

_STYLE = """
:root{color-scheme:light;font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;
--ok:#1a7f37;--bad:#cf222e;--part:#9a6700;--idle:#57606a;--run:#0969da}
body{margin:0;background:#f3f4f6;color:#1f2328}
[hidden]{display:none!important}
header{position:sticky;top:0;z-index:1;background:#fff;border-bottom:1px solid #d0d7de;
padding:12px 20px}
h1{font-size:20px;margin:0 0 4px}
header p{margin:2px 0;color:#57606a}
header .stop{color:var(--bad);font-weight:600}
nav{display:flex;flex-wrap:wrap;gap:6px;align-items:center;margin-top:8px}
nav button,nav label{border:1px solid #d0d7de;border-radius:16px;padding:3px 10px;
background:#f6f8fa;cursor:pointer;font:inherit}
nav label:has(input:checked){background:#ddf4ff;border-color:var(--run)}
nav input{margin:0 4px 0 0;vertical-align:-1px}
nav .n{font-weight:600}
#shown{margin-left:auto;color:#57606a}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(280px,1fr));gap:12px;
padding:16px 20px}
.card{background:#fff;border:1px solid #d0d7de;border-radius:8px;overflow:hidden;
display:flex;flex-direction:column;content-visibility:auto;contain-intrinsic-size:auto 380px}
.card[data-status=failed],.card[data-status=unresolved]{border-color:var(--bad)}
.card[data-status=partial]{border-color:var(--part)}
.media{height:190px;background:#161b22;display:flex;align-items:center;justify-content:center}
.media.many{flex-wrap:wrap;gap:2px;overflow:auto}
.media.many a{flex:1 1 45%;height:93px}
.media a{display:block;height:100%;width:100%}
.media img,.media video{width:100%;height:100%;object-fit:contain;display:block}
.media.none{color:#8c959f}
.body{padding:10px 12px}
h2{font-size:15px;margin:0 0 6px;display:flex;justify-content:space-between;gap:8px;
align-items:flex-start}
h2 .id{overflow-wrap:anywhere}
.status{font-size:12px;border-radius:10px;padding:1px 8px;color:#fff;background:var(--idle);
white-space:nowrap}
.s-succeeded{background:var(--ok)}.s-failed,.s-unresolved{background:var(--bad)}
.s-partial{background:var(--part)}.s-running{background:var(--run)}
.prompt{margin:0 0 6px;white-space:pre-wrap;overflow-wrap:anywhere;max-height:8.4em;
overflow:auto}
.prompt.none,.meta,.count{color:#57606a}
.meta,.count{margin:0 0 6px;font-size:13px}
.error,.note{border-left:3px solid var(--bad);background:#ffebe9;padding:4px 8px;margin:6px 0;
font-size:13px;overflow-wrap:anywhere}
.note{border-color:var(--idle);background:#f6f8fa}
.error p,.note p{margin:2px 0}
.hint{font-weight:600}
.files{margin:0;padding-left:18px;font-size:13px;overflow-wrap:anywhere}
"""

_SCRIPT = """
(function () {
  "use strict";
  var cards = document.getElementsByClassName("card");
  var boxes = document.querySelectorAll("input[name=status]");
  var shown = document.getElementById("shown");
  function wanted() {
    var m = /[#&]status=([^&]*)/.exec(location.hash);
    if (!m) return [];
    return decodeURIComponent(m[1]).split(",").filter(function (s) { return s; });
  }
  function apply() {
    var want = wanted(), n = 0, i;
    for (i = 0; i < boxes.length; i++) boxes[i].checked = want.indexOf(boxes[i].value) >= 0;
    for (i = 0; i < cards.length; i++) {
      var show = !want.length || want.indexOf(cards[i].getAttribute("data-status")) >= 0;
      cards[i].hidden = !show;
      if (show) n++;
    }
    shown.textContent = "Showing " + n + " of " + cards.length +
      (want.length ? " (" + want.join(", ") + ")" : "");
    document.documentElement.setAttribute("data-filter", want.join(",") || "all");
  }
  function choose(list) {
    var hash = list.length ? "#status=" + list.join(",") : "";
    if (location.hash !== hash) location.hash = hash;
    apply();
  }
  document.querySelector("nav").addEventListener("change", function () {
    var list = [];
    for (var i = 0; i < boxes.length; i++) if (boxes[i].checked) list.push(boxes[i].value);
    choose(list);
  });
  document.querySelectorAll("nav button").forEach(function (b) {
    b.addEventListener("click", function () {
      choose((b.getAttribute("data-set") || "").split(",").filter(function (s) { return s; }));
    });
  });
  window.addEventListener("hashchange", apply);
  apply();
  // A video fetches its metadata (and so shows its first frame) once its card nears the screen.
  function wake(card) {
    var videos = card.querySelectorAll("video[preload=none]");
    for (var i = 0; i < videos.length; i++) { videos[i].preload = "metadata"; videos[i].load(); }
  }
  if (!("IntersectionObserver" in window)) {
    for (var i = 0; i < cards.length; i++) wake(cards[i]);
    return;
  }
  var seen = new IntersectionObserver(function (entries) {
    entries.forEach(function (e) {
      if (e.isIntersecting) { seen.unobserve(e.target); wake(e.target); }
    });
  }, {rootMargin: "600px 0px"});
  // The first screen's cards at once (layout is synchronous; an observer waits for a frame).
  var near = window.innerHeight + 600;
  for (var j = 0; j < cards.length; j++) {
    if (!cards[j].querySelector("video")) continue;
    if (!cards[j].hidden && cards[j].getBoundingClientRect().top < near) wake(cards[j]);
    else seen.observe(cards[j]);
  }
})();
"""


def _sha256(source: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode()


#: Only this page's own script and style run; media only from files (or the same server).
CSP = (
    f"default-src 'none'; script-src '{_sha256(_SCRIPT)}'; style-src '{_sha256(_STYLE)}'; "
    "img-src 'self' file:; media-src 'self' file:; base-uri 'none'; form-action 'none'"
)


def _head(report: Mapping[str, Any], stats: ItemStats) -> str:
    counts: Mapping[str, int] = report.get("counts") or stats.counts
    batch = _e(report.get("batch", "?"))
    lines = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Batch report: {batch}</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<header>",
        f"<h1>Batch report: {batch}</h1>",
        f'<p class="counts">{stats.total} items: '
        f"{_e(counts_text(counts) or 'nothing to do')}.</p>",
        f"<p>Finished {_e(report.get('finished_at', '?'))} · manifest "
        f"<code>{_e(report.get('manifest', '?'))}</code></p>",
    ]
    stop = report.get("stopped_by")
    if stop:
        cause, detail = stop_cause(stop, error_line(stop))
        hint = f" What to do: {stop['hint']}" if stop.get("hint") else ""
        lines.append(f'<p class="stop">Stopped by {_e(cause)}: {_e(detail)}.{_e(hint)}</p>')
    if report.get("local_failure"):
        lines.append(
            f'<p class="stop">Stopped by a failure of this machine: '
            f"{_e(report['local_failure'])}.</p>"
        )
    if report.get("interrupted"):
        lines.append('<p class="stop">Interrupted: a rerun collects the tasks in flight.</p>')
    if report.get("deadline_reached"):
        lines.append('<p class="stop">Deadline reached: rerun to continue.</p>')
    problems = sum(counts.get(s, 0) for s in PROBLEM_STATUSES)
    lines.append('<nav aria-label="Filter by status">')
    lines.append(f'<button type="button" data-set="">All <span class="n">{stats.total}</span>'
                 "</button>")
    if problems:
        lines.append(
            f'<button type="button" data-set="{",".join(PROBLEM_STATUSES)}">Needs attention '
            f'<span class="n">{problems}</span></button>'
        )
    statuses = [s for s in STATUSES if counts.get(s)] + [
        s for s in counts if s not in STATUSES and counts[s]
    ]
    for status in statuses:
        lines.append(
            f'<label><input type="checkbox" name="status" value="{_e(status)}">{_e(status)} '
            f'<span class="n">{_e(counts[status])}</span></label>'
        )
    lines.append(f'<span id="shown">Showing {stats.total} of {stats.total}</span>')
    lines += ["</nav>", "</header>", "<main>"]
    return "\n".join(lines) + "\n"


_TAIL = f"</main>\n<script>{_SCRIPT}</script>\n</body></html>\n"


class HtmlSpool:
    """report.html's cards, written one item at a time (:meth:`add`), then the page
    (:meth:`write`) once the counts are known.

    ``cards``: where the cards wait (a temp file beside the page, or memory).
    ``assets_base``: the output directory as a link from the page ("" when it is the page's).
    """

    def __init__(self, cards: IO[str], assets_base: str = "") -> None:
        self._cards = cards
        self._base = assets_base

    def add(self, item: Mapping[str, Any], text: ItemText | None) -> None:
        self._cards.write(render_card(item, text, self._base))

    def write(self, fh: IO[str], report: Mapping[str, Any], stats: ItemStats) -> None:
        fh.write(_head(report, stats))
        self._cards.seek(0)
        shutil.copyfileobj(self._cards, fh)
        fh.write(_TAIL)


def render_html(
    report: Mapping[str, Any],
    texts: Mapping[str, ItemText] | None = None,
    *,
    assets_base: str = "",
) -> str:
    """report.html of an in-memory report (its ``items`` included); ``texts`` by item id."""
    items: Sequence[Mapping[str, Any]] = report.get("items") or []
    texts = texts or {}
    out = io.StringIO()
    spool = HtmlSpool(io.StringIO(), assets_base)
    for item in items:
        spool.add(item, texts.get(str(item.get("id"))))
    spool.write(out, report, ItemStats.of(items))
    return out.getvalue()


def write_html(
    path: Path,
    report: Mapping[str, Any],
    texts: Mapping[str, ItemText] | None = None,
    *,
    assets_base: str = "",
) -> None:
    text = render_html(report, texts, assets_base=assets_base)
    with atomic_file(path) as fh:
        fh.write(text)
