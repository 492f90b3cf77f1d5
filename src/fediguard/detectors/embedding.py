"""Concept similarities from an image-embedding model an admin provides by path, the way
horde-safety uses CLIP: the image's embedding is compared (cosine) with fixed concept embeddings, and
a concept whose similarity reaches its threshold is found. No model ships in any package here, so
nothing runs unless ``embedding_model`` and ``embedding_concepts`` are set; nothing is downloaded.

- ``embedding_model``: an ONNX image encoder taking ``[1, 3, S, S]`` RGB float32 (``S`` from the
  model, else the concepts file's ``input_size``), normalised by the concepts file's ``mean``/``std``
  (CLIP's by default), giving one embedding ``[1, D]``.
- ``embedding_concepts``: JSON ``{"concepts": [{"name", "embedding": [D floats], "threshold",
  "kind": "explicit" | "minor"}], "input_size"?, "mean"?, "std"?}`` (the concept embeddings come
  from the model's text encoder, computed once by the admin).

Findings: an ``explicit`` concept is an :class:`Explicit` over the whole frame with score
``0.5 x similarity / threshold`` (capped at 1: a concept at its own threshold scores 0.5, the default
``explicit_threshold``); a ``minor`` concept is a :class:`Face` with no box and no age: beside
explicit content it can make a frame ``review``, never ``csam_suspect`` on its own.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from fediguard.detectors.base import DetectorResult, Explicit, Face, Finding, FrameScores, Subject
from fediguard.detectors.onnx import check_rgb_frame, file_digest, input_side, path_session
from fediguard.errors import DetectorError, DetectorUnavailable

SCORING_VERSION = "1"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
KINDS = ("explicit", "minor")


@dataclass(frozen=True)
class Concept:
    name: str
    embedding: npt.NDArray[np.float32]
    threshold: float
    kind: str


@dataclass(frozen=True)
class Concepts:
    concepts: list[Concept]
    input_size: int
    mean: npt.NDArray[np.float32]
    std: npt.NDArray[np.float32]


def load_concepts(path: Path) -> Concepts:
    """Read and check a concepts file; DetectorUnavailable naming the setting and what is wrong."""
    where = f"embedding_concepts: {path}"
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
        items = data["concepts"]
        concepts = []
        for item in items:
            vector = np.asarray(item["embedding"], dtype=np.float32)
            kind = str(item.get("kind", "explicit"))
            threshold = float(item["threshold"])
            if vector.ndim != 1 or not vector.size or not np.isfinite(vector).all() or kind not in KINDS:
                raise ValueError(
                    f"concept {item.get('name')!r}: a finite vector and a kind of {KINDS} needed"
                )
            if not 0.0 < threshold <= 1.0:
                raise ValueError(f"concept {item.get('name')!r}: threshold must be within (0, 1]")
            norm = float(np.linalg.norm(vector))
            concepts.append(Concept(str(item["name"])[:100], vector / max(norm, 1e-12), threshold, kind))
        if not concepts or len({c.embedding.size for c in concepts}) != 1:
            raise ValueError("at least one concept, all embeddings of one size")
        mean = np.asarray(data.get("mean", CLIP_MEAN), dtype=np.float32).reshape(3)
        std = np.asarray(data.get("std", CLIP_STD), dtype=np.float32).reshape(3)
        return Concepts(concepts, int(data.get("input_size", 224)), mean, std)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DetectorUnavailable(f"{where}: {exc}") from exc


class EmbeddingDetector:
    """Concept similarities per frame. Instances are not shared between threads."""

    name = "embedding"
    cost = 40

    def __init__(self, model: Path | None, concepts: Path | None, threads: int = 1) -> None:
        if model is None or concepts is None:
            raise DetectorUnavailable(
                "the embedding detector needs embedding_model and embedding_concepts set"
            )
        self.model_path = model
        self.concepts_path = concepts
        self.threads = threads
        files = f"{model.name}@{file_digest(model)}+{concepts.name}@{file_digest(concepts)}"
        self.version = f"{files}/scoring-{SCORING_VERSION}"
        self._session: ort.InferenceSession | None = None
        self._concepts: Concepts | None = None
        self._side = 224

    def _ensure_loaded(self) -> tuple[ort.InferenceSession, Concepts]:
        if self._session is None or self._concepts is None:
            concepts = load_concepts(self.concepts_path)
            session = path_session(self.model_path, "embedding_model", intra_op_num_threads=self.threads)
            try:
                self._side = input_side(session, concepts.input_size)
            except DetectorUnavailable as exc:
                raise DetectorUnavailable(f"embedding_model: {self.model_path}: {exc}") from exc
            self._session, self._concepts = session, concepts
        return self._session, self._concepts

    def warm_up(self) -> None:
        self._ensure_loaded()
        self.similarities(np.zeros((self._side, self._side, 3), dtype=np.uint8))

    def similarities(self, image: npt.NDArray[np.uint8]) -> dict[str, float]:
        """Cosine similarity of one RGB frame with every concept."""
        session, concepts = self._ensure_loaded()
        check_rgb_frame(image, "embedding")
        try:
            resized = cv2.resize(image, (self._side, self._side), interpolation=cv2.INTER_AREA)
            values = (resized.astype(np.float32) / np.float32(255.0) - concepts.mean) / concepts.std
            blob = np.ascontiguousarray(values.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)
            out = np.asarray(session.run(None, {session.get_inputs()[0].name: blob})[0], dtype=np.float32)
            vector = out.reshape(-1)
        except Exception as exc:
            raise DetectorError(
                f"embedding model failed on a {image.shape[1]}x{image.shape[0]} frame: {exc!r}"
            ) from exc
        if vector.size != concepts.concepts[0].embedding.size or not np.isfinite(vector).all():
            raise DetectorError(
                f"embedding model gave {out.shape}, concepts have {concepts.concepts[0].embedding.size}"
            )
        vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        return {c.name: float(vector @ c.embedding) for c in concepts.concepts}

    def detect(self, subject: Subject) -> DetectorResult:
        started = time.perf_counter()
        _, concepts = self._ensure_loaded()
        frames: list[FrameScores] = []
        findings: list[Finding] = []
        for frame in subject.media.frames:
            sims = self.similarities(frame.image)
            height, width = frame.image.shape[:2]
            notes = []
            for concept in concepts.concepts:
                sim = sims[concept.name]
                if sim < concept.threshold:
                    continue
                notes.append(f"concept {concept.name} {sim:.3f} >= {concept.threshold:g}")
                if concept.kind == "explicit":
                    score = min(1.0, 0.5 * max(sim, 0.0) / concept.threshold)
                    findings.append(
                        Explicit(frame.index, concept.name, score, (0.0, 0.0, float(width), float(height)))
                    )
                else:
                    findings.append(Face(frame.index, None, None, None, min(1.0, max(sim, 0.0))))
            frames.append(FrameScores(frame.index, sims, notes))
        scores: dict[str, float] = {}
        for fs in frames:
            for key, value in fs.scores.items():
                scores[key] = max(scores.get(key, value), value)
        notes = [f"frame {fs.frame}: {n}" for fs in frames for n in fs.notes][:10]
        return DetectorResult(
            self.name,
            self.version,
            scores,
            frames,
            notes or ["no concept reached its threshold"],
            seconds=time.perf_counter() - started,
            findings=findings,
        )
