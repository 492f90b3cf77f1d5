"""Pure decision logic: detector scores in, a verdict with readable reasons out. No I/O here.

Score names this module reads (a detector that wants to take part publishes these):
- hash lists and banks: ``deny`` / ``allow`` (1.0 on a match) with ``deny_distance`` /
  ``allow_distance`` (0 for an exact SHA-256 match, the Hamming distance for PDQ), and notes that
  start with ``denied:`` / ``allowed:``;
- ``nudity``: per frame ``explicit`` (0..1);
- ``age``: per frame ``faces``, ``min_age`` and ``min_age_sd`` (years);
- scanners that decide themselves (fedi-safety workers): ``csam`` / ``nsfw`` (1.0 when reported).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from fediguard.config import FailPolicy, Settings
from fediguard.detectors.base import DetectorResult, FrameScores


class Verdict(StrEnum):
    PASS = "pass"  # noqa: S105 - a verdict, not a password
    REJECT = "reject"
    UNSCANNED = "unscanned"


class FailReason(StrEnum):
    """Why no verdict could be reached; each is answered by the admin's fail policy."""

    DEADLINE = "deadline"
    QUEUE_FULL = "queue_full"
    NO_SCANNER = "no_scanner"
    SCANNER_ERROR = "scanner_error"
    UNDECODABLE = "undecodable"
    TOO_LARGE = "too_large"


LABELS: tuple[str, ...] = ("csam_suspect", "nsfw", "denylisted")
"""Labels an admin may list in ``reject_labels``. ``allowlisted`` is not among them: it always passes."""


@dataclass(frozen=True)
class PolicyConfig:
    reject_labels: frozenset[str] = frozenset({"csam_suspect", "denylisted"})
    explicit_threshold: float = 0.5
    minor_age: float = 18.0
    age_uncertainty_factor: float = 1.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicyConfig:
        return cls(
            reject_labels=frozenset(settings.reject_labels),
            explicit_threshold=settings.explicit_threshold,
            minor_age=settings.minor_age,
            age_uncertainty_factor=settings.age_uncertainty_factor,
        )

    def for_client(self, client: str, settings: Settings) -> PolicyConfig:
        """This policy with the client's overrides (``client_policies``) applied, if it has any."""
        override = settings.client_policies.get(client)
        if override is None:
            return self
        return PolicyConfig(
            reject_labels=frozenset(override.reject_labels)
            if override.reject_labels is not None
            else self.reject_labels,
            explicit_threshold=_pick(override.explicit_threshold, self.explicit_threshold),
            minor_age=_pick(override.minor_age, self.minor_age),
            age_uncertainty_factor=_pick(override.age_uncertainty_factor, self.age_uncertainty_factor),
        )

    def fingerprint(self) -> str:
        """Changes whenever a setting that affects verdicts changes (for cached decisions)."""
        return (
            f"reject={','.join(sorted(self.reject_labels))};explicit={self.explicit_threshold};"
            f"minor={self.minor_age};k={self.age_uncertainty_factor}"
        )


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    labels: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    fail_reason: FailReason | None = None
    fail_policy: FailPolicy | None = None


@dataclass
class _Findings:
    labels: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)

    def add(self, label: str, reason: str) -> None:
        if label not in self.labels:
            self.labels.append(label)
        self.reasons.append(reason)


LIST_DETECTORS = frozenset({"hashlist", "banks"})
"""The detectors whose ``deny``/``allow`` scores the policy reads: lists of known images. The same
keys from any other detector (a faulty plugin, a remote worker's made-up result) are ignored."""


def decide(results: Iterable[DetectorResult], config: PolicyConfig) -> Decision:
    """Turn detector results into a verdict. A matching allow list entry passes at once, unless a
    deny entry matches at least as closely (an exact deny beats a near allow; ties go to deny)."""
    by_name: dict[str, DetectorResult] = {}
    lists: list[DetectorResult] = []
    for result in results:
        by_name[result.detector] = result
        if result.detector in LIST_DETECTORS and ("deny" in result.scores or "allow" in result.scores):
            lists.append(result)

    found = _Findings()
    allow = _closest(lists, "allow")
    deny = _closest(lists, "deny")
    if allow is not None and (deny is None or allow[0] < deny[0]):
        return Decision(Verdict.PASS, ("allowlisted",), tuple(allow[1]))
    if deny is not None:
        for note in deny[1]:
            found.add("denylisted", note)

    _judge_reports(by_name.values(), found)
    _judge_frames(by_name.get("nudity"), by_name.get("age"), config, found)
    rejected = any(label in config.reject_labels for label in found.labels)
    verdict = Verdict.REJECT if rejected else Verdict.PASS
    return Decision(verdict, tuple(found.labels), tuple(found.reasons))


_NOTE_PREFIX = {"allow": "allowed", "deny": "denied"}
"""List detectors start their notes with these words, so a result holding both kinds stays readable."""


def _closest(lists: list[DetectorResult], kind: str) -> tuple[float, list[str]] | None:
    best: tuple[float, list[str]] | None = None
    for result in lists:
        if result.scores.get(kind, 0.0) < 1.0:
            continue
        distance = result.scores.get(f"{kind}_distance", 0.0)
        prefix = _NOTE_PREFIX[kind]
        notes = [n for n in result.notes if n.startswith(prefix)] or [f"{prefix}: {result.detector}"]
        if best is None or distance < best[0]:
            best = (distance, notes)
    return best


def _judge_reports(results: Iterable[DetectorResult], found: _Findings) -> None:
    """Scanners that answer yes/no themselves (fedi-safety workers) publish ``csam`` / ``nsfw``."""
    for result in results:
        note = "; ".join(result.notes) or result.detector
        if result.scores.get("csam", 0.0) >= 1.0:
            found.add("csam_suspect", f"{result.detector}: {note}")
        elif result.scores.get("nsfw", 0.0) >= 1.0:
            found.add("nsfw", f"{result.detector}: {note}")


def _judge_frames(
    nudity: DetectorResult | None,
    age: DetectorResult | None,
    config: PolicyConfig,
    found: _Findings,
) -> None:
    if nudity is None:
        return
    ages: Mapping[int, FrameScores] = {f.frame: f for f in age.frames} if age else {}
    for frame in nudity.frames:
        explicit = frame.scores.get("explicit", 0.0)
        if explicit < config.explicit_threshold:
            continue
        what = _top_note(frame) or f"explicit {explicit:.2f}"
        minor = _apparent_minor(ages.get(frame.frame), config)
        if minor is not None:
            found.add("csam_suspect", f"frame {frame.frame}: {what}; {minor}")
        else:
            found.add("nsfw", f"frame {frame.frame}: {what}")


def _apparent_minor(frame: FrameScores | None, config: PolicyConfig) -> str | None:
    """The reason text when a face in this frame may be a minor, counting each face's uncertainty:
    the face with the lowest age - factor * sd decides, which is not always the youngest-looking."""
    if frame is None or frame.scores.get("faces", 0.0) < 1:
        return None
    faces = _face_ages(frame.scores)
    if not faces:
        return None
    k = config.age_uncertainty_factor
    age, sd = min(faces, key=lambda face: face[0] - k * face[1])
    if age - k * sd >= config.minor_age:
        return None
    return f"face apparent age {age:.0f} ± {sd:.0f}"


def _face_ages(scores: dict[str, float]) -> list[tuple[float, float]]:
    """(age, sd) of every aged face: ``face<i>_age``/``_sd`` when the detector lists faces, else the
    youngest face's ``min_age``/``min_age_sd`` (detectors that report only that)."""
    faces = []
    i = 0
    while f"face{i}_age" in scores:
        faces.append((scores[f"face{i}_age"], scores.get(f"face{i}_age_sd", 0.0)))
        i += 1
    if not faces and "min_age" in scores:
        faces.append((scores["min_age"], scores.get("min_age_sd", 0.0)))
    return faces


def _top_note(frame: FrameScores) -> str | None:
    return frame.notes[0] if frame.notes else None


def fail_decision(reason: FailReason, policy: FailPolicy, detail: str) -> Decision:
    """The admin's fail policy applied to a case where no verdict could be reached."""
    text = f"no verdict ({reason.value}): {detail}; fail-{policy.value} policy applied"
    return Decision(Verdict.UNSCANNED, (), (text,), reason, policy)
