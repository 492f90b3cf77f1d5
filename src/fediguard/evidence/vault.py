"""Sealed evidence on disk: one age-encrypted file per SHA-256, expired after the retention."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import pyrage
from pyrage import x25519

from fediguard.evidence.keys import EvidenceKeyError

log = logging.getLogger("fediguard.evidence")

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
SUFFIX = ".age"


class EvidenceVault:
    """Writes with the public key only; reading needs an identity (unlocked per desk session)."""

    def __init__(self, folder: Path, recipient: x25519.Recipient | None, retention_s: float) -> None:
        self.folder = folder
        self.recipient = recipient
        self.retention_s = retention_s

    def path(self, sha256: str) -> Path:
        if not _SHA256.match(sha256):
            raise ValueError(f"not a SHA-256: {sha256!r}")
        return self.folder / "sealed" / f"{sha256}{SUFFIX}"

    def has(self, sha256: str) -> bool:
        return bool(sha256) and _SHA256.match(sha256) is not None and self.path(sha256).is_file()

    def seal(self, sha256: str, data: bytes) -> bool:
        """Encrypt and keep ``data`` (no-op when kept already: the same bytes, the same file; its
        retention starts again). Plaintext never touches the disk: it is encrypted in memory and
        the ciphertext written to a temporary file, then renamed into place."""
        if self.recipient is None:
            raise EvidenceKeyError("no evidence public key to seal to")
        path = self.path(sha256)
        if path.is_file():
            os.utime(path)
            return False
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        sealed = pyrage.encrypt(data, [self.recipient])
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(sealed)
        os.replace(tmp, path)
        log.info("evidence sealed sha256=%s size=%d", sha256[:16], len(data))
        return True

    def open(self, sha256: str, identity: x25519.Identity) -> bytes | None:
        """The plaintext, or None when not kept (or expired)."""
        path = self.path(sha256)
        try:
            sealed = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            plain: bytes = pyrage.decrypt(sealed, [identity])
        except pyrage.DecryptError as exc:
            raise EvidenceKeyError(f"evidence {sha256[:16]} was sealed to another key") from exc
        return plain

    def kept_until(self, sha256: str) -> float | None:
        try:
            return self.path(sha256).stat().st_mtime + self.retention_s
        except FileNotFoundError:
            return None

    def expire(self, now: float | None = None) -> list[str]:
        """Delete what is older than the retention; the SHA-256s deleted, each logged."""
        now = time.time() if now is None else now
        gone: list[str] = []
        folder = self.folder / "sealed"
        if not folder.is_dir():
            return gone
        for entry in os.scandir(folder):
            name = entry.name
            if not name.endswith(SUFFIX) or not _SHA256.match(name[: -len(SUFFIX)]):
                continue
            try:
                if entry.stat().st_mtime + self.retention_s <= now:
                    os.unlink(entry.path)
                    gone.append(name[: -len(SUFFIX)])
            except FileNotFoundError:
                continue
        for sha256 in gone:
            log.warning("evidence expired and deleted (retention %g days): sha256=%s",
                        self.retention_s / 86400, sha256)  # fmt: skip
        return gone

    def check_interval(self) -> float:
        """How often :meth:`expire` runs: a tenth of the retention, at least every hour."""
        return max(0.05, min(3600.0, self.retention_s / 10))
