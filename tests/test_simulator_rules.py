"""The simulator refuses, on the legacy /v1 API, what the real Kling API refuses, reading every
per-model rule from the catalogue: retired and unknown models, modes, durations, sound, end
frames, multi-shot, omni-video's image list, and the image kind's own rules. Each refusal is
asserted with its exact HTTP status, code and message, and creates no task.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from orchestrator.providers.base import Kind
from orchestrator.providers.kling.catalogue import V1, catalogue
from orchestrator.simulator import SimConfig
from tests.simulator_support import (
    I2V,
    IMAGE_URL,
    IMG,
    OMNI,
    PNG_B64,
    T2V,
    FakeClock,
    Launch,
    assert_no_simulator_threads,
    data_of,
    invalid,
    launcher,
    refusal,
)

#: The legacy family path of each kind.
PATHS = {Kind.TEXT2VIDEO: T2V, Kind.IMAGE2VIDEO: I2V, Kind.OMNI_VIDEO: OMNI, Kind.IMAGE: IMG}


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    yield
    assert_no_simulator_threads()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def launch(clock: FakeClock) -> Iterator[Launch]:
    with launcher(clock) as start:
        yield start


def minimal(kind: Kind, model: str, **extra: Any) -> dict[str, Any]:
    """The least a body of ``kind`` needs besides per-model choices."""
    body: dict[str, Any] = {"model_name": model, "prompt": "a lighthouse at dusk"}
    if kind is Kind.IMAGE2VIDEO:
        body["image"] = IMAGE_URL
    return {**body, **extra}


def refused(launch: Launch, path: str, body: dict[str, Any]) -> tuple[int, int, str]:
    """Send a create that must be refused; return how, after checking no task was made."""
    sim, client = launch()
    answer = refusal(client.post(path, json=body))
    assert sim.stats().tasks_created == 0
    return answer


def accepted(launch: Launch, path: str, body: dict[str, Any], **config: Any) -> dict[str, Any]:
    _, client = launch(**config)
    task: dict[str, Any] = data_of(client.post(path, json=body))
    return task


# --- the catalogue decides which models answer ----------------------------------------------


def usable_v1() -> list[tuple[str, Kind]]:
    return [
        (model.name, kind)
        for model in catalogue().models.values()
        for kind, rules in model.kinds.items()
        if rules.usable and V1 in rules.apis
    ]


def not_usable_v1() -> list[tuple[str, Kind]]:
    """Retired (model, kind) pairs, and kinds of a live model served on API 2.0 only."""
    return [
        (model.name, kind)
        for model in catalogue().models.values()
        for kind, rules in model.kinds.items()
        if not rules.usable or V1 not in rules.apis
    ]


@pytest.mark.parametrize(("model", "kind"), usable_v1())
def test_every_model_the_catalogue_serves_on_v1_is_accepted_with_its_defaults(
    launch: Launch, model: str, kind: Kind
) -> None:
    rules = catalogue().rules(model, kind)
    assert rules is not None
    extra: dict[str, Any] = {}
    if kind.media == "video":
        extra = {"mode": rules.default_mode, "duration": str(rules.default_duration)}
    task = accepted(launch, PATHS[kind], minimal(kind, model, **extra))
    assert task["task_status"] == "submitted"


@pytest.mark.parametrize(("model", "kind"), not_usable_v1())
def test_every_retired_pair_and_every_v2_only_model_is_refused_on_v1(
    launch: Launch, model: str, kind: Kind
) -> None:
    assert refused(launch, PATHS[kind], minimal(kind, model)) == invalid(
        f"model_name value '{model}' is invalid"
    )


@pytest.mark.parametrize(
    ("path", "model"),
    [
        (T2V, "kling-v1"),  # retired 2026-09-15
        (T2V, "kling-v2-master"),
        (I2V, "kling-v1-6"),
        (T2V, "kling-v2-1"),  # its video kinds retired, its image kind alive
        (IMG, "kling-v1-5"),
        (IMG, "kling-v2-new"),
        (T2V, "kling-latest"),  # unknown
        (T2V, "kling-2.6"),  # an alias (API 2.0's name): /v1 takes the catalogue's names
        (T2V, "kling-3.0-turbo"),  # served on API 2.0 only
        (T2V, "kling-video-o1"),  # an omni model: no text2video
        (OMNI, "kling-v3"),  # kling-v3 has no omni kind: kling-v3-omni does
    ],
)
def test_retired_unknown_and_misplaced_models_are_refused(
    launch: Launch, path: str, model: str
) -> None:
    kind = next(k for k, p in PATHS.items() if p == path)
    assert refused(launch, path, minimal(kind, model)) == invalid(
        f"model_name value '{model}' is invalid"
    )


@pytest.mark.parametrize("path", [T2V, I2V, OMNI, IMG])
def test_a_body_without_model_name_gets_kling_v1_and_is_refused(launch: Launch, path: str) -> None:
    kind = next(k for k, p in PATHS.items() if p == path)
    body = minimal(kind, "x")
    del body["model_name"]
    assert refused(launch, path, body) == invalid("model_name value 'kling-v1' is invalid")


# --- modes, durations, sound ----------------------------------------------------------------


@pytest.mark.parametrize("path", [T2V, I2V])
def test_kling_v2_6_refuses_std_and_a_missing_mode_with_the_live_message(
    launch: Launch, path: str
) -> None:
    kind = next(k for k, p in PATHS.items() if p == path)
    expected = invalid("mode value 'std' is invalid")  # verbatim from the live API
    assert refused(launch, path, minimal(kind, "kling-v2-6", mode="std")) == expected
    assert refused(launch, path, minimal(kind, "kling-v2-6")) == expected
    accepted(launch, path, minimal(kind, "kling-v2-6", mode="pro"))


@pytest.mark.parametrize(
    ("model", "mode"), [("kling-v2-5-turbo", "4k"), ("kling-v3", "turbo"), ("kling-v3", 1)]
)
def test_a_mode_the_model_does_not_have_is_refused(launch: Launch, model: str, mode: Any) -> None:
    body = minimal(Kind.TEXT2VIDEO, model, mode=mode)
    assert refused(launch, T2V, body) == invalid(f"mode value '{mode}' is invalid")


@pytest.mark.parametrize(
    ("model", "duration"),
    [("kling-v2-6", "7"), ("kling-v2-5-turbo", "15"), ("kling-v3", "16"), ("kling-v3", "2"),
     ("kling-v3", "5.5"), ("kling-v3", "0")],
)
def test_a_duration_the_model_does_not_take_is_refused(
    launch: Launch, model: str, duration: str
) -> None:
    body = minimal(Kind.TEXT2VIDEO, model, mode="pro", duration=duration)
    assert refused(launch, T2V, body) == invalid(f"duration value '{duration}' is invalid")


def test_kling_v3_takes_3_to_15_seconds(launch: Launch) -> None:
    for seconds in ("3", "7", "15"):
        accepted(launch, T2V, minimal(Kind.TEXT2VIDEO, "kling-v3", duration=seconds))


def test_a_duration_must_be_a_string(launch: Launch) -> None:
    body = minimal(Kind.TEXT2VIDEO, "kling-v3", duration=5)
    assert refused(launch, T2V, body) == invalid('duration must be a string such as "5", got int 5')


def test_kling_video_o1_duration_without_a_reference_image_has_the_live_message(
    launch: Launch,
) -> None:
    body = minimal(Kind.OMNI_VIDEO, "kling-video-o1", duration="7")
    assert refused(launch, OMNI, body) == invalid(
        "Duration only supports 5 or 10 seconds when no refer_image is provided"
    )
    # A first frame is not a reference image: still 5 or 10.
    framed = {**body, "image_list": [{"image_url": IMAGE_URL, "type": "first_frame"}]}
    assert refused(launch, OMNI, framed)[2].startswith("Duration only supports 5 or 10")
    # With a reference image the catalogue's wider range applies (3 to 10), and no more.
    referred = {**body, "image_list": [{"image_url": IMAGE_URL}]}
    accepted(launch, OMNI, referred)
    assert refused(launch, OMNI, {**referred, "duration": "12"}) == invalid(
        "duration value '12' is invalid"
    )


@pytest.mark.parametrize(
    ("model", "mode", "sound", "expected"),
    [
        ("kling-v2-5-turbo", "std", "on", "sound value 'on' is invalid"),  # no sound at all
        ("kling-v3", "std", "yes", "sound value 'yes' is invalid"),
        ("kling-v3", "std", True, "sound value 'True' is invalid"),  # a bool, not "on"
    ],
)
def test_sound_where_the_model_has_none_or_a_value_other_than_on_off(
    launch: Launch, model: str, mode: str, sound: Any, expected: str
) -> None:
    body = minimal(Kind.TEXT2VIDEO, model, mode=mode, sound=sound)
    assert refused(launch, T2V, body) == invalid(expected)


def test_sound_is_accepted_where_the_catalogue_has_it(launch: Launch) -> None:
    accepted(launch, T2V, minimal(Kind.TEXT2VIDEO, "kling-v3", sound="on"))
    accepted(launch, T2V, minimal(Kind.TEXT2VIDEO, "kling-v2-6", mode="pro", sound="on"))
    accepted(launch, I2V, minimal(Kind.IMAGE2VIDEO, "kling-v2-6", mode="pro", sound="on"))
    accepted(launch, T2V, minimal(Kind.TEXT2VIDEO, "kling-v2-5-turbo", sound="off"))
    accepted(launch, OMNI, minimal(Kind.OMNI_VIDEO, "kling-v3-omni", sound="on"))
    body = minimal(Kind.OMNI_VIDEO, "kling-video-o1", sound="on")
    assert refused(launch, OMNI, body) == invalid("sound value 'on' is invalid")


# --- end frames, camera, masks, cfg_scale --------------------------------------------------


def test_an_end_frame_on_v2_5_turbo_needs_pro(launch: Launch) -> None:
    body = minimal(Kind.IMAGE2VIDEO, "kling-v2-5-turbo", image_tail=PNG_B64)
    assert refused(launch, I2V, body) == invalid("image_tail requires mode pro")
    assert refused(launch, I2V, {**body, "mode": "std"}) == invalid("image_tail requires mode pro")
    accepted(launch, I2V, {**body, "mode": "pro"})
    accepted(launch, I2V, minimal(Kind.IMAGE2VIDEO, "kling-v3", image_tail=PNG_B64))


def test_cfg_scale_is_refused_where_the_catalogue_says_so(launch: Launch) -> None:
    # "not supported by kling-v2.x models": no current model takes it.
    body = minimal(Kind.TEXT2VIDEO, "kling-v2-5-turbo", cfg_scale=0.5)
    assert refused(launch, T2V, body) == invalid("cfg_scale is not supported by kling-v2-5-turbo")


def test_omni_refuses_what_its_family_has_no_field_for(launch: Launch) -> None:
    body = minimal(Kind.OMNI_VIDEO, "kling-video-o1", negative_prompt="blur")
    assert refused(launch, OMNI, body) == invalid(
        "negative_prompt is not supported by kling-video-o1"
    )
    body = minimal(Kind.OMNI_VIDEO, "kling-video-o1", camera_control={"type": "down_back"})
    assert refused(launch, OMNI, body) == invalid(
        "camera_control is not supported by kling-video-o1"
    )


def test_camera_control_shape_is_still_checked(launch: Launch) -> None:
    body = minimal(
        Kind.TEXT2VIDEO, "kling-v3", camera_control={"type": "simple", "config": {"pan": 1,
                                                                                  "zoom": 2}}
    )
    assert refused(launch, T2V, body) == invalid(
        "camera_control.config must set exactly one of horizontal, vertical, pan, tilt, roll, "
        "zoom"
    )


# --- multi-shot -----------------------------------------------------------------------------


def shots(*seconds: int, prompt: str = "shot") -> list[dict[str, Any]]:
    return [
        {"index": i, "prompt": f"{prompt} {i}", "duration": str(s)}
        for i, s in enumerate(seconds, 1)
    ]


def multi(model: str = "kling-v3", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_name": model,
        "duration": "5",
        "multi_shot": True,
        "shot_type": "customize",
        "multi_prompt": shots(2, 3),
    }
    return {**body, **extra}


def test_multi_shot_needs_no_prompt_and_is_accepted_on_kling_v3(launch: Launch) -> None:
    accepted(launch, T2V, multi())
    accepted(launch, I2V, multi(image=IMAGE_URL))
    accepted(launch, T2V, multi(duration="15", multi_prompt=shots(3, 3, 3, 2, 2, 2)))
    intelligent = multi(shot_type="intelligence", prompt="a day at sea")
    del intelligent["multi_prompt"]
    accepted(launch, T2V, intelligent)


def test_multi_shot_on_a_model_without_it_is_refused(launch: Launch) -> None:
    assert refused(launch, T2V, multi("kling-v2-5-turbo")) == invalid(
        "multi_shot is not supported by kling-v2-5-turbo"
    )
    assert refused(launch, I2V, multi("kling-v2-6", mode="pro", image=IMAGE_URL)) == invalid(
        "multi_shot is not supported by kling-v2-6"
    )


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"multi_prompt": shots(1, 1, 1, 1, 1, 0)[:5] + shots(1, 1)}, "multi_prompt must hold 1 "
         "to 6 shots"),
        ({"multi_prompt": []}, "multi_prompt must hold 1 to 6 shots"),
        ({"multi_prompt": shots(2, 2)}, "multi_prompt durations must add up to duration"),
        ({"multi_prompt": [{"index": 1, "prompt": "x" * 513, "duration": "5"}]},
         "multi_prompt[0].prompt must be at most 512 characters, got 513"),
        ({"multi_prompt": [{"index": 1, "prompt": "a", "duration": 5}]},
         'multi_prompt[0].duration must be a string such as "5", got int 5'),
        ({"multi_prompt": [{"index": 2, "prompt": "a", "duration": "5"}]},
         "multi_prompt[0].index must be 1 (1-based, in order)"),
        ({"multi_prompt": [{"index": 1, "duration": "5"}]}, "multi_prompt[0].prompt is required"),
        ({"shot_type": "auto"}, "shot_type value 'auto' is invalid"),
        ({"multi_shot": "yes"}, "multi_shot value 'yes' is invalid"),
        ({"multi_shot": False}, "shot_type and multi_prompt require multi_shot true"),
    ],
)
def test_malformed_multi_shot_is_refused(
    launch: Launch, extra: dict[str, Any], expected: str
) -> None:
    assert refused(launch, T2V, multi(**extra)) == invalid(expected)


def test_a_customize_multi_shot_needs_its_shots(launch: Launch) -> None:
    body = multi()
    del body["multi_prompt"]
    assert refused(launch, T2V, body) == invalid(
        "multi_prompt is required with shot_type customize"
    )
    del body["multi_shot"], body["shot_type"]
    assert refused(launch, T2V, body) == invalid("prompt is required")  # multi-shot off


# --- omni-video's image list ----------------------------------------------------------------


def omni(*entries: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model_name": "kling-video-o1",
        "prompt": "<<<image_1>>> walks into <<<image_2>>>",
        "duration": "5",
        "image_list": list(entries),
    }
    return {**body, **extra}


FIRST = {"image_url": IMAGE_URL, "type": "first_frame"}
END = {"image_url": PNG_B64, "type": "end_frame"}
REFERENCE = {"image_url": IMAGE_URL}


def test_omni_takes_frames_and_reference_images_within_the_catalogue_limit(
    launch: Launch,
) -> None:
    limit = catalogue().rules("kling-video-o1", Kind.OMNI_VIDEO)
    assert limit is not None and limit.reference_images == 4
    accepted(launch, OMNI, omni(FIRST, END, *[REFERENCE] * 4, duration="7"))
    accepted(launch, OMNI, omni(FIRST, END, model_name="kling-v3-omni", mode="4k"))
    assert refused(launch, OMNI, omni(*[REFERENCE] * 5)) == invalid(
        "image_list holds 5 reference images; kling-video-o1 takes at most 4"
    )


@pytest.mark.parametrize(
    ("entries", "extra", "expected"),
    [
        (({"image_url": IMAGE_URL, "type": "middle"},), {},
         "image_list[0].type value 'middle' is invalid"),
        ((FIRST, FIRST), {}, "image_list holds at most one first_frame and one end_frame"),
        (({"type": "first_frame"},), {}, "image_list[0].image_url is required"),
        (({"image_url": "data:image/png;base64," + PNG_B64},), {},
         "image_list[0].image_url format error: send raw base64 without a 'data:' prefix"),
        ((), {"mode": "4k"}, "mode value '4k' is invalid"),
        ((), {"aspect_ratio": "4:3"}, "aspect_ratio value '4:3' is invalid"),
        ((), {"prompt": None}, "prompt is required"),
    ],
)
def test_malformed_omni_bodies_are_refused(
    launch: Launch, entries: tuple[dict[str, Any], ...], extra: dict[str, Any], expected: str
) -> None:
    assert refused(launch, OMNI, omni(*entries, **extra)) == invalid(expected)


# --- the image kind ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"n": 10}, "n must be an integer from 1 to 9, got 10"),
        ({"n": 0}, "n must be an integer from 1 to 9, got 0"),
        ({"resolution": "4k"}, "resolution value '4k' is invalid"),
        ({"aspect_ratio": "5:4"}, "aspect_ratio value '5:4' is invalid"),
        ({"image_reference": "body"}, "image_reference value 'body' is invalid"),
        ({"model_name": "kling-v3", "image_fidelity": 0.5},
         "image_fidelity/human_fidelity is not supported by kling-v3"),
        ({"image": PNG_B64, "negative_prompt": "blur"},
         "negative_prompt is not supported together with image"),
    ],
)
def test_image_rules_per_model(launch: Launch, extra: dict[str, Any], expected: str) -> None:
    body = {**minimal(Kind.IMAGE, "kling-v2-1"), **extra}
    assert refused(launch, IMG, body) == invalid(expected)


def test_image_inputs_each_model_takes(launch: Launch) -> None:
    accepted(launch, IMG, minimal(Kind.IMAGE, "kling-v2-1", image=PNG_B64, image_reference="face",
                                  image_fidelity=0.4, human_fidelity=0.9, n=9, resolution="2k",
                                  aspect_ratio="21:9"))
    accepted(launch, IMG, minimal(Kind.IMAGE, "kling-v3", image=IMAGE_URL,
                                  image_reference="subject"))


# --- a model Kling shipped that the catalogue does not know yet ----------------------------


def test_extra_models_are_accepted_with_generic_checks_only(launch: Launch) -> None:
    sim, client = launch(extra_models=("kling-v4",))
    body = minimal(Kind.TEXT2VIDEO, "kling-v4", mode="4k", duration="15", sound="on",
                   cfg_scale=0.3)
    data_of(client.post(T2V, json=body))
    data_of(client.post(OMNI, json=minimal(Kind.OMNI_VIDEO, "kling-v4", duration="7")))
    data_of(client.post(IMG, json=minimal(Kind.IMAGE, "kling-v4", n=4)))
    # The checks any model gets still apply: what no Kling model takes, a new one is not
    # assumed to take either.
    assert refusal(client.post(T2V, json={**body, "mode": "8k"})) == invalid(
        "mode value '8k' is invalid"
    )
    assert refusal(client.post(T2V, json={**body, "duration": "99"})) == invalid(
        "duration value '99' is invalid"
    )
    assert refusal(client.post(T2V, json={**body, "model_name": "kling-v5"})) == invalid(
        "model_name value 'kling-v5' is invalid"
    )
    assert [row["model_name"] for row in sim.stats().tasks] == ["kling-v4"] * 3


def test_extra_models_cannot_name_a_catalogue_model() -> None:
    with pytest.raises(ValueError, match="kling-v1 is in the catalogue"):
        SimConfig(extra_models=("kling-v1",))
    with pytest.raises(ValueError, match=r"kling-2\.6 is in the catalogue"):
        SimConfig(extra_models=("kling-2.6",))  # an alias is the catalogue's too
