"""The pure decision logic, with injected scores."""

from __future__ import annotations

from dataclasses import fields
from typing import Literal

from fediguard.detectors.base import DetectorResult, Explicit, Face, Finding, FrameScores, ListMatch, Report
from fediguard.policy import decide
from fediguard.verdicts import FailPolicy, FailReason, PolicyConfig, Verdict, fail_decision

DEFAULT = PolicyConfig()


BODY = (100.0, 150.0, 100.0, 100.0)
HEAD = (110.0, 40.0, 80.0, 90.0)
"""A face just above the explicit box, at its scale: one person."""


def nudity(*frames: tuple[int, float]) -> DetectorResult:
    return DetectorResult(
        "nudity", "t", findings=[Explicit(i, "genitalia_exposed", e, BODY) for i, e in frames]
    )


def age(*frames: tuple[int, int, float, float]) -> DetectorResult:
    """(frame, faces, age, sd): ``faces`` faces of that apparent age (none: no face at all), each
    one person's with the explicit box and seen by two face finders."""
    return DetectorResult(
        "age",
        "t",
        findings=[Face(i, HEAD, a, sd, finders=2) for i, n, a, sd in frames for _ in range(int(n))],
    )


def listing(kind: Literal["deny", "allow"], distance: float, note: str) -> DetectorResult:
    return DetectorResult("hashlist", "t", findings=[ListMatch(kind, distance, note)])


def test_explicit_and_minor_in_the_same_frame_is_csam_suspect() -> None:
    d = decide([nudity((0, 0.81)), age((0, 1, 11, 4))], DEFAULT)
    assert d.verdict is Verdict.REJECT
    assert d.labels == ("csam_suspect",)
    assert d.reasons == ("frame 0: genitalia_exposed 0.81 at (100,150,100,100); face apparent age 11 ± 4",)


def test_explicit_and_minor_in_different_frames_is_only_nsfw() -> None:
    d = decide([nudity((0, 0.9), (5, 0.1)), age((0, 0, 0, 0), (5, 1, 10, 2))], DEFAULT)
    assert d.labels == ("nsfw",) and d.verdict is Verdict.PASS


def test_explicit_alone_is_nsfw_and_rejected_only_when_configured() -> None:
    results = [nudity((3, 0.7)), age((3, 1, 35, 5))]
    assert decide(results, DEFAULT).verdict is Verdict.PASS
    assert decide(results, DEFAULT).labels == ("nsfw",)
    strict = PolicyConfig(reject_labels=frozenset({"csam_suspect", "nsfw"}))
    assert decide(results, strict).verdict is Verdict.REJECT


def test_minor_alone_passes() -> None:
    d = decide([nudity((0, 0.05)), age((0, 2, 8, 2))], DEFAULT)
    assert d.verdict is Verdict.PASS and d.labels == ()


def test_thresholds_are_honoured() -> None:
    results = [nudity((0, 0.6)), age((0, 1, 20, 3))]
    # 20 - 1*3 = 17 < 18: a minor only within the model's uncertainty, which is weak evidence.
    assert decide(results, DEFAULT).labels == ("nsfw", "review")
    assert decide(results, PolicyConfig(age_uncertainty_factor=0.0)).labels == ("nsfw",)
    assert decide(results, PolicyConfig(explicit_threshold=0.65)).labels == ()
    assert decide(results, PolicyConfig(minor_age=16)).labels == ("nsfw",)
    assert decide(results, PolicyConfig(minor_age=21)).labels == ("csam_suspect",)


def test_no_face_means_no_minor() -> None:
    assert decide([nudity((0, 0.9)), age((0, 0, 0, 0))], DEFAULT).labels == ("nsfw",)
    assert decide([nudity((0, 0.9))], DEFAULT).labels == ("nsfw",)


def test_deny_rejects_and_allow_passes() -> None:
    d = decide([listing("deny", 0, "denied: in list X")], DEFAULT)
    assert d.verdict is Verdict.REJECT and d.labels == ("denylisted",) and d.reasons == ("denied: in list X",)
    a = decide([listing("allow", 0, "allowed: bank A"), nudity((0, 0.99)), age((0, 1, 5, 1))], DEFAULT)
    assert a.verdict is Verdict.PASS and a.labels == ("allowlisted",) and a.reasons == ("allowed: bank A",)


def test_allow_beats_deny_only_when_strictly_closer() -> None:
    exact_allow = [listing("allow", 0, "allowed: exact"), listing("deny", 12, "denied: near")]
    assert decide(exact_allow, DEFAULT).verdict is Verdict.PASS
    tie = [listing("allow", 0, "allowed: exact"), listing("deny", 0, "denied: exact")]
    assert decide(tie, DEFAULT).verdict is Verdict.REJECT
    near_allow = [listing("allow", 20, "allowed: near"), listing("deny", 0, "denied: exact")]
    assert decide(near_allow, DEFAULT).verdict is Verdict.REJECT


def test_a_suspended_entry_decides_nothing_and_asks_for_a_review() -> None:
    held = DetectorResult(
        "banks", "1", findings=[ListMatch("deny", 0, "held for review: x", entry=4, suspended=True)]
    )
    alone = decide([held], DEFAULT)
    assert (
        alone.verdict is Verdict.PASS
        and alone.labels == ("review",)
        and alone.reasons == ("held for review: x",)
    )
    judged = decide([held, nudity((0, 0.99)), age((0, 1, 5, 1))], DEFAULT)
    assert judged.verdict is Verdict.REJECT and judged.labels == ("review", "csam_suspect"), (
        "the models decide"
    )
    with_allow = decide([held, listing("allow", 10, "allowed: near")], DEFAULT)
    assert with_allow.labels == ("allowlisted",), "a suspended deny entry no longer beats an allow"
    in_force = decide([held, listing("deny", 3, "denied: other")], DEFAULT)
    assert in_force.verdict is Verdict.REJECT and in_force.labels == ("denylisted", "review")


def test_fail_decision_says_what_applied() -> None:
    d = fail_decision(FailReason.DEADLINE, FailPolicy.OPEN, "no result within 8 s")
    assert d.verdict is Verdict.UNSCANNED and d.fail_policy is FailPolicy.OPEN
    assert d.reasons == ("no verdict (deadline): no result within 8 s; fail-open policy applied",)


def test_per_client_overrides(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from fediguard.config import load_settings

    toml = tmp_path / "c.toml"
    toml.write_text(
        '[client_policies.strict]\nreject_labels = ["csam_suspect", "nsfw"]\nexplicit_threshold = 0.3\n'
    )
    settings = load_settings(toml, environ={})
    base = settings.policy
    strict = settings.policy_for("strict")
    assert settings.policy_for("other") is base
    assert strict.reject_labels == frozenset({"csam_suspect", "nsfw"}) and strict.explicit_threshold == 0.3
    assert strict.minor_age == base.minor_age
    results = [nudity((0, 0.4))]
    assert decide(results, base).verdict is Verdict.PASS and decide(results, base).labels == ()
    assert decide(results, strict).verdict is Verdict.REJECT
    env = load_settings(environ={"FEDIGUARD_CLIENT_POLICIES": '{"a": {"minor_age": 21}}'})
    assert env.client_policies["a"].minor_age == 21


def test_the_face_likeliest_to_be_a_minor_decides_not_only_the_youngest_looking() -> None:
    """Faces of 20 ± 1 and 26 ± 10 in one explicit frame: the youngest-looking is no minor within
    its uncertainty (19), the other may be (16): weak evidence, ``review``."""
    result = DetectorResult(
        "age", "t", findings=[Face(0, HEAD, 20, 1, finders=2), Face(0, (300, 60, 80, 90), 26, 10, finders=2)]
    )
    d = decide([nudity((0, 0.8)), result], DEFAULT)
    assert d.labels == ("nsfw", "review") and "face apparent age 26 ± 10 (a minor only within" in d.reasons[1]
    tighter = PolicyConfig(age_uncertainty_factor=0.5)  # 26 - 5 = 21 and 20 - 0.5 = 19.5: no minor
    assert decide([nudity((0, 0.8)), result], tighter).labels == ("nsfw",)


def test_detector_results_round_trip_through_json_with_every_field() -> None:
    findings: list[Finding] = [
        Explicit(4, "x", 0.5, (1.0, 2.0, 3.0, 4.0)),
        Face(4, (5.0, 6.0, 7.0, 8.0), 30.0, 4.0, 0.9),
        Face(5, None),
        ListMatch("deny", 3.0, "denied: x", 2),
        Report("nsfw", "said so"),
    ]
    result = DetectorResult(
        "nudity", "3", {"explicit": 0.5}, [FrameScores(4, {"explicit": 0.5}, ["a note"])], ["n"], True, 0.25,
        findings,
    )  # fmt: skip
    data = result.to_json()
    assert set(data) == {f.name for f in fields(DetectorResult)}, "to_json names every field"
    assert DetectorResult.from_json(data) == result


def test_the_policy_reads_findings_by_kind_whichever_detector_found_them() -> None:
    """A plugin detector takes part without any edit to the policy: kinds decide, not names."""
    plugin = DetectorResult("my.plugin:model", "1", findings=[Explicit(2, "nsfw_class", 0.7, BODY)])
    faces = DetectorResult("another:faces", "1", findings=[Face(2, HEAD, 9, 2)])
    more = DetectorResult("third:faces", "1", findings=[Face(2, HEAD, None, None)])
    d = decide([plugin, faces, more], DEFAULT)
    assert d.labels == ("csam_suspect",) and d.reasons == (
        "frame 2: nsfw_class 0.70 at (100,150,100,100); face apparent age 9 ± 2",
    )
    report = DetectorResult("remote-scanner", "1", findings=[Report("nsfw", "it said so")])
    assert decide([report], DEFAULT).reasons == ("remote-scanner: it said so",)


def test_a_face_too_small_to_age_is_never_a_minor_but_beside_the_body_deserves_review() -> None:
    unaged = DetectorResult("age", "t", findings=[Face(0, (140, 110, 25, 25))])
    d = decide([nudity((0, 0.9)), unaged], DEFAULT)
    assert d.labels == ("nsfw", "review") and d.verdict is Verdict.PASS
    assert d.reasons[1].endswith("face too small to age at (140,110,25,25)")
    far = DetectorResult("age", "t", findings=[Face(0, (900, 900, 10, 10))])
    assert decide([nudity((0, 0.9)), far], DEFAULT).labels == ("nsfw",)
