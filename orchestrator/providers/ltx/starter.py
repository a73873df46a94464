"""The defaults and items of the manifest ``orchestrator init`` writes for LTX Video: a couple
of examples that validate as they are, each value explained."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

STARTER: Final[Mapping[str, str]] = {
    "defaults": """\
  kind: text2video              # text2video | image2video
  model: ltx-2-3-fast           # pin a current model: `orchestrator models --provider ltx`
  duration: 6                   # whole seconds; which depend on model, resolution and fps
  resolution: 1920x1080         # width x height
  fps: 25
  generate_audio: false         # LTX's default is true
""",
    "items": """\
  - id: drone-sunrise           # unique and stable: rename it and it is a new item
    prompt: Aerial drone shot over misty mountain ridges at sunrise, slow forward motion
    camera_motion: dolly_in
  - id: city-dusk
    model: ltx-2-3-pro          # this item's own values, over the defaults
    duration: 8                 # ltx-2-3-pro at 1080p: 6, 8 or 10 s
    prompt: Timelapse of a city skyline from dusk to night, lights switching on
  # An image2video item animates a picture: a local JPEG/PNG (relative to this file; sent
  # inline, or uploaded when large) or an https URL.
  # - id: cat-turns
  #   kind: image2video
  #   image: images/cat.png
  #   prompt: The cat slowly turns its head toward the camera and blinks
""",
}
