"""The policy's evidence rules with injected findings: only a face of the same person, large and
sharp enough to age, seen by two finders and apparently a minor makes ``csam_suspect``; weaker
evidence is ``review``; a flat graphic alone is not explicit."""

from __future__ import annotations

from fediguard.detectors.base import Box, DetectorResult, Explicit, Face
from fediguard.policy import MIN_AGED_FACE_PX, MIN_FACE_SHARPNESS, decide
from fediguard.verdicts import CSAM_SUSPECT, LABELS, REVIEW, PolicyConfig, Verdict

DEFAULT = PolicyConfig()
BODY: Box = (200.0, 300.0, 160.0, 140.0)
HEAD: Box = (230.0, 140.0, 90.0, 110.0)


def explicit(box: Box = BODY, score: float = 0.9, flat: bool = False) -> DetectorResult:
    return DetectorResult("nudity", "t", findings=[Explicit(0, "buttocks_exposed", score, box, flat)])


def face(box: Box = HEAD, age: float | None = 11, sd: float = 3, **kw: object) -> DetectorResult:
    return DetectorResult("age", "t", findings=[Face(0, box, age, None if age is None else sd, **kw)])  # type: ignore[arg-type]


def test_strong_evidence_is_csam_suspect_and_each_missing_part_makes_it_review() -> None:
    assert decide([explicit(), face(finders=2, sharpness=900)], DEFAULT).labels == (CSAM_SUSPECT,)
    weaker = {
        "one finder": face(finders=1, sharpness=900),
        "blurred": face(finders=2, sharpness=MIN_FACE_SHARPNESS - 1),
        "too small": face((250, 240, MIN_AGED_FACE_PX - 4, MIN_AGED_FACE_PX - 4), finders=2),
        "minor only within the uncertainty": face(age=21, sd=5, finders=2),
    }
    for why, faces in weaker.items():
        d = decide([explicit(), faces], DEFAULT)
        assert d.labels == ("nsfw", REVIEW), why
        assert d.verdict is Verdict.PASS, why
    strict = PolicyConfig(reject_labels=frozenset({CSAM_SUSPECT, REVIEW}))
    assert decide([explicit(), face(finders=1)], strict).verdict is Verdict.REJECT
    assert REVIEW in LABELS


def test_another_detectors_box_of_the_same_face_is_the_second_finder() -> None:
    nudenet_face = DetectorResult("nudity", "t", findings=[Face(0, (235, 150, 85, 100), None, None, 0.7)])
    d = decide([explicit(), face(finders=1), nudenet_face], DEFAULT)
    assert d.labels == (CSAM_SUSPECT,)
    elsewhere = DetectorResult("nudity", "t", findings=[Face(0, (600, 20, 85, 100), None, None, 0.7)])
    assert decide([explicit(), face(finders=1), elsewhere], DEFAULT).labels == ("nsfw", REVIEW)


def test_a_face_beside_a_graphic_of_another_scale_or_far_away_is_not_the_same_person() -> None:
    """A collage: a large 'explicit' graphic and a small face next to it."""
    graphic = explicit((0.0, 0.0, 512.0, 512.0))
    beside = face((530, 200, 90, 100), age=12, sd=8, finders=2)
    d = decide([graphic, beside], DEFAULT)
    assert d.labels == ("nsfw", REVIEW) and "same person" in d.reasons[1]
    far = face((2000, 2000, 90, 100), age=12, sd=8, finders=2)
    assert decide([explicit(), far], DEFAULT).labels == ("nsfw", REVIEW)
    adult_far = face((2000, 2000, 90, 100), age=40, sd=5, finders=2)
    assert decide([explicit(), adult_far], DEFAULT).labels == ("nsfw",)


def test_a_face_below_the_threshold_size_or_blurred_never_makes_csam_suspect_alone() -> None:
    for faces in (
        face((260, 260, 20, 20), age=5, sd=1, finders=3, sharpness=900),
        face(age=5, sd=1, finders=3, sharpness=10),
        face(age=None, finders=3),
    ):
        labels = decide([explicit(), faces], DEFAULT).labels
        assert CSAM_SUSPECT not in labels and REVIEW in labels


def test_a_flat_graphic_alone_is_not_explicit() -> None:
    assert decide([explicit(flat=True), face(finders=2)], DEFAULT).labels == ()
    both = DetectorResult(
        "nudity", "t", findings=[Explicit(0, "a", 0.9, BODY, True), Explicit(0, "b", 0.6, BODY, False)]
    )
    assert decide([both], DEFAULT).labels == ("nsfw",)


def test_the_policy_fingerprint_names_its_version() -> None:
    assert DEFAULT.fingerprint().startswith("policy=2;")
