"""Matching uploads against every bank: exact SHA-256 first (no decoding), then PDQ per frame.

The matcher keeps in memory one SHA-256 index per bank kind and one PDQ index per bank (each bank
has its own match radius), built from the database and rebuilt when the banks change (the gateway
polls :meth:`BankStore.state`, the banks' generation). Disabled banks and entries are left out.
Only entry ids are held in memory; a hit's bank, note and status are read from the database, since
hits are rare: so an entry disabled or suspended a moment ago is treated as such at once, on every
node. Results are :class:`DetectorResult` objects named ``banks``, in the form the policy reads:
``deny``/``allow`` scores with their distances, and notes ``denied: …`` / ``allowed: …``; a
suspended entry's match is a finding marked ``suspended`` (``held for review: …``), which decides
nothing (the models run) and labels the upload ``review``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from fediguard.banks.feeds.subscriber import Subscriptions
from fediguard.banks.index import HashIndex
from fediguard.banks.pdq import DIHEDRAL, DISPLAYED, MATCH_DISTANCE, MIN_QUALITY, STORED, FrameHash
from fediguard.banks.sha256 import Sha256Index
from fediguard.banks.store import BankRule, BankStore
from fediguard.detectors.base import DetectorResult, ListMatch

log = logging.getLogger(__name__)

DETECTOR = "banks"
VERSION = "1"
_VIEW_TEXT = {
    "": "",
    DISPLAYED: ", as displayed",
    STORED: ", as stored: EXIF orientation not applied, alpha dropped, as Meta's tools hash it",
}


def _view_text(view: str) -> str:
    """How a reason names the picture of the frame that matched (see ``FrameHash.view``)."""
    base, _, transform = view.partition(", ") if view not in DIHEDRAL else ("", "", view)
    return _VIEW_TEXT.get(base, "") + (f", its {transform} copy (dihedral matching)" if transform else "")


_VERBS = {"deny": "denied: matches", "allow": "allowed: matches", "review": "flagged for review: matches"}
MAX_NOTED = 20
"""Matches named in one result, of each kind: an image in a bank with many near copies stays readable."""


@dataclass(frozen=True)
class Hit:
    entry_id: int
    bank_kind: str  # deny | allow
    hash_kind: str  # pdq | sha256
    distance: int
    frame: int | None = None
    view: str = ""
    """Which picture of the frame matched (``FrameHash.view``): "" when it has only one."""


@dataclass
class _Indexes:
    sha256: dict[str, Sha256Index]
    pdq: list[tuple[BankRule, HashIndex]]
    state: int


class BankMatcher:
    """Thread-safe: scanner threads match while the gateway reloads (the indexes are swapped whole)."""

    def __init__(
        self, store: BankStore, max_distance: int = MATCH_DISTANCE, min_quality: int = MIN_QUALITY
    ) -> None:
        self.store = store
        self.max_distance = max_distance
        self.min_quality = min_quality
        self._reload_lock = threading.Lock()
        self.subscriptions = Subscriptions(store.engine)
        self._review_banks: frozenset[str] = frozenset()
        self._indexes = _Indexes({k: Sha256Index() for k in ("deny", "allow")}, [], -1)

    @property
    def state(self) -> int:
        """The banks' generation the indexes were built from (-1 before the first load)."""
        return self._indexes.state

    def has_pdq(self, bank_kind: str) -> bool:
        """Whether any PDQ entry of this bank kind is loaded."""
        return any(rule.kind == bank_kind and len(index) for rule, index in self._indexes.pdq)

    def reload_if_changed(self) -> bool:
        """Rebuild the indexes when the banks changed since the last load. Blocking; call in a thread."""
        with self._reload_lock:
            state = self.store.state()
            if state == self._indexes.state:
                return False
            started = time.perf_counter()
            rules = self.store.rules()
            sha: dict[str, list[tuple[int, str]]] = {"deny": [], "allow": []}
            pdq: dict[int, list[tuple[int, str]]] = {bank_id: [] for bank_id in rules}
            for entry_id, bank_id, hash_kind, value in self.store.match_entries():
                if bank_id not in rules:
                    continue  # disabled between the two reads; the next reload has it right
                if hash_kind == "sha256":
                    sha[rules[bank_id].kind].append((entry_id, value))
                else:
                    pdq[bank_id].append((entry_id, value))
            indexes = _Indexes({}, [], state)
            for kind in ("deny", "allow"):
                indexes.sha256[kind] = Sha256Index()
                indexes.sha256[kind].add_many(sha[kind])
            for bank_id, rule in sorted(rules.items()):
                index = HashIndex()
                index.add_many(pdq[bank_id])
                indexes.pdq.append((rule, index))
            self._indexes = indexes
            self._review_banks = self.subscriptions.review_banks()
            counts = {k: len(sha[k]) + sum(len(pdq[i]) for i, r in rules.items() if r.kind == k) for k in sha}
            deny, allow = counts["deny"], counts["allow"]
            log.info(
                "banks loaded (generation %d): %d entries (%d deny, %d allow) in %.2f s",
                state, deny + allow, deny, allow, time.perf_counter() - started,
            )  # fmt: skip
            return True

    def match_sha256(self, sha256: str) -> list[Hit]:
        indexes = self._indexes
        return [
            Hit(entry_id, kind, "sha256", 0)
            for kind in ("allow", "deny")
            for entry_id in indexes.sha256[kind].lookup(sha256)
        ]

    def match_pdq(self, hashes: Sequence[FrameHash]) -> list[Hit]:
        """Hits for frames' hashes; hashes under ``min_quality`` are ignored."""
        usable = [fh for fh in hashes if fh.hash.quality >= self.min_quality]
        if not usable:
            return []
        indexes = self._indexes
        hits: list[Hit] = []
        for rule, index in indexes.pdq:
            if not len(index):
                continue
            radius = self.max_distance if rule.max_distance is None else rule.max_distance
            found = index.search_many([fh.hash.hex for fh in usable], radius)
            # One hit per entry and frame, the closest of the frame's views (displayed, stored, flips).
            best: dict[tuple[int, int], Hit] = {}
            for fh, matches in zip(usable, found, strict=True):
                for entry_id, distance in matches:
                    hit = Hit(entry_id, rule.kind, "pdq", distance, fh.frame, fh.view)
                    known = best.get((entry_id, fh.frame))
                    if known is None or distance < known.distance:
                        best[(entry_id, fh.frame)] = hit
            hits.extend(best.values())
        return hits

    def check(self, hashes: Sequence[FrameHash]) -> DetectorResult | None:
        """The ``banks`` result for these frame hashes, or None (the pipeline's BankCheck)."""
        return self.result(self.match_pdq(hashes))

    def result(self, hits: Sequence[Hit]) -> DetectorResult | None:
        """The ``banks`` detector result for these hits (None when there are none)."""
        if not hits:
            return None
        described = self.store.describe(sorted({h.entry_id for h in hits}))
        scores: dict[str, float] = {}
        findings: list[ListMatch] = []
        for hit in sorted(hits, key=lambda h: (h.distance, h.entry_id)):
            entry = described.get(hit.entry_id)
            if entry is None or (entry.bank_kind, entry.hash_kind) != (hit.bank_kind, hit.hash_kind):
                continue  # deleted since the indexes were built (its id possibly reused by SQLite)
            if not entry.matches:
                continue  # disabled (or its bank) since the indexes were built
            key: Literal["deny", "allow", "review"] = "deny" if hit.bank_kind == "deny" else "allow"
            if key == "deny" and entry.bank in self._review_banks:
                key = "review"  # a feed subscribed to flag, not to reject
            suspended = entry.status == "suspended"
            if key not in scores and not suspended:
                scores[key] = 1.0
                scores[f"{key}_distance"] = float(hit.distance)
            where = f", frame {hit.frame}" if hit.frame is not None else ""
            where += _view_text(hit.view)
            note = f" — {entry.note}" if entry.note else ""
            verb = _VERBS[key]
            if suspended:
                verb = f"held for review: matches suspended {key} entry of"
            how = f"{hit.hash_kind}, distance {hit.distance}{where}"
            if entry.variant:  # a crop of the image behind entry variant_of: name that entry
                crop = f"{hit.hash_kind} of its crop {entry.variant!r} (entry {entry.id})"
                how = f"{crop}, distance {hit.distance}{where}"
                named = entry.variant_of
            else:
                named = entry.id
            text = f"{verb} bank {entry.bank!r} entry {named} ({how}){note}"
            findings.append(
                ListMatch(key, float(hit.distance), text, hit.frame, entry=named, suspended=suspended)
            )
        if not findings:
            return None
        # At most MAX_NOTED matches of each kind (closest first): a match of the other kind is never
        # crowded out, since the policy weighs the closest deny against the closest allow.
        kept = [f for f in findings if f.list_kind == "deny" and not f.suspended][:MAX_NOTED]
        kept += [f for f in findings if f.list_kind == "allow" and not f.suspended][:MAX_NOTED]
        kept += [f for f in findings if f.list_kind == "review" or f.suspended][:MAX_NOTED]
        kept.sort(key=findings.index)
        notes = [f.note for f in kept][:MAX_NOTED]
        # Only a match of a deny or allow entry in force settles the upload; a match that only flags
        # for review (a review feed's, a suspended entry's) lets the models run.
        decisive = "deny" in scores or "allow" in scores
        return DetectorResult(
            DETECTOR, VERSION, scores=scores, notes=notes, decisive=decisive, findings=list(kept)
        )
