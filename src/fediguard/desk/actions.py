"""What a reviewer does to a decision, each with a reason, each in the audit log: confirm (its
hashes into a deny bank), overturn (into an allow bank), remove the stored objects the sweeper
found with its bytes (or purge it from pict-rs by alias), export an evidence package, mark it
reported with the hotline's reference; and an admin's answer to a flood-guard alert."""

from __future__ import annotations

import io
import json
import logging
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fediguard.banks.feeds.publisher import Publisher
from fediguard.banks.governance import Alert, BankGovernance
from fediguard.banks.review import review_decision
from fediguard.banks.store import BankStore
from fediguard.desk.audit import AuditLog
from fediguard.desk.queue import DeskQueue
from fediguard.errors import FediguardError
from fediguard.logs import shown
from fediguard.media.sniff import sniff
from fediguard.records import DecisionRecord, RecordStore
from fediguard.storage import open_source
from fediguard.storage.pictrs_api import PictrsAdmin, PictrsError, alias_of
from fediguard.sweeper.actions import ActionTaker
from fediguard.sweeper.state import SweepState

log = logging.getLogger("fediguard.desk")

CONFIRM_BANK = "confirmed"
OVERTURN_BANK = "allowed"
"""The banks `fediguard confirm` and `fediguard allow` use by default: the desk uses the same."""
ACTIONS = ("confirm", "overturn", "remove", "purge", "report", "export")
ALERT_ANSWERS = ("enable", "remove")
"""An admin's answers to a flood-guard alert: re-enable the entry, or remove it from its bank."""


class ActionError(FediguardError):
    """An action that cannot be taken as asked (no reason, no such decision, ...)."""


@dataclass(frozen=True)
class Reviewer:
    name: str
    role: str


class DeskActions:
    def __init__(
        self, records: RecordStore, audit: AuditLog, queue: DeskQueue, pictrs: PictrsAdmin | None = None
    ) -> None:
        self.records = records
        self.banks = BankStore(records.engine)
        self.governance = BankGovernance(records.engine)
        self.publisher = Publisher(records.engine)
        self.pictrs = pictrs
        self.state = SweepState(records.engine)
        self.audit = audit
        self.queue = queue

    def _decision(self, decision_id: int) -> DecisionRecord:
        record = self.records.get(decision_id)
        if record is None:
            raise ActionError(f"no decision {decision_id}")
        return record

    def published_banks(self) -> dict[str, list[str]]:
        """The deny banks this gateway publishes, each with the feeds that carry it."""
        found: dict[str, list[str]] = {}
        for publication in self.publisher.all():
            for bank in publication.banks:
                found.setdefault(bank, []).append(publication.name)
        return dict(sorted(found.items()))

    def review(
        self, decision_id: int, review: str, reason: str, by: str, publish_into: str | None = None
    ) -> str:
        """Confirm (``confirmed``) or overturn (``overturned``) a decision, as `fediguard confirm`
        and `allow` do; raises for a missing reason, and (changing nothing) for an overturn that
        deny entries would still beat. A confirmation ``publish_into`` a deny bank that a feed
        publishes puts the hashes there instead of ``confirmed``: the feed's next batch carries them."""
        reason = _reason(reason)
        bank = CONFIRM_BANK if review == "confirmed" else OVERTURN_BANK
        published = self.published_banks()
        if publish_into:
            if review != "confirmed":
                raise ActionError("only a confirmation is published (an overturn goes into an allow bank)")
            if publish_into not in published:
                names = ", ".join(published) or "none: `fediguard feed publish` makes one"
                raise ActionError(f"bank {publish_into!r} is in no published feed (published banks: {names})")
            bank = publish_into
        added = review_decision(self.records, self.banks, decision_id, review, bank, reason, by)
        feeds = published.get(bank, []) if review == "confirmed" else []
        carried = f", published in feed(s) {', '.join(feeds)}" if feeds else ""
        action = "confirm" if review == "confirmed" else "overturn"
        self.audit.record(by, action, f"{reason} ({added} hash(es) into bank {bank}{carried})", decision_id)
        return f"decision {decision_id} {review}: {added} new hash(es) in bank {bank!r}{carried}"

    async def purge(self, decision_id: int, alias: str, reason: str, by: str) -> str:
        """Purge the file behind a pict-rs alias (its every alias and variant) through pict-rs's
        internal API. Done or failed, it is in the audit log with pict-rs's answer."""
        reason = _reason(reason)
        self._decision(decision_id)
        if self.pictrs is None:
            raise ActionError("purging from pict-rs needs the settings pictrs_url and pictrs_api_key")
        alias = alias_of(alias)  # a bad one is refused here, before pict-rs is asked
        try:
            aliases = await self.pictrs.purge(alias)
        except PictrsError as exc:
            log.warning("desk: purge from pict-rs for decision %d by %s failed: %s", decision_id, by, exc)
            self.audit.record(by, "purge_failed", f"{reason}; alias {shown(alias)}: {exc}", decision_id)
            raise
        summary = f"purged from pict-rs: {', '.join(shown(a) for a in aliases)}"
        self.audit.record(by, "purge", f"{reason}; {summary}", decision_id)
        return summary

    def answer_alert(self, alert: Alert, answer: str, reason: str, by: str) -> str:
        """Re-enable the entry a flood-guard alert suspended, or remove it from its bank (with its
        crop variants), as `fediguard banks enable BANK --entry ID` and `banks remove` do; either
        resolves the alert."""
        reason = _reason(reason)
        if alert.entry_id is None:
            raise ActionError(f"alert {alert.id} names no entry")
        if alert.resolved_at is not None:
            raise ActionError(f"alert {alert.id} was resolved already (by {alert.resolved_by})")
        entry = f"entry {alert.entry_id} of bank {alert.bank!r}"
        if answer == "enable":
            if not self.governance.set_entries_status(alert.bank, [alert.entry_id], "active", reason, by):
                raise ActionError(f"{entry}: no longer in that bank")
            done = f"{entry} re-enabled"
        elif answer == "remove":
            removed = self.banks.remove(alert.bank, entry_ids=[alert.entry_id])
            if not removed:
                raise ActionError(f"{entry}: no longer in that bank")
            done = f"{entry} removed ({len(removed)} entries with its crop variants)"
        else:
            raise ActionError(f"unknown answer {answer!r} to an alert: {' or '.join(ALERT_ANSWERS)}")
        self.audit.record(by, f"alert_{answer}", f"{reason}; alert {alert.id}: {done}")
        return f"alert {alert.id}: {done}"

    async def remove(self, decision_id: int, reason: str, by: str) -> str:
        """Delete the stored objects the sweeper recorded with this decision's bytes. A source that
        cannot be opened here keeps the deletion pending, for its next sweep to finish."""
        reason = _reason(reason)
        record = self._decision(decision_id)
        objects = self.state.objects_of(record.sha256, record.id) if record.sha256 else []
        if not objects:
            raise ActionError(
                f"decision {decision_id}: no stored object with these bytes is known to the sweeper "
                "(sweep the media storage first, or purge it from pict-rs by its alias)"
            )
        done, pending = [], []
        for obj in objects:
            self.state.begin_action(obj.id, "delete")
            url, options = self.state.source(obj.source_id)
            try:
                source = open_source(url, **options)
            except Exception as exc:  # credentials live with the sweep, not here: it finishes it
                pending.append(f"{shown(obj.key)} (pending until the next sweep of {url}: {exc})")
                continue
            try:
                await ActionTaker(source, self.state).perform(obj.id, "delete", obj.key, obj.quarantine_key)
            finally:
                await source.close()
            after = self.state.get(obj.id)
            if after is not None and after.action_state == "done":
                done.append(shown(obj.key))
            else:
                pending.append(f"{shown(obj.key)} ({after.error if after else 'gone'})")
        summary = f"deleted {len(done)}: {', '.join(done) or '-'}"
        summary += f"; not yet {len(pending)}: {', '.join(pending) or '-'}"
        self.audit.record(by, "remove", f"{reason}; {summary}", decision_id)
        return summary

    def report(self, decision_id: int, reference: str, reason: str, by: str) -> str:
        reference = reference.strip()
        if not reference:
            raise ActionError("a report needs the hotline's reference")
        reason = _reason(reason)
        self._decision(decision_id)
        self.queue.mark_reported(decision_id, reference[:200], by)
        self.audit.record(by, "report", f"reference {reference[:200]}: {reason}", decision_id)
        return f"decision {decision_id} marked reported ({reference[:200]})"

    def export(self, decision_id: int, reason: str, by: str, media: bytes | None) -> bytes:
        """A zip for a report to NCMEC, INHOPE or a national hotline: the media (when kept and
        unlocked) and manifest.json (hashes, times, client, source, scores, reasons, reviewer)."""
        reason = _reason(reason)
        record = self._decision(decision_id)
        manifest: dict[str, Any] = {
            "decision": record.to_json(),
            "exported_at": datetime.now(UTC).isoformat(),
            "exported_by": by,
            "reason": reason,
            "media": None,
        }
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            if media is not None:
                kind = sniff(media) or "application/octet-stream"
                name = f"media/{record.sha256}.{kind.split('/')[-1].removeprefix('x-')}"
                zf.writestr(name, media)
                manifest["media"] = {"file": name, "sha256": record.sha256, "type": kind, "size": len(media)}
            else:
                manifest["media_missing"] = (
                    "the bytes were not kept (sealed evidence off or expired) or are locked"
                )
            zf.writestr("manifest.json", json.dumps(manifest, indent=2, sort_keys=True))
        self.audit.record(
            by, "export", f"{reason} (media {'included' if media else 'not included'})", decision_id
        )
        return buf.getvalue()


def _reason(reason: str) -> str:
    reason = " ".join(reason.split())
    if not reason:
        raise ActionError("every action needs a reason")
    return reason[:2000]
