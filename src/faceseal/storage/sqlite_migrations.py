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
]
