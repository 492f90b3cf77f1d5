"""The one interface every detector implements, and the results detectors return.

A detector looks at one upload (a :class:`Subject`) and returns scores, per frame where it looks
at frames. Detectors never decide: :mod:`fediguard.policy` turns their scores into a verdict, so
remote workers and the in-process scanner all follow the gateway's one configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Protocol, runtime_checkable

from fediguard.media.frames import DecodedMedia


@dataclass(frozen=True)
class FrameScores:
    """Scores a detector gave one frame, with short human-readable facts ("face apparent age 33 ± 5")."""

    frame: int
    scores: dict[str, float]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DetectorResult:
    """What one detector found in one upload.

    ``scores`` are whole-upload figures (for frame detectors: the maximum over frames, or for ages
    the minimum); ``frames`` the per-frame detail that the policy needs to tell whether two signals
    appear in the same frame. ``decisive`` means the result settles the verdict by itself (a
    hash-list hit): the pipeline then runs no costlier detector.
    """

    detector: str
    version: str
    scores: dict[str, float] = field(default_factory=dict)
    frames: list[FrameScores] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    decisive: bool = False
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        # Written out rather than dataclasses.asdict, whose deep copy was 5 % of the gateway's CPU.
        return {
            "detector": self.detector,
            "version": self.version,
            "scores": dict(self.scores),
            "frames": [
                {"frame": f.frame, "scores": dict(f.scores), "notes": list(f.notes)} for f in self.frames
            ],
            "notes": list(self.notes),
            "decisive": self.decisive,
            "seconds": self.seconds,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DetectorResult:
        """Build a result from untrusted JSON (a remote worker's answer); raises ValueError when malformed."""
        try:
            frames = [
                FrameScores(
                    frame=int(f["frame"]),
                    scores={str(k): float(v) for k, v in dict(f["scores"]).items()},
                    notes=[str(n) for n in f.get("notes", [])],
                )
                for f in data.get("frames", [])
            ]
            return cls(
                detector=str(data["detector"]),
                version=str(data["version"]),
                scores={str(k): float(v) for k, v in dict(data.get("scores", {})).items()},
                frames=frames,
                notes=[str(n) for n in data.get("notes", [])],
                decisive=bool(data.get("decisive", False)),
                seconds=float(data.get("seconds", 0.0)),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"malformed detector result: {exc!r}") from exc


class Subject:
    """One upload as detectors see it: its bytes, their SHA-256, the declared media type, and
    frames decoded on first use (so a hash-list detector never pays for decoding)."""

    def __init__(
        self,
        data: bytes,
        sha256: str,
        media_type: str | None,
        decode: Callable[[], DecodedMedia],
    ) -> None:
        self.data = data
        self.sha256 = sha256
        self.media_type = media_type
        self._decode = decode

    @cached_property
    def media(self) -> DecodedMedia:
        """The decoded media; raises :class:`fediguard.errors.MediaError` when undecodable."""
        return self._decode()


@runtime_checkable
class Detector(Protocol):
    """A detector. Instances are not shared between threads: the scanner makes one per thread.

    ``cost`` orders detectors (cheapest first; 0 means it needs no decoding). ``version`` changes
    whenever its model or its scoring changes, so cached decisions are invalidated.
    """

    name: str
    version: str
    cost: int

    def warm_up(self) -> None:
        """Load models and run once on a blank input, so the first real upload is not slow."""
        ...

    def detect(self, subject: Subject) -> DetectorResult:
        """Score one upload. Raises MediaError when the media cannot be decoded, DetectorError on failure."""
        ...
