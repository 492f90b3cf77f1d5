"""Desk accounts: admins and reviewers, with Argon2id password hashes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, delete, select, update

from fediguard.errors import FediguardError
from fediguard.records.schema import desk_accounts

ADMIN = "admin"
REVIEWER = "reviewer"
ROLES = (ADMIN, REVIEWER)
MIN_PASSWORD = 10
DEFAULT_BLUR = 16
MAX_BLUR = 40
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

_hasher = PasswordHasher()  # Argon2id with argon2-cffi's recommended parameters (RFC 9106, low memory)
_DUMMY = _hasher.hash("a password nobody has: verified against when the name is unknown")


class AccountError(FediguardError):
    """A desk account that cannot be made, found or changed as asked."""


@dataclass(frozen=True)
class Account:
    id: int
    name: str
    role: str
    blur: int
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise AccountError(
            f"account name {name!r}: 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a desk password has at least {MIN_PASSWORD} characters")
    return password


class Accounts:
    """The ``desk_accounts`` table. Calls block (Argon2 takes tens of milliseconds on purpose)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, name: str, password: str, role: str = REVIEWER) -> Account:
        check_name(name)
        check_password(password)
        if role not in ROLES:
            raise AccountError(f"role {role!r}: admin or reviewer")
        if self.get(name) is not None:
            raise AccountError(f"desk account {name!r} exists already (`fediguard admin passwd {name}`)")
        now = datetime.now(UTC)
        row = {
            "name": name, "role": role, "password_hash": _hasher.hash(password), "blur": DEFAULT_BLUR,
            "created_at": now, "updated_at": now,
        }  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(desk_accounts.insert().values(**row))
        found = self.get(name)
        assert found is not None
        return found

    def remove(self, name: str) -> None:
        with self.engine.begin() as conn:
            gone = conn.execute(delete(desk_accounts).where(desk_accounts.c.name == name)).rowcount
        if not gone:
            raise AccountError(f"no desk account {name!r}")

    def set_password(self, name: str, password: str) -> None:
        check_password(password)
        self._update(name, password_hash=_hasher.hash(password))

    def set_role(self, name: str, role: str) -> None:
        if role not in ROLES:
            raise AccountError(f"role {role!r}: admin or reviewer")
        self._update(name, role=role)

    def set_blur(self, name: str, blur: int) -> None:
        self._update(name, blur=max(0, min(MAX_BLUR, blur)))

    def _update(self, name: str, **values: object) -> None:
        values["updated_at"] = datetime.now(UTC)
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(desk_accounts).where(desk_accounts.c.name == name).values(**values)
            ).rowcount
        if not changed:
            raise AccountError(f"no desk account {name!r}")

    def get(self, name: str) -> Account | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(desk_accounts).where(desk_accounts.c.name == name)).mappings().first()
        return _account(row) if row is not None else None

    def all(self) -> list[Account]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(desk_accounts).order_by(desk_accounts.c.name)).mappings().all()
        return [_account(r) for r in rows]

    def verify(self, name: str, password: str) -> Account | None:
        """The account if ``password`` is its password. An unknown name costs the same Argon2 work."""
        with self.engine.connect() as conn:
            row = conn.execute(select(desk_accounts).where(desk_accounts.c.name == name)).mappings().first()
        stored = row["password_hash"] if row is not None else _DUMMY
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if _hasher.check_needs_rehash(stored):
            self._update(name, password_hash=_hasher.hash(password))
        return _account(row)


def _account(row: object) -> Account:
    data = dict(row)  # type: ignore[call-overload]
    created = data["created_at"]
    if created.tzinfo is None:
        created = created.replace(tzinfo=UTC)
    return Account(int(data["id"]), data["name"], data["role"], int(data["blur"]), created)
