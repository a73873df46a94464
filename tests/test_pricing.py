"""Units a batch will consume: the built-in (indicative) table, the manifest's ``pricing:``,
``limits.max_units``, the estimate and its table."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

import orchestrator.providers.kling.prices as pricing_module
from orchestrator.config import (
    Manifest,
    ManifestError,
    Problem,
    load_manifest,
)
from orchestrator.pricing import units_for
from orchestrator.providers.base import Kind, TaskRequest
from orchestrator.providers.kling.catalogue import catalogue
from orchestrator.providers.kling.prices import (
    BUILTIN_PRICES,
    Estimate,
    EstimateLine,
    PriceTable,
    estimate,
    format_estimate,
    lookup,
)

HEADER = "version: 1\nname: t\nprovider: {base_url: simulator}\n"


def video(model: str, mode: str = "std", duration: int = 5, *, sound: bool = False) -> TaskRequest:
    fields = {"model": model, "prompt": "p", "mode": mode, "duration": duration}
    if sound:
        fields["sound"] = True
    return TaskRequest(Kind.TEXT2VIDEO, fields, 1)


def image(model: str, n: int = 1) -> TaskRequest:
    return TaskRequest(Kind.IMAGE, {"model": model, "prompt": "p", "n": n}, n)


def load(tmp_path: Path, body: str) -> Manifest:
    path = tmp_path / "m.yaml"
    path.write_text(HEADER + textwrap.dedent(body), encoding="utf-8")
    return load_manifest(path)


def table_of(manifest: Manifest) -> PriceTable:
    assert isinstance(manifest.pricing, PriceTable)
    return manifest.pricing


def problems(tmp_path: Path, body: str) -> list[Problem]:
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, body)
    return caught.value.problems


ITEMS = """\
items:
  - {id: a, prompt: p, model: kling-v2-5-turbo}
  - {id: b, prompt: p, model: kling-v2-5-turbo, duration: 10}
  - {id: c, prompt: p, model: kling-v2-5-turbo, mode: pro}
  - {id: d, prompt: p, model: kling-v3, duration: 7}
  - {id: e, kind: image, prompt: p, model: kling-v2-1, n: 4}
  - {id: f, kind: image, prompt: p, model: kling-v2-1}
  - {id: g, kind: image, prompt: p, model: kling-v3, n: 2}
"""


# --- the built-in table ---------------------------------------------------------------------------


def test_builtin_table_is_marked_indicative() -> None:
    assert BUILTIN_PRICES.indicative
    assert BUILTIN_PRICES.fallback is None
    assert "INDICATIVE" in (pricing_module.__doc__ or "")
    with pytest.raises(TypeError):
        BUILTIN_PRICES.video[("kling-v2-5-turbo", "std", 5)] = 0  # type: ignore[index]


def _video_rules(model: str) -> list:  # type: ignore[type-arg]
    found = catalogue().model(model)
    assert found is not None, model
    return [r for k, r in found.kinds.items() if k.media == "video" and r.usable]


def test_builtin_table_names_only_what_the_catalogue_serves() -> None:
    for model, mode, seconds in BUILTIN_PRICES.video:
        assert any(mode in r.modes and r.durations.allows(seconds) for r in _video_rules(model))
    for model, mode in BUILTIN_PRICES.video_per_second:
        assert any(mode in r.modes for r in _video_rules(model))
    for model in BUILTIN_PRICES.sound_per_second:
        assert any(r.sound for r in _video_rules(model))
    cat = catalogue()
    assert set(BUILTIN_PRICES.image) <= set(cat.usable(Kind.IMAGE))
    # Every current video model has a price in each of its modes at its shortest and longest
    # duration, with sound too where it has sound.
    for kind in (Kind.TEXT2VIDEO, Kind.IMAGE2VIDEO, Kind.OMNI_VIDEO):
        for model in cat.usable(kind):
            rules = cat.rules(model, kind)
            assert rules is not None and rules.durations is not None
            for mode in rules.modes:
                for seconds in (rules.durations.low, rules.durations.high):
                    key = (kind, model, mode, seconds, mode in rules.sound)
                    assert lookup(BUILTIN_PRICES, *key) is not None, key


@pytest.mark.parametrize(
    ("request_", "units"),
    [
        (video("kling-v2-5-turbo"), 1.5),
        (video("kling-v2-5-turbo", "pro", 10), 5),
        (video("kling-v2-6", "pro", 10), 5),
        (video("kling-v2-6", "pro", 5, sound=True), pytest.approx(3.75)),  # + 0.25 x 5
        (video("kling-v3", "std", 7), pytest.approx(4.2)),  # per second: 0.6 x 7
        (video("kling-v3", "pro", 15), pytest.approx(12)),
        (video("kling-v3", "4k", 5, sound=True), pytest.approx(9.5)),
        (video("kling-v2-5-turbo", sound=True), None),  # no sound surcharge: unpriced
        (image("kling-v2-1", 4), 4),
        (image("kling-v3"), None),  # no figure: unpriced, not guessed
        (TaskRequest(Kind.IMAGE2VIDEO, {"image": "x"}, 1), None),  # no model: not guessed
        (TaskRequest(Kind.IMAGE, {"prompt": "p", "model": "kling-v2-1"}, 3), 3),  # n: expected
    ],
)
def test_units_for(request_: TaskRequest, units: object) -> None:
    assert units_for(request_, BUILTIN_PRICES) == units


def test_a_table_falls_back_and_says_whose_price_it_is() -> None:
    own = PriceTable(
        video={("kling-v2-5-turbo", "std", 5): 1.2},
        video_per_second={("kling-v3", "std"): 0.1},
        image={"kling-v3": 0.4},
        fallback=BUILTIN_PRICES,
    )
    assert units_for(video("kling-v2-5-turbo"), own) == 1.2
    assert units_for(video("kling-v2-5-turbo", duration=10), own) == 3  # built-in
    assert units_for(video("kling-v3", duration=10), own) == pytest.approx(1.0)
    assert units_for(image("kling-v3", 3), own) == pytest.approx(1.2)
    price = lookup(own, Kind.TEXT2VIDEO, "kling-v2-5-turbo", "std", 5)
    assert price is not None and not price.indicative
    price = lookup(own, Kind.TEXT2VIDEO, "kling-v2-5-turbo", "pro", 5)
    assert price is not None and price.indicative
    # An exact price beats a per-second rate in the same table.
    mixed = PriceTable(video={("kling-v3", "std", 5): 9}, video_per_second={("kling-v3", "std"): 1})
    assert (
        units_for(video("kling-v3"), mixed),
        units_for(video("kling-v3", duration=6), mixed),
    ) == (
        9,
        6,
    )
    assert units_for(video("kling-v1"), PriceTable()) is None


# --- pricing: in the manifest ---------------------------------------------------------------------


def test_manifest_prices_override_and_extend_the_builtin_table(tmp_path: Path) -> None:
    prices = """\
        pricing:
          video:
            kling-v2-5-turbo:
              std: {5: 1, 10: 2}
            kling-v3:
              pro: {per_second: 0.25}
          image:
            kling-v3: 0.5
        """
    manifest = load(tmp_path, textwrap.dedent(prices) + ITEMS)
    table = table_of(manifest)
    assert table.fallback is BUILTIN_PRICES and not table.indicative
    assert units_for(video("kling-v2-5-turbo"), table) == 1
    assert units_for(video("kling-v2-5-turbo", "pro"), table) == 2.5  # built-in still
    assert units_for(video("kling-v3", "pro", 8), table) == 2
    assert units_for(image("kling-v3", 2), table) == 1
    assert load(tmp_path, ITEMS).pricing is BUILTIN_PRICES


def test_builtin_false_uses_only_the_manifest_prices(tmp_path: Path) -> None:
    manifest = load(
        tmp_path,
        "pricing:\n  builtin: false\n  video: {kling-v2-5-turbo: {std: {5: 1}}}\n" + ITEMS,
    )
    assert table_of(manifest).fallback is None
    assert units_for(video("kling-v2-5-turbo"), manifest.pricing) == 1
    assert units_for(video("kling-v2-5-turbo", duration=10), manifest.pricing) is None


# fmt: off
PRICING_PROBLEMS = [
    ("pricing: 5", "pricing", "must be a mapping with video and/or image prices (got 5)"),
    ("pricing: {videos: {}}", "pricing.videos", "unknown key 'videos' (did you mean 'video'?)"),
    ("pricing: {builtin: no-thanks}", "pricing.builtin", "must be true or false"),
    ("pricing: {video: [1]}", "pricing.video", "must map video models to modes to prices"),
    ("pricing: {video: {kling-v2-5: {std: {5: 1}}}}", "pricing.video.kling-v2-5",
     "unknown video model 'kling-v2-5' (did you mean 'kling-v2-5-turbo'?)"),
    ("pricing: {video: {kling-v2-1: {std: {5: 1}}}}", "pricing.video.kling-v2-1",
     "'kling-v2-1' was retired by Kling for videos: it needs no price there (price its images "
     "under pricing.image)"),
    ("pricing: {video: {kling-v1: {std: {5: 1}}}}", "pricing.video.kling-v1",
     "'kling-v1' was retired by Kling for videos: it needs no price there"),
    ("pricing: {video: {kling-v2-5-turbo: 3}}", "pricing.video.kling-v2-5-turbo",
     "must map modes (std, pro) and sound to prices"),
    ("pricing: {video: {kling-v2-5-turbo: {turbo: {5: 1}}}}",
     "pricing.video.kling-v2-5-turbo.turbo", "unknown mode 'turbo' for kling-v2-5-turbo"),
    ("pricing: {video: {kling-v2-6: {std: {5: 1}}}}", "pricing.video.kling-v2-6.std",
     "unknown mode 'std' for kling-v2-6: pro, or sound"),
    ("pricing: {video: {kling-v2-5-turbo: {std: 1.5}}}", "pricing.video.kling-v2-5-turbo.std",
     "must map durations in seconds (or per_second) to units"),
    ("pricing: {video: {kling-v2-5-turbo: {std: {7: 1}}}}",
     "pricing.video.kling-v2-5-turbo.std.7", "duration must be 5 or 10 for kling-v2-5-turbo "
     "(got 7)"),
    ("pricing: {video: {kling-v3: {std: {16: 1}}}}", "pricing.video.kling-v3.std.16",
     "must be 3 to 15 for kling-v3 (got 16)"),
    ("pricing: {video: {kling-v3: {std: {five: 1}}}}", "pricing.video.kling-v3.std.five",
     "must be a duration in whole seconds, or per_second (got 'five')"),
    ("pricing: {video: {kling-v3: {std: {5: -1}}}}", "pricing.video.kling-v3.std.5",
     "must be a finite number of units, 0 or more (got -1)"),
    ("pricing: {video: {kling-v3: {std: {5: cheap}}}}", "pricing.video.kling-v3.std.5",
     "must be a number of units (got 'cheap')"),
    ("pricing: {video: {kling-v3: {std: {per_second: .inf}}}}",
     "pricing.video.kling-v3.std.per_second", "must be a finite number of units"),
    ("pricing: {video: {kling-v3: {sound: 0.3}}}", "pricing.video.kling-v3.sound",
     "must be {per_second: UNITS}: the surcharge per second of video with sound on"),
    ("pricing: {image: 0.25}", "pricing.image", "must map image models to units per image"),
    ("pricing: {image: {kling-v2-5-turbo: 1}}", "pricing.image.kling-v2-5-turbo",
     "'kling-v2-5-turbo' is not an image model: price it under pricing.video"),
    ("pricing: {image: {kling-v3: true}}", "pricing.image.kling-v3",
     "must be a number of units (got true)"),
    ("limits: {max_units: 0}", "limits.max_units", "must be greater than 0 (got 0)"),
    ("limits: {max_units: ten}", "limits.max_units", "must be a number (got 'ten')"),
]
# fmt: on


@pytest.mark.parametrize(("line", "field", "message"), PRICING_PROBLEMS)
def test_pricing_problems_are_located(tmp_path: Path, line: str, field: str, message: str) -> None:
    found = problems(tmp_path, line + "\nitems: [{id: a, prompt: p, model: kling-v3}]\n")
    assert len(found) == 1, found
    (problem,) = found
    assert message in problem.message
    assert (problem.field, problem.line, problem.item_id) == (field, 4, None)


def test_zero_units_is_a_price(tmp_path: Path) -> None:
    manifest = load(tmp_path, "pricing: {image: {kling-v3: 0}}\n" + ITEMS)
    assert units_for(image("kling-v3"), manifest.pricing) == 0


# --- limits.max_units -----------------------------------------------------------------------------


def test_max_units_is_read(tmp_path: Path) -> None:
    one = "items: [{id: a, prompt: p, model: kling-v3}]\n"
    manifest = load(tmp_path, "limits: {max_units: 12.5}\n" + one)
    assert manifest.limits.max_units == 12.5
    assert load(tmp_path, one).limits.max_units is None


def test_max_units_needs_a_price_for_every_task(tmp_path: Path) -> None:
    found = problems(tmp_path, "limits:\n  max_units: 100\n" + ITEMS)
    assert [(p.field, p.line) for p in found] == [("limits.max_units", 5)]
    assert found[0].message == (
        "needs a price for every task, and 1 has none (kling-v3 image: 1): add them under "
        "'pricing:', or remove max_units"
    )
    # Priced in the manifest: fine. Without max_units, unpriced tasks are only listed.
    load(tmp_path, "limits: {max_units: 100}\npricing: {image: {kling-v3: 1}}\n" + ITEMS)
    load(tmp_path, ITEMS)


# --- the estimate ---------------------------------------------------------------------------------


def test_estimate_groups_counts_and_totals(tmp_path: Path) -> None:
    manifest = load(tmp_path, "limits: {max_units: 20}\npricing: {image: {kling-v3: 1}}\n" + ITEMS)
    est = estimate(manifest)
    rows = [
        (line.kind, line.model, line.mode, line.duration, line.tasks, line.assets, line.each)
        for line in est.lines
    ]
    assert rows == [
        (Kind.TEXT2VIDEO, "kling-v2-5-turbo", "pro", 5, 1, 1, 2.5),
        (Kind.TEXT2VIDEO, "kling-v2-5-turbo", "std", 5, 1, 1, 1.5),
        (Kind.TEXT2VIDEO, "kling-v2-5-turbo", "std", 10, 1, 1, 3),
        (Kind.TEXT2VIDEO, "kling-v3", "std", 7, 1, 1, pytest.approx(4.2)),
        (Kind.IMAGE, "kling-v2-1", None, None, 2, 5, 1),
        (Kind.IMAGE, "kling-v3", None, None, 1, 2, 1),
    ]
    assert [line.indicative for line in est.lines] == [True] * 5 + [False]
    assert est.tasks == 7 and est.unpriced_tasks == 0
    assert est.total_units == pytest.approx(2.5 + 1.5 + 3 + 4.2 + 5 + 2)
    assert est.max_units == 20 and est.indicative


def test_estimate_lists_unpriced_tasks_without_guessing(tmp_path: Path) -> None:
    est = estimate(load(tmp_path, ITEMS))
    unpriced = [line for line in est.lines if line.each is None]
    assert [(line.model, line.tasks, line.units) for line in unpriced] == [("kling-v3", 1, None)]
    assert est.unpriced_tasks == 1
    assert est.total_units == pytest.approx(2.5 + 1.5 + 3 + 4.2 + 5)


def test_estimate_over_an_items_file(tmp_path: Path) -> None:
    rows = "".join(f"r{n},p,{5 if n % 4 else 10}\n" for n in range(40))
    (tmp_path / "p.csv").write_text("id,prompt,duration\n" + rows)
    est = estimate(load(tmp_path, "defaults: {model: kling-v2-5-turbo}\nitems_from: p.csv\n"))
    assert [(line.duration, line.tasks) for line in est.lines] == [(5, 30), (10, 10)]
    assert est.total_units == 30 * 1.5 + 10 * 3


def test_format_estimate_table() -> None:
    est = Estimate(
        lines=(
            EstimateLine(Kind.TEXT2VIDEO, "kling-v2-5-turbo", "std", 5, False, 1200, 1200, 1.5,
                         False),
            EstimateLine(Kind.TEXT2VIDEO, "kling-v3", "pro", 7, True, 10, 10, 7.7, True),
            EstimateLine(Kind.IMAGE, "kling-v2-1", None, None, False, 2, 6, 1, True),
            EstimateLine(Kind.IMAGE, "kling-v3", None, None, False, 3, 3, None, False),
        ),
        tasks=1215,
        total_units=1883,
        unpriced_tasks=3,
        max_units=1000,
    )
    assert format_estimate(est).splitlines() == [
        "kind        model             mode  duration  sound         tasks  units each  units",
        "text2video  kling-v2-5-turbo  std   5 s       off           1,200    1.5/task  1,800",
        "text2video  kling-v3          pro   7 s       on               10    7.7/task     77 *",
        "image       kling-v2-1        -     -         -      2 (6 images)     1/image      6 *",
        "image       kling-v3          -     -         -                 3    unpriced      -",
        "total: 1,215 tasks, 1,883 units (+ 3 unpriced tasks, not counted)",
        "each item counted once: a retried generation is a new paid task",
        "* built-in INDICATIVE price, not your contract's: set your prices under 'pricing:' in "
        "the manifest",
        "3 tasks without a price: add the model under 'pricing:' in the manifest, e.g. "
        "pricing: {video: {MODEL: {std: {5: 1.5}}}}",
        "limits.max_units: 1,000: the estimate exceeds it, so the batch will stop early (raise "
        "it and rerun to go on)",
    ]


def test_format_estimate_of_a_fully_priced_batch_within_its_cap(tmp_path: Path) -> None:
    body = "limits: {max_units: 50}\npricing: {builtin: false, video: {kling-v3: {std: {5: 2}}}}\n"
    one = "items: [{id: a, prompt: p, model: kling-v3}]\n"
    text = format_estimate(estimate(load(tmp_path, body + one)))
    assert text.splitlines()[1:] == [
        "text2video  kling-v3  std   5 s       off        1      2/task      2",
        "total: 1 task, 2 units",
        "each item counted once: a retried generation is a new paid task",
        "limits.max_units: 50: the estimate is within it",
    ]
