"""Benign test images: photos scikit-image ships, and shapes drawn with Pillow."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **params: Any) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **params)
    return buf.getvalue()


def photo(name: str) -> np.ndarray:
    """A scikit-image sample picture by name ("astronaut", "chelsea", ...)."""
    from skimage import data

    return np.ascontiguousarray(getattr(data, name)())


def astronaut_jpeg() -> bytes:
    from skimage import data

    return encode(data.astronaut(), "JPEG", quality=90)


def drawn_png(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    from PIL import ImageDraw

    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).ellipse((4, 4, size[0] - 4, size[1] - 4), fill=(250, 200, 40))
    return encode(image)
