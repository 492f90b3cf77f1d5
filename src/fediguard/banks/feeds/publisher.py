"""Publishing deny banks as a feed: what changed in them since the last batch becomes new signed
batches, served a page at a time (docs/feeds.md).

A publication names the banks it publishes. Batches are made lazily: when a page is asked for (or
``fediguard feed publish`` runs) and the banks' generation moved since the last batch, the banks'
current entries are compared with what the batches so far add up to (``feed_published``); the
difference becomes batches of at most :data:`BATCH_OPS` operations, retractions first, each signed
and chained to the one before by its digest. Everything happens in one transaction, so two gateways
sharing the database cannot both write batch N (the second fails on the unique sequence number and
serves the first one's). Only hashes leave: never an image, and notes only when asked for.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from fediguard.banks.feeds.signing import canonical, digest, sign
from fediguard.banks.store import BankError, BankStore
from fediguard.records.schema import bank_entries, banks, feed_batches, feed_publications, feed_published

log = logging.getLogger("fediguard.feeds")

FORMAT = 1
"""The batch format's version (``"v"`` in every batch)."""
BATCH_OPS = 5000
"""Operations per batch: a batch of 5000 PDQ additions is ~0.4 MB of JSON (~0.2 MB gzipped)."""
PAGE_BATCHES = 20
"""Batches per page by default (``?limit=`` up to :data:`MAX_PAGE_BATCHES`)."""
MAX_PAGE_BATCHES = 100


@dataclass(frozen=True)
class Publication:
    id: int
    name: str
    banks: tuple[str, ...]
    notes: bool
    public: bool
    head: int
    """The last batch's sequence number (0 before the first)."""


@dataclass(frozen=True)
class Batch:
    seq: int
    body: str
    signature: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "body": self.body, "sig": self.signature}


class Publisher:
    """Publications in the records database; thread safe (one sync at a time per process)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.banks = BankStore(engine)
        self._sync_lock = threading.Lock()

    def create(self, name: str, bank_names: Sequence[str], *, notes: bool, public: bool) -> str | None:
        """A new publication of these deny banks; returns its read token (None for a public feed),
        shown once: only its SHA-256 is kept. BankError for a bad name or bank."""
        if (
            not name
            or len(name) > 100
            or not name.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise BankError(f"feed name {name!r}: use 1-100 letters, digits, '-', '_' or '.'")
        if not bank_names:
            raise BankError("name at least one bank to publish (--bank)")
        for bank_name in bank_names:
            if self.banks.get(bank_name).kind != "deny":
                raise BankError(f"bank {bank_name!r} is not a deny bank: only deny banks are published")
        if self.get(name) is not None:
            raise BankError(f"feed {name!r} is published already")
        token = None if public else secrets.token_urlsafe(32)
        row = {
            "name": name, "banks": sorted(set(bank_names)), "notes": notes,
            "token_sha256": _token_digest(token) if token else None, "synced_generation": -1,
            "created_at": datetime.now(UTC),
        }  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(insert(feed_publications).values(**row))
        return token

    def get(self, name: str) -> Publication | None:
        head = (
            select(func.coalesce(func.max(feed_batches.c.seq), 0))
            .where(feed_batches.c.publication_id == feed_publications.c.id)
            .scalar_subquery()
        )
        query = select(feed_publications, head.label("head")).where(feed_publications.c.name == name)
        with self.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        return _publication(row) if row is not None else None

    def all(self) -> list[Publication]:
        with self.engine.connect() as conn:
            names = [r.name for r in conn.execute(select(feed_publications.c.name).order_by("name"))]
        return [p for p in (self.get(n) for n in names) if p is not None]

    def delete(self, name: str) -> None:
        """Stop publishing ``name`` (its batches go; subscribers then see it gone, not rolled back)."""
        publication = self._require(name)
        with self.engine.begin() as conn:
            for table in (feed_batches, feed_published):
                conn.execute(delete(table).where(table.c.publication_id == publication.id))
            conn.execute(delete(feed_publications).where(feed_publications.c.id == publication.id))

    def authorized(self, name: str, token: str | None) -> bool | None:
        """None: no such feed; else whether ``token`` may read it (any caller for a public feed).
        Compared in constant time."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(feed_publications.c.token_sha256).where(feed_publications.c.name == name)
            ).first()
        if row is None:
            return None
        expected = row.token_sha256
        if expected is None:
            return True
        return hmac.compare_digest(_token_digest(token or ""), expected)

    def sync(self, name: str, key: Ed25519PrivateKey) -> int:
        """Turn the banks' changes since the last batch into new signed batches; returns how many."""
        with self._sync_lock:
            publication = self._require(name)
            generation = self.banks.state()
            with self.engine.connect() as conn:
                synced = conn.execute(
                    select(feed_publications.c.synced_generation).where(
                        feed_publications.c.id == publication.id
                    )
                ).scalar_one()
            if synced == generation:
                return 0
            try:
                return self._sync(publication, key, generation)
            except IntegrityError:  # another node wrote these batches first
                log.info("feed %s: another process published the same changes", name)
                return 0

    def _sync(self, publication: Publication, key: Ed25519PrivateKey, generation: int) -> int:
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            current = self._current(conn, publication)
            published = {
                (r.hash_kind, r.value)
                for r in conn.execute(
                    select(feed_published.c.hash_kind, feed_published.c.value).where(
                        feed_published.c.publication_id == publication.id
                    )
                )
            }
            retracts = sorted(published - current.keys())
            adds = sorted(current.keys() - published)
            ops: list[list[str]] = [["retract", kind, value] for kind, value in retracts]
            for kind, value in adds:
                note = current[(kind, value)]
                ops.append(["add", kind, value, note] if publication.notes and note else ["add", kind, value])
            last = conn.execute(
                select(feed_batches.c.seq, feed_batches.c.body)
                .where(feed_batches.c.publication_id == publication.id)
                .order_by(feed_batches.c.seq.desc())
                .limit(1)
            ).first()
            seq, prev = (int(last.seq), digest(last.body.encode("ascii"))) if last else (0, "")
            made = 0
            for start in range(0, len(ops), BATCH_OPS):
                seq += 1
                document = {
                    "v": FORMAT, "feed": publication.name, "seq": seq, "prev": prev,
                    "created": now.isoformat(timespec="seconds"), "ops": ops[start : start + BATCH_OPS],
                }  # fmt: skip
                body = canonical(document)
                row = {
                    "publication_id": publication.id, "seq": seq, "body": body.decode("ascii"),
                    "signature": sign(key, body), "created_at": now,
                }  # fmt: skip
                conn.execute(insert(feed_batches).values(**row))
                prev = digest(body)
                made += 1
            for kind in ("pdq", "sha256"):
                values = [value for k, value in retracts if k == kind]
                for start in range(0, len(values), 500):
                    conn.execute(
                        delete(feed_published).where(
                            feed_published.c.publication_id == publication.id,
                            feed_published.c.hash_kind == kind,
                            feed_published.c.value.in_(values[start : start + 500]),
                        )
                    )
            if adds:
                conn.execute(
                    insert(feed_published),
                    [{"publication_id": publication.id, "hash_kind": k, "value": v} for k, v in adds],
                )
            conn.execute(
                update(feed_publications)
                .where(feed_publications.c.id == publication.id)
                .values(synced_generation=generation)
            )
        if made:
            log.info("feed %s: %d new batch(es): %d added, %d retracted", publication.name, made,
                     len(adds), len(retracts))  # fmt: skip
        return made

    def _current(self, conn: Any, publication: Publication) -> dict[tuple[str, str], str]:
        """The published banks' entries now: (hash kind, value) → note."""
        query = (
            select(bank_entries.c.hash_kind, bank_entries.c.value, bank_entries.c.note)
            .join(banks, banks.c.id == bank_entries.c.bank_id)
            .where(banks.c.name.in_(publication.banks), banks.c.kind == "deny")
        )
        out: dict[tuple[str, str], str] = {}
        for row in conn.execution_options(yield_per=10_000).execute(query):
            out.setdefault((row.hash_kind, row.value), row.note or "")
        return out

    def page(self, name: str, after: int, limit: int = PAGE_BATCHES) -> tuple[int, list[Batch]]:
        """(head, the batches after sequence number ``after``, at most ``limit`` of them)."""
        publication = self._require(name)
        limit = max(1, min(limit, MAX_PAGE_BATCHES))
        query = (
            select(feed_batches.c.seq, feed_batches.c.body, feed_batches.c.signature)
            .where(feed_batches.c.publication_id == publication.id, feed_batches.c.seq > after)
            .order_by(feed_batches.c.seq)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return publication.head, [Batch(int(r.seq), r.body, r.signature) for r in rows]

    def _require(self, name: str) -> Publication:
        publication = self.get(name)
        if publication is None:
            raise BankError(f"no published feed named {name!r}")
        return publication


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _publication(row: Any) -> Publication:
    return Publication(
        int(row["id"]),
        row["name"],
        tuple(row["banks"]),
        bool(row["notes"]),
        row["token_sha256"] is None,
        int(row["head"]),
    )
