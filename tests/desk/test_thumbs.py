"""Thumbnails: grey and blurred by default, the blur per reviewer, animations as a strip of stills."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from fediguard.desk.thumbs import STRIP_FRAMES, revealed, thumbnail
from fediguard.media.decode import decode
from support.images import astronaut_jpeg, drawn_gif, laplacian_energy


def _energy_of(jpeg: bytes) -> float:
    return laplacian_energy(np.asarray(Image.open(io.BytesIO(jpeg)).convert("L")))


def test_grey_blurred_and_the_strength_is_the_reviewers() -> None:
    media = decode(astronaut_jpeg())
    sharp, light, strong = thumbnail(media, 0), thumbnail(media, 4), thumbnail(media, 30)
    assert Image.open(io.BytesIO(strong)).mode == "L"
    assert _energy_of(strong) < _energy_of(light) < _energy_of(sharp)
    assert max(Image.open(io.BytesIO(strong)).size) <= 320
    shown = Image.open(io.BytesIO(revealed(media)))
    assert shown.mode == "RGB" and _energy_of(revealed(media)) > _energy_of(sharp) * 0.5


def test_an_animation_is_a_strip_of_still_frames() -> None:
    media = decode(drawn_gif())
    assert media.animated and len(media.frames) > STRIP_FRAMES
    strip = Image.open(io.BytesIO(thumbnail(media, 8)))
    assert strip.format == "JPEG" and getattr(strip, "n_frames", 1) == 1, "a still image, never playable"
    assert strip.width > 5 * strip.height, f"{STRIP_FRAMES} frames side by side: {strip.size}"
