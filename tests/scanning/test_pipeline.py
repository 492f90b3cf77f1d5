"""The pipeline on its own: cheapest detector first, stops at a list hit, hashes frames regardless."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from fediguard.banks.pdq import FrameHash
from fediguard.detectors.base import DetectorResult
from fediguard.detectors.hashlist import HashListDetector
from fediguard.media.decode import MediaLimits
from fediguard.scanning.pipeline import Pipeline
from support.detectors import CallCounter, ScoreDetector
from support.images import drawn_png


class _Banks:
    """A BankCheck that records what it was asked and matches nothing."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def check(self, hashes: Sequence[FrameHash]) -> DetectorResult | None:
        self.asked.append([h.hash.hex for h in hashes])
        return None


def _pipeline(tmp_path: Path, denied: bytes, counter: CallCounter) -> Pipeline:
    deny = tmp_path / "deny.txt"
    deny.write_text(hashlib.sha256(denied).hexdigest() + "\n")
    detectors = [HashListDetector(deny_file=deny), counter.wrap(ScoreDetector("nudity", {"explicit": 0.0}))]
    return Pipeline(detectors, MediaLimits(), hash_frames=True)


def test_a_list_deny_runs_no_model_but_hashes_the_frames(tmp_path: Path) -> None:
    counter, banks = CallCounter(), _Banks()
    body = drawn_png()
    outcome = _pipeline(tmp_path, body, counter).run(
        body, hashlib.sha256(body).hexdigest(), "image/png", banks
    )
    assert outcome.error is None and counter.count == 0
    assert [r.detector for r in outcome.results] == ["hashlist"] and outcome.results[0].scores["deny"] == 1.0
    assert outcome.pdq and len(banks.asked) == 1 and banks.asked[0] == [outcome.pdq[0].hash.hex]


def test_a_list_deny_of_undecodable_bytes_still_stands(tmp_path: Path) -> None:
    counter = CallCounter()
    junk = b"\x89PNG\r\n\x1a\n" + b"not really" * 20
    outcome = _pipeline(tmp_path, junk, counter).run(junk, hashlib.sha256(junk).hexdigest(), "image/png")
    assert outcome.error is None and outcome.pdq is None
    assert outcome.results[0].scores["deny"] == 1.0 and counter.count == 0


def test_without_a_list_hit_the_models_run_after_the_banks_check(tmp_path: Path) -> None:
    counter, banks = CallCounter(), _Banks()
    body = drawn_png(colour=(10, 200, 30))
    outcome = _pipeline(tmp_path, b"other", counter).run(
        body, hashlib.sha256(body).hexdigest(), "image/png", banks
    )
    assert outcome.error is None and counter.count == 1 and len(banks.asked) == 1
    assert [r.detector for r in outcome.results] == ["hashlist", "nudity"]
