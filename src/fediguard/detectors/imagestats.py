"""Image statistics that say how much a detector's box can be trusted, measured on benign images
(docs/detection.md): how sharp a face is, and whether a region has photographic texture at all.

The thresholds that act on them live where they are used: the face gate in :mod:`fediguard.policy`
(which reads :attr:`~fediguard.detectors.base.Face.sharpness`), the flat-graphic gate here.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from fediguard.detectors.base import Box

__all__ = ["MIN_TEXTURE", "face_sharpness", "texture"]

_SHARPNESS_SIDE = 64
_TEXTURE_MAX_SIDE = 256
_TEXTURE_STEP = 2.0

MIN_TEXTURE = 0.5
"""Regions where fewer pixels than this have a Laplacian of at least 2 grey levels are flat or smoothly
shaded, as drawings are. Measured (whole image and two sub-boxes each): Pillow-drawn icons, blobs and
gradients 0.007-0.19 (JPEG q50 included), the colour wheel 0.32-0.46, a text screenshot 0.27-0.45;
photos (astronaut, coffee, chelsea, camera, rocket, also enlarged 2x or blurred sigma 2) 0.53-0.92,
except a JPEG q50 sky (rocket, 0.33): a sky is not a body, and a second body part still counts."""


def _crop(image: npt.NDArray[np.uint8], box: Box) -> npt.NDArray[np.uint8]:
    height, width = image.shape[:2]
    x, y, w, h = box
    x0, y0 = max(0, int(x)), max(0, int(y))
    x1, y1 = min(width, int(np.ceil(x + w))), min(height, int(np.ceil(y + h)))
    if x1 <= x0 or y1 <= y0:
        return image[:0, :0]
    return image[y0:y1, x0:x1]


def _grey(crop: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY), dtype=np.float32)


def face_sharpness(image: npt.NDArray[np.uint8], box: Box) -> float:
    """The variance of the Laplacian of the face's grey crop resampled to 64x64 and scaled to a
    standard deviation of 50 grey levels, so contrast does not count, only detail. 0 for an empty box.

    The astronaut's face reads 1073; shrunk to 24 px and enlarged back 157; blurred with sigma 2, 116.
    """
    crop = _crop(image, box)
    if crop.size == 0:
        return 0.0
    grey = _grey(crop)
    shrink = crop.shape[1] >= _SHARPNESS_SIDE
    method = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    grey = np.asarray(
        cv2.resize(grey, (_SHARPNESS_SIDE, _SHARPNESS_SIDE), interpolation=method), dtype=np.float32
    )
    spread = float(grey.std())
    normalised = grey * np.float32(50.0 / max(spread, 1.0))
    return float(cv2.Laplacian(normalised, cv2.CV_32F).var())


def texture(image: npt.NDArray[np.uint8], box: Box | None = None) -> float:
    """The fraction of pixels (region shrunk to a long side of at most 256 px) whose Laplacian is at
    least 2 grey levels: ~0.03 on a flat drawing, 0.5-0.9 on a photograph. 0 for an empty box."""
    crop = image if box is None else _crop(image, box)
    if crop.size == 0:
        return 0.0
    height, width = crop.shape[:2]
    scale = min(1.0, _TEXTURE_MAX_SIDE / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        crop = np.asarray(cv2.resize(crop, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
    laplacian = np.abs(cv2.Laplacian(_grey(crop), cv2.CV_32F))
    return float((laplacian >= _TEXTURE_STEP).mean())
