"""Exact SHA-256 deny and allow lists read from plain files: the cheapest detector there is.

File format: one lowercase or uppercase hex SHA-256 per line; text after the hash, blank lines and
lines starting with ``#`` are ignored. A malformed line stops start-up with its line number.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path

from fediguard.detectors.base import DetectorResult, Finding, ListMatch, Subject
from fediguard.errors import ConfigError

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_cache: dict[tuple[Path, int, int], frozenset[str]] = {}
_cache_lock = threading.Lock()


def load_hash_file(path: Path) -> frozenset[str]:
    """The set of hashes in ``path``. Cached per file, mtime and size, so every scanner thread shares
    one set."""
    try:
        stat = path.stat()
        key = (path.resolve(), stat.st_mtime_ns, stat.st_size)
    except OSError as exc:
        raise ConfigError(f"hash list {path} cannot be read: {exc.strerror}") from exc
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    hashes: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            token = text.split()[0]
            if not _HEX64.match(token):
                raise ConfigError(f"hash list {path} line {lineno}: not a SHA-256 hex digest: {token[:80]!r}")
            hashes.add(token.lower())
    result = frozenset(hashes)
    with _cache_lock:
        _cache[key] = result
    return result


def lists_digest(deny: frozenset[str], allow: frozenset[str]) -> str:
    """A short digest of what the lists hold (not of comments or order), for the detector's version."""
    digest = hashlib.sha256()
    for kind, hashes in (("deny", deny), ("allow", allow)):
        digest.update(f"{kind}:{len(hashes)}\n".encode())
        digest.update("".join(sorted(hashes)).encode())
    return digest.hexdigest()[:12]


class HashListDetector:
    """The version names the lists' contents, so cached verdicts and remote workers follow them."""

    name = "hashlist"
    cost = 0

    def __init__(self, deny_file: Path | None = None, allow_file: Path | None = None) -> None:
        self.deny_file = deny_file
        self.allow_file = allow_file
        self.deny = load_hash_file(deny_file) if deny_file else frozenset()
        self.allow = load_hash_file(allow_file) if allow_file else frozenset()
        self.version = f"1+{lists_digest(self.deny, self.allow)}"

    def warm_up(self) -> None:
        return None

    def detect(self, subject: Subject) -> DetectorResult:
        scores: dict[str, float] = {}
        findings: list[Finding] = []
        if subject.sha256 in self.allow:
            scores.update(allow=1.0, allow_distance=0.0)
            findings.append(ListMatch("allow", 0.0, f"allowed: sha256 listed in {self.allow_file}"))
        if subject.sha256 in self.deny:
            scores.update(deny=1.0, deny_distance=0.0)
            findings.append(ListMatch("deny", 0.0, f"denied: sha256 listed in {self.deny_file}"))
        notes = [f.note for f in findings if isinstance(f, ListMatch)]
        return DetectorResult(
            self.name, self.version, scores=scores, notes=notes, decisive=bool(scores), findings=findings
        )
