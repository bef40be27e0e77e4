"""Versioned schema migrations of the SQLite store. Append only: never edit a released step."""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    applied_at  REAL NOT NULL
);
CREATE TABLE meta (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
CREATE TABLE data_keys (
    version      INTEGER PRIMARY KEY CHECK (version > 0),
    wrapped      BLOB NOT NULL,
    created_at   REAL NOT NULL,
    encryptions  INTEGER NOT NULL DEFAULT 0 CHECK (encryptions >= 0)
);
CREATE TABLE subjects (
    tenant        TEXT NOT NULL,
    subject_id    TEXT NOT NULL,
    created_at    REAL NOT NULL,
    last_seen_at  REAL NOT NULL,
    PRIMARY KEY (tenant, subject_id)
);
CREATE TABLE templates (
    template_id  TEXT PRIMARY KEY,
    tenant       TEXT NOT NULL,
    subject_id   TEXT NOT NULL,
    model_id     TEXT NOT NULL,
    dimension    INTEGER NOT NULL,
    dtype        TEXT NOT NULL,
    key_version  INTEGER NOT NULL REFERENCES data_keys (version),
    record       BLOB NOT NULL,
    created_at   REAL NOT NULL,
    FOREIGN KEY (tenant, subject_id) REFERENCES subjects (tenant, subject_id) ON DELETE CASCADE
);
CREATE INDEX templates_by_subject ON templates (tenant, subject_id);
CREATE INDEX templates_by_key_version ON templates (key_version)
""",
    ),
    (
        2,
        """
CREATE TABLE audit_events (
    seq           INTEGER PRIMARY KEY CHECK (seq > 0),
    event_id      TEXT NOT NULL UNIQUE,
    occurred_at   REAL NOT NULL,
    principal     TEXT NOT NULL,
    role          TEXT NOT NULL,
    action        TEXT NOT NULL,
    tenant        TEXT,
    subject_id    TEXT,
    template_ids  TEXT NOT NULL,
    outcome       TEXT NOT NULL,
    request_id    TEXT NOT NULL,
    detail        TEXT NOT NULL,
    prev_mac      BLOB NOT NULL,
    mac           BLOB NOT NULL
);
CREATE INDEX audit_events_by_tenant ON audit_events (tenant, seq);
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;
CREATE TABLE principals (
    principal_id  TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    role          TEXT NOT NULL,
    tenant        TEXT,
    key_id        TEXT NOT NULL UNIQUE,
    key_hash      BLOB NOT NULL,
    created_at    REAL NOT NULL,
    revoked_at    REAL
);
CREATE TABLE tenants (
    tenant             TEXT PRIMARY KEY,
    retention_seconds  REAL
)
""",
    ),
    (
        3,
        # Keyset pages of one tenant's gallery (WHERE tenant = ? AND template_id > ? ORDER BY
        # template_id) walk this index instead of sorting the whole tenant for every page.
        """
CREATE INDEX IF NOT EXISTS templates_by_tenant ON templates (tenant, template_id)
""",
    ),
    (
        4,
        # The change log (docs/architecture.md, "One truth across processes"): every write that
        # alters what a gallery holds bumps its tenant's head and records what changed (ids only),
        # in the same transaction. Templates remember the change that added them, so a gallery
        # at sequence N loads exactly the templates added after N. Templates enrolled before this
        # migration carry change 0. counter_events backs the failed-authentication limits that
        # every process of the vault shares.
        """
CREATE TABLE change_heads (
    tenant  TEXT PRIMARY KEY,
    seq     INTEGER NOT NULL CHECK (seq >= 0)
);
CREATE TABLE changes (
    tenant      TEXT NOT NULL,
    seq         INTEGER NOT NULL CHECK (seq > 0),
    kind        TEXT NOT NULL CHECK (kind IN ('add', 'erase')),
    subject_id  TEXT,
    templates   INTEGER NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (tenant, seq)
);
ALTER TABLE templates ADD COLUMN change_seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX templates_by_change ON templates (tenant, change_seq, template_id);
CREATE TABLE counter_events (
    key   TEXT NOT NULL,
    at    REAL NOT NULL,
    cost  INTEGER NOT NULL CHECK (cost > 0)
);
CREATE INDEX counter_events_by_key ON counter_events (key, at)
""",
    ),
    (
        5,
        # Signed principals and subject inventories (issue 12): MACs under a key the store never
        # holds. Rows from before get empty ones until `faceseal migrate` signs them.
        """
ALTER TABLE principals ADD COLUMN mac BLOB NOT NULL DEFAULT x'';
ALTER TABLE subjects ADD COLUMN inventory BLOB NOT NULL DEFAULT x''
""",
    ),
    (
        6,
        # Each counter key's running total (issue 19): a query budget holds up to thousands of
        # events in its window, and every verify and identify checks and charges one; the total
        # turns that sum into one row read. Kept by the same transactions as the events.
        """
CREATE TABLE counter_totals (
    key    TEXT PRIMARY KEY,
    total  INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counter_totals (key, total) SELECT key, sum(cost) FROM counter_events GROUP BY key
""",
    ),
]
