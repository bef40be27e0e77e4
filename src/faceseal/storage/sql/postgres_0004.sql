-- faceseal PostgreSQL schema, version 4: counter_events by time.
--
-- fs_counter_take deletes the caller's expired events and, in the same statement, every event
-- older than the longest window (a week). With query budgets counted on every verify and
-- identify the table holds an hour of traffic, and without an index on `at` that second half
-- scanned the whole table on every call. Placeholders as in postgres_0001.sql.

CREATE INDEX counter_events_by_at ON @schema@.counter_events (at);
