"""What a reviewer sees of the media, made on the server from the decrypted evidence: by default a
small greyscale, blurred thumbnail; after an explicit reveal, the frames in colour. Animations and
video are a strip of still frames (never a playable file, so nothing autoplays and nothing sounds)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageFilter

from fediguard.media.frames import DecodedMedia

THUMB_SIDE = 320
"""The longer side of one frame of a thumbnail."""
THUMB_DECODE_SIDE = THUMB_SIDE
"""Frames for a thumbnail are decoded no larger than this (JPEG decodes at a reduced scale: fast)."""
REVEAL_SIDE = 1024
STRIP_FRAMES = 6
"""At most this many frames, evenly spread, make the strip of an animation or video."""


def _picked(media: DecodedMedia, limit: int) -> list[Image.Image]:
    frames = media.frames
    if len(frames) > limit:
        step = len(frames) / limit
        frames = [frames[int(i * step)] for i in range(limit)]
    return [Image.fromarray(f.image) for f in frames]


def _strip(images: list[Image.Image], side: int, mode: str) -> Image.Image:
    resized = []
    for im in images:
        im.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
        resized.append(im.convert(mode))
    if len(resized) == 1:
        return resized[0]
    width = sum(im.width for im in resized) + 4 * (len(resized) - 1)
    height = max(im.height for im in resized)
    strip = Image.new(mode, (width, height), 0 if mode == "L" else (0, 0, 0))
    x = 0
    for im in resized:
        strip.paste(im, (x, 0))
        x += im.width + 4
    return strip


def _jpeg(image: Image.Image, quality: int = 80) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def thumbnail(media: DecodedMedia, blur: int) -> bytes:
    """A greyscale JPEG of the frames, blurred with radius ``blur`` pixels (0: sharp, still grey)."""
    strip = _strip(_picked(media, STRIP_FRAMES), THUMB_SIDE, "L")
    if blur > 0:
        strip = strip.filter(ImageFilter.BoxBlur(blur / 2)).filter(ImageFilter.BoxBlur(blur / 2))
    return _jpeg(strip)


def revealed(media: DecodedMedia) -> bytes:
    """The frames in colour, unblurred: only after a reveal, which is logged."""
    return _jpeg(_strip(_picked(media, STRIP_FRAMES), REVEAL_SIDE, "RGB"), quality=90)


def placeholder() -> bytes:
    """A neutral grey tile for an item whose bytes cannot be shown."""
    return _jpeg(Image.fromarray(np.full((48, 64), 128, dtype=np.uint8), "L"))
