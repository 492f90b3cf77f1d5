"""Test detectors: injected scores, fixed cost, hangs, crashes, call counting. Benign by design:
they prove the plumbing and the policy without any real model or any sensitive image."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from fediguard.detectors.base import Detector, DetectorResult, Explicit, Face, Finding, FrameScores, Subject
from fediguard.errors import DetectorError

BODY_BOX = (100.0, 150.0, 100.0, 100.0)
FACE_BOX = (110.0, 40.0, 80.0, 90.0)


class ScoreDetector:
    """Returns the scores it was given, per frame of the decoded media (so decoding is exercised),
    with the findings they stand for: ``explicit`` an :class:`Explicit` (labelled by the first
    note's first word), ``min_age``/``min_age_sd`` a :class:`Face` of that apparent age, placed as
    one person's (the face just above the explicit box, at its scale) and seen by two finders, so
    together they are the strong evidence of ``csam_suspect``."""

    cost = 10

    def __init__(
        self,
        name: str = "nudity",
        frame_scores: dict[str, float] | None = None,
        notes: list[str] | None = None,
        decode: bool = True,
    ) -> None:
        self.name = name
        self.version = "test-1"
        self.frame_scores = frame_scores or {}
        self.notes = notes or []
        self.decode = decode
        self.calls = 0

    def warm_up(self) -> None:
        return None

    def detect(self, subject: Subject) -> DetectorResult:
        self.calls += 1
        frames = subject.media.frames if self.decode else []
        per_frame = [FrameScores(f.index, dict(self.frame_scores), list(self.notes)) for f in frames]
        findings: list[Finding] = []
        for f in frames:
            findings.extend(self.findings(f.index))
        return DetectorResult(
            self.name, self.version, scores=dict(self.frame_scores), frames=per_frame, findings=findings
        )

    def findings(self, frame: int) -> list[Finding]:
        found: list[Finding] = []
        scores = self.frame_scores
        if "explicit" in scores:
            label = self.notes[0].split()[0] if self.notes else "explicit"
            found.append(Explicit(frame, label, scores["explicit"], BODY_BOX))
        if "min_age" in scores:
            found.append(Face(frame, FACE_BOX, scores["min_age"], scores.get("min_age_sd", 0.0), finders=2))
        return found


class SleepDetector:
    """A detector of fixed cost (for the fail policy and the benchmark)."""

    name = "sleep"
    version = "test-1"
    cost = 5

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def warm_up(self) -> None:
        return None

    def detect(self, subject: Subject) -> DetectorResult:
        time.sleep(self.seconds)
        return DetectorResult(self.name, self.version, scores={"slept": self.seconds})


class HangDetector:
    """Never returns until released (a model stuck in a native call)."""

    name = "hang"
    version = "test-1"
    cost = 5

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def warm_up(self) -> None:
        return None

    def detect(self, subject: Subject) -> DetectorResult:
        self.release.wait(60)
        return DetectorResult(self.name, self.version)


class RaiseDetector:
    name = "raise"
    version = "test-1"
    cost = 5

    def warm_up(self) -> None:
        return None

    def detect(self, subject: Subject) -> DetectorResult:
        raise DetectorError("the model crashed (test)")


class CallCounter:
    """Counts detect() calls across every instance and thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0

    def wrap(self, detector: Any) -> Any:
        inner = detector.detect

        def detect(subject: Subject) -> DetectorResult:
            with self.lock:
                self.count += 1
            return inner(subject)  # type: ignore[no-any-return]

        detector.detect = detect
        return detector


def factory(*makers: Callable[[], Detector]) -> Callable[[Any], list[Detector]]:
    return lambda _settings: [make() for make in makers]


COLOUR_BODY = (30.0, 70.0, 60.0, 45.0)
COLOUR_HEAD = (35.0, 10.0, 40.0, 50.0)
"""Boxes of one person in a 120x120 image, the face wide enough to be aged."""


class ColourExplicit:
    """Explicit score = a frame's mean red / 255 (injected scores that differ frame by frame)."""

    name, version, cost = "nudity", "test-1", 10

    def warm_up(self) -> None:
        return None

    def detect(self, subject: Subject) -> DetectorResult:
        found: list[Finding] = []
        for frame in subject.media.frames:
            score = float(frame.image[..., 0].mean()) / 255
            found.append(Explicit(frame.index, "test", round(score, 3), COLOUR_BODY))
        return DetectorResult(self.name, self.version, findings=found)


class ColourAge:
    """A screened face finder: one face per frame, apparent age = mean green / 255 x 40."""

    name, version, cost, screened = "age", "test-1", 5, True

    def __init__(self) -> None:
        self.frames_seen = 0

    def warm_up(self) -> None:
        return None

    def detect(self, subject: Subject) -> DetectorResult:
        found: list[Finding] = []
        for frame in subject.frames_to_scan():
            self.frames_seen += 1
            age = float(frame.image[..., 1].mean()) / 255 * 40
            found.append(Face(frame.index, COLOUR_HEAD, age, 4.0, finders=2))
        return DetectorResult(self.name, self.version, findings=found)
