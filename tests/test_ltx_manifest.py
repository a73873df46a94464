"""LTX manifests: its item fields and model matrix checked offline, with the item, the field and
the line to fix; its prices in USD per second, the manifest's over the list prices; the estimate.
"""

from __future__ import annotations

import os
from pathlib import Path
from textwrap import dedent

import pytest

from orchestrator.config import Manifest, ManifestError, Problem, load_manifest
from orchestrator.pricing import units_for
from orchestrator.providers.base import ImageSource, Kind, TaskRequest
from orchestrator.providers.ltx.catalogue import catalogue
from orchestrator.providers.ltx.client import DEFAULT_BASE_URL
from orchestrator.providers.ltx.prices import BUILTIN_PRICES, LtxPrices
from tests.conftest import REPO, run_cli
from tests.test_images import png_bytes

HEADER = "version: 1\nname: t\nprovider: {name: ltx, base_url: simulator}\n"
DEFAULTS = "defaults: {model: ltx-2-3-fast}\n"


def env() -> dict[str, str]:
    """The environment of a user without any provider's credentials."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("LTX_", "KLING_"))}
    return {**clean, "PYTHONPATH": str(REPO)}


def load(tmp_path: Path, body: str, header: str = HEADER) -> Manifest:
    (tmp_path / "cat.png").write_bytes(png_bytes(512, 384))
    path = tmp_path / "m.yaml"
    path.write_text(header + body, encoding="utf-8")
    return load_manifest(path)


def problems(tmp_path: Path, body: str) -> list[Problem]:
    with pytest.raises(ManifestError) as caught:
        load(tmp_path, body)
    return caught.value.problems


def video(model: str, resolution: str = "1920x1080", duration: int = 6) -> TaskRequest:
    fields = {"model": model, "prompt": "p", "resolution": resolution, "duration": duration}
    return TaskRequest(Kind.TEXT2VIDEO, fields, 1)


def test_a_mixed_batch_loads_with_ltx_defaults(tmp_path: Path) -> None:
    manifest = load(tmp_path, DEFAULTS + dedent("""\
        items:
          - {id: a, prompt: a fox}
          - {id: b, prompt: a long take, duration: 20}
          - {id: c, kind: image2video, prompt: it moves, image: cat.png, last_frame: cat.png}
          - {id: d, prompt: p, model: ltx-2-3-pro, resolution: 3840x2160, fps: 50, duration: 8}
        """))
    assert manifest.provider.name == "ltx"
    assert manifest.limits.concurrency == 2  # LTX's own default
    requests = {item.id: item.request for item in manifest.items}
    assert requests["a"].kind is Kind.TEXT2VIDEO
    # What LTX would assume is spelt out, so the request says exactly what is made.
    assert requests["a"].fields == {
        "model": "ltx-2-3-fast", "prompt": "a fox", "duration": 6, "resolution": "1920x1080",
        "fps": 24, "generate_audio": True,
    }
    assert requests["b"].fields["duration"] == 20
    assert requests["c"].kind is Kind.IMAGE2VIDEO
    assert isinstance(requests["c"].fields["image"], ImageSource)
    assert isinstance(requests["c"].fields["last_frame"], ImageSource)
    assert requests["d"].fields["fps"] == 50


def test_the_default_base_url_is_ltxs(tmp_path: Path) -> None:
    header = "version: 1\nname: t\nprovider: {name: ltx}\n"
    manifest = load(tmp_path, DEFAULTS + "items: [{id: a, prompt: p}]\n", header)
    assert manifest.provider.base_url == DEFAULT_BASE_URL == "https://api.ltx.video"


# fmt: off
ITEM_PROBLEMS = [
    ("removed model", "{id: a, prompt: p, model: ltx-2-fast}", "model",
     "'ltx-2-fast' was removed by LTX on 2026-08-15 and the API refuses it: use ltx-2-3-fast"),
    ("removed pro model", "{id: a, prompt: p, model: ltx-2-pro}", "model",
     "use ltx-2-3-pro"),
    ("unknown model", "{id: a, prompt: p, model: ltx-2-3-fst}", "model",
     "unknown LTX model 'ltx-2-3-fst' (did you mean 'ltx-2-3-fast'?)"),
    ("odd duration", "{id: a, prompt: p, duration: 7}", "duration",
     "ltx-2-3-fast at 1920x1080 and 24 fps takes a duration of 6 to 20 in steps of 2 s, not 7"),
    ("20 s at 4k", "{id: a, prompt: p, duration: 20, resolution: 3840x2160}", "duration",
     "at 3840x2160 and 24 fps takes a duration of 6, 8, 10 s, not 20"),
    ("pro is 10 s at most", "{id: a, prompt: p, model: ltx-2-3-pro, duration: 20}", "duration",
     "ltx-2-3-pro at 1920x1080 and 24 fps takes a duration of 6, 8, 10 s, not 20"),
    ("720p on 2.3", "{id: a, prompt: p, resolution: 1280x720}", "resolution",
     "ltx-2-3-fast does not make 1280x720 videos"),
    ("fps at 1080p", "{id: a, prompt: p, fps: 30}", "fps",
     "ltx-2-3-fast at 1920x1080 takes fps 24, 25, not 30"),
    ("not a resolution", "{id: a, prompt: p, resolution: big}", "resolution",
     "must be width x height in pixels, such as 1920x1080 (got 'big')"),
    ("duration a fraction", "{id: a, prompt: p, duration: 6.5}", "duration", "whole"),
    ("image2video without image", "{id: a, kind: image2video, prompt: p}", "image",
     "is required for image2video"),
    ("no last frame on 2.5", "{id: a, kind: image2video, prompt: p, image: cat.png, "
     "last_frame: cat.png, model: ltx-2-5-fast}", "last_frame",
     "'ltx-2-5-fast' takes no last frame (models that do: ltx-2-3-fast, ltx-2-3-pro)"),
    ("missing image file", "{id: a, kind: image2video, prompt: p, image: nope.png}", "image",
     "nope.png"),
    ("a Kling field", "{id: a, prompt: p, mode: pro}", "mode",
     "unknown key 'mode' (did you mean 'model'?)"),
    ("a kind LTX does not make", "{id: a, prompt: p, kind: image}", "kind",
     "must be one of text2video, image2video (got 'image')"),
    ("camera motion", "{id: a, prompt: p, camera_motion: zoom}", "camera_motion",
     "must be one of dolly_in"),
    ("empty prompt", "{id: a, prompt: ''}", "prompt", "must not be empty"),
    # Was sent, and LTX answered 400 "prompt: field required".
    ("no prompt", "{id: a}", "prompt", "is required for kind text2video"),
    ("no prompt on image2video", "{id: a, kind: image2video, image: cat.png}", "prompt",
     "is required for kind image2video"),
]
# fmt: on


@pytest.mark.parametrize(
    ("item", "field", "message"), [c[1:] for c in ITEM_PROBLEMS], ids=[c[0] for c in ITEM_PROBLEMS]
)
def test_an_item_ltx_would_refuse_is_refused_offline(
    tmp_path: Path, item: str, field: str, message: str
) -> None:
    (problem,) = problems(tmp_path, DEFAULTS + f"items:\n  - {item}\n")
    assert (problem.item_id, problem.field, problem.line) == ("a", field, 6)
    assert message in problem.message


def test_an_item_without_a_model_names_the_current_ones(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, "items: [{id: a, prompt: p}]\n")
    assert problem.field == "model"
    assert "e.g. 'model: ltx-2-3-fast'" in problem.message


def test_every_combination_the_catalogue_allows_loads(tmp_path: Path) -> None:
    # The matrix is data: everything it serves is accepted (and nothing is assumed beyond it).
    lines: list[str] = []
    for name, model in catalogue().models.items():
        for mode in model.modes:
            lines.append(
                f"  - {{id: {name}-{len(lines)}, prompt: p, model: {name}, "
                f"resolution: {min(mode.resolutions)}, fps: {max(mode.fps)}, "
                f"duration: {max(mode.durations)}}}"
            )
    manifest = load(tmp_path, "items:\n" + "\n".join(lines) + "\n")
    assert len(manifest.items) == len(lines) > 3


def test_missing_credentials_exit_2_naming_the_variable(tmp_path: Path) -> None:
    header = "version: 1\nname: t\nprovider: {name: ltx, base_url: 'http://127.0.0.1:9'}\n"
    load(tmp_path, DEFAULTS + "items: [{id: a, prompt: p}]\n", header)
    result = run_cli(["validate", str(tmp_path / "m.yaml")], env())
    assert result.code == 2
    assert "LTX_API_KEY" in result.stderr and "Traceback" not in result.stderr


# --- prices ----------------------------------------------------------------------------------


def test_the_list_prices_are_usd_per_second_by_resolution_class() -> None:
    assert BUILTIN_PRICES.unit == "USD" and BUILTIN_PRICES.indicative
    assert units_for(video("ltx-2-3-fast"), BUILTIN_PRICES) == pytest.approx(6 * 0.06)
    assert units_for(video("ltx-2-3-fast", "1080x1920", 20), BUILTIN_PRICES) == pytest.approx(
        20 * 0.06
    )
    assert units_for(video("ltx-2-3-pro", "3840x2160", 8), BUILTIN_PRICES) == pytest.approx(
        8 * 0.32
    )
    # Published without a price: unpriced, not guessed.
    assert units_for(video("ltx-2-5-fast"), BUILTIN_PRICES) is None


def test_the_manifests_prices_come_first_the_list_prices_after(tmp_path: Path) -> None:
    manifest = load(tmp_path, DEFAULTS + dedent("""\
        pricing:
          video:
            ltx-2-3-fast: {1080p: 0.05}
            ltx-2-5-fast: {720p: 0.02}
        items: [{id: a, prompt: p}]
        """))
    prices = manifest.pricing
    assert isinstance(prices, LtxPrices) and prices.fallback is BUILTIN_PRICES
    assert units_for(video("ltx-2-3-fast"), prices) == pytest.approx(0.3)
    price = prices.price(video("ltx-2-3-fast", "3840x2160", 10))
    assert price is not None and price.indicative and price.each == pytest.approx(2.4)
    assert units_for(video("ltx-2-5-fast", "1280x720", 10), prices) == pytest.approx(0.2)


def test_builtin_false_prices_only_what_the_manifest_says(tmp_path: Path) -> None:
    manifest = load(tmp_path, DEFAULTS + dedent("""\
        pricing: {builtin: false, video: {ltx-2-3-fast: {1080p: 0.05}}}
        items: [{id: a, prompt: p}]
        """))
    assert units_for(video("ltx-2-3-fast"), manifest.pricing) == pytest.approx(0.3)
    assert units_for(video("ltx-2-3-pro"), manifest.pricing) is None


# fmt: off
PRICING_PROBLEMS = [
    ("{video: {ltx-2-3-fast: {720p: 1}}}", "pricing.video.ltx-2-3-fast.720p",
     "ltx-2-3-fast does not make 720p videos (ltx-2-3-fast makes 1080p, 1440p, 4k)"),
    ("{video: {ltx-2-3-fast: {1920x1080: 1}}}", "pricing.video.ltx-2-3-fast.1920x1080",
     "'1920x1080' is a resolution: price its class, 1080p"),
    ("{video: {ltx-2-3-fast: {4K: 1}}}", "pricing.video.ltx-2-3-fast.4K",
     "unknown resolution class '4K' (did you mean '4k'?)"),
    ("{video: {ltx-2-3-fast: {1080p: -1}}}", "pricing.video.ltx-2-3-fast.1080p",
     "must be a finite number of USD per second, 0 or more (got -1)"),
    ("{video: {ltx-2-3-fast: {1080p: cheap}}}", "pricing.video.ltx-2-3-fast.1080p",
     "must be a number of USD per second (got 'cheap')"),
    ("{video: {ltx-2-fast: {1080p: 1}}}", "pricing.video.ltx-2-fast",
     "'ltx-2-fast' was removed by LTX on 2026-08-15: it needs no price (price ltx-2-3-fast"),
    ("{video: {ltx-9: {1080p: 1}}}", "pricing.video.ltx-9", "unknown LTX model 'ltx-9'"),
    ("{video: {ltx-2-3-pro: 3}}", "pricing.video.ltx-2-3-pro",
     "must map resolution classes (1080p, 1440p, 4k) to USD per second"),
    ("{video: [1]}", "pricing.video", "must map LTX models to USD per second"),
    ("{vidoe: {}}", "pricing.vidoe", "unknown key 'vidoe' (did you mean 'video'?)"),
    ("{builtin: 1}", "pricing.builtin", "must be true or false (got 1)"),
    ("[1]", "pricing", "must be a mapping with video prices"),
]
# fmt: on


@pytest.mark.parametrize(("section", "field", "message"), PRICING_PROBLEMS)
def test_a_price_that_cannot_be_used_is_refused(
    tmp_path: Path, section: str, field: str, message: str
) -> None:
    body = DEFAULTS + f"pricing: {section}\nitems: [{{id: a, prompt: p}}]\n"
    (problem,) = problems(tmp_path, body)
    assert (problem.field, problem.line) == (field, 5)
    assert message in problem.message


def test_max_units_is_a_cap_in_usd_and_needs_every_task_priced(tmp_path: Path) -> None:
    (problem,) = problems(tmp_path, DEFAULTS + dedent("""\
        limits: {max_units: 10}
        items: [{id: a, prompt: p}, {id: b, prompt: p, model: ltx-2-5-fast}]
        """))
    assert problem.field == "limits.max_units"
    assert "ltx-2-5-fast 1080p 6 s: 1" in problem.message
    load(tmp_path, DEFAULTS + "limits: {max_units: 10}\nitems: [{id: a, prompt: p}]\n")


def test_the_estimate_is_in_usd(tmp_path: Path) -> None:
    manifest = load(tmp_path, DEFAULTS + dedent("""\
        pricing: {video: {ltx-2-3-pro: {4k: 0.3}}}
        items:
          - {id: a, prompt: p}
          - {id: b, prompt: p, duration: 20, resolution: 1080x1920}
          - {id: c, prompt: p, model: ltx-2-3-pro, resolution: 3840x2160, duration: 10}
          - {id: d, prompt: p, model: ltx-2-5-fast}
        """))
    assert manifest.pricing.estimate_text(manifest).splitlines() == [
        "kind        model         resolution  duration  tasks   USD each   USD",
        "text2video  ltx-2-3-fast  1080p       6 s           1  0.36/task  0.36 *",
        "text2video  ltx-2-3-fast  1080p       20 s          1   1.2/task   1.2 *",
        "text2video  ltx-2-3-pro   4k          10 s          1     3/task     3",
        "text2video  ltx-2-5-fast  1080p       6 s           1   unpriced     -",
        "total: 4 tasks, 4.56 USD (+ 1 unpriced task, not counted)",
        "each item counted once: a retried generation is a new paid task",
        "* built-in INDICATIVE price, not your contract's: set your prices under 'pricing:' "
        "in the manifest",
        "1 task without a price: add the model under 'pricing:' in the manifest, e.g. "
        "pricing: {video: {MODEL: {1080p: 0.06}}} (USD per second)",
    ]
    capped = load(tmp_path, DEFAULTS + "limits: {max_units: 2}\nitems: [{id: a, prompt: p}]\n")
    assert capped.pricing.estimate_text(capped).splitlines()[-1] == (
        "limits.max_units: 2: the estimate is within it"
    )


def test_validate_estimate_of_the_ltx_demo() -> None:
    result = run_cli(["validate", "--estimate", str(REPO / "manifests" / "demo-ltx.yaml")],
                     env())
    assert result.code == 0, result.stderr
    assert "total: 4 tasks, 4.48 USD" in result.stdout
