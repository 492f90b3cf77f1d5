"""Detector plugins by import path (`support.plugins:sleepy`), for gateways and worker processes
started by tests and benchmarks. Their behaviour comes from environment variables so that each
process can differ while reporting the same detector versions."""

from __future__ import annotations

import os
from typing import Any

from fediguard.detectors.base import Detector
from support.detectors import ColourAge, ColourExplicit, ScoreDetector, SleepDetector


def sleepy(_settings: Any) -> Detector:
    """Sleeps FG_TEST_SLEEP_S seconds (default 0.05): a detector of fixed cost."""
    return SleepDetector(float(os.environ.get("FG_TEST_SLEEP_S", "0.05")))


def benign(_settings: Any) -> Detector:
    """Decodes the media and reports zero scores on every frame."""
    return ScoreDetector("nudity", {"explicit": 0.0})


def colour_explicit(_settings: Any) -> Detector:
    """Explicit score = a frame's mean red / 255 (known scores for `fediguard eval` tests)."""
    return ColourExplicit()


def colour_age(_settings: Any) -> Detector:
    """A screened face finder: apparent age = a frame's mean green / 255 x 40."""
    return ColourAge()
