"""An admin's review of a decision: confirm it (its hashes join a deny bank) or overturn it (they
join an allow bank), recorded on the decision itself."""

from __future__ import annotations

from fediguard.banks.formats import BankEntry
from fediguard.banks.pdq import MIN_QUALITY
from fediguard.banks.store import BankStore
from fediguard.errors import FediguardError
from fediguard.records import RecordStore

REVIEWS = {"confirmed": "deny", "overturned": "allow"}
"""Review → the kind of bank the decision's hashes go into."""


def review_decision(
    records: RecordStore, banks: BankStore, record_id: int, review: str, bank: str, note: str, by: str
) -> int:
    """Apply a review; returns how many hashes were new to the bank. Raises FediguardError."""
    kind = REVIEWS[review]
    record = records.get(record_id)
    if record is None:
        raise FediguardError(f"no decision record {record_id}")
    if not record.sha256:
        raise FediguardError(f"decision {record.id} has no hash (the upload was never read whole)")
    entry_note = note or f"{review} decision {record.id}"
    entries = [BankEntry("sha256", record.sha256, entry_note)]
    for item in record.pdq or []:
        if int(item.get("quality", 0)) >= MIN_QUALITY:
            entries.append(BankEntry("pdq", str(item["hash"]), entry_note))
    banks.ensure(bank, kind)
    added = banks.add(bank, entries, source=f"record {record.id}", added_by=by)
    records.set_review(record.id, review, note, by)
    return added
