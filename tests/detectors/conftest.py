"""Fixtures for the CPU detector tests: benign photos that scikit-image ships, Pillow drawings, and
detectors loaded once per module (loading the models takes a second or two each)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageDraw

from fediguard.detectors.age import AgeDetector
from fediguard.detectors.base import Detector, Subject
from fediguard.detectors.nudity import NudityDetector
from fediguard.errors import DetectorUnavailable
from fediguard.media.frames import DecodedMedia, Frame

RGB = npt.NDArray[np.uint8]
PHOTOS = ("astronaut", "camera", "coffee", "rocket", "chelsea")
EXPECTED_FACES = {"astronaut": 1, "camera": 1, "coffee": 0, "rocket": 0, "chelsea": 0}
IN_CI = os.environ.get("CI", "").lower() == "true"


def rgb(image: npt.NDArray[np.uint8]) -> RGB:
    """A C-contiguous RGB array (camera is greyscale)."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[:, :, :3], dtype=np.uint8)


@pytest.fixture(scope="session")
def photos() -> dict[str, RGB]:
    from skimage import data

    return {name: rgb(getattr(data, name)()) for name in PHOTOS}


def make_subject(images: Sequence[RGB], indices: Sequence[int] | None = None) -> Subject:
    """A Subject whose decoded frames are ``images`` (no real decoding involved)."""
    idx = list(indices) if indices is not None else list(range(len(images)))
    frames = [Frame(i, img) for i, img in zip(idx, images, strict=True)]
    height, width = images[0].shape[:2] if images else (0, 0)
    media = DecodedMedia(media_type="image/png", width=width, height=height, frames=frames)
    return Subject(data=b"", sha256="x", media_type="image/png", decode=lambda: media)


@pytest.fixture(scope="session")
def subject_of() -> Callable[..., Subject]:
    return make_subject


@pytest.fixture(scope="session")
def drawn() -> dict[str, RGB]:
    """Pillow drawings and degenerate frames: flat grey, a smiley, a 1x1 dot, 4x4000 strips."""
    image = Image.new("RGB", (400, 400), (230, 230, 230))
    draw = ImageDraw.Draw(image)
    # A cartoon face: a finder that boxes it would count drawings as people.
    draw.ellipse((100, 100, 300, 300), fill=(255, 220, 0), outline=(0, 0, 0), width=4)
    draw.ellipse((150, 160, 180, 200), fill=(0, 0, 0))
    draw.ellipse((220, 160, 250, 200), fill=(0, 0, 0))
    draw.arc((140, 180, 260, 270), 20, 160, fill=(0, 0, 0), width=6)
    return {
        "grey": np.full((480, 640, 3), 128, dtype=np.uint8),
        "smiley": np.asarray(image, dtype=np.uint8),
        "dot": np.full((1, 1, 3), 200, dtype=np.uint8),
        "strip": np.full((4, 4000, 3), 90, dtype=np.uint8),
        "column": np.full((4000, 4, 3), 90, dtype=np.uint8),
    }


@pytest.fixture(scope="session")
def pasted_faces(photos: dict[str, RGB]) -> RGB:
    """The astronaut's head pasted four times on grey, 90/60/45/28 px wide (faces ~58/39/31/20 px)."""
    head = Image.fromarray(photos["astronaut"][40:200, 160:290])
    canvas = Image.new("RGB", (640, 480), (128, 128, 128))
    for i, width in enumerate((90, 60, 45, 28)):
        small = head.resize((width, round(width * 160 / 130)), Image.Resampling.LANCZOS)
        canvas.paste(small, (30 + i * 150, 150))
    return np.asarray(canvas, dtype=np.uint8)


D = TypeVar("D", bound=Detector)


def loaded(make: Callable[[], D]) -> D:
    """Build and warm up a detector; a missing model skips locally but fails in CI, whose install
    step must provide it."""
    detector = make()
    try:
        detector.warm_up()
    except DetectorUnavailable as exc:
        if IN_CI:
            pytest.fail(f"detector model unavailable in CI: {exc}")
        pytest.skip(f"detector model unavailable: {exc}")
    return detector


@pytest.fixture(scope="module")
def nudity() -> NudityDetector:
    return loaded(NudityDetector)


@pytest.fixture(scope="module")
def age() -> AgeDetector:
    return loaded(AgeDetector)
