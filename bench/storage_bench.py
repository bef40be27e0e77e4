"""Storage benchmark: bulk enrolment and gallery loading, PostgreSQL and SQLite.

For N encodings (default 100,000; 128-d float64, sealed records of 1,060 bytes, 4 per subject)
it measures, in one run and on the same rows:

* PostgreSQL enrolment through the store (binary COPY into a session temp table, one
  ``fs_enrol`` SECURITY DEFINER call per 20,000 rows), against two one-row-per-statement
  baselines: one ``fs_enrol`` call per row (the same access path, row by row), and one plain
  ``INSERT`` per row by the table owner into an unprotected copy of the table;
* SQLite enrolment through the store (``executemany`` in one transaction) against one
  ``INSERT`` statement per row (same transaction, same schema);
* gallery loading: streaming every template of the tenant back, from each store (PostgreSQL:
  binary ``COPY`` of ``fs_gallery`` pages).

Records are random bytes of the right size: the stores never look inside them, and leaving the
AES-GCM sealing out keeps the figures about storage. Run::

    .venv/bin/python bench/storage_bench.py [--count 100000] [--baseline-count 10000] [--json]

The row-by-row ``fs_enrol`` baseline runs on the first ``--baseline-count`` rows (default
10,000) and is compared by rate (rows per second): on 100,000 rows it alone would take minutes.
The other baselines run on all rows.

PostgreSQL: ``$FACESEAL_BENCH_PG_URL`` (default ``postgresql://postgres@127.0.0.1:5432/postgres``),
a superuser URL used to create (and drop afterwards) a throwaway database and roles with random
names; the store itself runs as a plain login granted every tenant, as in production.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from faceseal.storage.base import TemplateRow, TemplateStore
from faceseal.storage.pg_common import connect
from faceseal.storage.postgres import PostgresStore
from faceseal.storage.postgres_admin import grant_login, migrate_schema
from faceseal.storage.postgres_url import parse_pg_url
from faceseal.storage.sqlite import SQLiteStore

RECORD_BYTES = 36 + 128 * 8
TENANT = "bench"


def make_rows(count: int) -> list[TemplateRow]:
    now = time.time()
    return [TemplateRow(os.urandom(16).hex(), TENANT, f"subject-{i // 4:07d}", "dlib-resnet-v1",
                        128, "float64", 1, os.urandom(RECORD_BYTES), now)
            for i in range(count)]


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def load_gallery(store: TemplateStore) -> int:
    return sum(len(batch) for batch in store.gallery(TENANT))


# --- PostgreSQL --------------------------------------------------------------------------------


class PgBench:
    """A throwaway database with the faceseal schema, and a plain login granted every tenant."""

    def __init__(self, server: str) -> None:
        suffix = os.urandom(5).hex()
        self.server = server
        self.database = f"fs_bench_{suffix}"
        self.prefix = f"fsb_{suffix}"
        self.login = f"{self.prefix}_login"
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(self.login)))
        admin = parse_pg_url(self.url(None) + f"?roles={self.prefix}")
        with connect(admin) as conn:
            migrate_schema(conn, admin)
            grant_login(conn, admin, self.login, None)
            self.version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]

    def url(self, user: str | None) -> str:
        parts = urlsplit(self.server)
        netloc = parts.netloc.rpartition("@")[2]
        user = user if user is not None else parts.username
        return urlunsplit((parts.scheme, f"{user}@{netloc}" if user else netloc,
                           f"/{self.database}", "", ""))

    def store_url(self) -> str:
        return self.url(self.login) + f"?roles={self.prefix}"

    def drop(self) -> None:
        with psycopg.connect(self.server, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(self.database)))
            for (role,) in conn.execute(
                    "SELECT rolname FROM pg_roles WHERE rolname LIKE %s "
                    "ORDER BY length(rolname) DESC", (self.prefix + "%",)).fetchall():
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def pg_per_row_function(store: PostgresStore, rows: Sequence[TemplateRow]) -> None:
    """Baseline: the same SECURITY DEFINER path, one statement per row, one transaction."""
    now = time.time()
    with store.transaction():
        for row in rows:
            store._enrol_arrays([row], now)  # the one-row path, on purpose


def pg_per_row_insert(bench: PgBench, rows: Sequence[TemplateRow]) -> None:
    """Baseline: plain INSERTs, one per row, by the owner of an unprotected copy of the tables."""
    with psycopg.connect(bench.url(None), autocommit=True) as conn:
        conn.execute("CREATE TABLE subjects_plain (tenant text, subject_id text, created_at float8,"
                     " last_seen_at float8, PRIMARY KEY (tenant, subject_id))")
        conn.execute("CREATE TABLE templates_plain (template_id text PRIMARY KEY, tenant text, "
                     "subject_id text, model_id text, dimension int, dtype text, key_version int,"
                     " record bytea, created_at float8, FOREIGN KEY (tenant, subject_id) "
                     "REFERENCES subjects_plain)")
        conn.execute("CREATE INDEX ON templates_plain (tenant, subject_id)")
        now = time.time()
        with conn.transaction(), conn.cursor() as cursor:
            for r in rows:
                cursor.execute("INSERT INTO subjects_plain VALUES (%s, %s, %s, %s) ON CONFLICT "
                               "(tenant, subject_id) DO UPDATE SET last_seen_at = "
                               "excluded.last_seen_at", (r.tenant, r.subject_id, now, now))
                cursor.execute("INSERT INTO templates_plain VALUES (%s, %s, %s, %s, %s, %s, %s, "
                               "%s, %s)", (r.template_id, r.tenant, r.subject_id, r.model_id,
                                           r.dimension, r.dtype, r.key_version, r.record,
                                           r.created_at))


def bench_postgres(server: str, rows: list[TemplateRow], function_baseline: list[TemplateRow]
                   ) -> dict[str, Any]:
    bench = PgBench(server)
    try:
        with PostgresStore(bench.store_url()) as store:
            store.insert_data_key(1, b"wrapped", time.time())
            copy_seconds = timed(lambda: store.add_templates(rows))
            gallery_seconds = timed(lambda: load_gallery(store))
            assert load_gallery(store) == len(rows)
            per_row_rows = [TemplateRow(os.urandom(16).hex(), "baseline", r.subject_id,
                                        r.model_id, r.dimension, r.dtype, r.key_version,
                                        r.record, r.created_at) for r in function_baseline]
            function_seconds = timed(lambda: pg_per_row_function(store, per_row_rows))
        insert_seconds = timed(lambda: pg_per_row_insert(bench, rows))
        return {"server": f"PostgreSQL {bench.version}",
                "copy_seconds": copy_seconds, "gallery_seconds": gallery_seconds,
                "per_row_function_seconds": function_seconds,
                "per_row_insert_seconds": insert_seconds}
    finally:
        bench.drop()


# --- SQLite --------------------------------------------------------------------------------------


def sqlite_per_row(path: Path, rows: Sequence[TemplateRow]) -> None:
    """Baseline: the store's own schema, one INSERT statement per row, one transaction."""
    SQLiteStore(path, create=True).migrate()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("INSERT INTO data_keys VALUES (1, x'00', 0, 0)")
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    for r in rows:
        db.execute("INSERT INTO subjects (tenant, subject_id, created_at, last_seen_at) "
                   "VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                   "last_seen_at = excluded.last_seen_at", (r.tenant, r.subject_id, now, now))
        db.execute("INSERT INTO templates (template_id, tenant, subject_id, model_id, dimension, "
                   "dtype, key_version, record, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (r.template_id, r.tenant, r.subject_id, r.model_id, r.dimension, r.dtype,
                    r.key_version, r.record, r.created_at))
    db.execute("COMMIT")
    db.close()


def bench_sqlite(rows: list[TemplateRow]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="faceseal-bench-") as tmp:
        store = SQLiteStore(Path(tmp) / "bulk.db", create=True)
        store.migrate()
        store.insert_data_key(1, b"wrapped", time.time())
        bulk_seconds = timed(lambda: store.add_templates(rows))
        gallery_seconds = timed(lambda: load_gallery(store))
        assert load_gallery(store) == len(rows)
        store.close()
        per_row_seconds = timed(lambda: sqlite_per_row(Path(tmp) / "per-row.db", rows))
    return {"server": f"SQLite {sqlite3.sqlite_version}", "bulk_seconds": bulk_seconds,
            "gallery_seconds": gallery_seconds, "per_row_seconds": per_row_seconds}


# --- report --------------------------------------------------------------------------------------


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def report(count: int, baseline_count: int, pg: dict[str, Any], lite: dict[str, Any]) -> None:
    def line(label: str, seconds: float, rows: int, vs: float | None = None) -> None:
        ratio = f"   x{vs:,.1f} vs bulk" if vs is not None else ""
        print(f"  {label:<58} {seconds:8.2f} s {rate(rows, seconds):>12,.0f} rows/s{ratio}")

    print(f"faceseal storage benchmark: {count:,} encodings (128-d float64, {RECORD_BYTES}-byte "
          f"records, {count // 4:,} subjects)")
    pg_bulk = rate(count, pg["copy_seconds"])
    print(pg["server"])
    line("enrol: binary COPY + one fs_enrol per 20,000 rows", pg["copy_seconds"], count)
    line(f"baseline: one fs_enrol call per row ({baseline_count:,} rows)",
         pg["per_row_function_seconds"], baseline_count,
         pg_bulk / rate(baseline_count, pg["per_row_function_seconds"]))
    line("baseline: one plain INSERT per row (owner, no RLS)", pg["per_row_insert_seconds"],
         count, pg_bulk / rate(count, pg["per_row_insert_seconds"]))
    line("gallery load: binary COPY pages of 10,000", pg["gallery_seconds"], count)
    lite_bulk = rate(count, lite["bulk_seconds"])
    print(lite["server"])
    line("enrol: executemany in one transaction", lite["bulk_seconds"], count)
    line("baseline: one INSERT per row, same transaction", lite["per_row_seconds"],
         count, lite_bulk / rate(count, lite["per_row_seconds"]))
    line("gallery load: keyset pages of 10,000", lite["gallery_seconds"], count)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--baseline-count", type=int, default=10_000,
                        help="rows for the one-fs_enrol-call-per-row PostgreSQL baseline, "
                             "compared by rate (default 10,000: on 100,000 rows it alone would "
                             "take minutes); the other baselines use --count rows")
    parser.add_argument("--pg-url", default=os.environ.get(
        "FACESEAL_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    baseline_count = min(args.baseline_count, args.count)
    rows = make_rows(args.count)
    pg = bench_postgres(args.pg_url, rows, rows[:baseline_count])
    lite = bench_sqlite(rows)
    if args.json:
        json.dump({"count": args.count, "baseline_count": baseline_count, "postgres": pg,
                   "sqlite": lite}, sys.stdout, indent=2)
        print()
    else:
        report(args.count, baseline_count, pg, lite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
