"""The one interface every detector implements, and the results detectors return.

A detector looks at one upload (a :class:`Subject`) and returns a :class:`DetectorResult`: its
**findings**, typed by kind, which are all the policy reads, plus scores and notes per frame that
people read (``fediguard scan --explain``, the records). Detectors never decide:
:mod:`fediguard.policy` turns findings into a verdict, so remote workers, plugins and the in-process
scanner all follow the gateway's one configuration. The kinds (documented in docs/architecture.md):

- :class:`Explicit` — explicit sexual content in a frame: a class label, a score and a box;
- :class:`Face` — a face in a frame: a box and, when it could be aged, apparent age ± uncertainty;
- :class:`ListMatch` — the upload matches a list of known images (deny or allow) at a distance;
- :class:`Report` — a scanner that decides by itself (a fedi-safety worker) says yes to a label.

A new detector reports what it finds in these kinds and needs no change to the policy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol, runtime_checkable

from fediguard.media.frames import DecodedMedia, Frame

Box = tuple[float, float, float, float]
"""``(x, y, w, h)`` in the pixels of the frame the detector was given."""


def _box_text(box: Box | None) -> str:
    if box is None:
        return ""
    x, y, w, h = (round(v) for v in box)
    return f" at ({x},{y},{w},{h})"


@dataclass(frozen=True)
class Explicit:
    """Explicit sexual content in one frame: the detector's class label, its score (0..1) and box."""

    frame: int
    label: str
    score: float
    box: Box | None = None
    flat: bool = False
    """The box looks drawn (flat or smoothly shaded colours, no photographic texture) and no other
    body part in the frame supports it: the policy does not count it as explicit."""
    kind: Literal["explicit"] = "explicit"

    def note(self) -> str:
        flat = " (flat graphic, not counted)" if self.flat else ""
        return f"{self.label} {self.score:.2f}{_box_text(self.box)}{flat}"


@dataclass(frozen=True)
class Face:
    """A face in one frame. ``age``/``age_sd`` (years) are None when the face could not be aged
    (too small, say): it never makes a frame ``csam_suspect``, though beside explicit content it
    makes it ``review``. ``sharpness`` is the face's contrast-normalised variance of the Laplacian
    (:func:`fediguard.detectors.imagestats.face_sharpness`; None: not measured); ``finders`` how many
    independent face finders agree on this box (other detectors' overlapping faces add to it)."""

    frame: int
    box: Box | None = None
    age: float | None = None
    age_sd: float | None = None
    score: float = 1.0
    sharpness: float | None = None
    finders: int = 1
    kind: Literal["face"] = "face"

    def note(self) -> str:
        if self.age is None:
            return f"face too small to age{_box_text(self.box)}"
        return f"face apparent age {self.age:.0f} ± {self.age_sd or 0.0:.0f}"


@dataclass(frozen=True)
class ListMatch:
    """The upload (or one frame of it) matches an entry of a list of known images.

    ``list_kind`` is ``deny`` or ``allow``, or ``review`` for a list whose matches only flag the
    upload for an admin's review (a feed subscribed that way: banks/feeds/); ``distance`` is 0 for
    an exact (SHA-256) match, else the PDQ Hamming distance; ``note`` says which list and entry
    ("denied: matches bank 'x' entry 4 …"); ``entry`` is that bank entry's id (None for lists that
    are not banks). A ``suspended`` match is of an entry the flood guard took out of force: it
    decides nothing and asks for a review."""

    list_kind: Literal["deny", "allow", "review"]
    distance: float
    note: str
    frame: int | None = None
    kind: Literal["list_match"] = "list_match"
    entry: int | None = None
    suspended: bool = False


@dataclass(frozen=True)
class Report:
    """A scanner that decides by itself says this upload deserves ``label`` (``csam_suspect`` or
    ``nsfw``), for the reason in ``note``."""

    label: Literal["csam_suspect", "nsfw"]
    note: str
    kind: Literal["report"] = "report"


Finding = Explicit | Face | ListMatch | Report


def finding_to_json(finding: Finding) -> dict[str, Any]:
    data: dict[str, Any] = {k: getattr(finding, k) for k in finding.__dataclass_fields__}
    if isinstance(finding, Explicit | Face) and finding.box is not None:
        data["box"] = list(finding.box)
    return data


def finding_from_json(data: Any) -> Finding:
    """Parse one untrusted finding (a remote worker's); ValueError when malformed."""
    if not isinstance(data, dict):
        raise ValueError("a finding must be a JSON object")
    kind = data.get("kind")
    if kind == "explicit":
        return Explicit(int(data["frame"]), str(data["label"])[:100], _unit(data["score"]),
                        _box(data.get("box")), bool(data.get("flat", False)))  # fmt: skip
    if kind == "face":
        age, sd = _opt_float(data.get("age")), _opt_float(data.get("age_sd"))
        finders = int(data.get("finders", 1))
        if not 1 <= finders <= 8:
            raise ValueError(f"a face's finders must be within 1..8, not {finders}")
        return Face(int(data["frame"]), _box(data.get("box")), age, sd, _unit(data.get("score", 1.0)),
                    _opt_float(data.get("sharpness")), finders)  # fmt: skip
    if kind == "list_match":
        list_kind = data["list_kind"]
        if list_kind not in ("deny", "allow", "review"):
            raise ValueError(f"list_kind must be deny, allow or review, not {list_kind!r}")
        frame, entry = data.get("frame"), data.get("entry")
        return ListMatch(list_kind, float(data["distance"]), str(data["note"])[:2000],
                         None if frame is None else int(frame), entry=None if entry is None else int(entry),
                         suspended=data.get("suspended") is True)  # fmt: skip
    if kind == "report":
        label = data["label"]
        if label not in ("csam_suspect", "nsfw"):
            raise ValueError(f"a report's label must be csam_suspect or nsfw, not {label!r}")
        return Report(label, str(data["note"])[:2000])
    raise ValueError(f"unknown finding kind {kind!r}")


def _unit(value: Any) -> float:
    number = float(value)
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"a score must be within 0..1, not {number}")
    return number


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _box(value: Any) -> Box | None:
    if value is None:
        return None
    x, y, w, h = (float(v) for v in value)
    return (x, y, w, h)


@dataclass(frozen=True)
class FrameScores:
    """Scores a detector gave one frame, with short human-readable facts ("face apparent age 33 ± 5")."""

    frame: int
    scores: dict[str, float]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DetectorResult:
    """What one detector found in one upload.

    ``findings`` are what the policy reads. ``scores`` are whole-upload figures for people (for
    frame detectors: the maximum over frames, or for ages the minimum) and ``frames`` the per-frame
    detail. ``decisive`` means the result settles the verdict by itself (a hash-list hit): the
    pipeline then runs no costlier detector.
    """

    detector: str
    version: str
    scores: dict[str, float] = field(default_factory=dict)
    frames: list[FrameScores] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    decisive: bool = False
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)

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
            "findings": [finding_to_json(f) for f in self.findings],
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
                findings=[finding_from_json(f) for f in data.get("findings", [])],
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
        self.screen: frozenset[int] | None = None
        """Set by the pipeline before a ``screened`` detector runs: the frames worth its cost (those
        an earlier detector found explicit at or above the screening threshold); None: every frame."""

    @cached_property
    def media(self) -> DecodedMedia:
        """The decoded media; raises :class:`fediguard.errors.MediaError` when undecodable."""
        return self._decode()

    def frames_to_scan(self) -> list[Frame]:
        """The decoded frames a detector should look at: all of them, or only those in ``screen``."""
        frames = self.media.frames
        if self.screen is None:
            return list(frames)
        return [frame for frame in frames if frame.index in self.screen]


@runtime_checkable
class Detector(Protocol):
    """A detector. Instances are not shared between threads: the scanner makes one per thread.

    ``cost`` orders detectors (cheapest first; 0 means it needs no decoding). ``version`` changes
    whenever its model or its scoring changes, so cached decisions are invalidated. A detector with
    a true class attribute ``screened`` (optional; an age estimator's) runs last, and only on the frames
    of :meth:`Subject.frames_to_scan`: those earlier detectors found explicit at or above the
    pipeline's screening threshold (see :mod:`fediguard.scanning.pipeline`).
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
