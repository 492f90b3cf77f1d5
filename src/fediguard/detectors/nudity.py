"""Nudity scores from NudeNet's ``320n.onnx`` detector, run directly through onnxruntime.

The model file comes from the installed ``nudenet`` wheel; the wrapper class is not used because
its post-process is a Python loop over ~2,100 rows (15 ms a frame) and it builds its session with
default threading. Pre- and post-processing here reproduce ``nudenet.NudeDetector.detect`` (3.4.2)
step for step, and ``tests/detectors/test_nudity.py`` checks the results agree with it:

- pad the frame with black at the bottom/right to a square, resize to 320x320 (bilinear);
- feed the model **BGR**, float32 in [0, 1], NCHW. The wrapper ends up feeding BGR when given a
  file (``cv2.imread`` gives BGR, its ``cvtColor`` and ``blobFromImage(swapRB=True)`` swap twice),
  and the model's scores change when fed RGB, so that order is kept;
- one box per output row: best class, score ≥ ``min_score``; scale back, clip to the frame;
- class-agnostic NMS at IoU 0.45 (``cv2.dnn.NMSBoxes``, as the wrapper).

One difference, on purpose: the wrapper's ``NMSBoxes`` call uses a score threshold of 0.25, so it
silently drops boxes scoring 0.2-0.25 that its own 0.2 filter let through. Here the one threshold
is ``min_score`` (default 0.2). Lower-scored boxes never suppress higher ones in greedy NMS, so
every box ≥ 0.25 is the same as the wrapper's.

Scores per frame: every NudeNet class, lower-cased (0.0 when not found), plus ``explicit``, the
highest score among :data:`EXPLICIT_LABELS`. Whole-upload scores are the maximum over frames.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from fediguard.detectors.base import DetectorResult, Explicit, Face, Finding, FrameScores, Subject
from fediguard.detectors.imagestats import MIN_TEXTURE, texture
from fediguard.detectors.onnx import (
    check_rgb_frame,
    cpu_session,
    file_digest,
    input_side,
    package_file,
    package_version,
    path_session,
)
from fediguard.errors import DetectorError, DetectorUnavailable

__all__ = ["EXPLICIT_LABELS", "FACE_LABELS", "LABELS", "Detection", "NudityDetector"]

LABELS: tuple[str, ...] = (
    "female_genitalia_covered",
    "face_female",
    "buttocks_exposed",
    "female_breast_exposed",
    "female_genitalia_exposed",
    "male_breast_exposed",
    "anus_exposed",
    "feet_exposed",
    "belly_covered",
    "feet_covered",
    "armpits_covered",
    "armpits_exposed",
    "face_male",
    "belly_exposed",
    "male_genitalia_exposed",
    "anus_covered",
    "female_breast_covered",
    "buttocks_covered",
)
"""NudeNet 3.4's classes in the model's output order, lower-cased."""

EXPLICIT_LABELS: frozenset[str] = frozenset(
    {
        "female_genitalia_exposed",
        "male_genitalia_exposed",
        "anus_exposed",
        "female_breast_exposed",
        "buttocks_exposed",
    }
)
"""Exposed sexual body parts; ``explicit`` is the highest of their scores. Male breasts, bellies,
feet, armpits and all covered classes are left out: they are ordinary in benign photos."""

FACE_LABELS: tuple[str, ...] = ("face_female", "face_male")

MODEL_FILE = "320n.onnx"
SCORING_VERSION = "2"
"""Bump when pre/post-processing, the label set or ``explicit`` changes: it invalidates cached verdicts."""

_INPUT_SIZE = 320
_NMS_IOU = 0.45
_MAX_SIDE = 1280
"""Frames arrive with a long side ≤ 1280; a larger one is shrunk first so the square padding stays small."""
_MAX_NOTES = 12

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Detection:
    """One NudeNet box: lower-case label, score, and ``(x, y, w, h)`` in the frame's pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]

    def note(self) -> str:
        x, y, w, h = (round(v) for v in self.box)
        return f"{self.label} {self.score:.2f} at ({x},{y},{w},{h})"


class NudityDetector:
    """NudeNet nudity detector. Instances are not shared between threads: the scanner makes one per
    thread (each holds its own onnxruntime session, ~50 MB resident)."""

    name = "nudity"
    cost = 30

    def __init__(self, threads: int = 1, min_score: float = 0.2, model_path: Path | None = None) -> None:
        """``threads``: onnxruntime intra-op threads for this instance (1 is best when there is one
        instance per core). ``min_score``: boxes scoring below are ignored. ``model_path``: a
        NudeNet-style detector of the same classes and output layout ([1, 4 + 18, anchors]) to load
        instead of the shipped 320n, e.g. NudeNet's 640m (setting ``nudity_model``); its input side
        is read from the model (320 when dynamic), and it runs on CUDA when onnxruntime has it."""
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if not 0.0 < min_score < 1.0:
            raise ValueError(f"min_score must be between 0 and 1, got {min_score}")
        self.threads = threads
        self.min_score = min_score
        self.model_path = model_path
        if model_path is None:
            self.version = f"nudenet-{package_version('nudenet')}/{MODEL_FILE}/scoring-{SCORING_VERSION}"
        else:
            self.version = f"{model_path.name}@{file_digest(model_path)}/scoring-{SCORING_VERSION}"
        self._session: ort.InferenceSession | None = None
        self._input_name = ""
        self._side = _INPUT_SIZE

    # ------------------------------------------------------------------ loading

    def _ensure_loaded(self) -> ort.InferenceSession:
        """Load the model on first use, so building a detector (e.g. to read its version) is cheap."""
        if self._session is None:
            if self.model_path is None:
                path = package_file("nudenet", MODEL_FILE)
                session = cpu_session(path, intra_op_num_threads=self.threads)
            else:
                path = self.model_path
                session = path_session(path, "nudity_model", intra_op_num_threads=self.threads)
            try:
                side = input_side(session, _INPUT_SIZE)
            except DetectorUnavailable as exc:
                raise DetectorUnavailable(f"{path}: {exc}") from exc
            classes = session.get_outputs()[0].shape
            if len(classes) == 3 and isinstance(classes[1], int) and classes[1] != 4 + len(LABELS):
                raise DetectorUnavailable(
                    f"{path} gives {classes[1]} values per box, expected 4 + {len(LABELS)} (NudeNet's)"
                )
            self._input_name = session.get_inputs()[0].name
            self._side = side
            self._session = session
        return self._session

    def warm_up(self) -> None:
        """Load the model and run it once on a blank frame. Raises DetectorUnavailable when it cannot load."""
        self._ensure_loaded()
        self.detect_image(np.zeros((self._side, self._side, 3), dtype=np.uint8))

    # ------------------------------------------------------------------ scoring

    def detect(self, subject: Subject) -> DetectorResult:
        """Score every frame. MediaError (undecodable) and DetectorUnavailable (model cannot load)
        pass through; any failure while scoring becomes DetectorError."""
        started = time.perf_counter()
        media = subject.media
        self._ensure_loaded()
        frames: list[FrameScores] = []
        findings: list[Finding] = []
        for frame in media.frames:
            found = self.detect_image(frame.image)
            frames.append(self.frame_scores(frame.index, found))
            findings.extend(frame_findings(frame.index, frame.image, found))
        scores: dict[str, float] = {}
        for fs in frames:
            for key, value in fs.scores.items():
                scores[key] = max(scores.get(key, 0.0), value)
        notes = _upload_notes(frames) if frames else ["no frames to scan"]
        return DetectorResult(
            detector=self.name,
            version=self.version,
            scores=scores,
            frames=frames,
            notes=notes,
            seconds=time.perf_counter() - started,
            findings=findings,
        )

    def detect_image(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        """NudeNet's boxes in one RGB ``uint8`` frame (H, W, 3), highest score first."""
        session = self._ensure_loaded()
        check_rgb_frame(image, "nudity")
        try:
            height, width = image.shape[:2]
            shrink = min(1.0, _MAX_SIDE / max(height, width))
            frame = image
            if shrink < 1.0:
                size = (max(1, round(width * shrink)), max(1, round(height * shrink)))
                frame = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)
            blob, side = _preprocess(frame, self._side)
            output = session.run(None, {self._input_name: blob})[0]
            found = _postprocess(output, side, frame.shape[1], frame.shape[0], self.min_score, self._side)
        except Exception as exc:
            raise DetectorError(f"nudity model failed on a {width}x{height} frame: {exc!r}") from exc
        if shrink < 1.0:
            found = [
                Detection(
                    d.label,
                    d.score,
                    (d.box[0] / shrink, d.box[1] / shrink, d.box[2] / shrink, d.box[3] / shrink),
                )
                for d in found
            ]
        return found

    def face_boxes(self, image: npt.NDArray[np.uint8]) -> list[Detection]:
        """The faces NudeNet finds in one RGB frame (``face_female`` / ``face_male``), e.g. to
        cross-check another face finder."""
        return [d for d in self.detect_image(image) if d.label in FACE_LABELS]

    def frame_scores(self, index: int, detections: Iterable[Detection]) -> FrameScores:
        """Per-class maxima, ``explicit`` and notes (explicit findings first, so the policy's first
        note is the strongest reason) for one frame's detections."""
        scores = dict.fromkeys(LABELS, 0.0)
        found = sorted(detections, key=lambda d: (d.label not in EXPLICIT_LABELS, -d.score))
        for d in found:
            scores[d.label] = max(scores[d.label], d.score)
        scores["explicit"] = max(scores[label] for label in EXPLICIT_LABELS)
        return FrameScores(frame=index, scores=scores, notes=[d.note() for d in found[:_MAX_NOTES]])


FACE_FINDING_SCORE = 0.4
"""NudeNet's face boxes at or above this score are reported as faces (not aged), so the policy can
check another face finder's face against them (astronaut 0.72, camera man 0.58; no box on coffee,
rocket, chelsea or drawings)."""


def frame_findings(index: int, image: npt.NDArray[np.uint8], found: list[Detection]) -> list[Finding]:
    """The policy's view of one frame's boxes: explicit ones, each marked ``flat`` when its region has
    no photographic texture (:data:`~fediguard.detectors.imagestats.MIN_TEXTURE`) and no other body
    class was found in the frame; and the faces NudeNet saw."""
    body = {d.label for d in found if d.label not in FACE_LABELS}
    findings: list[Finding] = []
    for d in found:
        if d.label in EXPLICIT_LABELS:
            alone = not (body - {d.label})
            flat = alone and texture(image, d.box) < MIN_TEXTURE
            findings.append(Explicit(index, d.label, d.score, d.box, flat))
        elif d.label in FACE_LABELS and d.score >= FACE_FINDING_SCORE:
            findings.append(Face(index, d.box, None, None, d.score))
    return findings


def _preprocess(image: npt.NDArray[np.uint8], size: int = _INPUT_SIZE) -> tuple[FloatArray, int]:
    """The model input for an RGB frame, and the side of the square it was padded to."""
    height, width = image.shape[:2]
    side = max(height, width)
    # Pad first, then resize the square, exactly as the wrapper: resizing first and padding after
    # blends the edge pixels differently and moves scores slightly.
    padded = np.zeros((side, side, 3), dtype=np.uint8)
    padded[:height, :width] = image
    resized = cv2.resize(padded, (size, size), interpolation=cv2.INTER_LINEAR)
    bgr = resized[:, :, ::-1]  # the channel order the wrapper feeds (see module docstring)
    blob = bgr.transpose(2, 0, 1)[np.newaxis].astype(np.float32) * np.float32(1.0 / 255.0)
    return np.ascontiguousarray(blob), side


def _postprocess(
    output: FloatArray, side: int, width: int, height: int, min_score: float, size: int = _INPUT_SIZE
) -> list[Detection]:
    """Vectorised equivalent of the wrapper's per-row loop, then its NMS."""
    rows = np.asarray(output, dtype=np.float32)[0].T  # (anchors, 4 + classes)
    class_scores = rows[:, 4:]
    best = class_scores.max(axis=1)
    keep = best >= min_score
    if not keep.any():
        return []
    rows, best = rows[keep], best[keep]
    class_ids = class_scores[keep].argmax(axis=1)
    # float32 arithmetic, as the wrapper (its values are numpy float32 scalars).
    scale = np.float32(side / size)
    cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    x = np.clip((cx - w / 2) * scale, 0, width)
    y = np.clip((cy - h / 2) * scale, 0, height)
    w = np.minimum(w * scale, width - x)
    h = np.minimum(h * scale, height - y)
    boxes = np.stack([x, y, w, h], axis=1).astype(np.float64)
    kept = cv2.dnn.NMSBoxes(boxes.tolist(), best.astype(np.float64).tolist(), min_score, _NMS_IOU)
    order = sorted(np.asarray(kept, dtype=np.int64).reshape(-1).tolist(), key=lambda i: -float(best[i]))
    return [
        Detection(
            LABELS[int(class_ids[i])], float(best[i]), (float(x[i]), float(y[i]), float(w[i]), float(h[i]))
        )
        for i in order
    ]


def _upload_notes(frames: list[FrameScores]) -> list[str]:
    """Explicit findings across frames, strongest first (frame-prefixed), or a one-line all-clear."""
    explicit = [
        (fs.scores["explicit"], f"frame {fs.frame}: {fs.notes[0]}")
        for fs in frames
        if fs.scores.get("explicit", 0.0) > 0.0 and fs.notes
    ]
    if not explicit:
        return [f"no exposed sexual body part scored >= min_score in {len(frames)} frame(s)"]
    return [note for _, note in sorted(explicit, key=lambda item: -item[0])[:5]]
