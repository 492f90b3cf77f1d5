"""An admin's review of a decision: confirm it (its hashes join a deny bank) or overturn it (they
join an allow bank), recorded on the decision itself."""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from fediguard.banks.formats import BankEntry
from fediguard.banks.pdq import MIN_QUALITY, FrameHash
from fediguard.banks.store import BankStore, StoredEntry
from fediguard.errors import FediguardError
from fediguard.records import DecisionRecord, RecordStore

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


class NeverScanned(FediguardError):
    """An overturn of an ``unscanned`` decision without ``force``: its bytes were never scanned."""

    def __init__(self, record: DecisionRecord) -> None:
        self.record_id = record.id
        why = f" ({'; '.join(record.reasons)})" if record.reasons else ""
        super().__init__(
            f"decision {record.id} is NOT overturned: it is unscanned{why}, so its bytes were never "
            "scanned, and allow-listing them would let exactly these bytes pass unscanned from now on. "
            "Nothing was changed. If a person has looked at the image and it is fine: "
            f"fediguard allow {record.id} --force"
        )


def review_decision(
    records: RecordStore,
    banks: BankStore,
    record_id: int,
    review: str,
    bank: str,
    note: str,
    by: str,
    force: bool = False,
) -> int:
    """Apply a review; returns how many hashes were new to the bank. Raises FediguardError, and
    (changing nothing) :class:`DenyConflict` for an overturn that deny entries would still beat,
    :class:`NeverScanned` for an overturn of an unscanned decision unless ``force``."""
    kind = REVIEWS[review]
    record, entries = _review_entries(records, record_id, review, note)
    if kind == "allow":
        check_overturn(banks, record, entries, force)
    banks.ensure(bank, kind)
    added = banks.add(bank, entries, source=f"record {record.id}", added_by=by)
    records.set_review(record.id, review, note, by)
    return added


def check_overturn(
    banks: BankStore, record: DecisionRecord, entries: Sequence[BankEntry], force: bool = False
) -> None:
    """Raise what refuses overturning ``record`` (whose hashes are ``entries``), changing nothing."""
    if record.verdict == "unscanned" and not force:
        raise NeverScanned(record)
    blocking = banks.find("deny", [(e.kind, e.value) for e in entries])
    if blocking:
        raise DenyConflict(record.id, blocking)


def overturn_refusal(records: RecordStore, banks: BankStore, record_id: int) -> FediguardError | None:
    """What would refuse overturning decision ``record_id`` now (None: nothing), changing nothing."""
    try:
        record, entries = _review_entries(records, record_id, "overturned", "")
        check_overturn(banks, record, entries)
    except FediguardError as exc:
        return exc
    return None


def _review_entries(
    records: RecordStore, record_id: int, review: str, note: str
) -> tuple[DecisionRecord, list[BankEntry]]:
    record = records.get(record_id)
    if record is None:
        raise FediguardError(f"no decision record {record_id} in {records.label}")
    if not record.sha256:
        raise FediguardError(f"decision {record.id} has no hash (the upload was never read whole)")
    entry_note = note or f"{review} decision {record.id}"
    entries = [BankEntry("sha256", record.sha256, entry_note)]
    for item in record.pdq or []:
        # Every view of a frame (displayed, and stored as Meta's tools hash it), never the flipped
        # and rotated copies of dihedral matching.
        if int(item.get("quality", 0)) >= MIN_QUALITY and not FrameHash.from_json(item).dihedral:
            entries.append(BankEntry("pdq", str(item["hash"]), entry_note))
    return record, entries
