"""The defaults and items of the manifest ``orchestrator init`` writes for Kling: a couple of
examples that validate as they are, each value explained."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

STARTER: Final[Mapping[str, str]] = {
    "defaults": """\
  kind: text2video              # text2video | image2video | omni_video | image
  model: kling-v3               # pin a current model: `orchestrator models` lists them
  mode: std                     # kling-v3: std | pro | 4k
  duration: 5                   # seconds: kling-v3 takes 3 to 15
  aspect_ratio: "16:9"          # in quotes: YAML reads 16:9 unquoted as a number
""",
    "items": """\
  - id: drone-sunrise           # unique and stable: rename it and it is a new item
    prompt: >-
      Aerial drone shot gliding over misty mountain ridges at sunrise,
      golden hour light spilling into the valleys, slow forward motion
  - id: rainy-street
    prompt: Night street after rain, neon signs reflected in puddles, a cyclist passes
    negative_prompt: blurry, low quality, text, watermark
    duration: 10                # this item's own value, over the default
  - id: mug-stills
    kind: image                 # still images: the video defaults (mode, duration) skip them
    prompt: Studio photo of a ceramic mug on a walnut table, soft window light
    n: 2                        # 2 images in one task; the report checks that 2 came back
    aspect_ratio: "1:1"
  # An image2video item animates a picture: a local JPEG/PNG (relative to this file, sent
  # inline; at least 300 px a side, at most 10 MB) or an https URL.
  # - id: cat-turns
  #   kind: image2video
  #   image: images/cat.png
  #   prompt: The cat slowly turns its head toward the camera and blinks
""",
}
