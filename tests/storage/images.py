"""Benign test pictures drawn with Pillow, in memory: coloured shapes only."""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw


def picture(seed: int, fmt: str = "PNG", size: tuple[int, int] = (64, 48)) -> bytes:
    """A small picture of random rectangles and ellipses; ``seed`` makes it reproducible."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = rng.randrange(size[0] // 2), rng.randrange(size[1] // 2)
        box = (x0, y0, x0 + rng.randrange(4, size[0] // 2), y0 + rng.randrange(4, size[1] // 2))
        colour = tuple(rng.randrange(256) for _ in range(3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour)
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()
