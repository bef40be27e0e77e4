-- faceseal PostgreSQL schema, version 2: the change log and shared counters.
--
-- Every write that changes what a tenant's gallery must hold (fs_enrol, fs_erase_subject) now
-- bumps the tenant's head in change_heads and logs what changed (ids only) in changes, in the
-- same transaction. The head row stays locked by the writing transaction until it commits, so
-- changes commit in sequence order: a reader that sees head N has every change <= N. On commit
-- a NOTIFY (empty payload: no tenant name or id reaches other listeners) on the channel
-- fs_changes_channel() tells idle replicas to look. Both tables are under the same row-level
-- security as templates; the application login reaches them only through the functions below.
--
-- counter_events backs the failed-authentication limits shared by every replica. Its keys name
-- no secret (a client address or a public key id); only fs_counter_* touch it.

CREATE TABLE @schema@.change_heads (
    tenant  text PRIMARY KEY,
    seq     bigint NOT NULL CHECK (seq >= 0)
);

CREATE TABLE @schema@.changes (
    tenant      text NOT NULL,
    seq         bigint NOT NULL CHECK (seq > 0),
    kind        text NOT NULL CHECK (kind IN ('add', 'erase')),
    subject_id  text,
    templates   bigint NOT NULL,
    at          double precision NOT NULL,
    PRIMARY KEY (tenant, seq)
);

ALTER TABLE @schema@.templates ADD COLUMN change_seq bigint NOT NULL DEFAULT 0;
CREATE INDEX templates_by_change ON @schema@.templates (tenant, change_seq, template_id);

CREATE TABLE @schema@.counter_events (
    key   text NOT NULL,
    at    double precision NOT NULL,
    cost  integer NOT NULL CHECK (cost > 0)
);
CREATE INDEX counter_events_by_key ON @schema@.counter_events (key, at);

ALTER TABLE @schema@.change_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.change_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON @schema@.change_heads
    USING ((SELECT @schema@.fs_scope_all()) OR tenant = ANY ((SELECT @schema@.fs_scope_tenants())::text[]))
    WITH CHECK ((SELECT @schema@.fs_scope_all())
                OR tenant = ANY ((SELECT @schema@.fs_scope_tenants())::text[]));

ALTER TABLE @schema@.changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.changes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON @schema@.changes
    USING ((SELECT @schema@.fs_scope_all()) OR tenant = ANY ((SELECT @schema@.fs_scope_tenants())::text[]))
    WITH CHECK ((SELECT @schema@.fs_scope_all())
                OR tenant = ANY ((SELECT @schema@.fs_scope_tenants())::text[]));

-- The NOTIFY channel of this schema: a fixed-length name (channel names are limited to 63 bytes).
CREATE FUNCTION @schema@.fs_changes_channel() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT 'faceseal_' || left(md5(current_schema()), 20)
$$;

-- Internal (not granted): bump the tenant's head, log one change, notify on commit.
CREATE FUNCTION @schema@.fs_log_change(p_tenant text, p_kind text, p_subject_id text,
                                       p_templates bigint) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
DECLARE
    v_seq bigint;
BEGIN
    INSERT INTO @schema@.change_heads AS h (tenant, seq) VALUES (p_tenant, 1)
        ON CONFLICT (tenant) DO UPDATE SET seq = h.seq + 1
        RETURNING h.seq INTO v_seq;
    INSERT INTO @schema@.changes (tenant, seq, kind, subject_id, templates, at)
        VALUES (p_tenant, v_seq, p_kind, p_subject_id, p_templates,
                extract(epoch FROM clock_timestamp()));
    PERFORM pg_notify(@schema@.fs_changes_channel(), '');
    RETURN v_seq;
END
$$;

CREATE OR REPLACE FUNCTION @schema@.fs_enrol(
    p_template_ids text[], p_tenants text[], p_subject_ids text[], p_model_ids text[],
    p_dimensions integer[], p_dtypes text[], p_key_versions integer[], p_records bytea[],
    p_created_at double precision[], p_now double precision
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
DECLARE
    n integer := coalesce(cardinality(p_template_ids), 0);
    t text;
    v_subjects text[];
    v_seq bigint;
    inserted integer;
    total integer := 0;
BEGIN
    IF coalesce(cardinality(p_tenants), 0) <> n OR coalesce(cardinality(p_subject_ids), 0) <> n
       OR coalesce(cardinality(p_model_ids), 0) <> n OR coalesce(cardinality(p_dimensions), 0) <> n
       OR coalesce(cardinality(p_dtypes), 0) <> n OR coalesce(cardinality(p_key_versions), 0) <> n
       OR coalesce(cardinality(p_records), 0) <> n OR coalesce(cardinality(p_created_at), 0) <> n
    THEN
        RAISE EXCEPTION 'fs_enrol: the column arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF n = 0 THEN
        RETURN 0;
    END IF;
    FOR t IN SELECT DISTINCT x FROM unnest(p_tenants) AS x ORDER BY 1 LOOP
        PERFORM @schema@.fs_require_tenant(t);
    END LOOP;
    INSERT INTO @schema@.subjects AS s (tenant, subject_id, created_at, last_seen_at)
        SELECT DISTINCT x.tenant, x.subject_id, p_now, p_now
        FROM unnest(p_tenants, p_subject_ids) AS x (tenant, subject_id)
        ON CONFLICT (tenant, subject_id) DO UPDATE SET last_seen_at = excluded.last_seen_at;
    FOR t IN SELECT DISTINCT x FROM unnest(p_tenants) AS x ORDER BY 1 LOOP
        SELECT array_agg(DISTINCT x.subject_id) INTO v_subjects
            FROM unnest(p_tenants, p_subject_ids) AS x (tenant, subject_id) WHERE x.tenant = t;
        v_seq := @schema@.fs_log_change(
            t, 'add', CASE WHEN cardinality(v_subjects) = 1 THEN v_subjects[1] END,
            (SELECT count(*) FROM unnest(p_tenants) AS x WHERE x = t));
        INSERT INTO @schema@.templates (template_id, tenant, subject_id, model_id, dimension,
                                        dtype, key_version, record, created_at, change_seq)
            SELECT x.*, v_seq
            FROM unnest(p_template_ids, p_tenants, p_subject_ids, p_model_ids, p_dimensions,
                        p_dtypes, p_key_versions, p_records, p_created_at)
                 AS x (template_id, tenant, subject_id, model_id, dimension, dtype, key_version,
                       record, created_at)
            WHERE x.tenant = t;
        GET DIAGNOSTICS inserted = ROW_COUNT;
        total := total + inserted;
    END LOOP;
    RETURN total;
END
$$;

CREATE OR REPLACE FUNCTION @schema@.fs_erase_subject(p_tenant text, p_subject_id text)
RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
DECLARE
    ids text[];
    subjects_gone integer;
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    WITH gone AS (
        DELETE FROM @schema@.templates t
        WHERE t.tenant = p_tenant AND t.subject_id = p_subject_id
        RETURNING t.template_id)
    SELECT coalesce(array_agg(g.template_id ORDER BY g.template_id), '{}'::text[])
        INTO ids FROM gone g;
    DELETE FROM @schema@.subjects s WHERE s.tenant = p_tenant AND s.subject_id = p_subject_id;
    GET DIAGNOSTICS subjects_gone = ROW_COUNT;
    IF cardinality(ids) > 0 OR subjects_gone > 0 THEN
        PERFORM @schema@.fs_log_change(p_tenant, 'erase', p_subject_id, cardinality(ids));
    END IF;
    RETURN ids;
END
$$;

CREATE FUNCTION @schema@.fs_change_head(p_tenant text) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    RETURN coalesce((SELECT h.seq FROM @schema@.change_heads h WHERE h.tenant = p_tenant), 0);
END
$$;

CREATE FUNCTION @schema@.fs_changes(p_tenant text, p_after bigint, p_upto bigint)
RETURNS TABLE (kind text, subject_id text, templates bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    RETURN QUERY
        SELECT c.kind, c.subject_id, c.templates FROM @schema@.changes c
        WHERE c.tenant = p_tenant AND c.seq > p_after AND c.seq <= p_upto
        ORDER BY c.seq;
END
$$;

-- One page of the templates added by changes in (p_after_seq, p_upto], in (change, id) order
-- after (p_after_seq, p_after_id) (p_after_id NULL: after the whole change p_after_seq); the
-- client streams pages with binary COPY.
CREATE FUNCTION @schema@.fs_templates_added(p_tenant text, p_after_seq bigint, p_after_id text,
                                            p_upto bigint, p_limit integer)
RETURNS TABLE (template_id text, tenant text, subject_id text, model_id text,
               dimension integer, dtype text, key_version integer, record bytea,
               created_at double precision, change_seq bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'fs_templates_added: the page size must be positive'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM @schema@.fs_require_tenant(p_tenant);
    RETURN QUERY
        SELECT t.template_id, t.tenant, t.subject_id, t.model_id, t.dimension, t.dtype,
               t.key_version, t.record, t.created_at, t.change_seq
        FROM @schema@.templates t
        WHERE t.tenant = p_tenant AND t.change_seq <= p_upto
              AND (t.change_seq > p_after_seq
                   OR (t.change_seq = p_after_seq AND t.template_id > p_after_id))
        ORDER BY t.change_seq, t.template_id LIMIT p_limit;
END
$$;

-- Shared sliding-window counters. An advisory lock per key makes take atomic across replicas.
CREATE FUNCTION @schema@.fs_counter_wait(p_key text, p_limit integer, p_window double precision,
                                         p_cost integer, p_now double precision)
RETURNS double precision
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
DECLARE
    held bigint;
    v_at double precision;
BEGIN
    SELECT coalesce(sum(e.cost), 0) INTO held FROM @schema@.counter_events e
        WHERE e.key = p_key AND e.at > p_now - p_window;
    IF held + p_cost <= p_limit THEN
        RETURN NULL;
    END IF;
    IF p_cost > p_limit THEN
        RETURN p_window;
    END IF;
    SELECT r.at INTO v_at FROM (
        SELECT e.at, sum(e.cost) OVER (ORDER BY e.at ROWS UNBOUNDED PRECEDING) AS run
        FROM @schema@.counter_events e WHERE e.key = p_key AND e.at > p_now - p_window) r
        WHERE r.run >= held + p_cost - p_limit ORDER BY r.at LIMIT 1;
    RETURN greatest(coalesce(v_at + p_window - p_now, p_window), 0);
END
$$;

CREATE FUNCTION @schema@.fs_counter_take(p_key text, p_limit integer, p_window double precision,
                                         p_cost integer, p_now double precision)
RETURNS double precision
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
DECLARE
    wait double precision;
BEGIN
    IF p_cost IS NULL OR p_cost < 1 OR p_window IS NULL OR p_window <= 0
       OR length(p_key) > 512 THEN
        RAISE EXCEPTION 'fs_counter_take: bad arguments' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('faceseal-counter:' || p_key));
    DELETE FROM @schema@.counter_events e
        WHERE (e.key = p_key AND e.at <= p_now - p_window) OR e.at <= p_now - 604800;
    IF p_limit IS NOT NULL THEN
        wait := @schema@.fs_counter_wait(p_key, p_limit, p_window, p_cost, p_now);
        IF wait IS NOT NULL THEN
            RETURN wait;
        END IF;
    END IF;
    INSERT INTO @schema@.counter_events (key, at, cost) VALUES (p_key, p_now, p_cost);
    RETURN NULL;
END
$$;

CREATE FUNCTION @schema@.fs_counter_retry_after(p_key text, p_limit integer,
                                                p_window double precision,
                                                p_now double precision)
RETURNS double precision
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT @schema@.fs_counter_wait(p_key, p_limit, p_window, 1, p_now)
$$;

REVOKE ALL ON ALL TABLES IN SCHEMA @schema@ FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @schema@ FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    @schema@.fs_changes_channel(),
    @schema@.fs_change_head(text),
    @schema@.fs_changes(text, bigint, bigint),
    @schema@.fs_templates_added(text, bigint, text, bigint, integer),
    @schema@.fs_counter_take(text, integer, double precision, integer, double precision),
    @schema@.fs_counter_retry_after(text, integer, double precision, double precision)
TO @app@;
