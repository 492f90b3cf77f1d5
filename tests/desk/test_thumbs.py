"""Thumbnails: grey and blurred by default, the blur per reviewer, animations as a strip of stills."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from fediguard.desk.thumbs import STRIP_FRAMES, revealed, thumbnail
from fediguard.media.decode import decode
from support.images import astronaut_jpeg


def _energy(jpeg: bytes) -> float:
    g = np.asarray(Image.open(io.BytesIO(jpeg)).convert("L")).astype(np.float64)
    return float(np.mean(np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])))


def _gif(frames: int = 12) -> bytes:
    images = []
    for i in range(frames):
        im = Image.new("RGB", (120, 80), (20, 40 + 10 * i, 200))
        ImageDraw.Draw(im).rectangle((5 * i, 10, 5 * i + 30, 50), fill=(250, 220, 30))
        images.append(im)
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=80, loop=0)
    return buf.getvalue()


def test_grey_blurred_and_the_strength_is_the_reviewers() -> None:
    media = decode(astronaut_jpeg())
    sharp, light, strong = thumbnail(media, 0), thumbnail(media, 4), thumbnail(media, 30)
    assert Image.open(io.BytesIO(strong)).mode == "L"
    assert _energy(strong) < _energy(light) < _energy(sharp)
    assert max(Image.open(io.BytesIO(strong)).size) <= 320
    shown = Image.open(io.BytesIO(revealed(media)))
    assert shown.mode == "RGB" and _energy(revealed(media)) > _energy(sharp) * 0.5


def test_an_animation_is_a_strip_of_still_frames() -> None:
    media = decode(_gif())
    assert media.animated and len(media.frames) > STRIP_FRAMES
    strip = Image.open(io.BytesIO(thumbnail(media, 8)))
    assert strip.format == "JPEG" and getattr(strip, "n_frames", 1) == 1, "a still image, never playable"
    assert strip.width > 5 * strip.height, f"{STRIP_FRAMES} frames side by side: {strip.size}"
