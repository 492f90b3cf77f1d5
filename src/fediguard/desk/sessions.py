"""Desk sessions: a random id in a signed, HttpOnly, SameSite=Strict cookie, the session itself
(its CSRF token, expiry, unlocked evidence key, revealed items) only in this process's memory;
and the login rate limit."""

from __future__ import annotations

import hmac
import os
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer
from pyrage import x25519

COOKIE = "fediguard_desk"
SECRET_FILE = "desk-secret"  # noqa: S105 - a file name


@dataclass
class Session:
    sid: str
    name: str
    csrf: str
    expires: float  # time.time()
    identity: x25519.Identity | None = None  # the evidence key, unlocked for this session only
    revealed: set[int] = field(default_factory=set)

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


def load_secret(configured: str | None, data_dir: Path) -> bytes:
    """``desk_secret``, or a random one kept in data_dir/desk-secret (mode 0600), made on first use."""
    if configured:
        return configured.encode()
    path = data_dir / SECRET_FILE
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32).encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as f:
        f.write(value)
    return value


class Sessions:
    """The sessions of one desk process; a restart logs everyone out (and locks the evidence)."""

    def __init__(self, secret: bytes, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self._signer = URLSafeTimedSerializer(secret, salt="fediguard-desk-session")
        self._login_signer = URLSafeTimedSerializer(secret, salt="fediguard-desk-login")
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, name: str) -> tuple[str, Session]:
        """A new session for account ``name``: the cookie value and the session."""
        session = Session(
            secrets.token_urlsafe(24), name, secrets.token_urlsafe(24), time.time() + self.lifetime_s
        )
        with self._lock:
            self._drop_expired()
            self._sessions[session.sid] = session
        return self._signer.dumps(session.sid), session

    def get(self, cookie: str | None) -> Session | None:
        if not cookie:
            return None
        try:
            sid = self._signer.loads(cookie, max_age=int(self.lifetime_s) + 1)
        except BadSignature:
            return None
        with self._lock:
            session = self._sessions.get(str(sid))
            if session is None or session.expires <= time.time():
                self._sessions.pop(str(sid), None)
                return None
            return session

    def drop(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def drop_account(self, name: str) -> None:
        with self._lock:
            for sid in [s.sid for s in self._sessions.values() if s.name == name]:
                del self._sessions[sid]

    def expire_now(self, sid: str) -> None:
        """End a session as its expiry would (tests, and an admin removing an account)."""
        with self._lock:
            if sid in self._sessions:
                self._sessions[sid].expires = 0.0

    def _drop_expired(self) -> None:
        now = time.time()
        for sid in [s.sid for s in self._sessions.values() if s.expires <= now]:
            del self._sessions[sid]

    def login_token(self) -> str:
        """The CSRF token of the login form (no session yet): signed, valid for an hour."""
        return self._login_signer.dumps(secrets.token_urlsafe(8))

    def login_token_ok(self, token: str | None) -> bool:
        if not token:
            return False
        try:
            self._login_signer.loads(token, max_age=3600)
        except BadSignature:
            return False
        return True


class LoginLimiter:
    """At most ``per_name`` failed logins per account name and ``per_address`` per client address
    within ``window_s``; beyond that, logins are refused without checking the password."""

    def __init__(self, per_name: int = 5, per_address: int = 20, window_s: float = 900.0) -> None:
        self.per_name = per_name
        self.per_address = per_address
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def allowed(self, name: str, address: str) -> bool:
        now = time.monotonic()
        with self._lock:
            return (
                len(self._recent(f"n:{name}", now)) < self.per_name
                and len(self._recent(f"a:{address}", now)) < self.per_address
            )

    def failed(self, name: str, address: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(f"n:{name}", now).append(now)
            self._recent(f"a:{address}", now).append(now)
