"""Pure decision logic: detector findings in, a verdict with readable reasons out. No I/O here,
and no knowledge of which detector found what: the policy reasons over the kinds of finding
(:mod:`fediguard.detectors.base`), so a plugin or a stronger model takes part without edits here.

- :class:`ListMatch` — the closest allow match passes at once, unless a deny match is at least as
  close (an exact deny beats a near allow; ties go to deny); a deny match labels ``denylisted``; a
  ``review`` match (a list that only flags) and a match of a suspended entry decide nothing and
  label ``review``, which rejects only if ``reject_labels`` lists it;
- :class:`Report` — a scanner's own yes gives its label;
- :class:`Explicit` at or above ``explicit_threshold`` in a frame (unless ``flat``: a drawn
  graphic no other body part supports) labels it ``nsfw``; or ``csam_suspect`` on strong evidence
  only: a :class:`Face` of the same person (its box near the explicit box, at the same scale), wide
  and sharp enough to be aged, seen by two face finders, whose apparent age is under ``minor_age``;
  weaker evidence (a face that is a minor only within ``age_uncertainty_factor`` x its uncertainty,
  or too small, blurred, unlinkable or seen once; or a face by the body that could not be aged)
  labels it ``nsfw`` and ``review``. docs/detection.md has the measurements behind the gates.

Which detectors may report list matches at all is a question of trust, answered where results
enter the gateway (:mod:`fediguard.remote.checks`), not here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from fediguard.detectors.base import Box, DetectorResult, Explicit, Face, ListMatch, Report
from fediguard.verdicts import (
    ALLOWLISTED,
    CSAM_SUSPECT,
    DENYLISTED,
    NSFW,
    REVIEW,
    Decision,
    PolicyConfig,
    Verdict,
)


@dataclass
class _Labels:
    labels: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(self, label: str, reason: str) -> None:
        if label not in self.labels:
            self.labels.append(label)
        self.reasons.append(reason)


def decide(results: Iterable[DetectorResult], config: PolicyConfig) -> Decision:
    """Turn detector results into a verdict. A matching allow list entry passes at once, unless a
    deny entry matches at least as closely (an exact deny beats a near allow; ties go to deny)."""
    results = list(results)
    found = _Labels()
    allow = _closest(results, "allow")
    deny = _closest(results, "deny")
    if allow is not None and (deny is None or allow[0] < deny[0]):
        return Decision(Verdict.PASS, (ALLOWLISTED,), tuple(allow[1]))
    if deny is not None:
        for note in deny[1]:
            found.add(DENYLISTED, note)
    review = _closest(results, "review")
    if review is not None:
        for note in review[1]:
            found.add(REVIEW, note)
    for result in results:
        for finding in result.findings:
            if isinstance(finding, Report):
                found.add(finding.label, f"{result.detector}: {finding.note}")
            elif isinstance(finding, ListMatch) and finding.suspended:
                found.add(REVIEW, finding.note)
    _judge_frames(results, config, found)
    rejected = any(label in config.reject_labels for label in found.labels)
    verdict = Verdict.REJECT if rejected else Verdict.PASS
    return Decision(verdict, tuple(found.labels), tuple(found.reasons))


def _closest(results: list[DetectorResult], kind: str) -> tuple[float, list[str]] | None:
    """The closest match of this list kind over all results, with the notes of the result that
    holds it (a result's matches are reported together: a bank hit names every entry it met)."""
    best: tuple[float, list[str]] | None = None
    for result in results:
        matches = [
            f for f in result.findings if isinstance(f, ListMatch) and f.list_kind == kind and not f.suspended
        ]
        if not matches:
            continue
        distance = min(m.distance for m in matches)
        if best is None or distance < best[0]:
            best = (distance, [m.note for m in matches])
    return best


def _judge_frames(results: list[DetectorResult], config: PolicyConfig, found: _Labels) -> None:
    explicit: dict[int, list[Explicit]] = {}
    faces: dict[int, list[Face]] = {}
    for result in results:
        for finding in result.findings:
            if isinstance(finding, Explicit):
                if finding.score >= config.explicit_threshold and not finding.flat:
                    explicit.setdefault(finding.frame, []).append(finding)
            elif isinstance(finding, Face):
                faces.setdefault(finding.frame, []).append(finding)
    for frame in sorted(explicit):
        boxes = sorted(explicit[frame], key=lambda e: -e.score)
        what = boxes[0].note()
        strong, weak = _face_evidence(boxes, _merge(faces.get(frame, [])), config)
        if strong is not None:
            found.add(CSAM_SUSPECT, f"frame {frame}: {what}; {strong}")
            continue
        found.add(NSFW, f"frame {frame}: {what}")
        if weak is not None:
            found.add(REVIEW, f"frame {frame}: {what}; {weak}")


MIN_AGED_FACE_PX = 32.0
"""Narrower faces are not aged reliably: the age model's 64 px chip of a smaller face is mostly
interpolation (an adult at 18 px enlarged has read 4 ± 7; docs/detection.md)."""
MIN_FACE_SHARPNESS = 150.0
"""Below this contrast-normalised variance of the Laplacian (on a 64 px grey crop of the face) a face
has less detail than a ~24 px face or one blurred with a Gaussian of sigma 2 (the astronaut's face:
1073; shrunk to 24 px and enlarged back 157; blurred sigma 2 116, sigma 3 57): too blurred to age.
Measured by bench/face_gates.py (docs/detection.md)."""
LINK_DISTANCE_FACES = 5.0
"""A face belongs to the body of an explicit box when the box is within this many face heights of
the face's centre (a standing adult measures ~7.5 heads; genitals ~4 below the chin)..."""
LINK_SCALE = 5.0
"""...and the box is at most this many times larger, or smaller, than the face (body parts measure
0.5-2 head heights at the same depth: a large graphic beside a small face is not one person)."""
AGREE_OVERLAP = 0.3
"""Two face findings of one frame are the same face when their boxes overlap this much (IoU)."""


def _merge(faces: list[Face]) -> list[Face]:
    """One face per person: overlapping findings (another detector's box of the same face) merged
    into the aged one, whose ``finders`` count the agreeing finders."""
    order = sorted(faces, key=lambda f: f.age is None)  # aged faces first: they absorb the others
    merged: list[Face] = []
    for face in order:
        for i, kept in enumerate(merged):
            if face.box is not None and kept.box is not None and _iou(face.box, kept.box) >= AGREE_OVERLAP:
                merged[i] = replace(kept, finders=kept.finders + face.finders)
                break
        else:
            merged.append(face)
    return merged


def _face_evidence(
    boxes: list[Explicit], faces: list[Face], config: PolicyConfig
) -> tuple[str | None, str | None]:
    """(strong, weak): why the frame is ``csam_suspect``, else why it deserves ``review``, else
    (None, None). Strong: a face linked to an explicit box, large and sharp enough to age, seen
    by two finders, whose apparent age is a minor's. Weak: a face that may be a minor's within the
    age model's uncertainty but falls short of that, or a face by the body that could not be aged."""
    k = config.age_uncertainty_factor
    aged_weak: str | None = None
    unaged_weak: str | None = None
    for face in sorted(faces, key=lambda f: (f.age is None, (f.age or 0.0) - k * (f.age_sd or 0.0))):
        linked = _linked(face, boxes)
        if face.age is None:
            if linked is not False and unaged_weak is None:
                unaged_weak = face.note()
            continue
        if face.age - k * (face.age_sd or 0.0) >= config.minor_age:
            continue
        problems = _gaps(face, linked)
        if face.age >= config.minor_age:
            problems.append(f"a minor only within {k:g} x its uncertainty")
        if not problems:
            return face.note(), None
        aged_weak = aged_weak or f"{face.note()} ({'; '.join(problems)})"
    return None, aged_weak or unaged_weak


def _gaps(face: Face, linked: bool | None) -> list[str]:
    """What keeps an aged face from being strong evidence."""
    gaps = []
    if linked is None:
        gaps.append("no boxes to link face and body")
    elif not linked:
        gaps.append("too far from the explicit box, or of another scale, to be the same person")
    if face.box is not None and face.box[2] < MIN_AGED_FACE_PX:
        gaps.append(f"narrower than {MIN_AGED_FACE_PX:.0f} px")
    if face.sharpness is not None and face.sharpness < MIN_FACE_SHARPNESS:
        gaps.append(f"too blurred (sharpness {face.sharpness:.0f} < {MIN_FACE_SHARPNESS:.0f})")
    if face.finders < 2:
        gaps.append("seen by one face finder only")
    return gaps


def _linked(face: Face, boxes: list[Explicit]) -> bool | None:
    """Whether the face plausibly belongs to the body of one of the explicit boxes (None: no boxes
    to tell)."""
    if face.box is None or all(e.box is None for e in boxes):
        return None
    fx, fy, fw, fh = face.box
    size = max(fh, fw, 1.0)
    cx, cy = fx + fw / 2, fy + fh / 2
    for e in boxes:
        if e.box is None:
            continue
        x, y, w, h = e.box
        dx = max(x - cx, 0.0, cx - (x + w))
        dy = max(y - cy, 0.0, cy - (y + h))
        scale = max(w, h, 1.0) / size
        if (dx * dx + dy * dy) ** 0.5 <= LINK_DISTANCE_FACES * size and 1 / LINK_SCALE <= scale <= LINK_SCALE:
            return True
    return False


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0
