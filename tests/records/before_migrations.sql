-- The tables of fediguard's releases before migrations, as the last of them made them (SQLAlchemy's
-- create_all of schema.py at commit bce40c1, unchanged up to d7e9d00, which added
-- bank_entries.variant and variant_of): every table but those two columns, no alembic_version.
-- Its first release (ebb0938) made the decisions table alone, the same as here.
-- {id} {ref} {timestamp}: INTEGER INTEGER DATETIME on SQLite, BIGSERIAL BIGINT TIMESTAMP WITH TIME ZONE
-- on PostgreSQL.

CREATE TABLE decisions (
	id {id} NOT NULL,
	created_at {timestamp} NOT NULL,
	source VARCHAR(32) NOT NULL,
	client VARCHAR(200) NOT NULL,
	media_type VARCHAR(200),
	detected_type VARCHAR(100),
	size BIGINT NOT NULL,
	sha256 VARCHAR(64) NOT NULL,
	pdq JSON,
	verdict VARCHAR(16) NOT NULL,
	labels JSON NOT NULL,
	reasons JSON NOT NULL,
	results JSON NOT NULL,
	timings JSON NOT NULL,
	fail_reason VARCHAR(32),
	fail_policy VARCHAR(16),
	scanner VARCHAR(200),
	fingerprint TEXT,
	review VARCHAR(16),
	review_note TEXT,
	reviewed_at {timestamp},
	reviewed_by VARCHAR(200),
	PRIMARY KEY (id)
);

CREATE INDEX ix_decisions_verdict ON decisions (verdict);

CREATE INDEX ix_decisions_sha256 ON decisions (sha256);

CREATE INDEX ix_decisions_created_at ON decisions (created_at);

CREATE TABLE banks (
	id {id} NOT NULL,
	name VARCHAR(100) NOT NULL,
	kind VARCHAR(8) NOT NULL,
	description TEXT NOT NULL,
	created_at {timestamp} NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (name)
);

CREATE TABLE bank_generation (
	id INTEGER NOT NULL,
	generation BIGINT NOT NULL,
	PRIMARY KEY (id)
);

CREATE TABLE sweep_sources (
	id {id} NOT NULL,
	url VARCHAR(1000) NOT NULL,
	options JSON NOT NULL,
	updated_at {timestamp} NOT NULL,
	PRIMARY KEY (id),
	UNIQUE (url)
);

CREATE TABLE bank_entries (
	id {id} NOT NULL,
	bank_id {ref} NOT NULL,
	hash_kind VARCHAR(8) NOT NULL,
	value VARCHAR(64) NOT NULL,
	note TEXT NOT NULL,
	source VARCHAR(300) NOT NULL,
	added_by VARCHAR(200) NOT NULL,
	added_at {timestamp} NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_bank_entries_hash UNIQUE (bank_id, hash_kind, value),
	FOREIGN KEY(bank_id) REFERENCES banks (id)
);

CREATE INDEX ix_bank_entries_value ON bank_entries (hash_kind, value);

CREATE TABLE sweep_objects (
	id {id} NOT NULL,
	source_id {ref} NOT NULL,
	"key" VARCHAR(1024) NOT NULL,
	size BIGINT NOT NULL,
	modified {timestamp} NOT NULL,
	etag VARCHAR(200),
	sha256 VARCHAR(64),
	status VARCHAR(16) NOT NULL,
	verdict VARCHAR(16),
	decision_id BIGINT,
	error TEXT,
	action VARCHAR(16),
	action_state VARCHAR(16),
	quarantine_key VARCHAR(1100),
	scanned_at {timestamp} NOT NULL,
	PRIMARY KEY (id),
	CONSTRAINT uq_sweep_objects_key UNIQUE (source_id, "key"),
	FOREIGN KEY(source_id) REFERENCES sweep_sources (id)
);

CREATE INDEX ix_sweep_objects_action_state ON sweep_objects (action_state);
