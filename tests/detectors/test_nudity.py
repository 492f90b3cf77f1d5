"""NudityDetector: same boxes and scores as the nudenet wrapper, low scores on benign photos, and
the plumbing (score keys, notes, versions, errors). Benign images only, by design."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from fediguard.detectors.base import Detector, Subject
from fediguard.detectors.nudity import EXPLICIT_LABELS, LABELS, NudityDetector, _postprocess, _preprocess
from fediguard.errors import DetectorError, DetectorUnavailable, MediaError
from fediguard.media.frames import DecodedMedia

pytestmark = pytest.mark.slow

RGB = npt.NDArray[np.uint8]
PHOTOS = ("astronaut", "camera", "coffee", "rocket", "chelsea")
WRAPPER_NMS_SCORE = 0.25  # the wrapper's NMSBoxes score threshold (see nudity.py's docstring)


@pytest.fixture(scope="module")
def wrapper() -> object:
    from nudenet import NudeDetector

    return NudeDetector()


@pytest.mark.parametrize("name", PHOTOS)
def test_same_detections_as_the_nudenet_wrapper(
    name: str, photos: dict[str, RGB], nudity: NudityDetector, wrapper: object
) -> None:
    image = photos[name]
    # The wrapper is normally given a file, which cv2.imread reads as BGR: hand it BGR pixels.
    theirs = wrapper.detect(np.ascontiguousarray(image[:, :, ::-1]))  # type: ignore[attr-defined]
    ours = [d for d in nudity.detect_image(image) if d.score >= WRAPPER_NMS_SCORE]
    assert [(d.label, round(d.score, 3)) for d in ours] == [
        (t["class"].lower(), round(t["score"], 3)) for t in sorted(theirs, key=lambda t: -t["score"])
    ]
    for d, t in zip(ours, sorted(theirs, key=lambda t: -t["score"]), strict=True):
        assert d.score == pytest.approx(t["score"], abs=1e-3)
        assert np.allclose([int(v) for v in d.box], t["box"], atol=1)


@pytest.mark.parametrize("name", PHOTOS)
def test_same_model_input_as_the_wrapper(name: str, photos: dict[str, RGB]) -> None:
    from nudenet.nudenet import _read_image

    image = photos[name]
    theirs = _read_image(np.ascontiguousarray(image[:, :, ::-1]), 320)[0]
    ours, side = _preprocess(image)
    assert side == max(image.shape[:2])
    assert ours.shape == theirs.shape == (1, 3, 320, 320)
    assert np.abs(ours - theirs).max() < 1e-6


@pytest.mark.parametrize("seed", range(5))
def test_same_post_process_as_the_wrapper_on_synthetic_outputs(seed: int) -> None:
    """The five photos only exercise face boxes; random model outputs exercise every class, the
    score filter, scaling, clipping at the frame's edges and NMS, without any image at all."""
    from nudenet.nudenet import _postprocess as wrapper_postprocess

    rng = np.random.default_rng(seed)
    rows = 2100
    output = np.zeros((1, 4 + len(LABELS), rows), dtype=np.float32)
    output[0, 0:2] = rng.uniform(-20, 340, (2, rows))  # centres, some beyond the input
    output[0, 2:4] = rng.uniform(4, 200, (2, rows))  # widths, heights
    output[0, 4:] = rng.uniform(0, 1, (len(LABELS), rows)) ** 6  # mostly low scores, a few high
    width, height = 640, 480  # a landscape frame: padded at the bottom to 640x640
    # The wrapper's arguments: output, x_pad, y_pad, x_ratio, y_ratio, width, height, model w/h.
    theirs = wrapper_postprocess([output], 0, width - height, 1.0, width / height, width, height, 320, 320)
    ours = _postprocess(output, max(width, height), width, height, WRAPPER_NMS_SCORE)
    assert len(theirs) > 20
    mine = sorted(ours, key=lambda d: (-d.score, d.box))
    wrapper = sorted(theirs, key=lambda t: (-t["score"], t["box"]))
    assert [(d.label, round(d.score, 5)) for d in mine] == [
        (t["class"].lower(), round(t["score"], 5)) for t in wrapper
    ]
    for d, t in zip(mine, wrapper, strict=True):
        assert np.allclose([int(v) for v in d.box], t["box"], atol=1)


def test_face_boxes_match_the_known_faces(photos: dict[str, RGB], nudity: NudityDetector) -> None:
    astronaut = nudity.face_boxes(photos["astronaut"])
    assert [d.label for d in astronaut] == ["face_female"]
    x, y, w, h = astronaut[0].box
    assert 150 < x + w / 2 < 300 and 50 < y + h / 2 < 200  # her head, not her suit
    assert [d.label for d in nudity.face_boxes(photos["camera"])] == ["face_male"]
    for name in ("coffee", "rocket", "chelsea"):
        assert nudity.face_boxes(photos[name]) == []


@pytest.mark.parametrize("name", PHOTOS)
def test_benign_photos_score_low(
    name: str, photos: dict[str, RGB], nudity: NudityDetector, subject_of: Callable[..., Subject]
) -> None:
    result = nudity.detect(subject_of([photos[name]]))
    assert result.scores["explicit"] < 0.3, result.frames[0].notes


def test_score_keys_notes_and_version(
    photos: dict[str, RGB], nudity: NudityDetector, subject_of: Callable[..., Subject]
) -> None:
    assert isinstance(nudity, Detector)
    assert nudity.name == "nudity" and nudity.cost == 30
    assert "320n.onnx" in nudity.version and "scoring-" in nudity.version
    result = nudity.detect(subject_of([photos["astronaut"]]))
    assert result.detector == "nudity" and result.version == nudity.version and result.seconds > 0
    frame = result.frames[0]
    assert set(frame.scores) == set(LABELS) | {"explicit"}
    assert all(label == label.lower() for label in LABELS) and len(LABELS) == 18
    assert set(LABELS) > EXPLICIT_LABELS
    assert frame.scores["face_female"] == pytest.approx(0.72, abs=0.02)
    assert frame.scores["explicit"] == max(frame.scores[label] for label in EXPLICIT_LABELS)
    assert frame.notes and frame.notes[0].startswith("face_female 0.72 at (")
    assert result.to_json()["scores"] == result.scores


def test_min_score_filters_low_boxes(photos: dict[str, RGB], nudity: NudityDetector) -> None:
    strict = NudityDetector(min_score=0.6)
    strict.warm_up()
    assert [d.label for d in strict.detect_image(photos["astronaut"])] == ["face_female"]
    assert strict.detect_image(photos["camera"]) == []  # its face scores 0.58
    assert len(nudity.detect_image(photos["camera"])) == 1


def test_upload_scores_are_the_maximum_over_frames(
    photos: dict[str, RGB], nudity: NudityDetector, subject_of: Callable[..., Subject]
) -> None:
    result = nudity.detect(subject_of([photos["camera"], photos["astronaut"]], [3, 7]))
    assert [f.frame for f in result.frames] == [3, 7]
    for key in result.scores:
        assert result.scores[key] == max(f.scores[key] for f in result.frames)
    assert result.scores["face_female"] > 0.5 and result.scores["face_male"] > 0.5


def test_large_frame_is_shrunk_and_boxes_scaled_back(photos: dict[str, RGB], nudity: NudityDetector) -> None:
    from PIL import Image

    big = np.asarray(Image.fromarray(photos["astronaut"]).resize((2560, 2560)), dtype=np.uint8)
    faces = nudity.face_boxes(big)
    assert len(faces) == 1
    x, y, w, h = faces[0].box
    assert 600 < x + w / 2 < 1200 and 200 < y + h / 2 < 800  # 5x the 512-px coordinates


def test_errors(nudity: NudityDetector, subject_of: Callable[..., Subject]) -> None:
    with pytest.raises(DetectorError, match="RGB uint8"):
        nudity.detect_image(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(DetectorError, match="RGB uint8"):
        nudity.detect_image(np.zeros((10, 10, 3), dtype=np.float32))
    with pytest.raises(DetectorError, match="empty"):
        nudity.detect_image(np.zeros((0, 10, 3), dtype=np.uint8))

    def undecodable() -> DecodedMedia:
        raise MediaError("truncated")

    with pytest.raises(MediaError):
        nudity.detect(Subject(b"", "x", "image/png", undecodable))


def test_inference_failure_is_a_detector_error(
    photos: dict[str, RGB], monkeypatch: pytest.MonkeyPatch
) -> None:
    detector = NudityDetector()
    detector.warm_up()

    class Broken:
        def run(self, *args: object) -> object:
            raise RuntimeError("onnxruntime exploded")

    monkeypatch.setattr(detector, "_session", Broken())
    with pytest.raises(DetectorError, match="exploded"):
        detector.detect_image(photos["coffee"])


def test_missing_model_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import fediguard.detectors.nudity as module

    monkeypatch.setattr(module, "MODEL_FILE", "640m.onnx")
    detector = NudityDetector()  # building is cheap and does not load
    with pytest.raises(DetectorUnavailable, match=r"640m\.onnx"):
        detector.warm_up()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        NudityDetector(threads=0)
    with pytest.raises(ValueError):
        NudityDetector(min_score=1.5)
