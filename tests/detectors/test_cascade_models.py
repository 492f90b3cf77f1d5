"""The cascade with the real models on benign images: the same verdicts as running everything, and
no face finding or ageing where nothing is explicit."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import numpy.typing as npt
import pytest

from fediguard.detectors.age import AgeDetector
from fediguard.detectors.nudity import NudityDetector
from fediguard.media.decode import MediaLimits
from fediguard.policy import decide
from fediguard.scanning.pipeline import Pipeline
from fediguard.verdicts import PolicyConfig
from support.benign import beside, colour_wheel, lfw_face, webcam_icon
from support.images import encode

pytestmark = pytest.mark.slow

RGB = npt.NDArray[np.uint8]


def test_real_models_give_the_same_verdicts_with_and_without_screening(
    photos: dict[str, RGB], nudity: NudityDetector, age: AgeDetector
) -> None:
    images = [
        *photos.values(),
        colour_wheel(),
        beside(colour_wheel(), lfw_face(67)),
        beside(webcam_icon(), photos["astronaut"]),
    ]
    full = Pipeline([nudity, age], MediaLimits(), screening=0.0)
    cascade = Pipeline([nudity, age], MediaLimits(), screening=0.3)
    policies = [
        PolicyConfig(explicit_threshold=t, age_uncertainty_factor=k)
        for t, k in itertools.product((0.3, 0.5), (0.0, 1.0, 2.0))
    ]
    for image in images:
        body = encode(image)
        sha = hashlib.sha256(body).hexdigest()
        a, b = full.run(body, sha, "image/png"), cascade.run(body, sha, "image/png")
        for policy in policies:
            assert decide(a.results, policy) == decide(b.results, policy)
        assert "detector:age" in a.timings and "detector:age" not in b.timings, "nothing benign is explicit"
        assert b.results[-1].notes[0].startswith("not run")
