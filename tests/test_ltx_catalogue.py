"""LTX's model catalogue: the packaged data file, a data file that could mislead validation or
prices refused where it is wrong, and the table docs/providers.md and ``models --provider ltx``
show."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.providers.base import Kind
from orchestrator.providers.ltx.catalogue import (
    PATH,
    Catalogue,
    CatalogueError,
    Status,
    catalogue,
    load,
    markdown_table,
)

REPO = Path(__file__).resolve().parent.parent

CLASSES = '[classes]\n"1080p" = ["1920x1080", "1080x1920"]\n"4k" = ["3840x2160"]\n'
GOOD = CLASSES + """
[models.m]
status = "active"
kinds = ["text2video"]
price = { "1080p" = 0.05 }
[[models.m.modes]]
resolutions = ["1080p"]
fps = [24, 25]
durations = { from = 6, to = 10, step = 2 }
"""


def load_text(tmp_path: Path, text: str) -> Catalogue:
    path = tmp_path / "catalogue.toml"
    path.write_text(text, encoding="utf-8")
    return load(path)


def test_the_packaged_catalogue() -> None:
    cat = catalogue()
    assert cat.usable(Kind.TEXT2VIDEO)[:2] == ["ltx-2-3-fast", "ltx-2-3-pro"]
    removed = cat.models["ltx-2-fast"]
    assert removed.status is Status.RETIRED and removed.replacement == "ltx-2-3-fast"
    fast = cat.models["ltx-2-3-fast"]
    assert fast.serves("1920x1080", 25, 20) and not fast.serves("3840x2160", 25, 20)
    assert cat.resolution_class("1080x1920") == "1080p"
    assert cat.price_per_second("ltx-2-3-pro", "3840x2160") == 0.32
    assert cat.price_per_second("ltx-2-5-fast", "1920x1080") is None
    assert load(PATH) == cat


def test_a_small_data_file_loads(tmp_path: Path) -> None:
    cat = load_text(tmp_path, GOOD)
    assert markdown_table(cat) == (
        "| model | status | kinds | resolution, fps: duration (s) | last frame | "
        "USD/s (1080p, 4k) |\n"
        "|---|---|---|---|---|---|\n"
        "| `m` | active | text2video | 1080p at 24, 25 fps: 6, 8, 10 | no | 0.05 / - |\n"
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("status = \"active\"", "status = \"gone\""), "models.m"),
        (("kinds = [\"text2video\"]", "kinds = [\"image\"]"), "models.m.kinds"),
        (("resolutions = [\"1080p\"]", "resolutions = [\"8k\"]"), "'8k' is not a class"),
        (("fps = [24, 25]", "fps = []"), "models.m.modes[0].fps"),
        (("step = 2", "step = 0"), "models.m.modes[0].durations"),
        (("price = { \"1080p\" = 0.05 }", "price = { \"1080p\" = -1 }"), "models.m.price"),
        (("price = {", "cost = 1\nprice = {"), "unknown keys ['cost']"),
        (("status = \"active\"", "status = \"retired\""), "models.m.removed"),
        (("status = \"active\"", "status = \"retired\"\nremoved = 2026-01-01\n"
          "replacement = \"nope\""), "models.m.replacement: unknown model"),
    ],
)
def test_a_data_file_that_could_mislead_is_refused(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    old, new = change
    assert old in GOOD
    with pytest.raises(CatalogueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_text(tmp_path, GOOD.replace(old, new, 1))


def test_an_active_model_needs_modes(tmp_path: Path) -> None:
    text = GOOD[: GOOD.index("[[models.m.modes]]")]
    with pytest.raises(CatalogueError, match="an active model needs modes"):
        load_text(tmp_path, text)


def test_the_docs_ltx_table_is_the_catalogues() -> None:
    readme = (REPO / "docs" / "providers.md").read_text(encoding="utf-8")
    marker = "<!-- ltx-models: generated from the catalogue; a test keeps them equal -->"
    start = readme.index(marker)
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- /ltx-models -->", start)
    assert readme[start:end] == markdown_table(), (
        "docs/providers.md's LTX table is stale: paste the output of "
        "`python -m orchestrator models --provider ltx`"
    )


def test_models_provider_ltx_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.__main__ import main

    assert main(["models", "--provider", "ltx"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(markdown_table())
    assert "LTX's documentation" in out
