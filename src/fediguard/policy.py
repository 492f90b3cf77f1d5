"""Pure decision logic: detector findings in, a verdict with readable reasons out. No I/O here,
and no knowledge of which detector found what: the policy reasons over the kinds of finding
(:mod:`fediguard.detectors.base`), so a plugin or a stronger model takes part without edits here.

- :class:`ListMatch` — the closest allow match passes at once, unless a deny match is at least as
  close (an exact deny beats a near allow; ties go to deny); a deny match labels ``denylisted``; a
  ``review`` match (a list that only flags) and a match of a suspended entry decide nothing and
  label ``review``, which rejects only if ``reject_labels`` lists it;
- :class:`Report` — a scanner's own yes gives its label;
- :class:`Explicit` at or above ``explicit_threshold`` in a frame labels it ``nsfw``, or
  ``csam_suspect`` when a :class:`Face` in the same frame may be a minor's.

Which detectors may report list matches at all is a question of trust, answered where results
enter the gateway (:mod:`fediguard.remote.checks`), not here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from fediguard.detectors.base import DetectorResult, Explicit, Face, ListMatch, Report
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
    explicit: dict[int, Explicit] = {}
    faces: dict[int, list[Face]] = {}
    for result in results:
        for finding in result.findings:
            if isinstance(finding, Explicit) and finding.score >= config.explicit_threshold:
                top = explicit.get(finding.frame)
                if top is None or finding.score > top.score:
                    explicit[finding.frame] = finding
            elif isinstance(finding, Face) and finding.age is not None:
                faces.setdefault(finding.frame, []).append(finding)
    for frame in sorted(explicit):
        what = explicit[frame].note()
        minor = _apparent_minor(faces.get(frame, []), config)
        if minor is not None:
            found.add(CSAM_SUSPECT, f"frame {frame}: {what}; {minor.note()}")
        else:
            found.add(NSFW, f"frame {frame}: {what}")


def _apparent_minor(faces: list[Face], config: PolicyConfig) -> Face | None:
    """The face in a frame that may be a minor's, counting each face's uncertainty: the face with
    the lowest age - factor * sd decides, which is not always the youngest-looking."""
    if not faces:
        return None
    k = config.age_uncertainty_factor
    face = min(faces, key=lambda f: (f.age or 0.0) - k * (f.age_sd or 0.0))
    if (face.age or 0.0) - k * (face.age_sd or 0.0) >= config.minor_age:
        return None
    return face
