"""Kling's model catalogue: the packaged data says what Kling serves late 2026, and the loader
refuses a data file that could mislead validation, pricing or the simulator."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from orchestrator.providers.base import Kind
from orchestrator.providers.kling.catalogue import (
    PATH,
    CatalogueError,
    Status,
    catalogue,
    markdown_table,
    parse,
)

RETIRED = dt.date(2026, 9, 15)


def test_the_retired_models_are_refused_with_date_and_replacement() -> None:
    cat = catalogue()
    video = ["kling-v1", "kling-v1-5", "kling-v1-6", "kling-v2-master", "kling-v2-1",
             "kling-v2-1-master"]
    image = ["kling-v1", "kling-v1-5", "kling-v2", "kling-v2-new"]
    for kind, names in ((Kind.TEXT2VIDEO, video), (Kind.IMAGE2VIDEO, video), (Kind.IMAGE, image)):
        for name in names:
            rules = cat.rules(name, kind)
            assert rules is not None and rules.status is Status.RETIRED, (name, kind)
            assert rules.since == RETIRED
            replacement = cat.rules(rules.replacement or "", kind)
            assert replacement is not None and replacement.usable
    # kling-v2-1 lost its video kinds, not its images.
    assert cat.rules("kling-v2-1", Kind.IMAGE).usable  # type: ignore[union-attr]


def test_what_the_live_api_answers_per_model() -> None:
    cat = catalogue()
    v26 = cat.rules("kling-v2-6", Kind.TEXT2VIDEO)
    assert v26 is not None and v26.modes == ("pro",) and v26.default_mode == "pro"
    assert v26.durations is not None and sorted(v26.durations.values) == [5, 10]
    assert v26.sound == ("pro",)
    v3 = cat.rules("kling-v3", Kind.TEXT2VIDEO)
    assert v3 is not None and v3.modes == ("std", "pro", "4k") and v3.multi_shot
    assert v3.durations is not None and v3.durations.describe() == "3 to 15"
    turbo = cat.rules("kling-v2-5-turbo", Kind.IMAGE2VIDEO)
    assert turbo is not None and not turbo.sound and turbo.end_frame == ("pro",)
    assert cat.usable(Kind.IMAGE) == ["kling-v3", "kling-v2-1"]
    o1 = cat.rules("kling-video-o1", Kind.OMNI_VIDEO)
    assert o1 is not None and o1.durations_for(0).describe() == "5 or 10"  # type: ignore[union-attr]


def test_api_2_0_only_models_and_paths() -> None:
    cat = catalogue()
    assert cat.api_for(Kind.TEXT2VIDEO, "kling-3.0-turbo", "auto") == "v2"
    assert cat.api_for(Kind.TEXT2VIDEO, "kling-3.0-turbo", "v1") is None
    assert cat.api_for(Kind.TEXT2VIDEO, "kling-v2-6", "auto") == "v1"
    assert cat.api_for(Kind.TEXT2VIDEO, "kling-v2-6", "v2") == "v2"
    assert cat.api_for(Kind.TEXT2VIDEO, "kling-v3", "v2") is None
    # An unknown model goes where the manifest says.
    assert cat.api_for(Kind.TEXT2VIDEO, "kling-v4", "auto") == "v1"
    assert cat.api_for(Kind.TEXT2VIDEO, "kling-v4", "v2") == "v2"
    assert cat.v2_path(Kind.TEXT2VIDEO, "kling-v2-6") == "text-to-video/kling-2.6"
    assert cat.v2_path(Kind.IMAGE2VIDEO, "kling-3.0-turbo") == "image-to-video/kling-3.0-turbo"
    assert cat.v2_path(Kind.OMNI_VIDEO, "kling-video-o1") == "omni-video/kling-o1"


def test_aliases_name_the_same_model() -> None:
    cat = catalogue()
    assert cat.canonical("kling-2.6") == "kling-v2-6"
    assert cat.model("kling-o1") is cat.model("kling-video-o1")
    assert cat.suggest("kling-v2.6", Kind.TEXT2VIDEO) == "kling-v2-6"
    assert cat.suggest("banana", Kind.TEXT2VIDEO) is None


def test_a_new_model_is_a_data_change() -> None:
    text = PATH.read_text(encoding="utf-8") + (
        '\n[models.kling-v4]\ntitle = "Kling 4.0"\nstatus = "active"\n'
        '[models.kling-v4.text2video]\nmodes = ["pro"]\ndefault_mode = "pro"\n'
        "durations = {from = 4, to = 20}\nsound = [\"pro\"]\n"
    )
    cat = parse(text)
    rules = cat.rules("kling-v4", Kind.TEXT2VIDEO)
    assert rules is not None and rules.usable and rules.durations is not None
    assert rules.durations.allows(20) and not rules.durations.allows(21)
    assert "kling-v4" in cat.usable(Kind.TEXT2VIDEO)
    assert "`kling-v4` | active | modes pro, 4 to 20 s, sound" in markdown_table(cat)


BASE = 'catalogue = 1\nchecked = 2026-11-30\n[defaults.text2video]\napi = ["v1"]\n'


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[models.m]\ntitle = "M"\n[models.m.text2video]\nmodes = ["pro"]\n'
         'default_mode = "std"\ndurations = [5]\ndefault_duration = 5\n',
         "models.m.text2video: default_mode must be one of its modes"),
        ('[models.m]\ntitle = "M"\n[models.m.text2video]\nmodes = ["pro"]\n'
         'default_mode = "pro"\ndurations = [5]\ndefault_duration = 5\nsound = ["std"]\n',
         "sound must list some of its modes"),
        ('[models.m]\ntitle = "M"\nstatus = "retired"\nkinds = ["image"]\n',
         "a retired model needs the date"),
        ('[models.m]\ntitle = "M"\nstatus = "retired"\nretired = 2026-01-01\n'
         'replacement = "nope"\nkinds = ["image"]\n', "replacement 'nope' is not a usable model"),
        ('[models.m]\ntitle = "M"\n[models.m.text2video]\nmodez = ["pro"]\n',
         "models.m.text2video: unknown keys ['modez']"),
        ('[models.m]\ntitle = "M"\n[models.m.text2video]\nmodes = ["pro"]\n'
         'default_mode = "pro"\ndurations = {from = 9, to = 3}\ndefault_duration = 5\n',
         "durations: must be a list of seconds"),
        ('[models.m]\ntitle = "M"\n[models.m.text2video]\napi = ["v2"]\nmodes = ["pro"]\n'
         'default_mode = "pro"\ndurations = [5]\ndefault_duration = 5\n',
         "is served on API 2.0 but has no v2_name"),
    ],
)
def test_a_misleading_data_file_is_refused(extra: str, message: str) -> None:
    with pytest.raises(CatalogueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse(BASE + extra)


def test_indicative_units_come_from_the_catalogue() -> None:
    cat = catalogue()
    units = cat.indicative_units
    assert units("kling-v2-5-turbo", Kind.TEXT2VIDEO, mode="pro", duration=10) == 5
    assert units("kling-v3", Kind.TEXT2VIDEO, mode="std", duration=7) == pytest.approx(4.2)
    assert units("kling-v3", Kind.TEXT2VIDEO, mode="std", duration=5, sound=True) == (
        pytest.approx(4.5))
    assert units("kling-v2-5-turbo", Kind.TEXT2VIDEO, mode="std", duration=5, sound=True) is None
    assert units("kling-v2-1", Kind.IMAGE, n=4) == 4
    assert units("kling-v3", Kind.IMAGE, n=1) is None
    assert units("kling-v9", Kind.TEXT2VIDEO, mode="pro", duration=5) is None


def test_the_docs_model_table_is_the_catalogues() -> None:
    docs = Path(__file__).resolve().parent.parent / "docs" / "providers.md"
    readme = docs.read_text(encoding="utf-8")
    start = readme.index("<!-- models: generated from the catalogue; a test keeps them equal -->")
    start = readme.index("\n", start) + 1
    end = readme.index("<!-- /models -->", start)
    assert readme[start:end] == markdown_table(), (
        "docs/providers.md's model table is stale: paste the output of "
        "`python -m orchestrator models`"
    )


def test_the_models_command_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    from orchestrator.__main__ import main

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(markdown_table())
    assert "catalogue checked against Kling on 2026-11-30" in out
