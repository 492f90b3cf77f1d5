"""Sealed evidence: the bytes of uploads with chosen labels, kept encrypted to an age public key
(the gateway never holds the private key), expired after the retention the admin sets."""

from fediguard.evidence.keeper import EvidenceKeeper
from fediguard.evidence.keys import EvidenceKeyError, keygen, load_recipient, unlock
from fediguard.evidence.vault import EvidenceVault

__all__ = ["EvidenceKeeper", "EvidenceKeyError", "EvidenceVault", "keygen", "load_recipient", "unlock"]
