"""What the gateway refuses of a remote worker's outcome, before any verdict is drawn from it."""

from __future__ import annotations

from fediguard.detectors.base import DetectorResult, Explicit, ListMatch
from fediguard.remote.checks import problem_with
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
