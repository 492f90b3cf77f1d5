"""Benign test images for the bank tests: scikit-image's bundled photos, nothing downloaded."""

from __future__ import annotations

import io

import numpy as np
import skimage.data
from PIL import Image

PHOTOS = ("astronaut", "chelsea", "coffee", "camera", "rocket")


def load_photo(name: str) -> np.ndarray:
    image = getattr(skimage.data, name)()
    if image.ndim == 2:  # camera() is greyscale
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image, dtype=np.uint8)


def reencode(image: np.ndarray, fmt: str, **options: object) -> np.ndarray:
    """Save through Pillow in ``fmt`` and decode again, as an upload pipeline would."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, fmt, **options)
    return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
