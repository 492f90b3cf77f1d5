"""The desk's audit log: every account change, review action and reveal — who, what, when, why."""

from __future__ import annotations

import getpass
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select

from fediguard.records.schema import desk_audit

log = logging.getLogger("fediguard.desk.audit")


@dataclass(frozen=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    decision_id: int | None
    detail: str


def cli_actor() -> str:
    """Who runs a command on the server: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


class AuditLog:
    """Appends to and reads the ``desk_audit`` table; each entry is logged too (never an image)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, actor: str, action: str, detail: str = "", decision_id: int | None = None) -> int:
        row = {"at": datetime.now(UTC), "actor": actor, "action": action, "decision_id": decision_id,
               "detail": detail}  # fmt: skip
        with self.engine.begin() as conn:
            new_id = conn.execute(desk_audit.insert().values(**row).returning(desk_audit.c.id)).scalar_one()
        log.info("audit %s by %s decision=%s: %s", action, actor, decision_id or "-", detail or "-")
        return int(new_id)

    def recent(
        self, limit: int = 100, before_id: int | None = None, decision_id: int | None = None
    ) -> list[AuditEntry]:
        query = select(desk_audit).order_by(desk_audit.c.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(desk_audit.c.id < before_id)
        if decision_id is not None:
            query = query.where(desk_audit.c.decision_id == decision_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [_entry(r) for r in rows]


def _entry(row: object) -> AuditEntry:
    data = dict(row)  # type: ignore[call-overload]
    at = data["at"]
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return AuditEntry(int(data["id"]), at, data["actor"], data["action"], data["decision_id"], data["detail"])
