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


def drawn_gif(frames: int = 12, size: tuple[int, int] = (160, 120)) -> bytes:
    """An animated GIF of a yellow ellipse moving across a blue background."""
    from PIL import ImageDraw

    images = []
    for i in range(frames):
        image = Image.new("RGB", size, (30, 60 + 10 * i % 190, 200))
        ImageDraw.Draw(image).ellipse((8 * i, 20, 8 * i + 50, 90), fill=(250, 210, 40))
        images.append(image)
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return buf.getvalue()


def laplacian_energy(grey: np.ndarray) -> float:
    """Mean absolute Laplacian of a grey image: how much fine detail it has (blur lowers it)."""
    g = grey.astype(np.float64)
    return float(np.mean(np.abs(4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:])))
