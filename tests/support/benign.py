"""Benign test images beyond scikit-image's photos: Pillow drawings, enlarged adult faces of its LFW
subset, and composites of them side by side. Never anything sexual."""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

RGB = npt.NDArray[np.uint8]


def colour_wheel() -> RGB:
    from skimage import data

    return np.ascontiguousarray(data.colorwheel()[:, :, :3], dtype=np.uint8)


def webcam_icon() -> RGB:
    image = Image.new("RGB", (400, 400), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.ellipse((80, 40, 320, 280), fill=(230, 180, 160))
    draw.ellipse((150, 110, 250, 210), fill=(120, 70, 60))
    draw.rectangle((120, 300, 280, 350), fill=(200, 150, 130))
    return np.asarray(image, dtype=np.uint8)


def lfw_face(index: int, side: int = 160) -> RGB:
    """An adult face of scikit-image's LFW subset (25 px), enlarged."""
    from skimage import data

    grey = (data.lfw_subset()[index] * 255).astype(np.uint8)
    big = cv2.resize(grey, (side, side), interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(np.stack([big] * 3, axis=-1))


def beside(left: RGB, right: RGB) -> RGB:
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height, left.shape[1] + right.shape[1], 3), 128, dtype=np.uint8)
    canvas[: left.shape[0], : left.shape[1]] = left
    canvas[: right.shape[0], left.shape[1] :] = right
    return canvas
