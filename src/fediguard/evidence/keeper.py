"""What the scan service keeps as sealed evidence: the bytes of each decision with one of
``evidence_labels``, sealed in the vault, and the vault's expiry, run for as long as the service runs."""

from __future__ import annotations

import asyncio
import logging

from fediguard.config import Settings
from fediguard.evidence.keys import load_recipient
from fediguard.evidence.vault import EvidenceVault
from fediguard.verdicts import Decision

log = logging.getLogger("fediguard.decisions")


class EvidenceKeeper:
    """Seals what ``evidence_labels`` asks for; off (``vault`` None) when it is empty."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.vault: EvidenceVault | None = None
        """Sealed evidence (``evidence_labels``): what is kept, encrypted to the public key."""
        self._expiry: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Open the vault with the public key and start expiring what it holds (in a running loop).
        Raises :class:`~fediguard.evidence.keys.EvidenceKeyError` when there is no usable key."""
        s = self.settings
        if not s.evidence_labels:
            return
        folder = s.effective_evidence_dir
        recipient = load_recipient(folder, s.evidence_recipient)
        self.vault = EvidenceVault(folder, recipient, s.evidence_retention_days * 86400)
        self._expiry = asyncio.create_task(expire_evidence(self.vault))

    def stop(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()

    async def keep(self, decision: Decision, sha256: str, data: bytes) -> None:
        """Seal the bytes of a decision with one of ``evidence_labels`` (never raises)."""
        if self.vault is None or not data:
            return
        wanted = self.settings.evidence_labels
        if not any(label in wanted for label in (*decision.labels, decision.verdict.value)):
            return
        try:
            await asyncio.to_thread(self.vault.seal, sha256, data)
        except Exception:
            log.exception("could not seal the evidence for %s", sha256[:16])


async def expire_evidence(vault: EvidenceVault) -> None:
    """Delete expired evidence now and then, for as long as the service runs."""
    while True:
        try:
            await asyncio.to_thread(vault.expire)
        except Exception:
            log.exception("could not expire evidence in %s", vault.folder)
        await asyncio.sleep(vault.check_interval())
