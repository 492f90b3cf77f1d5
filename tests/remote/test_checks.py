"""What the gateway refuses of a remote worker's outcome, before any verdict is drawn from it."""

from __future__ import annotations

from fediguard.detectors.base import DetectorResult, Explicit, ListMatch
from fediguard.remote.checks import problem_with, sane_timings
from fediguard.scanning.job import ScanOutcome
from fediguard.verdicts import FailReason

FINGERPRINT = "hashlist@1+abc,nudity@3,pdq@1"


def outcome(*results: DetectorResult) -> ScanOutcome:
    return ScanOutcome(results=list(results), scanner="w")


def test_a_full_result_from_the_gateways_detectors_is_taken() -> None:
    ok = outcome(
        DetectorResult("hashlist", "1+abc"), DetectorResult("nudity", "3", findings=[Explicit(0, "x", 0.9)])
    )
    assert problem_with(ok, FINGERPRINT) is None


def test_only_list_detectors_can_allow_or_deny() -> None:
    smuggled = DetectorResult("nudity", "3", findings=[ListMatch("allow", -1.0, "allowed: x")])
    problem = problem_with(outcome(DetectorResult("hashlist", "1+abc"), smuggled), FINGERPRINT)
    assert problem is not None and "list matches from nudity" in problem
    listed = DetectorResult(
        "hashlist", "1+abc", findings=[ListMatch("allow", 0, "allowed: x")], decisive=True
    )
    assert problem_with(outcome(listed), FINGERPRINT) is None, "a list hit ends the scan early"


def test_results_from_other_detectors_or_missing_ones_are_refused() -> None:
    other = problem_with(
        outcome(DetectorResult("hashlist", "1+abc"), DetectorResult("nudity", "2")), FINGERPRINT
    )
    assert other is not None and "nudity@2" in other
    missing = problem_with(outcome(DetectorResult("hashlist", "1+abc")), FINGERPRINT)
    assert missing is not None and "no result from nudity@3" in missing


def test_a_workers_own_failure_needs_no_results() -> None:
    failed = ScanOutcome(error=FailReason.UNDECODABLE, error_detail="truncated", scanner="w")
    assert problem_with(failed, FINGERPRINT) is None


def test_a_workers_timings_are_kept_only_for_its_stages_and_within_the_deadline() -> None:
    sent = ScanOutcome(
        results=[DetectorResult("nudity", "3", seconds=1e9), DetectorResult("hashlist", "1+abc", seconds=-1)],
        timings={
            "remote:decode": 1e9,
            "remote:pdq": 0.01,
            "remote:detector:nudity": -3.0,
            "remote:detector:age": 0.5,  # a detector this gateway does not run
            "remote:made-up": 0.1,
            "remote:banks": float("nan"),
        },
    )
    kept = sane_timings(sent, FINGERPRINT, limit_s=8.0)
    assert kept.timings == {"remote:decode": 8.0, "remote:pdq": 0.01, "remote:detector:nudity": 0.0}
    assert [r.seconds for r in kept.results] == [8.0, 0.0]
