"""Table definitions (SQLAlchemy Core), shared by SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    true,
)

metadata = MetaData()

# SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL wants BIGINT for a long life.
_Id = BigInteger().with_variant(Integer(), "sqlite")

decisions = Table(
    "decisions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("source", String(32), nullable=False),  # gateway | scan | sweep
    Column("client", String(200), nullable=False),
    Column("media_type", String(200), nullable=True),  # as declared by the caller
    Column("detected_type", String(100), nullable=True),  # as sniffed from the bytes
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("pdq", JSON, nullable=True),  # [{"frame": i, "hash": hex, "quality": q, "view"?: v}, ...]
    Column("verdict", String(16), nullable=False),
    Column("labels", JSON, nullable=False),
    Column("reasons", JSON, nullable=False),
    Column("results", JSON, nullable=False),  # per-detector DetectorResult.to_json()
    Column("timings", JSON, nullable=False),  # stage -> seconds
    Column("fail_reason", String(32), nullable=True),
    Column("fail_policy", String(16), nullable=True),
    Column("scanner", String(200), nullable=True),  # "local" or the remote worker's name
    Column("fingerprint", Text, nullable=True),  # detector versions + policy, for cache validity
    Column("review", String(16), nullable=True),  # None | confirmed | overturned
    Column("review_note", Text, nullable=True),
    Column("reviewed_at", DateTime(timezone=True), nullable=True),
    Column("reviewed_by", String(200), nullable=True),
    Index("ix_decisions_sha256", "sha256"),
    Index("ix_decisions_created_at", "created_at"),
    Index("ix_decisions_verdict", "verdict"),
)

banks = Table(
    "banks",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("kind", String(8), nullable=False),  # deny | allow
    Column("description", Text, nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Governance (docs/banks.md): a disabled bank matches nothing; its PDQ match radius (NULL: the
    # pdq_max_distance setting); the flood guard's limit of distinct uploads one entry may match
    # within its window (NULL: the default for the bank's kind, banks/governance.py; 0: off).
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("max_distance", Integer, nullable=True),
    Column("flood_limit", Integer, nullable=True),
    Column("flood_window_s", Integer, nullable=True),
)

bank_entries = Table(
    "bank_entries",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("bank_id", _Id, ForeignKey("banks.id"), nullable=False),
    Column("hash_kind", String(8), nullable=False),  # pdq | sha256
    Column("value", String(64), nullable=False),  # 64 lowercase hex characters
    Column("note", Text, nullable=False, default=""),
    Column("source", String(300), nullable=False, default=""),  # file, record id, "cli"
    Column("added_by", String(200), nullable=False, default=""),
    Column("added_at", DateTime(timezone=True), nullable=False),
    # A PDQ hash of a cropped copy of the image behind entry ``variant_of`` (banks/pdq.py CROPS):
    # the crop's name, e.g. "left 5%". Such entries go when their entry goes.
    Column("variant", String(32), nullable=True),
    Column("variant_of", _Id, nullable=True),
    # Where it came from: file | hash | record | import | feed (``source`` holds the detail).
    Column("source_kind", String(16), nullable=False, server_default=""),
    # active | disabled (by an admin) | suspended (by the flood guard: its matches go to review).
    Column("status", String(16), nullable=False, server_default="active"),
    Column("status_note", Text, nullable=True),
    Column("status_at", DateTime(timezone=True), nullable=True),
    Column("match_count", BigInteger, nullable=False, server_default="0"),
    Column("last_matched_at", DateTime(timezone=True), nullable=True),
    # When recorded decisions were last matched against it (retroactive matching); NULL: not yet.
    Column("rematched_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("bank_id", "hash_kind", "value", name="uq_bank_entries_hash"),
    Index("ix_bank_entries_value", "hash_kind", "value"),
    Index("ix_bank_entries_rematched_at", "rematched_at"),
)

bank_matches = Table(
    "bank_matches",
    metadata,
    # The distinct uploads (by SHA-256) each guarded entry matched lately: the flood guard's window,
    # kept in the database so that it holds across restarts and every node sharing it.
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("entry_id", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("matched_at", DateTime(timezone=True), nullable=False),
    Index("ix_bank_matches_entry", "entry_id", "matched_at"),
)

bank_alerts = Table(
    "bank_alerts",
    metadata,
    # What the review queue shows about the banks themselves: an entry the flood guard suspended.
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("kind", String(32), nullable=False),  # flood
    Column("bank", String(100), nullable=False),
    Column("entry_id", BigInteger, nullable=True),
    Column("message", Text, nullable=False),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    Column("resolved_by", String(200), nullable=True),
    Index("ix_bank_alerts_resolved_at", "resolved_at"),
)

rematches = Table(
    "rematches",
    metadata,
    # A recorded decision that a deny entry added (or re-enabled) after it now matches.
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("found_at", DateTime(timezone=True), nullable=False),
    Column("decision_id", BigInteger, nullable=False),
    Column("entry_id", BigInteger, nullable=False),
    Column("bank", String(100), nullable=False),
    Column("hash_kind", String(8), nullable=False),
    Column("distance", Integer, nullable=False),
    Column("frame", Integer, nullable=True),
    UniqueConstraint("decision_id", "entry_id", name="uq_rematches_decision_entry"),
    Index("ix_rematches_found_at", "found_at"),
)

bank_generation = Table(
    "bank_generation",
    metadata,
    # One row (id 1) whose generation every bank-changing write raises in its own transaction: the
    # change marker gateways poll. Entry counts and ids are not one: SQLite reuses deleted ids.
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("generation", BigInteger, nullable=False),
)

sweep_sources = Table(
    "sweep_sources",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("url", String(1000), nullable=False, unique=True),
    Column("options", JSON, nullable=False),  # non-secret options, so `restore` can reopen it
    Column("action", String(16), nullable=True),  # of the last sweep that acted: for `rematch`
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

sweep_objects = Table(
    "sweep_objects",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("source_id", _Id, ForeignKey("sweep_sources.id"), nullable=False),
    Column("key", String(1024), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("modified", DateTime(timezone=True), nullable=False),
    Column("etag", String(200), nullable=True),
    Column("sha256", String(64), nullable=True),
    Column("status", String(16), nullable=False),  # scanned | skipped | error
    Column("verdict", String(16), nullable=True),
    Column("decision_id", BigInteger, nullable=True),
    Column("error", Text, nullable=True),
    # Actions are recorded as pending before they happen and done after, so a crash never loses
    # track of an object: a later run finishes what is pending.
    Column("action", String(16), nullable=True),  # quarantine | delete | restore
    Column("action_state", String(16), nullable=True),  # pending | done | failed
    Column("quarantine_key", String(1100), nullable=True),
    Column("scanned_at", DateTime(timezone=True), nullable=False),
    # Set when a bank gained an entry that matches its recorded decision (retroactive matching):
    # the next sweep (or `fediguard rematch`) flags it and acts on it without reading it again.
    Column("rematched_at", DateTime(timezone=True), nullable=True),
    UniqueConstraint("source_id", "key", name="uq_sweep_objects_key"),
    Index("ix_sweep_objects_action_state", "action_state"),
    Index("ix_sweep_objects_rematched_at", "rematched_at"),
)

spool_marks = Table(
    "spool_marks",
    metadata,
    # How far each spool segment (records/spool.py; one generation per segment file) has been written
    # to the database: raised in the same transaction as the decisions it covers, so a segment is
    # applied exactly once whatever crashes between that commit and the segment's removal.
    Column("generation", String(100), primary_key=True),
    Column("applied_seq", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

# --- the moderators' review desk (fediguard.desk) -----------------------------------------------

decision_flags = Table(
    "decision_flags",
    metadata,
    # The review queue's index: one row per label of a decision (but ``allowlisted``) and for the
    # verdict ``unscanned``, plus one row ``*`` for any of them; written with the decision. Its key
    # (flag, decision_id) gives the queue its newest flagged decisions without reading the passes.
    Column("flag", String(32), primary_key=True),
    Column("decision_id", BigInteger, primary_key=True, autoincrement=False),
)

desk_accounts = Table(
    "desk_accounts",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(16), nullable=False),  # admin | reviewer
    Column("password_hash", String(200), nullable=False),  # Argon2id, PHC string
    Column("blur", Integer, nullable=False, default=16),  # the thumbnails' blur radius, per reviewer
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

desk_audit = Table(
    "desk_audit",
    metadata,
    # Every account change, review action and reveal: who, what, when (and why, when a reason is asked).
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("actor", String(100), nullable=False),  # account name, or "cli:<user>", or "system"
    Column("action", String(32), nullable=False),
    Column("decision_id", BigInteger, nullable=True),
    Column("detail", Text, nullable=False, default=""),
    Index("ix_desk_audit_at", "at"),
)

desk_items = Table(
    "desk_items",
    metadata,
    # A decision's state on the desk: who holds it (until when), and its report to a hotline.
    Column("decision_id", BigInteger, primary_key=True, autoincrement=False),
    Column("claimed_by", String(100), nullable=True),
    Column("claimed_until", DateTime(timezone=True), nullable=True),
    Column("report_ref", String(200), nullable=True),
    Column("reported_by", String(100), nullable=True),
    Column("reported_at", DateTime(timezone=True), nullable=True),
)

# --- hash feeds (banks/feeds/, docs/feeds.md) ------------------------------------------------------

feed_publications = Table(
    "feed_publications",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("banks", JSON, nullable=False),  # names of the deny banks published
    Column("notes", Boolean, nullable=False),  # whether entries' notes are published
    Column("token_sha256", String(64), nullable=True),  # None: a public feed
    Column("synced_generation", BigInteger, nullable=False),  # bank_generation last turned into batches
    Column("created_at", DateTime(timezone=True), nullable=False),
)

feed_batches = Table(
    "feed_batches",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("publication_id", _Id, ForeignKey("feed_publications.id"), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("body", Text, nullable=False),  # the canonical JSON that is signed
    Column("signature", String(100), nullable=False),  # Ed25519, base64
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("publication_id", "seq", name="uq_feed_batches_seq"),
)

feed_published = Table(
    "feed_published",
    metadata,
    # What a feed's batches add up to: the set the next batch is the difference from.
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("publication_id", _Id, ForeignKey("feed_publications.id"), nullable=False),
    Column("hash_kind", String(8), nullable=False),
    Column("value", String(64), nullable=False),
    UniqueConstraint("publication_id", "hash_kind", "value", name="uq_feed_published_hash"),
)

feed_subscriptions = Table(
    "feed_subscriptions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("url", String(1000), nullable=False),
    Column("public_key", String(100), nullable=False),  # ed25519:BASE64
    Column("token", Text, nullable=True),  # the publisher's read token (None: a public feed)
    Column("action", String(8), nullable=False),  # deny | review
    Column("bank", String(100), nullable=False),  # the local bank the entries go to
    Column("last_seq", BigInteger, nullable=False),
    Column("last_digest", String(64), nullable=False),  # SHA-256 of the last applied batch's body
    Column("polled_at", DateTime(timezone=True), nullable=True),
    Column("synced_at", DateTime(timezone=True), nullable=True),
    Column("error", Text, nullable=True),  # why the last poll was refused or failed; None when it was fine
    Column("created_at", DateTime(timezone=True), nullable=False),
)
