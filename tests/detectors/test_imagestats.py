"""The evidence gates with the real models on benign images only: drawn graphics are flat, photos
are not; blurred faces read below the sharpness gate; benign composites (graphics or adult faces
beside each other) are never ``csam_suspect``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from fediguard.detectors.age import AgeDetector
from fediguard.detectors.base import Explicit, Subject
from fediguard.detectors.imagestats import MIN_TEXTURE, face_sharpness, texture
from fediguard.detectors.nudity import NudityDetector
from fediguard.policy import MIN_FACE_SHARPNESS, decide
from fediguard.verdicts import CSAM_SUSPECT, PolicyConfig
from support.benign import beside, colour_wheel, lfw_face, webcam_icon

pytestmark = pytest.mark.slow

RGB = npt.NDArray[np.uint8]


def test_drawings_are_flat_and_photos_are_textured(photos: dict[str, RGB], drawn: dict[str, RGB]) -> None:
    for name in ("astronaut", "coffee", "chelsea", "camera"):
        assert texture(photos[name]) >= MIN_TEXTURE, name
    for name, image in {"wheel": colour_wheel(), "icon": webcam_icon(), "smiley": drawn["smiley"]}.items():
        assert texture(image) < MIN_TEXTURE, name


def test_the_colour_wheel_is_a_flat_buttocks_and_not_explicit(
    nudity: NudityDetector, subject_of: Callable[..., Subject]
) -> None:
    wheel = colour_wheel()
    found = nudity.detect_image(wheel)
    from fediguard.detectors.nudity import frame_findings

    explicit = [f for f in frame_findings(0, wheel, found) if isinstance(f, Explicit)]
    assert explicit and max(f.score for f in explicit) >= 0.5, "NudeNet scores the wheel (measured 0.83)"
    assert all(f.flat for f in explicit)
    results = nudity.detect(subject_of([wheel]))
    assert decide([results], PolicyConfig()).labels == ()


def test_blurred_faces_read_below_the_sharpness_gate(photos: dict[str, RGB], age: AgeDetector) -> None:
    image = photos["astronaut"]
    face = max(age.faces(image), key=lambda f: f.score)
    assert face_sharpness(image, face.box) > 4 * MIN_FACE_SHARPNESS
    blurred = cv2.GaussianBlur(image, (0, 0), 3)
    assert face_sharpness(blurred, face.box) < MIN_FACE_SHARPNESS
    small = cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA)  # the face ~11 px wide
    enlarged = cv2.resize(small, (512, 512), interpolation=cv2.INTER_LINEAR)
    assert face_sharpness(enlarged, face.box) < MIN_FACE_SHARPNESS


YOUNG_READING_ADULTS = (5, 7, 43, 67, 94)
"""LFW faces (adults) the age model reads young: 35 ± 23, 22 ± 20, 24 ± 6, 13 ± 8, 18 ± 8. Beside
the colour wheel each made a ``csam_suspect`` before faces had to belong to the explicit body."""


@pytest.mark.parametrize(
    "graphic,face", [*(("wheel", i) for i in YOUNG_READING_ADULTS), ("icon", 67), ("wheel", -1)]
)
def test_benign_composites_are_never_csam_suspect(
    graphic: str, face: int, photos: dict[str, RGB], nudity: NudityDetector, age: AgeDetector,
    subject_of: Callable[..., Subject],
) -> None:  # fmt: skip
    left = colour_wheel() if graphic == "wheel" else webcam_icon()
    right = lfw_face(face) if face >= 0 else photos["astronaut"]
    subject = subject_of([beside(left, right)])
    results = [nudity.detect(subject), age.detect(subject)]
    # Even were the graphic counted as explicit, the face is no part of its body.
    counted = [
        replace(r, findings=[replace(f, flat=False) if isinstance(f, Explicit) else f for f in r.findings])
        for r in results
    ]
    for threshold in (0.5, 0.3):
        for found in (results, counted):
            d = decide(found, PolicyConfig(explicit_threshold=threshold))
            assert CSAM_SUSPECT not in d.labels, d.reasons
