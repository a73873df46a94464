"""Which Kling model an item names, and what that model lets it ask for: read from the catalogue,
checked offline, with the model's own defaults spelled out in the request."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.config import Manifest, ManifestError, Problem, load_manifest
from orchestrator.providers.base import ImageSource, Kind
from orchestrator.providers.kling.catalogue import PATH, parse
from orchestrator.providers.kling.prices import PriceTable
from tests.test_images import png_bytes

HEADER = "version: 1\nname: t\nprovider: {base_url: simulator}\n"


def write(directory: Path, body: str, header: str = HEADER) -> Path:
    path = directory / "m.yaml"
    path.write_text(header + textwrap.dedent(body), encoding="utf-8")
    return path


def load(directory: Path, body: str, header: str = HEADER) -> Manifest:
    return load_manifest(write(directory, body, header))


def problems(directory: Path, body: str, header: str = HEADER) -> list[Problem]:
    with pytest.raises(ManifestError) as caught:
        load(directory, body, header)
    return caught.value.problems


def fields(manifest: Manifest) -> dict[str, dict[str, object]]:
    return {item.id: dict(item.request.fields) for item in manifest.items}


def test_each_model_gets_its_own_defaults(tmp_path: Path) -> None:
    got = fields(load(tmp_path, """\
        items:
          - {id: v26, prompt: p, model: kling-v2-6}
          - {id: v3, prompt: p, model: kling-v3}
          - {id: turbo, prompt: p, model: kling-3.0-turbo}
          - {id: img, kind: image, prompt: p, model: kling-v3}
        """))
    # kling-v2-6 refuses std, which Kling assumes when no mode is sent: pro is spelled out.
    assert (got["v26"]["mode"], got["v26"]["duration"]) == ("pro", 5)
    assert (got["v3"]["mode"], got["v3"]["aspect_ratio"]) == ("std", "16:9")
    assert got["turbo"]["mode"] == "pro"
    assert got["img"] == {"model": "kling-v3", "prompt": "p", "n": 1, "aspect_ratio": "16:9"}


def test_an_alias_is_recorded_as_the_catalogue_name(tmp_path: Path) -> None:
    got = fields(load(tmp_path, "items: [{id: a, prompt: p, model: kling-2.6}]\n"))
    assert got["a"]["model"] == "kling-v2-6"


def test_sound_and_4k_where_the_model_has_them(tmp_path: Path) -> None:
    got = fields(load(tmp_path, """\
        items:
          - {id: a, prompt: p, model: kling-v3, mode: 4k, duration: 7, sound: on}
          - {id: b, prompt: p, model: kling-v2-6, sound: true}
          - {id: c, prompt: p, model: kling-v2-5-turbo, sound: false}
        """))
    # YAML reads a bare `on` as true: the manifest takes booleans.
    assert (got["a"]["mode"], got["a"]["duration"], got["a"]["sound"]) == ("4k", 7, True)
    assert got["b"]["sound"] is True
    # Kling's default (no sound) on a model without sound: not sent at all.
    assert "sound" not in got["c"]


def test_sound_needs_the_mode_the_model_has_it_in(tmp_path: Path) -> None:
    custom = PATH.read_text(encoding="utf-8").replace(
        '[models.kling-v3.text2video]\nmodes = ["std", "pro", "4k"]\ndefault_mode = "std"\n'
        'durations = {from = 3, to = 15}\nsound = ["std", "pro", "4k"]',
        '[models.kling-v3.text2video]\nmodes = ["std", "pro", "4k"]\ndefault_mode = "std"\n'
        'durations = {from = 3, to = 15}\nsound = ["pro"]',
    )
    path = write(tmp_path, "items: [{id: a, prompt: p, model: kling-v3, sound: true}]\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(path, catalogue=parse(custom))
    (problem,) = caught.value.problems
    assert (problem.field, problem.message) == (
        "sound", "needs mode pro on kling-v3 (mode is std)"
    )


def test_multi_shot_fields_are_kept(tmp_path: Path) -> None:
    got = fields(load(tmp_path, """\
        items:
          - id: story
            model: kling-v3
            multi_shot: true
            shot_type: customize
            duration: 8
            multi_prompt:
              - {prompt: A wide shot of the harbour at dawn, duration: 3}
              - {prompt: A gull lands on a post, duration: 5}
          - {id: auto, prompt: a day at the harbour, model: kling-v3, multi_shot: true,
             shot_type: intelligence}
        """))
    assert got["story"]["multi_prompt"] == [
        {"prompt": "A wide shot of the harbour at dawn", "duration": 3},
        {"prompt": "A gull lands on a post", "duration": 5},
    ]
    assert "prompt" not in got["story"]  # a customized multi-shot needs none
    assert (got["auto"]["shot_type"], got["auto"]["multi_shot"]) == ("intelligence", True)


def test_omni_video_items(tmp_path: Path) -> None:
    (tmp_path / "hero.png").write_bytes(png_bytes(400, 400))
    got = fields(load(tmp_path, """\
        items:
          - id: omni
            kind: omni_video
            model: kling-v3-omni
            prompt: <<<image_1>>> walks into the room
            image: hero.png
            image_tail: hero.png
            reference_images: [hero.png]
            sound: true
          - id: o1
            kind: omni_video
            model: kling-o1
            prompt: <<<image_1>>> waves
            duration: 7
            reference_images: [hero.png]
        """))
    hero = ImageSource(path=tmp_path / "hero.png")
    assert got["omni"]["reference_images"] == [hero]
    assert (got["omni"]["image"], got["omni"]["image_tail"]) == (hero, hero)
    assert (got["omni"]["mode"], got["omni"]["duration"]) == ("std", 5)
    # kling-video-o1 takes 7 s once a reference image is given.
    assert (got["o1"]["model"], got["o1"]["duration"]) == ("kling-video-o1", 7)


def test_an_unknown_model_needs_allow_unknown_models(tmp_path: Path) -> None:
    body = "items: [{id: a, prompt: p, model: kling-v4, duration: 20, mode: pro}]\n"
    # Refused: the model, and the duration no model it knows makes.
    model, duration = problems(tmp_path, body)
    assert model.field == "model" and "unknown Kling model 'kling-v4'" in model.message
    assert duration.message == "must be between 3 and 15 seconds (got 20)"
    allowed = HEADER.replace("simulator}", "simulator, allow_unknown_models: true}")
    manifest = load(tmp_path, body, allowed)
    assert manifest.provider.options.allow_unknown_models
    # Only the generic checks: sent as written, nothing assumed for it.
    assert fields(manifest)["a"] == {"model": "kling-v4", "prompt": "p", "mode": "pro",
                                     "duration": 20}
    # It can be priced like any model.
    priced = load(tmp_path, "pricing: {video: {kling-v4: {pro: {per_second: 1}}}}\n" + body,
                  allowed)
    assert isinstance(priced.pricing, PriceTable)
    assert priced.pricing.video_per_second[("kling-v4", "pro")] == 1


def test_a_deprecated_model_warns_and_a_retired_one_is_refused(tmp_path: Path) -> None:
    text = PATH.read_text(encoding="utf-8").replace(
        '[models.kling-v2-5-turbo]\ntitle = "Kling 2.5 Turbo"\nstatus = "active"',
        '[models.kling-v2-5-turbo]\ntitle = "Kling 2.5 Turbo"\nstatus = "deprecated"\n'
        'deprecated = 2026-11-01\nreplacement = "kling-v3"',
    )
    cat = parse(text)
    path = write(tmp_path, "items: [{id: a, prompt: p, model: kling-v2-5-turbo}]\n")
    manifest = load_manifest(path, catalogue=cat)
    assert manifest.warnings == (
        "model 'kling-v2-5-turbo' is deprecated since 2026-11-01: Kling will retire it; move to "
        "kling-v3",
    )
    assert load_manifest(path).warnings == ()


def test_items_without_a_model_are_one_problem(tmp_path: Path) -> None:
    rows = "".join(f"  - {{id: i{n}, prompt: p}}\n" for n in range(12))
    (problem,) = problems(tmp_path, "defaults: {kind: text2video}\nitems:\n" + rows)
    assert (problem.field, problem.line, problem.item_id) == ("defaults.model", 4, None)
    assert problem.message.startswith("is required: name the Kling model, e.g. 'model: kling-v3'")
    assert "12 items name none ('i0', 'i1'" in problem.message
    assert "and 2 more): set it here for all of them, or on each item" in problem.message


def test_api_2_0_models_and_provider_api(tmp_path: Path) -> None:
    manifest = load(
        tmp_path,
        "items: [{id: a, prompt: p, model: kling-v2-6}]\n",
        HEADER.replace("simulator}", "simulator, api: v2}"),
    )
    assert manifest.provider.options.api == "v2"
    default = load(tmp_path, "items: [{id: a, prompt: p, model: kling-v3}]\n")
    assert default.provider.options.api == "auto"


def test_a_prompt_that_cannot_be_sent_is_refused_offline(tmp_path: Path) -> None:
    # YAML's "\ud800" makes a lone surrogate: no JSON body can carry it.
    (problem,) = problems(tmp_path, 'items: [{id: a, prompt: "a \\ud800 b", model: kling-v3}]\n')
    assert problem.field == "prompt"
    assert problem.message == (
        "contains a character that cannot be sent ('\\ud800' at position 2): remove it"
    )


def test_csv_cells_for_the_new_fields(tmp_path: Path) -> None:
    (tmp_path / "rows.csv").write_text(
        "id,prompt,model,sound,multi_shot,shot_type,duration,multi_prompt\n"
        "a,p,kling-v3,true,,,,\n"
        "b,,kling-v3,no,true,customize,5,"
        '"[{""prompt"": ""one"", ""duration"": 2}, {""prompt"": ""two"", ""duration"": 3}]"\n'
        "c,p,kling-v3,maybe,,,,\n",
        encoding="utf-8",
    )
    body = "items_from: rows.csv\n"
    (problem,) = problems(tmp_path, body)
    assert (problem.item_id, problem.field, problem.message) == (
        "c", "sound", "must be true or false (got 'maybe')"
    )
    (tmp_path / "rows.csv").write_text(
        (tmp_path / "rows.csv").read_text(encoding="utf-8").rsplit("c,p", 1)[0],
        encoding="utf-8",
    )
    got = fields(load(tmp_path, body))
    assert got["a"]["sound"] is True
    assert got["b"]["sound"] is False and got["b"]["multi_shot"] is True
    assert got["b"]["multi_prompt"] == [
        {"prompt": "one", "duration": 2}, {"prompt": "two", "duration": 3}
    ]


def test_the_request_keeps_the_kind(tmp_path: Path) -> None:
    body = "items: [{id: a, kind: omni_video, prompt: p, model: kling-v3-omni}]\n"
    manifest = load(tmp_path, body)
    assert manifest.items[0].request.kind is Kind.OMNI_VIDEO
