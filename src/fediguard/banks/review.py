"""An admin's review of a decision: confirm it (its hashes join a deny bank) or overturn it (they
join an allow bank), recorded on the decision itself."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from fediguard.banks.formats import BankEntry
from fediguard.banks.pdq import MIN_QUALITY, FrameHash
from fediguard.banks.store import BankStore, StoredEntry
from fediguard.errors import FediguardError
from fediguard.records import RecordStore

REVIEWS = {"confirmed": "deny", "overturned": "allow"}
"""Review → the kind of bank the decision's hashes go into."""


class DenyConflict(FediguardError):
    """An overturn that would change nothing: deny entries hold the decision's own hashes, so they
    match its image at distance 0, where an allow entry can only tie, and a tie goes to deny."""

    def __init__(self, record_id: int, entries: Sequence[StoredEntry]) -> None:
        self.record_id = record_id
        self.entries = list(entries)
        lines = [
            f"decision {record_id} is NOT overturned: deny entries hold its own hashes, so they match "
            "its image exactly (distance 0); an allow entry can only tie, and a tie goes to deny:"
        ]
        for e in self.entries:
            note = f" — {e.note}" if e.note else ""
            lines.append(f"  deny bank {e.bank!r} entry {e.id}: {e.hash_kind} {e.value}{note}")
        lines.append("Nothing was changed. Remove those entries, then run this command again:")
        by_bank: dict[str, list[int]] = {}
        for e in self.entries:
            by_bank.setdefault(e.bank, []).append(e.id)
        for bank, ids in by_bank.items():
            lines.append(f"  fediguard banks remove {shlex.quote(bank)} --id {' '.join(map(str, ids))}")
        super().__init__("\n".join(lines))


def review_decision(
    records: RecordStore, banks: BankStore, record_id: int, review: str, bank: str, note: str, by: str
) -> int:
    """Apply a review; returns how many hashes were new to the bank. Raises FediguardError, and
    :class:`DenyConflict` (changing nothing) for an overturn that deny entries would still beat."""
    kind = REVIEWS[review]
    record = records.get(record_id)
    if record is None:
        raise FediguardError(f"no decision record {record_id}")
    if not record.sha256:
        raise FediguardError(f"decision {record.id} has no hash (the upload was never read whole)")
    entry_note = note or f"{review} decision {record.id}"
    entries = [BankEntry("sha256", record.sha256, entry_note)]
    for item in record.pdq or []:
        # Every view of a frame (displayed, and stored as Meta's tools hash it), never the flipped
        # and rotated copies of dihedral matching.
        if int(item.get("quality", 0)) >= MIN_QUALITY and not FrameHash.from_json(item).dihedral:
            entries.append(BankEntry("pdq", str(item["hash"]), entry_note))
    if kind == "allow":
        blocking = banks.find("deny", [(e.kind, e.value) for e in entries])
        if blocking:
            raise DenyConflict(record.id, blocking)
    banks.ensure(bank, kind)
    added = banks.add(bank, entries, source=f"record {record.id}", added_by=by)
    records.set_review(record.id, review, note, by)
    return added
