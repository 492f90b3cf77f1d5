"""Measuring detectors and policy on a manifest of labelled images an admin holds (`fediguard eval`).

A manifest is a CSV of ``path,label[,age]`` rows (a header row is allowed; paths are relative to the
manifest's folder). ``label`` is what the image is: ``benign``, ``nsfw`` or ``csam_suspect`` (any
label the policy gives is accepted); ``age``, when known, the real age of the person shown.

Each image runs through a :class:`~fediguard.scanning.pipeline.Pipeline` with screening off (every
detector on every frame), so the policy can then be swept over ``explicit_threshold`` and the age
factor without running a model again; then through small perturbations of its first frame (resized, JPEG
q50, a 1-px border, cropped: :data:`PERTURBATIONS`), to count label flips. Nothing is written to disk here:
perturbed images stay in memory.
"""

from __future__ import annotations

import csv
import hashlib
import io
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from fediguard.detectors.base import DetectorResult, Face
from fediguard.errors import ConfigError, MediaError
from fediguard.media.decode import MediaLimits, decode
from fediguard.policy import decide
from fediguard.scanning.pipeline import Pipeline
from fediguard.verdicts import CSAM_SUSPECT, DENYLISTED, NSFW, REVIEW, PolicyConfig

BENIGN = "benign"
RANK = (CSAM_SUSPECT, DENYLISTED, REVIEW, NSFW)
"""An image's outcome is the first of these labels the policy gave it, else ``benign``."""
EXPLICIT_OUTCOMES = frozenset({NSFW, REVIEW, CSAM_SUSPECT})
THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
FACTORS = (0.0, 0.5, 1.0, 2.0)

RGB = npt.NDArray[np.uint8]


def _png(image: RGB) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    return buf.getvalue()


def _jpeg50(image: RGB) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=50)
    return buf.getvalue()


def _resize(image: RGB) -> bytes:
    height, width = image.shape[:2]
    size = (max(1, round(width * 0.75)), max(1, round(height * 0.75)))
    return _png(np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR)))


def _border(image: RGB) -> bytes:
    return _png(np.pad(image, ((1, 1), (1, 1), (0, 0))))


def _crop(image: RGB) -> bytes:
    height, width = image.shape[:2]
    dy, dx = height // 25, width // 25
    return _png(np.ascontiguousarray(image[dy : height - dy, dx : width - dx]))


PERTURBATIONS: dict[str, Callable[[RGB], bytes]] = {
    "resize 0.75": _resize,
    "JPEG q50": _jpeg50,
    "1-px border": _border,
    "crop 4 %": _crop,
}
"""Small changes that should not change a verdict, applied to an image's first decoded frame."""


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    age: float | None = None


@dataclass
class Scored:
    """One sample's detector results (None when it could not be scanned), seconds, and the results
    of each perturbation."""

    sample: Sample
    results: list[DetectorResult] | None
    seconds: float = 0.0
    error: str | None = None
    perturbed: dict[str, list[DetectorResult]] = field(default_factory=dict)


def read_manifest(path: Path) -> list[Sample]:
    """The samples of a ``path,label[,age]`` CSV; ConfigError naming the file and line when malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read manifest {path}: {exc}") from exc
    samples: list[Sample] = []
    for number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if number == 1 and row[0].strip().lower() == "path":
            continue
        if len(row) not in (2, 3) or not row[0].strip() or not row[1].strip():
            raise ConfigError(f"manifest {path}, line {number}: expected path,label[,age], got {row!r}")
        age: float | None = None
        if len(row) == 3 and row[2].strip():
            try:
                age = float(row[2])
            except ValueError:
                raise ConfigError(f"manifest {path}, line {number}: age {row[2]!r} is not a number") from None
        image = (path.parent / row[0].strip()).resolve()
        if not image.is_file():
            raise ConfigError(f"manifest {path}, line {number}: no such file {image}")
        samples.append(Sample(image, row[1].strip().lower(), age))
    if not samples:
        raise ConfigError(f"manifest {path} lists no images")
    return samples


def scan_samples(
    samples: Sequence[Sample], pipeline: Pipeline, limits: MediaLimits, perturb: bool = True
) -> list[Scored]:
    """Run every sample (and its perturbations) through ``pipeline``, which should not screen."""
    scored: list[Scored] = []
    for sample in samples:
        data = sample.path.read_bytes()
        started = time.perf_counter()
        outcome = pipeline.run(data, hashlib.sha256(data).hexdigest(), None)
        seconds = time.perf_counter() - started
        if outcome.error is not None:
            scored.append(Scored(sample, None, seconds, f"{outcome.error.value}: {outcome.error_detail}"))
            continue
        item = Scored(sample, outcome.results, seconds)
        if perturb:
            item.perturbed = _perturbed(data, pipeline, limits)
        scored.append(item)
    return scored


def _perturbed(data: bytes, pipeline: Pipeline, limits: MediaLimits) -> dict[str, list[DetectorResult]]:
    try:
        first = decode(data, limits=limits).frames[0].image
    except (MediaError, IndexError):
        return {}
    found: dict[str, list[DetectorResult]] = {}
    for name, change in PERTURBATIONS.items():
        body = change(first)
        again = pipeline.run(body, hashlib.sha256(body).hexdigest(), None)
        if again.error is None:
            found[name] = again.results
    return found


def outcome(results: Sequence[DetectorResult], policy: PolicyConfig) -> str:
    labels = decide(results, policy).labels
    return next((label for label in RANK if label in labels), BENIGN)


@dataclass(frozen=True)
class Rates:
    """Precision and recall of one outcome against one truth, with the counts behind them."""

    true_pos: int
    false_pos: int
    false_neg: int

    @property
    def precision(self) -> float | None:
        found = self.true_pos + self.false_pos
        return self.true_pos / found if found else None

    @property
    def recall(self) -> float | None:
        real = self.true_pos + self.false_neg
        return self.true_pos / real if real else None


def rates(pairs: Sequence[tuple[bool, bool]]) -> Rates:
    """From (is it, was it flagged) pairs."""
    return Rates(
        sum(1 for truth, flag in pairs if truth and flag),
        sum(1 for truth, flag in pairs if flag and not truth),
        sum(1 for truth, flag in pairs if truth and not flag),
    )


@dataclass
class Report:
    """Everything `fediguard eval` prints for one detector set."""

    detectors: str
    images: int
    errors: list[str]
    matrix: dict[tuple[str, str], int]
    truths: list[str]
    outcomes: list[str]
    per_label: dict[str, Rates]
    current: tuple[Rates, Rates]
    """(explicit, csam_suspect) rates at the current settings."""
    sweep_threshold: list[tuple[float, Rates, Rates]]
    sweep_factor: list[tuple[float, Rates, Rates]]
    age_pairs: list[tuple[float, float]]
    no_aged_face: int
    minor_matrix: dict[tuple[bool, bool], int]
    flips: dict[str, tuple[int, int]]
    seconds: list[float]

    @property
    def age_mae(self) -> float | None:
        return statistics.fmean(abs(a - b) for a, b in self.age_pairs) if self.age_pairs else None


def _explicit_and_csam(
    scored: list[tuple[Scored, list[DetectorResult]]], policy: PolicyConfig
) -> tuple[Rates, Rates]:
    got = [(s.sample.label, outcome(r, policy)) for s, r in scored]
    explicit = rates([(t in (NSFW, CSAM_SUSPECT), o in EXPLICIT_OUTCOMES) for t, o in got])
    csam = rates([(t == CSAM_SUSPECT, o == CSAM_SUSPECT) for t, o in got])
    return explicit, csam


def youngest_face(results: Sequence[DetectorResult]) -> Face | None:
    faces = [f for r in results for f in r.findings if isinstance(f, Face) and f.age is not None]
    return min(faces, key=lambda f: f.age or 0.0) if faces else None


def summarise(detectors: str, scored: list[Scored], policy: PolicyConfig) -> Report:
    """The confusion matrix, rates, sweeps, ages, flips and times of one detector set's scan."""
    ok = [(s, s.results) for s in scored if s.results is not None]
    errors = [f"{s.sample.path}: {s.error}" for s in scored if s.results is None]
    got = [(s.sample.label, outcome(r, policy)) for s, r in ok]
    truths = sorted({t for t, _ in got}, key=_order)
    outcomes = sorted({o for _, o in got} | set(truths) | {BENIGN}, key=_order)
    matrix = {(t, o): sum(1 for pair in got if pair == (t, o)) for t in truths for o in outcomes}
    per_label = {label: rates([(t == label, o == label) for t, o in got]) for label in outcomes}
    sweep_threshold = [
        (x, *_explicit_and_csam(ok, replace(policy, explicit_threshold=x))) for x in THRESHOLDS
    ]
    sweep_factor = [(k, *_explicit_and_csam(ok, replace(policy, age_uncertainty_factor=k))) for k in FACTORS]
    age_pairs: list[tuple[float, float]] = []
    minor: dict[tuple[bool, bool], int] = {(a, b): 0 for a in (True, False) for b in (True, False)}
    missing = 0
    for s, results in ok:
        if s.sample.age is None:
            continue
        face = youngest_face(results)
        if face is None or face.age is None:
            missing += 1
            continue
        age_pairs.append((s.sample.age, face.age))
        minor[(s.sample.age < policy.minor_age, face.age < policy.minor_age)] += 1
    flips: dict[str, tuple[int, int]] = {}
    for name in PERTURBATIONS:
        changed = [
            outcome(r, policy) != outcome(s.perturbed[name], policy) for s, r in ok if name in s.perturbed
        ]
        flips[name] = (sum(changed), len(changed))
    return Report(
        detectors, len(scored), errors, matrix, truths, outcomes, per_label, _explicit_and_csam(ok, policy),
        sweep_threshold, sweep_factor,
        age_pairs, missing, minor, flips, [s.seconds for s, _ in ok],
    )  # fmt: skip


def _order(label: str) -> tuple[int, str]:
    ranked = (BENIGN, NSFW, REVIEW, DENYLISTED, CSAM_SUSPECT)
    return (ranked.index(label) if label in ranked else len(ranked), label)
