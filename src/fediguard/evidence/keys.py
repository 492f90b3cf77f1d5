"""The evidence key pair: an age X25519 identity, kept only encrypted with a passphrase
(``identity.age``), and its public recipient (``recipient.txt``), all the gateway needs."""

from __future__ import annotations

import os
from pathlib import Path

import pyrage
from pyrage import passphrase, x25519

from fediguard.errors import FediguardError

IDENTITY_FILE = "identity.age"
RECIPIENT_FILE = "recipient.txt"
MIN_PASSPHRASE = 12


class EvidenceKeyError(FediguardError):
    """A missing or wrong evidence key or passphrase."""


def keygen(folder: Path, secret: str) -> str:
    """Make a key pair in ``folder``: the private key encrypted with ``secret`` (a passphrase, scrypt),
    the public key in the clear. Refuses to replace an existing key. Returns the public key."""
    if len(secret) < MIN_PASSPHRASE:
        raise EvidenceKeyError(f"an evidence passphrase has at least {MIN_PASSPHRASE} characters")
    identity_path, recipient_path = folder / IDENTITY_FILE, folder / RECIPIENT_FILE
    if identity_path.exists() or recipient_path.exists():
        raise EvidenceKeyError(
            f"{identity_path} or {recipient_path} exists already: evidence sealed to it would become "
            "unreadable; move them away first if you mean to replace the key"
        )
    folder.mkdir(parents=True, exist_ok=True)
    identity = x25519.Identity.generate()
    sealed = passphrase.encrypt(str(identity).encode(), secret)
    _write_private(identity_path, sealed)
    public = str(identity.to_public())
    recipient_path.write_text(public + "\n")
    return public


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_recipient(folder: Path, configured: str | None = None) -> x25519.Recipient:
    """The public key evidence is sealed to: ``evidence_recipient``, or ``folder``/recipient.txt."""
    where = "evidence_recipient" if configured else str(folder / RECIPIENT_FILE)
    try:
        text = configured or (folder / RECIPIENT_FILE).read_text().strip()
        return x25519.Recipient.from_str(text)
    except FileNotFoundError as exc:
        raise EvidenceKeyError(
            f"evidence_labels is set but there is no public key: {where} is missing "
            "(run `fediguard evidence keygen`, or set evidence_recipient to an age1… key)"
        ) from exc
    except (ValueError, pyrage.RecipientError) as exc:
        raise EvidenceKeyError(f"{where}: not an age X25519 public key ({exc})") from exc


def unlock(folder: Path, secret: str) -> x25519.Identity:
    """The private key, decrypted with the passphrase (takes about a second: scrypt)."""
    path = folder / IDENTITY_FILE
    try:
        sealed = path.read_bytes()
    except FileNotFoundError as exc:
        raise EvidenceKeyError(f"no evidence key at {path} (`fediguard evidence keygen`)") from exc
    try:
        return x25519.Identity.from_str(passphrase.decrypt(sealed, secret).decode())
    except pyrage.DecryptError as exc:
        raise EvidenceKeyError("wrong passphrase for the evidence key") from exc
