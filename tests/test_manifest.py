"""Manifest loading: every rule reports the item, the field and the line a user has to fix.

Most cases are one-fault manifests in a table: the line to blame carries a ``#<`` marker, and the
test asserts that exactly one problem comes out, with that item id, field, line and message.
"""

from __future__ import annotations

import shutil
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.config import (
    Manifest,
    ManifestError,
    Problem,
    load_manifest,
)
from orchestrator.images import read_image_info
from orchestrator.providers.base import ImageSource, Kind
from orchestrator.providers.kling.plugin import DEFAULT_BASE_URL
from tests.test_images import jpeg_bytes, png_bytes

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "manifests" / "demo.yaml"
FROM_CSV = REPO / "manifests" / "examples" / "from-csv.yaml"

HEADER = "version: 1\nname: t\nprovider: {base_url: simulator}\n"


#: Kling needs a model on every item (its own default was retired): documents whose text names
#: none get this one in defaults (it makes every kind but omni_video).
MODEL = "kling-v3"


def doc(items: str, *, defaults: str = "", top: str = HEADER) -> str:
    text = top
    # Added last (after the items when there are no defaults), so that no line moves.
    add_model = "model:" not in defaults + top and "defaults:" not in top
    if defaults:
        defaults = textwrap.dedent(defaults).strip("\n") + (f"\nmodel: {MODEL}" * add_model)
        text += "defaults:\n" + textwrap.indent(defaults, "  ") + "\n"
    text += "items:\n" + textwrap.indent(textwrap.dedent(items).strip("\n"), "  ") + "\n"
    if add_model and not defaults:
        text += f"defaults:\n  model: {MODEL}\n"
    return text


def marked_line(text: str) -> int | None:
    lines = [n for n, line in enumerate(text.splitlines(), 1) if "#<" in line]
    assert len(lines) <= 1, "one marker per case"
    return lines[0] if lines else None


# Built once: encoding the pixels is most of a test's cost otherwise.
_IMAGES = {
    "cat.png": png_bytes(512, 384),
    "photo.jpg": jpeg_bytes(640, 480),
    "small.png": png_bytes(299, 400),
    "wide.png": png_bytes(751, 300),  # 2.503:1
    "edge.png": png_bytes(750, 300),  # exactly 2.5:1
    "anim.gif": b"GIF89a" + b"\x00" * 32,
}


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A manifest directory with input images of every interesting shape."""
    for name, data in _IMAGES.items():
        (tmp_path / name).write_bytes(data)
    with (tmp_path / "big.png").open("wb") as big:
        big.write(_IMAGES["cat.png"])
        big.truncate(10_000_001)  # sparse: a 10 MB file without writing 10 MB per test
    return tmp_path


def load_text(directory: Path, text: str, name: str = "m.yaml") -> Manifest:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return load_manifest(path)


def problems_of(directory: Path, text: str) -> list[Problem]:
    with pytest.raises(ManifestError) as caught:
        load_text(directory, text)
    return caught.value.problems


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    item: str | None
    field: str | None
    message: str


LONG = "x" * 2501
FINE_ITEM = "- id: a\n  prompt: p"


def one(*lines: str, kind: str | None = None, defaults: str = "") -> str:
    """A document whose only item is 'a', made of the given lines (nested ones pre-indented)."""
    body = ["- id: a"] + ([f"  kind: {kind}"] if kind else []) + [f"  {line}" for line in lines]
    return doc("\n".join(body), defaults=defaults)


def top_doc(*lines: str) -> str:
    """A document with one fine item and the given top-level lines after version and name."""
    return doc(FINE_ITEM, top="version: 1\nname: t\n" + "".join(f"{x}\n" for x in lines))


I2V, IMG = "image2video", "image"
EXCLUSIVE = "image_tail, static_mask/dynamic_masks and camera_control are mutually exclusive"
TRAJECTORY = "trajectories: [{x: 1, y: 2}, {x: 3, y: 4}]"

# fmt: off
CASES = [
    # --- the document itself
    Case("empty file", "", None, None, "the manifest is empty"),
    Case("comments only", "# nothing yet\n", None, None, "the manifest is empty"),
    Case("top level is a list", "- a #<\n- b\n", None, None, "must be a mapping of keys"),
    Case("top level is text", "hello #<\n", None, None, "must be a mapping of keys"),
    Case("syntax error", "version: 1\nname: t\nitems:\n  - id: a\n    prompt: [unclosed #<\n",
         None, None, "flow sequence that starts here and is never closed"),
    Case("tab indentation", "version: 1\nname: t\nitems:\n\t- id: a #<\n",
         None, None, "indent with spaces, not tabs"),
    Case("a value with ': ' unquoted",
         "version: 1\nname: t\nitems:\n  - id: a\n    prompt: a cat: asleep #<\n",
         None, None, "mapping values are not allowed here; a value that contains ': ' must be "
         'quoted, e.g. prompt: "a cat: asleep"'),
    Case("two documents", doc(FINE_ITEM) + "--- #<\nversion: 1\n",
         None, None, "expected a single document"),
    Case("duplicate top-level key",
         HEADER + "name: again #<\nitems:\n  - id: a\n    prompt: p\n    model: kling-v3\n",
         None, "name", "duplicate key 'name' (first on line 2)"),
    Case("unsafe tag", one("prompt: !!python/name:os.system #<"), "a", "prompt", "cannot read"),
    Case("invalid date", one("prompt: 2024-13-45 #<"), "a", "prompt", "month must be in 1..12"),
    Case("self-referencing alias", doc("- &x\n  id: a\n  prompt: p\n  camera_control: *x #<"),
         "a", "camera_control", "refers to itself"),
    # --- top level
    Case("version missing", "name: t\nitems:\n  - id: a\n    prompt: p\n    model: kling-v3\n",
         None, "version", "is required: write 'version: 1'"),
    Case("version 2", doc(FINE_ITEM, top="version: 2 #<\nname: t\n"),
         None, "version", "unsupported version 2"),
    Case("version as text", doc(FINE_ITEM, top="version: '1' #<\nname: t\n"),
         None, "version", "must be the number 1 (got '1')"),
    Case("name missing", doc(FINE_ITEM, top="version: 1\n"), None, "name", "is required"),
    Case("name with a space", doc(FINE_ITEM, top="version: 1\nname: my batch #<\n"),
         None, "name", "1-64 characters of letters, digits"),
    Case("name too long", doc(FINE_ITEM, top=f"version: 1\nname: {'n' * 65} #<\n"),
         None, "name", "1-64 characters"),
    Case("name only dots", doc(FINE_ITEM, top="version: 1\nname: '..' #<\n"),
         None, "name", "not only dots"),
    Case("name is a number", doc(FINE_ITEM, top="version: 1\nname: 2024 #<\n"),
         None, "name", "must be text (got 2024); put it in quotes"),
    Case("unknown top-level key", top_doc("limit: {concurrency: 2} #<"),
         None, "limit", "unknown key 'limit' (did you mean 'limits'?)"),
    Case("provider not one there is", top_doc("provider:", "  name: openai #<"),
         None, "provider.name", "must be one of kling, ltx (got 'openai')"),
    Case("base_url not http", top_doc("provider:", "  base_url: ftp://x #<"),
         None, "provider.base_url", "http(s) URL"),
    Case("base_url without host", top_doc("provider:", "  base_url: 'https://' #<"),
         None, "provider.base_url", "http(s) URL"),
    Case("timeout zero", top_doc("provider:", "  timeout: 0 #<"),
         None, "provider.timeout", "must be greater than 0 (got 0)"),
    Case("provider typo", top_doc("provider:", "  timout: 5 #<"),
         None, "provider.timout", "unknown key 'timout' (did you mean 'timeout'?)"),
    Case("provider not a mapping", top_doc("provider: kling #<"),
         None, "provider", "must be a mapping of keys to values (got 'kling')"),
    Case("concurrency zero", top_doc("limits:", "  concurrency: 0 #<"),
         None, "limits.concurrency", "must be at least 1 (got 0)"),
    Case("concurrency fraction", top_doc("limits:", "  concurrency: 1.5 #<"),
         None, "limits.concurrency", "must be a whole number (got 1.5)"),
    Case("concurrency boolean", top_doc("limits:", "  concurrency: true #<"),
         None, "limits.concurrency", "must be a whole number (got true)"),
    Case("rpm zero", top_doc("limits:", "  requests_per_minute: 0 #<"),
         None, "limits.requests_per_minute", "must be greater than 0"),
    Case("rpm infinite", top_doc("limits:", "  requests_per_minute: .inf #<"),
         None, "limits.requests_per_minute", "must be a finite number"),
    Case("max_attempts 101", top_doc("retry:", "  max_attempts: 101 #<"),
         None, "retry.max_attempts", "must be at most 100 (got 101)"),
    Case("max_attempts huge", top_doc("retry:", f"  max_attempts: {10**40} #<"),
         None, "retry.max_attempts", "must be at most 100 (got 100000000000... (41 digits))"),
    Case("base_delay zero", top_doc("retry:", "  base_delay: 0 #<"),
         None, "retry.base_delay", "must be greater than 0"),
    Case("base_delay as text", top_doc("retry:", "  base_delay: one #<"),
         None, "retry.base_delay", "must be a number (got 'one')"),
    Case("max_delay below base", top_doc("retry:", "  base_delay: 5", "  max_delay: 2 #<"),
         None, "retry.max_delay", "must be at least base_delay (5) (got 2)"),
    Case("default max_delay below base", top_doc("retry: #<", "  base_delay: 100"),
         None, "retry.max_delay", "(got 60, the default)"),
    Case("lookup_grace negative", top_doc("retry:", "  lookup_grace: -1 #<"),
         None, "retry.lookup_grace", "must be at least 0"),
    Case("poll interval zero", top_doc("poll:", "  interval: 0 #<"),
         None, "poll.interval", "must be greater than 0"),
    Case("max_interval below interval", top_doc("poll:", "  interval: 10", "  max_interval: 5 #<"),
         None, "poll.max_interval", "must be at least interval (10) (got 5)"),
    Case("poll timeout negative", top_doc("poll:", "  timeout: -5 #<"),
         None, "poll.timeout", "must be greater than 0"),
    Case("output dir with ~", top_doc("output:", "  dir: ~/out #<"),
         None, "output.dir", "'~' is not expanded"),
    Case("output dir a number", top_doc("output:", "  dir: 5 #<"),
         None, "output.dir", "must be text"),
    Case("output download as text", top_doc("output:", "  download: 'no' #<"),
         None, "output.download", "must be true or false (got 'no')"),
    Case("output download a number", top_doc("output:", "  download: 0 #<"),
         None, "output.download", "must be true or false (got 0)"),
    Case("max_units negative", top_doc("limits:", "  max_units: -3 #<"),
         None, "limits.max_units", "must be greater than 0 (got -3)"),
    Case("max_units boolean", top_doc("limits:", "  max_units: true #<"),
         None, "limits.max_units", "must be a number (got true)"),
    Case("pricing typo", top_doc("pricing:", "  vidoe: {} #<"),
         None, "pricing.vidoe", "unknown key 'vidoe' (did you mean 'video'?)"),
    Case("items_from not found", top_doc("items_from: nope.csv #<"),
         None, "items_from", "cannot read 'nope.csv'"),
    Case("items missing", HEADER, None, "items", "is required"),
    Case("items empty", HEADER + "items: [] #<\n", None, "items", "must list at least one item"),
    Case("items a mapping", HEADER + "items: #<\n  a: 1\n", None, "items", "must be a list"),
    # --- ids
    Case("id missing", doc("- prompt: p #<"), None, "items[0].id", "is required"),
    Case("id a number", doc("- id: 42 #<\n  prompt: p"),
         None, "items[0].id", "must be text (got 42); put it in quotes"),
    Case("id null", doc("- id: #<\n  prompt: p"), None, "items[0].id", "is required"),
    Case("id with a slash", doc("- id: a/b #<\n  prompt: p"),
         None, "items[0].id", "1-128 characters of letters, digits"),
    Case("id too long", doc(f"- id: {'i' * 129} #<\n  prompt: p"),
         None, "items[0].id", "1-128 characters"),
    Case("id dot-dot", doc("- id: '..' #<\n  prompt: p"), None, "items[0].id", "not only dots"),
    Case("duplicate id", doc("- id: a\n  prompt: p\n- id: b\n  prompt: p\n- id: a #<\n  prompt: p"),
         "a", "id", "duplicate id: 'a' is already used on line 5"),
    Case("ids differing in case", doc("- id: Cat\n  prompt: p\n- id: cat #<\n  prompt: p"),
         "cat", "id", "differs from 'Cat' on line 5 only in letter case"),
    Case("item not a mapping", doc("- just a prompt #<"),
         None, "items[0]", "must be a mapping with at least an id and a prompt"),
    Case("item null", doc("- #<"), None, "items[0]", "must be a mapping"),
    # --- keys
    Case("unknown item key", one("prompt: p", "duraton: 5 #<"),
         "a", "duraton", "unknown key 'duraton' (did you mean 'duration'?)"),
    Case("unknown key, nothing close", one("prompt: p", "zzzz: 5 #<"),
         "a", "zzzz", "unknown key 'zzzz'"),
    Case("null field", one("prompt: p", "mode: #<"), "a", "mode", "has no value"),
    Case("duplicate item key", one("prompt: p", "prompt: q #<"),
         "a", "prompt", "duplicate key 'prompt' (first on line 6)"),
    Case("kind invalid", one("kind: video #<", "prompt: p"),
         "a", "kind", "must be one of text2video, image2video, omni_video, image (got 'video') "
         "(did you mean 'text2video'?)"),
    Case("field of another kind", one("prompt: p", "duration: 5 #<", kind=IMG),
         "a", "duration", "'duration' is not a field of kind image"),
    Case("aspect_ratio on image2video", one("image: cat.png", "aspect_ratio: '1:1' #<", kind=I2V),
         "a", "aspect_ratio", "'aspect_ratio' is not a field of kind image2video: the video "
         "follows the image"),
    Case("n on a video", one("prompt: p", "n: 2 #<"),
         "a", "n", "'n' is not a field of kind text2video (it belongs to image)"),
    # --- text2video
    # A missing field is located at its item.
    Case("prompt missing", doc("- id: a #<\n  mode: std"),
         "a", "prompt", "is required for kind text2video"),
    Case("prompt too long", one(f"prompt: {LONG} #<"),
         "a", "prompt", "must be at most 2500 characters (got 2501)"),
    Case("prompt empty", one("prompt: '' #<"), "a", "prompt", "must not be empty"),
    Case("prompt blank", one("prompt: '   ' #<"), "a", "prompt", "must not be blank"),
    Case("prompt boolean", one("prompt: yes #<"),
         "a", "prompt", "must be text (got true); put it in quotes"),
    Case("prompt a list", one("prompt: [a, b] #<"), "a", "prompt", "must be text (got a list)"),
    Case("negative_prompt too long", one("prompt: p", f"negative_prompt: {LONG} #<"),
         "a", "negative_prompt", "must be at most 2500 characters"),
    Case("video model unknown", one("prompt: p", "model: kling-v2-5 #<"),
         "a", "model", "unknown Kling model 'kling-v2-5' (did you mean 'kling-v2-5-turbo'?) "
         "(current text2video models: kling-v3, kling-v2-6, kling-v2-5-turbo, kling-3.0-turbo); "
         "if Kling has released it since this version's catalogue was written, set "
         "provider.allow_unknown_models: true"),
    Case("model missing", "version: 1\nname: t\nitems:\n  - id: a #<\n    prompt: p\n",
         "a", "model", "is required: name the Kling model, e.g. 'model: kling-v3' (Kling's own "
         "default, kling-v1, was retired)"),
    Case("retired video model", one("prompt: p", "model: kling-v1-6 #<"),
         "a", "model", "'kling-v1-6' was retired by Kling on 2026-09-15 and the API refuses it: "
         "use kling-v2-5-turbo (current text2video models: kling-v3, kling-v2-6"),
    Case("retired model, the default", one("prompt: p", "model: kling-v1 #<"),
         "a", "model", "'kling-v1' was retired by Kling on 2026-09-15"),
    Case("kling-v2-1 video retired, images not", one("prompt: p", "model: kling-v2-1 #<"),
         "a", "model", "'kling-v2-1' was retired by Kling on 2026-09-15 and the API refuses it: "
         "use kling-v2-5-turbo"),
    Case("omni model on text2video", one("prompt: p", "model: kling-v3-omni #<"),
         "a", "model", "'kling-v3-omni' does not make text2video: it makes omni_video"),
    Case("API 2.0 model on /v1", doc("- id: a\n  prompt: p\n  model: kling-3.0-turbo #<",
                                    top=HEADER.replace("simulator}", "simulator, api: v1}")),
         "a", "model", "'kling-3.0-turbo' makes text2video only on API 2.0, and provider.api is "
         "v1: set provider.api: auto"),
    Case("mode invalid", one("prompt: p", "mode: turbo #<"),
         "a", "mode", "must be one of std, pro, 4k (got 'turbo')"),
    Case("std on kling-v2-6", one("prompt: p", "model: kling-v2-6", "mode: std #<"),
         "a", "mode", "must be pro for kling-v2-6 (got 'std')"),
    Case("4k on kling-v2-5-turbo", one("prompt: p", "model: kling-v2-5-turbo", "mode: 4k #<"),
         "a", "mode", "must be std or pro for kling-v2-5-turbo (got '4k')"),
    Case("aspect 4:3 on video", one("prompt: p", "aspect_ratio: '4:3' #<"),
         "a", "aspect_ratio", "must be 16:9, 9:16 or 1:1 for kling-v3 (got '4:3')"),
    Case("aspect unquoted", one("prompt: p", "aspect_ratio: 9:16 #<"),
         "a", "aspect_ratio", 'YAML reads 9:16 without quotes as the number 556; write "9:16"'),
    Case("duration 7", one("prompt: p", "model: kling-v2-5-turbo", "duration: 7 #<"),
         "a", "duration", "must be 5 or 10 seconds for kling-v2-5-turbo (got 7)"),
    Case("duration 7 on kling-v2-6", one("prompt: p", "model: kling-v2-6", "duration: 7 #<"),
         "a", "duration", "must be 5 or 10 seconds for kling-v2-6 (got 7)"),
    Case("duration 16 on v3", one("prompt: p", "model: kling-v3", "duration: 16 #<"),
         "a", "duration", "must be 3 to 15 seconds for kling-v3 (got 16)"),
    Case("duration zero", one("prompt: p", "duration: 0 #<"),
         "a", "duration", "must be at least 1 (got 0)"),
    Case("duration text", one("prompt: p", "duration: five #<"),
         "a", "duration", "must be a whole number (got 'five')"),
    Case("duration quoted number", one("prompt: p", "duration: '5' #<"),
         "a", "duration", "must be a whole number (got '5')"),
    Case("duration boolean", one("prompt: p", "duration: true #<"),
         "a", "duration", "must be a whole number (got true)"),
    Case("duration fraction", one("prompt: p", "duration: 5.5 #<"),
         "a", "duration", "must be a whole number (got 5.5)"),
    Case("cfg_scale above 1", one("prompt: p", "cfg_scale: 1.5 #<"),
         "a", "cfg_scale", "must be at most 1 (got 1.5)"),
    Case("cfg_scale on v2", one("prompt: p", "model: kling-v2-5-turbo", "cfg_scale: 0.5 #<"),
         "a", "cfg_scale", "is not supported by kling-v2-5-turbo"),
    # --- sound, 4k, multi-shot
    Case("sound on a model without it", one("prompt: p", "model: kling-v2-5-turbo", "sound: on #<"),
         "a", "sound", "is not available on kling-v2-5-turbo: models with sound: kling-v3, "
         "kling-v2-6"),
    Case("sound as text", one("prompt: p", "sound: 'on' #<"),
         "a", "sound", "must be true or false (got 'on')"),
    Case("end frame in std on kling-v2-5-turbo",
         one("image: cat.png", "model: kling-v2-5-turbo", "image_tail: cat.png #<", kind=I2V),
         "a", "image_tail", "an end frame needs mode pro on kling-v2-5-turbo (mode is std)"),
    Case("multi-shot on a model without it",
         one("prompt: p", "model: kling-v2-6", "multi_shot: true #<", "shot_type: intelligence"),
         "a", "multi_shot", "is not available on kling-v2-6: multi-shot models: kling-v3"),
    Case("shot_type without multi_shot", one("prompt: p", "shot_type: intelligence #<"),
         "a", "shot_type", "needs multi_shot: true"),
    Case("multi-shot without shot_type", doc("- id: a #<\n  prompt: p\n  multi_shot: true"),
         "a", "shot_type", "is required with multi_shot: customize or intelligence"),
    Case("customize without shots",
         doc("- id: a #<\n  multi_shot: true\n  shot_type: customize"),
         "a", "multi_prompt", "is required with shot_type customize: 1 to 6 shots"),
    Case("shots not adding up",
         one("multi_shot: true", "shot_type: customize", "duration: 10",
             "multi_prompt: [{prompt: a, duration: 3}, {prompt: b, duration: 3}] #<"),
         "a", "multi_prompt", "the shots' durations add up to 6 s, and duration is 10 s"),
    Case("seven shots",
         one("multi_shot: true", "shot_type: customize", "duration: 7",
             "multi_prompt: [" + ", ".join(["{prompt: a, duration: 1}"] * 7) + "] #<"),
         "a", "multi_prompt", "must have at most 6 entries"),
    Case("shot prompt too long",
         one("multi_shot: true", "shot_type: customize", "duration: 5",
             "multi_prompt:", f"  - {{prompt: {'x' * 513}, duration: 5}} #<"),
         "a", "multi_prompt[0].prompt", "must be at most 512 characters (got 513)"),
    # --- omni_video
    Case("omni prompt missing", doc("- id: a #<\n  kind: omni_video\n  model: kling-v3-omni"),
         "a", "prompt", "is required for kind omni_video"),
    Case("o1 duration without references",
         one("prompt: p", "model: kling-video-o1", "duration: 7 #<", kind="omni_video"),
         "a", "duration", "must be 5 or 10 seconds for kling-video-o1 without reference images "
         "(got 7)"),
    Case("omni end frame without first frame",
         one("prompt: p", "model: kling-v3-omni", "image_tail: cat.png #<", kind="omni_video"),
         "a", "image_tail", "needs image (the first frame) as well"),
    Case("too many reference images",
         one("prompt: p", "model: kling-v3-omni",
             "reference_images: [cat.png, cat.png, cat.png, cat.png, cat.png] #<",
             kind="omni_video"),
         "a", "reference_images", "must list at most 4 images for kling-v3-omni (got 5)"),
    # --- API 2.0
    Case("a field API 2.0 cannot carry",
         doc("- id: a\n  prompt: p\n  model: kling-v2-6\n  negative_prompt: blur #<",
             top=HEADER.replace("simulator}", "simulator, api: v2}")),
         "a", "negative_prompt", "cannot be sent on Kling's API 2.0, where 'kling-v2-6' "
         "is sent: remove it"),
    Case("a field the API 2.0 model has not",
         doc("- id: a\n  prompt: p\n  model: kling-3.0-turbo\n  negative_prompt: blur #<"),
         "a", "negative_prompt", "is not supported by kling-3.0-turbo"),
    Case("provider.api invalid", top_doc("provider:", "  api: v3 #<"),
         None, "provider.api", "must be one of auto, v1, v2 (got 'v3')"),
    Case("API 2.0 for a model without it",
         doc("- id: a\n  prompt: p\n  model: kling-v3 #<",
             top=HEADER.replace("simulator}", "simulator, api: v2}")),
         "a", "model", "'kling-v3' makes text2video only on /v1, and provider.api is v2"),
    Case("camera type invalid", one("prompt: p", "camera_control:", "  type: spin #<"),
         "a", "camera_control.type", "must be one of simple, down_back, forward_up"),
    Case("camera type missing", one("prompt: p", "camera_control: #<", "  config: {pan: 1}"),
         "a", "camera_control.type", "is required"),
    Case("camera config on non-simple",
         one("prompt: p", "camera_control: #<", "  type: down_back", "  config: {pan: 1}"),
         "a", "camera_control", "only type 'simple' takes a config (got type 'down_back')"),
    Case("camera simple without config", one("prompt: p", "camera_control: {type: simple} #<"),
         "a", "camera_control", "type 'simple' needs a config with exactly one non-zero value"),
    Case("camera two axes",
         one("prompt: p", "camera_control: #<", "  type: simple", "  config: {pan: 1, zoom: 2}"),
         "a", "camera_control", "exactly one non-zero value among horizontal, vertical, pan, "
         "tilt, roll, zoom (got pan, zoom)"),
    Case("camera no axis",
         one("prompt: p", "camera_control: #<", "  type: simple", "  config: {pan: 0}"),
         "a", "camera_control", "(got none)"),
    Case("camera out of range",
         one("prompt: p", "camera_control:", "  type: simple", "  config:", "    tilt: -11 #<"),
         "a", "camera_control.config.tilt", "must be at least -10 (got -11)"),
    Case("camera config typo",
         one("prompt: p", "camera_control:", "  type: simple", "  config:", "    zom: 2 #<"),
         "a", "camera_control.config.zom", "unknown key 'zom' (did you mean 'zoom'?)"),
    Case("callback_url invalid", one("prompt: p", "callback_url: example.com/hook #<"),
         "a", "callback_url", "must be an http(s) URL"),
    # --- image2video
    Case("image missing", doc("- id: a #<\n  kind: image2video\n  prompt: p"),
         "a", "image", "is required for kind image2video: the video's first frame"),
    Case("image data URI", one("image: data:image/png;base64,AAAA #<", kind=I2V),
         "a", "image", "a data: URI is not accepted"),
    Case("image other scheme", one("image: ftp://host/x.png #<", kind=I2V),
         "a", "image", "must be a local file path or an http(s) URL (got 'ftp://host/x.png')"),
    Case("image not found", one("image: nope.png #<", kind=I2V),
         "a", "image", "nope.png: file not found"),
    Case("image ~ not expanded", one("image: ~/cat.png #<", kind=I2V),
         "a", "image", "file not found ('~' is not expanded: write the full path)"),
    Case("image a directory", one("image: . #<", kind=I2V), "a", "image", "not a regular file"),
    Case("image a GIF", one("image: anim.gif #<", kind=I2V),
         "a", "image", "the file is a GIF image; only JPEG and PNG are accepted"),
    Case("image too small", one("image: small.png #<", kind=I2V),
         "a", "image", "'small.png' is 299x400 px; each side must be at least 300 px"),
    Case("image too wide", one("image: wide.png #<", kind=I2V),
         "a", "image", "has aspect ratio 751:300 (2.50); it must be between 1:2.5 and 2.5:1"),
    Case("image too big", one("image: big.png #<", kind=I2V),
         "a", "image", "'big.png' is 10.0 MB; the limit is 10 MB"),
    Case("image a number", one("image: 5 #<", kind=I2V),
         "a", "image", "must be a file path or an http(s) URL (got 5)"),
    Case("image_tail too small", one("image: cat.png", "image_tail: small.png #<", kind=I2V),
         "a", "image_tail", "each side must be at least 300 px"),
    Case("tail and camera", one("image: cat.png", "image_tail: cat.png",
                                "camera_control: {type: down_back} #<", kind=I2V),
         "a", "camera_control", f"cannot be combined with image_tail: {EXCLUSIVE}"),
    Case("mask and tail",
         one("image: cat.png", "static_mask: cat.png", "image_tail: cat.png #<", kind=I2V),
         "a", "image_tail", f"cannot be combined with static_mask: {EXCLUSIVE}"),
    Case("dynamic masks and camera",
         one("image: cat.png", "camera_control: {type: forward_up}", "dynamic_masks: #<",
             "  - mask: cat.png", f"    {TRAJECTORY}", kind=I2V),
         "a", "dynamic_masks", "cannot be combined with camera_control"),
    Case("trajectory too short",
         one("image: cat.png", "dynamic_masks:", "  - mask: cat.png",
             "    trajectories: [{x: 1, y: 2}] #<", kind=I2V),
         "a", "dynamic_masks[0].trajectories", "must have at least 2 entries"),
    Case("dynamic mask image bad",
         one("image: cat.png", "dynamic_masks:", "  - mask: anim.gif #<", f"    {TRAJECTORY}",
             kind=I2V),
         "a", "dynamic_masks[0].mask", "GIF image"),
    Case("dynamic masks empty", one("image: cat.png", "dynamic_masks: [] #<", kind=I2V),
         "a", "dynamic_masks", "must have at least 1 entry"),
    # --- image
    Case("image prompt missing", doc("- id: a #<\n  kind: image\n  n: 2"),
         "a", "prompt", "is required for kind image"),
    Case("video model on image", one("prompt: p", "model: kling-v2-5-turbo #<", kind=IMG),
         "a", "model", "'kling-v2-5-turbo' does not make image: it makes text2video and "
         "image2video (current image models: kling-v3, kling-v2-1)"),
    Case("retired image model", one("prompt: p", "model: kling-v2-new #<", kind=IMG),
         "a", "model", "'kling-v2-new' was retired by Kling on 2026-09-15 and the API refuses "
         "it: use kling-v3 (current image models: kling-v3, kling-v2-1)"),
    Case("negative prompt with image",
         one("prompt: p", "image: cat.png", "negative_prompt: blur #<", kind=IMG),
         "a", "negative_prompt", "cannot be used together with image"),
    Case("image_reference without image",
         one("prompt: p", "model: kling-v2-1", "image_reference: subject #<", kind=IMG),
         "a", "image_reference", "needs an image to refer to"),
    Case("fidelity on kling-v3", one("prompt: p", "image_fidelity: 0.5 #<", kind=IMG),
         "a", "image_fidelity", "is not available on kling-v3: models with it: kling-v2-1"),
    Case("image_reference invalid", one("prompt: p", "image_reference: body #<", kind=IMG),
         "a", "image_reference", "must be one of subject, face (got 'body')"),
    Case("image_fidelity 2", one("prompt: p", "model: kling-v2-1", "image_fidelity: 2 #<",
                                 kind=IMG),
         "a", "image_fidelity", "must be at most 1 (got 2)"),
    Case("human_fidelity negative",
         one("prompt: p", "model: kling-v2-1", "human_fidelity: -0.1 #<", kind=IMG),
         "a", "human_fidelity", "must be at least 0 (got -0.1)"),
    Case("resolution 4k", one("prompt: p", "resolution: 4k #<", kind=IMG),
         "a", "resolution", "must be one of 1k, 2k (got '4k')"),
    Case("n zero", one("prompt: p", "n: 0 #<", kind=IMG), "a", "n", "must be at least 1 (got 0)"),
    Case("n ten", one("prompt: p", "n: 10 #<", kind=IMG), "a", "n", "must be at most 9 (got 10)"),
    Case("aspect 5:4 on image", one("prompt: p", "aspect_ratio: '5:4' #<", kind=IMG),
         "a", "aspect_ratio", "must be one of 16:9, 9:16, 1:1, 4:3, 3:4, 3:2, 2:3, 21:9"),
    # --- defaults
    Case("defaults typo", one("prompt: p", "model: kling-v3", defaults="modl: kling-v3 #<"),
         None, "defaults.modl", "unknown key 'modl' (did you mean 'model'?)"),
    Case("defaults id", one("prompt: p", defaults="id: x #<"),
         None, "defaults.id", "cannot have a default: every item needs its own unique id"),
    Case("defaults kind invalid", one("prompt: p", defaults="kind: movie #<"),
         None, "defaults.kind",
         "must be one of text2video, image2video, omni_video, image (got 'movie')"),
    Case("defaults null value", one("prompt: p", defaults="mode: #<"),
         None, "defaults.mode", "has no value"),
    Case("defaults not a mapping",
         doc(FINE_ITEM + "\n  model: kling-v3", top=HEADER + "defaults: [a] #<\n"),
         None, "defaults", "must be a mapping of item fields (got a list)"),
    Case("bad default, one item",
         one("prompt: p", defaults="model: kling-v2-5-turbo\nduration: 7 #<"),
         "a", "duration", "must be 5 or 10 seconds for kling-v2-5-turbo (got 7) (from defaults)"),
    Case("bad default type", one("prompt: p", defaults="cfg_scale: high #<"),
         "a", "cfg_scale", "must be a number (got 'high') (from defaults)"),
    Case("default model wrong for image",
         one("prompt: p", kind=IMG, defaults="model: kling-v2-5-turbo #<"),
         "a", "model", "'kling-v2-5-turbo' does not make image: it makes text2video and "
         "image2video (current image models: kling-v3, kling-v2-1) (from defaults)"),
    Case("default camera against item tail",
         one("image: cat.png", "image_tail: cat.png", kind=I2V,
             defaults="camera_control: {type: down_back} #<"),
         "a", "camera_control", f"cannot be combined with image_tail: {EXCLUSIVE}; write "
         "'camera_control: null' on the item to not inherit it (from defaults)"),
    Case("default negative_prompt against item image",
         one("prompt: p", "image: cat.png", kind=IMG, defaults="negative_prompt: blur #<"),
         "a", "negative_prompt", "cannot be used together with image (Kling rejects it for "
         "image-to-image); write 'negative_prompt: null' on the item to not inherit it "
         "(from defaults)"),
    Case("default cfg_scale against item model",
         one("prompt: p", "model: kling-v2-6", defaults="cfg_scale: 0.5 #<"),
         "a", "cfg_scale", "is not supported by kling-v2-6; write 'cfg_scale: null' on the item to "
         "not inherit it (from defaults)"),
    Case("default nested error",
         one("prompt: p", defaults="camera_control:\n  type: simple\n  config: {pan: 99} #<"),
         "a", "camera_control.config.pan", "must be at most 10 (got 99) (from defaults)"),
]
# fmt: on


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_one_fault_one_located_problem(workdir: Path, case: Case) -> None:
    problems = problems_of(workdir, case.text)
    assert len(problems) == 1, "\n".join(p.format("m.yaml") for p in problems)
    (problem,) = problems
    assert case.message in problem.message
    assert (problem.item_id, problem.field, problem.line) == (
        case.item,
        case.field,
        marked_line(case.text),
    )


# --- what loads, and what it loads to ----------------------------------------------------------


def test_demo_manifest_loads() -> None:
    manifest = load_manifest(DEMO)
    assert manifest.name == "demo"
    assert manifest.path == DEMO
    assert manifest.provider.base_url == "simulator"
    assert manifest.limits.concurrency == 4
    assert manifest.limits.requests_per_minute == 600
    assert (manifest.retry.base_delay, manifest.retry.max_delay) == (0.2, 2)
    assert manifest.retry.lookup_grace == 0.2
    assert (manifest.poll.interval, manifest.poll.max_interval, manifest.poll.timeout) == (
        0.2,
        1,
        60,
    )
    assert manifest.output_dir == DEMO.parent / "out" / "demo"
    kinds = [item.request.kind for item in manifest.items]
    assert kinds == [Kind.TEXT2VIDEO] * 4 + [Kind.IMAGE2VIDEO, Kind.IMAGE]
    prompts = [item.request.fields["prompt"] for item in manifest.items[:4]]
    assert len(set(prompts)) == 4
    # Current models only, with what they offer: 4k, sound.
    models = {item.request.fields["model"] for item in manifest.items}
    assert models == {"kling-v3", "kling-v2-6", "kling-v2-5-turbo"}
    waves, music = manifest.items[2].request.fields, manifest.items[3].request.fields
    assert (waves["mode"], waves["duration"]) == ("4k", 7)
    assert (music["model"], music["mode"], music["sound"]) == ("kling-v2-6", "pro", True)
    cat = manifest.items[4].request
    assert cat.fields["image"] == ImageSource(path=DEMO.parent / "images" / "cat.png")
    assert "aspect_ratio" not in cat.fields  # the default does not reach image2video
    mugs = manifest.items[5].request
    assert mugs.fields["model"] == "kling-v3"
    assert mugs.expected_assets == 4
    assert "duration" not in mugs.fields and "mode" not in mugs.fields


def test_example_manifest_with_an_items_file_loads() -> None:
    manifest = load_manifest(FROM_CSV)
    assert manifest.items_from == FROM_CSV.parent / "prompts.csv"
    ids = [item.id for item in manifest.items]
    assert ids == ["opening-title", "fox-meadow", "city-timelapse", "rain-window", "cat-turns",
                   "mug-stills"]  # fmt: skip
    assert [item.source for item in manifest.items[:2]] == [None, manifest.items_from]
    fields = {item.id: item.request.fields for item in manifest.items}
    assert fields["fox-meadow"]["duration"] == 10
    assert fields["city-timelapse"]["mode"] == "pro"
    # The CSV's image path is relative to the CSV: ../images/cat.png is the demo's image.
    assert fields["cat-turns"]["image"] == ImageSource(path=DEMO.parent / "images" / "cat.png")
    assert manifest.items[-1].request.expected_assets == 2
    assert manifest.limits.max_units == 40 and manifest.download
    assert manifest.output_dir == FROM_CSV.parent / "out" / "from-csv"


def test_output_download_defaults_to_true(workdir: Path) -> None:
    assert load_text(workdir, top_doc()).download is True
    assert load_text(workdir, top_doc("output: {download: false}")).download is False
    # YAML 1.1 reads an unquoted no as false.
    assert load_text(workdir, top_doc("output:", "  download: no")).download is False
    assert load_text(workdir, top_doc("output: {download: true}")).download is True


def test_demo_image_meets_kling_limits() -> None:
    info = read_image_info(DEMO.parent / "images" / "cat.png")
    assert info.format == "png" and min(info.width, info.height) >= 300


def test_fields_merge_defaults_per_kind_and_fill_kling_defaults(workdir: Path) -> None:
    text = doc(
        """
        - id: t2v
          prompt: a
        - id: t2v-override
          prompt: b
          duration: 10
          model: kling-v3
        - id: i2v
          kind: image2video
          image: photo.jpg
        - id: img
          kind: image
          prompt: c
          model: kling-v2-1
        """,
        defaults="""
        mode: pro
        duration: 5
        aspect_ratio: "9:16"
        negative_prompt: blurry
        callback_url: https://hooks.example.com/kling
        """,
    )
    manifest = load_text(workdir, text)
    fields = {item.id: dict(item.request.fields) for item in manifest.items}
    hook = "https://hooks.example.com/kling"
    assert fields["t2v"] == {
        "model": "kling-v3",
        "prompt": "a",
        "negative_prompt": "blurry",
        "mode": "pro",
        "duration": 5,
        "callback_url": hook,
        "aspect_ratio": "9:16",
    }
    assert fields["t2v-override"]["duration"] == 10
    assert fields["t2v-override"]["model"] == "kling-v3"
    assert fields["i2v"] == {
        "model": "kling-v3",
        "negative_prompt": "blurry",
        "mode": "pro",
        "duration": 5,
        "callback_url": hook,
        "image": ImageSource(path=workdir / "photo.jpg"),
    }
    # mode and duration are not image fields; negative_prompt and aspect_ratio are.
    assert fields["img"] == {
        "model": "kling-v2-1",
        "prompt": "c",
        "negative_prompt": "blurry",
        "n": 1,
        "aspect_ratio": "9:16",
        "callback_url": hook,
    }
    assert [item.request.expected_assets for item in manifest.items] == [1, 1, 1, 1]
    assert isinstance(fields["t2v"]["duration"], int)


def test_defaults_kind_and_video_settings_do_not_break_image_items(workdir: Path) -> None:
    text = doc(
        """
        - id: still
          kind: image
          model: kling-v2-1
          prompt: p
          n: 3
          aspect_ratio: "21:9"
        """,
        defaults="kind: text2video\nmodel: kling-v2-5-turbo\nmode: pro\nduration: 10\n",
    )
    (item,) = load_text(workdir, text).items
    assert item.request.kind is Kind.IMAGE
    assert dict(item.request.fields) == {
        "model": "kling-v2-1",
        "prompt": "p",
        "n": 3,
        "aspect_ratio": "21:9",
    }
    assert item.request.expected_assets == 3


def test_null_on_an_item_opts_out_of_a_default(workdir: Path) -> None:
    text = doc(
        """
        - id: remix
          kind: image
          model: kling-v2-1
          prompt: p
          image: cat.png
          image_reference: subject
          negative_prompt: null
        - id: clip
          prompt: p
          mode:
        """,
        defaults="negative_prompt: blurry\nmode: pro",
    )
    remix, clip = load_text(workdir, text).items
    assert "negative_prompt" not in remix.request.fields
    assert clip.request.fields["negative_prompt"] == "blurry"
    assert clip.request.fields["mode"] == "std"  # the model's default, not the batch's


def test_defaults_kind_applies_to_items_without_kind(workdir: Path) -> None:
    text = doc("- id: a\n  prompt: p\n  model: kling-v2-1", defaults="kind: image")
    (item,) = load_text(workdir, text).items
    assert item.request.kind is Kind.IMAGE


def test_video_options_are_kept(workdir: Path) -> None:
    text = doc(
        """
        - id: cam
          prompt: p
          model: kling-v3
          cfg_scale: 0.25
          duration: 10.0
          camera_control: {type: simple, config: {zoom: -3}}
        - id: masks
          kind: image2video
          image: https://cdn.example.com/first.png
          static_mask: cat.png
          dynamic_masks:
            - mask: photo.jpg
              trajectories: [{x: 0, y: 0}, {x: 100, y: 50.0}]
        - id: flex
          prompt: p
          model: kling-v3
          duration: 3
        """
    )
    cam, masks, flex = load_text(workdir, text).items
    assert cam.request.fields["cfg_scale"] == 0.25
    assert cam.request.fields["duration"] == 10
    assert cam.request.fields["camera_control"] == {
        "type": "simple",
        "config": {"horizontal": 0, "vertical": 0, "pan": 0, "tilt": 0, "roll": 0, "zoom": -3},
    }
    assert masks.request.fields["image"] == ImageSource(url="https://cdn.example.com/first.png")
    assert masks.request.fields["static_mask"] == ImageSource(path=workdir / "cat.png")
    assert masks.request.fields["dynamic_masks"] == [
        {
            "mask": ImageSource(path=workdir / "photo.jpg"),
            "trajectories": [{"x": 0, "y": 0}, {"x": 100, "y": 50}],
        }
    ]
    assert flex.request.fields["duration"] == 3


def test_image_at_the_aspect_limit_is_accepted(workdir: Path) -> None:
    text = doc("- id: a\n  kind: image2video\n  image: edge.png")
    (item,) = load_text(workdir, text).items
    assert item.request.fields["image"] == ImageSource(path=workdir / "edge.png")


def test_settings_defaults_and_float_seconds(workdir: Path) -> None:
    text = doc(
        "- id: a\n  prompt: p",
        top="version: 1\nname: quick\npoll:\n  interval: 0.05\n  max_interval: 0.1\n",
    )
    manifest = load_text(workdir, text)
    assert manifest.provider.base_url == DEFAULT_BASE_URL
    assert manifest.provider.timeout == 60
    assert (manifest.limits.concurrency, manifest.limits.requests_per_minute) == (5, 60)
    retry = manifest.retry
    assert (retry.max_attempts, retry.base_delay, retry.max_delay, retry.lookup_grace) == (
        5,
        1,
        60,
        2,
    )
    assert (manifest.poll.interval, manifest.poll.max_interval, manifest.poll.timeout) == (
        0.05,
        0.1,
        900,
    )
    assert manifest.output_dir == workdir / "out" / "quick"
    assert manifest.items[0].line == 7


def test_empty_sections_mean_defaults(workdir: Path) -> None:
    text = doc(
        "- id: a\n  prompt: p",
        top="version: 1\nname: t\nprovider:\nlimits:\nretry:\npoll:\noutput:\npricing:\n",
    )
    manifest = load_text(workdir, text)
    assert manifest.limits.concurrency == 5


def test_base_url_trailing_slash_is_dropped(workdir: Path) -> None:
    top = "version: 1\nname: t\nprovider:\n  base_url: http://127.0.0.1:8080/\n"
    manifest = load_text(workdir, doc("- id: a\n  prompt: p", top=top))
    assert manifest.provider.base_url == "http://127.0.0.1:8080"


def test_paths_resolve_relative_to_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "project" / "batches"
    (home / "img").mkdir(parents=True)
    (home / "img" / "cat.png").write_bytes(png_bytes(400, 400))
    absolute = tmp_path / "abs.jpg"
    absolute.write_bytes(jpeg_bytes(600, 300))
    text = doc(
        f"""
        - id: rel
          kind: image2video
          image: img/cat.png
          image_tail: {absolute}
        - id: up
          kind: image2video
          image: ../batches/img/./cat.png
        """,
        top="version: 1\nname: t\noutput:\n  dir: ../results\n",
    )
    (home / "m.yaml").write_text(text, encoding="utf-8")
    # Loaded from elsewhere, through a relative path: the manifest's directory still anchors.
    monkeypatch.chdir(tmp_path)
    manifest = load_manifest(Path("project/batches/m.yaml"))
    assert manifest.path == home / "m.yaml"
    assert manifest.output_dir == tmp_path / "project" / "results"
    rel, up = manifest.items
    assert rel.request.fields["image"] == ImageSource(path=home / "img" / "cat.png")
    assert rel.request.fields["image_tail"] == ImageSource(path=absolute)
    assert up.request.fields["image"] == ImageSource(path=home / "img" / "cat.png")


def test_yaml_anchors_and_merge_keys(workdir: Path) -> None:
    text = doc(
        """
        - &base
          id: a
          prompt: shared prompt
          model: kling-v2-5-turbo
          duration: 10
        - <<: *base
          id: b
          duration: 5
        - <<: *base
          id: c
          duration: 7 #<
        """
    )
    problems = problems_of(workdir, text)
    assert [(p.item_id, p.field, p.line) for p in problems] == [
        ("c", "duration", marked_line(text))
    ]
    text = text.replace("duration: 7 #<", "mode: pro")
    a, b, c = load_text(workdir, text).items
    assert (a.request.fields["duration"], b.request.fields["duration"]) == (10, 5)
    assert c.request.fields["prompt"] == "shared prompt" and c.request.fields["mode"] == "pro"


def test_bad_default_shared_by_many_items_is_one_problem(workdir: Path) -> None:
    text = doc(
        "- id: a\n  prompt: p\n- id: b\n  prompt: p\n- id: c\n  kind: image\n  prompt: p",
        defaults="model: kling-v3\nduration: 16 #<",
    )
    (problem,) = problems_of(workdir, text)
    assert problem.field == "defaults.duration"
    assert problem.item_id is None
    assert problem.line == marked_line(text)
    assert problem.message == (
        "must be 3 to 15 seconds for kling-v3 (got 16) (from defaults; affects items 'a', 'b')"
    )


MANY_ERRORS = """\
version: 1
name: many
provider:
  base_url: simulator
  timeout: -1
limits:
  concurency: 3
defaults:
  model: kling-v2-5-turbo
  promt: hello
items:
  - id: ok
    prompt: fine
  - id: bad-duration
    prompt: p
    duration: 8
  - id: ok
    prompt: again
  - id: wrong-kind-field
    kind: image
    model: kling-v2-1
    prompt: p
    mode: pro
  - id: no-image
    kind: image2video
  - 17
  - id: bad-aspect
    prompt: p
    aspect_ratio: 16:9
"""


def test_all_problems_are_reported_sorted_by_line(workdir: Path) -> None:
    with pytest.raises(ManifestError) as caught:
        load_text(workdir, MANY_ERRORS, name="many.yaml")
    located = [(p.line, p.item_id, p.field) for p in caught.value.problems]
    assert located == [
        (5, None, "provider.timeout"),
        (7, None, "limits.concurency"),
        (10, None, "defaults.promt"),
        (16, "bad-duration", "duration"),
        (17, "ok", "id"),
        (23, "wrong-kind-field", "mode"),
        (24, "no-image", "image"),
        (26, None, "items[5]"),
        (29, "bad-aspect", "aspect_ratio"),
    ]
    source = str(workdir / "many.yaml")
    lines = str(caught.value).splitlines()
    assert len(lines) == 9
    assert lines[3] == (
        f"{source}:16: item 'bad-duration', field 'duration': "
        "must be 5 or 10 seconds for kling-v2-5-turbo (got 8)"
    )
    assert lines[1] == (
        f"{source}:7: field 'limits.concurency': unknown key 'concurency' "
        "(did you mean 'concurrency'?)"
    )


def test_an_invalid_model_does_not_hide_impossible_durations(workdir: Path) -> None:
    text = doc("- id: a\n  prompt: p\n  model: nope\n  duration: 99")
    problems = problems_of(workdir, text)
    assert [(p.field, p.line) for p in problems] == [("model", 7), ("duration", 8)]
    assert problems[1].message == "must be between 3 and 15 seconds (got 99)"


def test_unreadable_values_are_reported_once(workdir: Path) -> None:
    text = doc("- id: !!binary '***'\n  prompt: !!float abc\n- id: b\n  prompt: !custom x")
    problems = problems_of(workdir, text)
    assert len(problems) == 3, problems
    assert all(p.line in (5, 6, 8) for p in problems)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        load_manifest(tmp_path / "missing.yaml")
    with pytest.raises(ManifestError, match="cannot read the manifest"):
        load_manifest(tmp_path)
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"version: 1\nname: caf\xe9\n")
    with pytest.raises(ManifestError) as caught:
        load_manifest(latin1)
    assert caught.value.problems == [
        Problem("the file is not UTF-8 text: save it as UTF-8", line=2)
    ]


def test_utf8_bom_is_accepted(workdir: Path) -> None:
    path = workdir / "bom.yaml"
    path.write_bytes("\ufeff".encode() + doc("- id: a\n  prompt: p").encode())
    assert load_manifest(path).items[0].id == "a"


def test_control_characters_are_located(workdir: Path) -> None:
    (problem,) = problems_of(workdir, "version: 1\nname: t\nitems: \x07\n")
    assert problem.line == 3
    assert "YAML cannot read this file" in problem.message


def test_alias_bomb_is_refused(workdir: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for n in range(1, 8):
        prev = f"*a{n - 1}"
        lines.append(f"a{n}: &a{n} [{', '.join([prev] * 10)}]")
    text = "\n".join(lines) + "\n"
    problems = problems_of(workdir, text)
    assert any(f"more than {100_000 + len(text)} values" in p.message for p in problems)


def test_a_long_manifest_without_aliases_is_not_an_alias_bomb(workdir: Path) -> None:
    items = "".join(f"  - {{id: i{n}, prompt: p}}\n" for n in range(40_000))  # 120k+ values
    text = f"version: 1\nname: t\ndefaults: {{kind: text2video, model: kling-v3}}\nitems:\n{items}"
    assert len(load_text(workdir, text).items) == 40_000


def test_deep_nesting_is_refused(workdir: Path) -> None:
    problems = problems_of(workdir, "a: " + "[" * 800 + "]" * 800 + "\n")
    assert any("nested too deeply" in p.message for p in problems)


# --- nothing but ManifestError, whatever the input ------------------------------------------------

_VOCAB = [
    "version", "name", "provider", "limits", "retry", "poll", "output", "defaults", "items",
    "base_url", "timeout", "concurrency", "requests_per_minute", "max_attempts", "base_delay",
    "max_delay", "lookup_grace", "interval", "max_interval", "dir", "id", "kind", "model",
    "prompt", "negative_prompt", "mode", "duration", "aspect_ratio", "cfg_scale",
    "camera_control", "type", "config", "pan", "zoom", "image", "image_tail", "static_mask",
    "dynamic_masks", "mask", "trajectories", "x", "y", "n", "resolution", "image_reference",
    "image_fidelity", "human_fidelity", "callback_url", "download", "max_units", "items_from",
    "pricing", "path", "columns", "format", "ignore_columns", "video", "builtin", "per_second",
    "std", "kling-v2-1",
]  # fmt: skip
_WORDS = [
    "simulator", "kling", "text2video", "image2video", "image", "kling-v1", "kling-v1-5",
    "kling-v2-5-turbo", "kling-v3", "std", "pro", "16:9", "21:9", "simple", "down_back",
    "images/cat.png", "cat.png", "https://example.com/a.png", "data:image/png;base64,AA",
    "~/x", "", " ", "..", "a", "subject", "1k",
]  # fmt: skip

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(_WORDS),
)
_keys = st.one_of(st.sampled_from(_VOCAB), st.text(max_size=6))
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=5),
    max_leaves=16,
)
_items = st.dictionaries(st.sampled_from(_VOCAB), _values, max_size=8)
_documents = st.one_of(
    _values,
    st.fixed_dictionaries(
        {},
        optional={
            "version": st.sampled_from([1, 2, "1", None, True]),
            "name": st.sampled_from(["demo", "", "a b", None, 5]),
            "provider": st.dictionaries(st.sampled_from(_VOCAB), _values, max_size=3),
            "limits": _values,
            "retry": st.dictionaries(st.sampled_from(_VOCAB), _scalars, max_size=4),
            "poll": st.dictionaries(st.sampled_from(_VOCAB), _scalars, max_size=4),
            "defaults": _items,
            "items": st.lists(_items | _values, max_size=4),
            "items_from": st.one_of(
                st.sampled_from(["p.csv", "p.jsonl", "bad.csv", "nope.csv", "cat.png"]),
                st.fixed_dictionaries(
                    {"path": st.sampled_from(["p.csv", "p.jsonl", "bad.csv"])},
                    optional={"columns": _values, "format": _values, "ignore_columns": _values},
                ),
                _values,
            ),
            "pricing": _values,
        },
    ),
)
_DEMO_TEXT = DEMO.read_text(encoding="utf-8")
_ODD_VALUES = [
    "", " null", " -1", " 1e999", " [1, 2]", " {a: 1}", " yes", " 16:9", " *x",
    " !!binary AAAA", " 99999999999999999999999", " &x [*x]", " !!set {a}",
]  # fmt: skip


@st.composite
def _mutated_demo(draw: st.DrawFn) -> str:
    lines = _DEMO_TEXT.splitlines(keepends=True)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        index = draw(st.integers(min_value=0, max_value=len(lines) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "splice", "replace-value"]))
        if action == "delete":
            del lines[index]
        elif action == "duplicate":
            lines.insert(index, lines[index])
        elif action == "splice":
            junk = draw(st.text(alphabet=":-[]{}&*!|>'\"#\t\n ,?%@`<abc019.", max_size=8))
            line = lines[index]
            cut = draw(st.integers(min_value=0, max_value=len(line)))
            lines[index] = line[:cut] + junk + line[cut:]
        elif ":" in lines[index]:
            key = lines[index].split(":", 1)[0]
            value = draw(st.sampled_from(_ODD_VALUES))
            lines[index] = f"{key}:{value}\n"
        if not lines:
            break
    return "".join(lines)


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    text=st.one_of(
        _documents.map(lambda data: yaml.safe_dump(data, allow_unicode=True)),
        _mutated_demo(),
        st.text(alphabet=":-[]{}&*!|>'\"#\n abcdefgh0123456789.", max_size=60),
    )
)
def test_any_input_gives_a_manifest_or_a_manifest_error(workdir: Path, text: str) -> None:
    images = workdir / "images"
    if not images.exists():
        images.mkdir()
        shutil.copy(workdir / "cat.png", images / "cat.png")
        (workdir / "p.csv").write_text("id,prompt,duration\nrow-1,p,10\nrow-2,q,\n")
        (workdir / "p.jsonl").write_text('{"id": "row-1", "prompt": "p", "n": 2}\n')
        (workdir / "bad.csv").write_bytes(b'id,promt,\x00\nrow,"unclosed\n\xff')
    try:
        manifest = load_text(workdir, text, name="fuzz.yaml")
    except ManifestError as error:
        assert error.problems, "a ManifestError always says what is wrong"
        assert all(isinstance(p.message, str) and p.message for p in error.problems)
        str(error)
        return
    assert manifest.items and all(item.request.fields for item in manifest.items)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://api-singapore.klingai.com", True),
        ("http://127.0.0.1:8080", True),
        ("http://127.9.9.9", True),
        ("http://localhost:9000", True),
        ("http://[::1]:9000", True),
        ("http://api-singapore.klingai.com", False),
        ("http://10.0.0.5:8080", False),
        ("http://localhost.example.com", False),
    ],
)
def test_plain_http_only_for_loopback(workdir: Path, url: str, ok: bool) -> None:
    top = f"version: 1\nname: t\nprovider:\n  base_url: '{url}'\n"
    text = doc("- id: a\n  prompt: p", top=top)
    if ok:
        assert load_text(workdir, text).provider.base_url == url
        return
    (problem,) = problems_of(workdir, text)
    assert (problem.field, problem.line) == ("provider.base_url", 4)
    assert "must use https://" in problem.message


@pytest.mark.parametrize(
    ("value", "after", "at"),
    [
        ("90", 90.0, None),
        ("2.5", 2.5, None),
        ("45s", 45.0, None),
        ("90m", 5400.0, None),
        ("6h", 21600.0, None),
        ("1h30m", 5400.0, None),
        ("1d", 86400.0, None),
        ("2026-11-22T06:00:00Z", None, 1795327200.0),
        ("'2026-11-22T07:00:00+01:00'", None, 1795327200.0),
    ],
)
def test_deadline_forms(workdir: Path, value: str, after: float | None, at: float | None) -> None:
    text = top_doc(f"limits: {{deadline: {value}}}")
    deadline = load_text(workdir, text).limits.deadline
    assert deadline is not None
    assert (deadline.after, deadline.at) == (after, at)
    assert deadline.resolve(1000.0) == (at if at is not None else 1000.0 + (after or 0))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "greater than 0"),
        ("-5", "greater than 0"),
        ("soon", "must be a duration"),
        ("true", "must be a duration"),
        ("6 hours", "must be a duration"),
        ("2026-11-22T06:00:00", "needs a timezone"),
        ("'2026-11-22T06:00:00'", "needs a timezone"),
    ],
)
def test_deadline_errors_are_located(workdir: Path, value: str, message: str) -> None:
    (problem,) = problems_of(workdir, top_doc(f"limits: {{deadline: {value}}}"))
    assert (problem.field, problem.line) == ("limits.deadline", 3)
    assert message in problem.message


def test_no_deadline_by_default(workdir: Path) -> None:
    assert load_text(workdir, top_doc()).limits.deadline is None


@pytest.mark.parametrize("bad", ["con", "NUL", "com1.mp4", "aux.x", "ends-with-dot."])
def test_ids_unsafe_as_directory_names_are_refused_offline(workdir: Path, bad: str) -> None:
    (problem,) = problems_of(workdir, doc(f"- id: '{bad}'\n  prompt: p"))
    assert (problem.field, problem.line) == ("items[0].id", 5)
    assert "choose another id" in problem.message


@pytest.mark.parametrize(
    "bad",
    [
        "report.json", "REPORT.json", "report.md", "Report.HTML", "Results.JSONL", "logs", "Logs",
        "state.sqlite3", "State.SQLite3-wal", "state.sqlite3-shm", "state.sqlite3-journal",
        "state.sqlite3.lock",
    ],
)
def test_ids_naming_the_output_dirs_own_files_are_refused(workdir: Path, bad: str) -> None:
    (problem,) = problems_of(workdir, doc(f"- id: '{bad}'\n  prompt: p"))
    assert (problem.field, problem.line) == ("items[0].id", 5)
    assert f"'{bad}' names the orchestrator's own" in problem.message
    assert "output.dir" in problem.message and "choose another id" in problem.message


def test_ids_close_to_the_output_dirs_own_files_are_fine(workdir: Path) -> None:
    ids = ["report", "report.json2", "my-report.json", "logs-1", "log", "state", "state.sqlite"]
    items = "\n".join(f"- id: '{i}'\n  prompt: p" for i in ids)
    assert [item.id for item in load_text(workdir, doc(items)).items] == ids


# -- the streaming builder gives what building the composed document gives ----------------------

_MERGE_CASES = [
    "a: &x {k: 1, j: 2}\nb: {<<: *x, k: 3}\nc: {k: 4, <<: *x}\n",
    "a: &x {k: 1}\nb:\n  k: !!bad 2\n  <<: *x\n",
    "a: &x [1, 2]\nb: *x\nc: [*x, {<<: [{p: 1}, {q: 2}], p: 0}]\n",
    "a: &x {k: 1}\nb: {k: 2, k: 3, <<: *x}\n{z: 1}: 2\n[y]: 3\n",
    "a: &x [*x]\nb: !!set {q}\nc: !custom {d: 1}\n",
    "<<: 5\nx: 2024-13-45\n",
    "---\n",
    "",
    "a: 1\n---\nb: 2\n",
]


def _both_ways(text: str) -> tuple[object, object]:
    from orchestrator.config.yaml_lines import _COMPOSER, _Builder, _StreamLoader

    def run(streamed: bool) -> object:
        found: list[tuple[object, ...]] = []
        builder = _Builder(lambda *args: found.append(args), len(text))
        try:
            if streamed:
                loader = _StreamLoader(text)
                data = builder.document(loader)
            else:
                node = yaml.compose(text, Loader=_COMPOSER)
                data = None if node is None else builder.build(node, ())
                if node is not None:
                    builder.lines[()] = node.start_mark.line + 1
        except yaml.YAMLError:
            return "yaml error"
        except RecursionError:
            return "too deep"
        return (repr(data), builder.lines, builder.unreadable, found)

    return run(True), run(False)


@pytest.mark.parametrize("text", _MERGE_CASES)
def test_streamed_document_equals_the_composed_one(text: str) -> None:
    streamed, composed = _both_ways(text)
    assert streamed == composed


@settings(max_examples=150, deadline=None)
@given(
    text=st.one_of(
        _mutated_demo(),
        st.text(alphabet=":-[]{}&*!|>'\"#<\n abcdefgh0123456789.", max_size=80),
    )
)
def test_streamed_document_equals_the_composed_one_for_any_text(text: str) -> None:
    streamed, composed = _both_ways(text)
    assert streamed == composed


@pytest.mark.parametrize(
    ("provider", "warned"),
    [
        ("{base_url: 'https://api-singapore.klingai.com'}",
         ["poll.interval: 0.2 s", "poll.max_interval: 1 s", "retry.base_delay: 0.2 s"]),
        ("{base_url: 'http://127.0.0.1:8123'}", []),  # a simulator of one's own
        ("{base_url: simulator}", []),
    ],
)
def test_demo_values_aimed_at_a_real_provider_are_warned_of(
    workdir: Path, provider: str, warned: list[str]
) -> None:
    top = (f"version: 1\nname: t\nprovider: {provider}\nretry: {{base_delay: 0.2}}\n"
           "poll: {interval: 0.2, max_interval: 1}\n")
    manifest = load_text(workdir, doc("- id: a\n  prompt: p", top=top))
    demo = [w for w in manifest.warnings if "is a demo value" in w]
    assert [w.split(" is a demo value")[0] for w in demo] == warned
    for warning in demo:
        assert "the default" in warning and "suits it" in warning


def test_real_values_aimed_at_a_real_provider_are_not_warned_of(workdir: Path) -> None:
    top = "version: 1\nname: t\nprovider: {base_url: 'https://api-singapore.klingai.com'}\n"
    manifest = load_text(workdir, doc("- id: a\n  prompt: p", top=top))
    assert not [w for w in manifest.warnings if "is a demo value" in w]
