"""The cascade: a screened detector (the age model) runs only on frames an earlier detector found
explicit at or above the screening threshold, and the verdicts are those of running everything."""

from __future__ import annotations

import hashlib
import io
import itertools

import pytest
from PIL import Image

from fediguard.config import load_settings
from fediguard.detectors.base import Explicit
from fediguard.errors import ConfigError
from fediguard.media.decode import MediaLimits
from fediguard.policy import decide
from fediguard.scanning.pipeline import Pipeline
from fediguard.verdicts import PolicyConfig
from support.detectors import ColourAge, ColourExplicit
from support.images import encode


def corpus() -> list[bytes]:
    """Stills of every (red, green) pair on a grid, and animations mixing them frame by frame."""
    levels = [0, 40, 70, 77, 90, 120, 128, 160, 200, 255]
    stills = [
        encode(Image.new("RGB", (120, 120), (r, g, 50))) for r, g in itertools.product(levels, levels[::3])
    ]
    animations = []
    for start in range(0, len(levels), 3):
        frames = [
            Image.new("RGB", (120, 120), (levels[(start + i) % len(levels)], 30 * i, 50)) for i in range(4)
        ]
        buf = io.BytesIO()
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
        animations.append(buf.getvalue())
    return stills + animations


POLICIES = [
    PolicyConfig(explicit_threshold=t, age_uncertainty_factor=k, minor_age=m)
    for t, k, m in itertools.product((0.3, 0.5, 0.7), (0.0, 1.0), (16.0, 18.0))
]


def test_the_cascade_gives_the_verdicts_of_running_everything_and_skips_the_age_model() -> None:
    full_age, cascade_age = ColourAge(), ColourAge()
    full = Pipeline([ColourExplicit(), full_age], MediaLimits(), screening=0.0)
    cascade = Pipeline([cascade_age, ColourExplicit()], MediaLimits(), screening=0.3)
    assert [d.name for d in cascade.detectors] == ["nudity", "age"], "screened detectors run last"
    labels_seen = set()
    for body in corpus():
        sha = hashlib.sha256(body).hexdigest()
        a, b = full.run(body, sha, None), cascade.run(body, sha, None)
        assert a.error is None and b.error is None
        for policy in POLICIES:
            full_decision, cascade_decision = decide(a.results, policy), decide(b.results, policy)
            assert full_decision == cascade_decision, (policy, full_decision, cascade_decision)
            labels_seen.add(full_decision.labels)
    assert {(), ("nsfw",), ("csam_suspect",), ("nsfw", "review")} <= labels_seen, "the corpus is varied"
    assert 0 < cascade_age.frames_seen < full_age.frames_seen


def test_a_frame_with_no_explicit_finding_runs_no_screened_detector() -> None:
    age = ColourAge()
    pipeline = Pipeline([ColourExplicit(), age], MediaLimits(), screening=0.3)
    body = encode(Image.new("RGB", (120, 120), (20, 200, 50)))
    outcome = pipeline.run(body, hashlib.sha256(body).hexdigest(), None)
    assert age.frames_seen == 0 and "detector:age" not in outcome.timings
    assert outcome.results[1].detector == "age" and outcome.results[1].notes[0].startswith(
        "not run: no frame"
    )
    assert pipeline.fingerprint == "age@test-1,nudity@test-1,screen@0.3"
    animation = corpus()[-1]  # frames of red 255, 0, 40, 70: only the first is explicit enough
    outcome = pipeline.run(animation, hashlib.sha256(animation).hexdigest(), None)
    explicit = [f.frame for f in outcome.results[0].findings if isinstance(f, Explicit) and f.score >= 0.3]
    assert len(explicit) == 1 and age.frames_seen == 1
    assert [f.frame for f in outcome.results[1].findings] == explicit


def test_the_screening_threshold_may_not_exceed_any_explicit_threshold() -> None:
    assert load_settings(environ={}).screening_threshold == 0.3
    with pytest.raises(ConfigError, match="screening_threshold"):
        load_settings(environ={"FEDIGUARD_EXPLICIT_THRESHOLD": "0.2"})
    with pytest.raises(ConfigError, match=r"client_policies\.lax\.explicit_threshold"):
        load_settings(environ={"FEDIGUARD_CLIENT_POLICIES": '{"lax": {"explicit_threshold": 0.25}}'})
    settings = load_settings(
        environ={"FEDIGUARD_EXPLICIT_THRESHOLD": "0.2", "FEDIGUARD_SCREENING_THRESHOLD": "0"}
    )
    assert settings.screening_threshold == 0.0
