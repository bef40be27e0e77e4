-- faceseal PostgreSQL schema, version 1.
--
-- Run by `faceseal migrate --admin-url` / `faceseal init --admin-url` inside one transaction,
-- after SET LOCAL ROLE to the owner role: everything below is owned by the NOLOGIN owner role.
-- The schema and role names are placeholders that faceseal fills in from the store URL
-- (`faceseal db schema-sql` prints this file filled in).
--
-- Guarantees (tested in tests/test_postgres_access.py, described in docs/storage.md):
-- * the application role holds no privilege on any table; it calls SECURITY DEFINER functions
--   whose search_path is pinned to this schema (pg_temp last);
-- * tenants are separated by row-level security, FORCEd so that the owner -- and therefore every
--   SECURITY DEFINER function -- obeys it; the policies look at session_user (the login role,
--   which SET ROLE cannot change) in tenant_grants, so no argument or setting widens them;
-- * audit_events is append-only: nobody but the auditor holds any privilege on it (SELECT), and
--   triggers refuse UPDATE, DELETE and TRUNCATE even to the owner; an insert must continue the
--   hash chain (seq = head + 1, prev_mac = head mac).

REVOKE ALL ON SCHEMA @schema@ FROM PUBLIC;
GRANT USAGE ON SCHEMA @schema@ TO @app@, @auditor@;
-- (Per-schema default privileges cannot revoke; this one applies to the owner's new functions.)
ALTER DEFAULT PRIVILEGES FOR ROLE @owner@ REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

-- --- tables ------------------------------------------------------------------------------------

CREATE TABLE @schema@.schema_migrations (
    version     integer PRIMARY KEY,
    applied_at  double precision NOT NULL
);

CREATE TABLE @schema@.meta (
    key    text PRIMARY KEY,
    value  text NOT NULL
);

CREATE TABLE @schema@.data_keys (
    version      integer PRIMARY KEY CHECK (version > 0),
    wrapped      bytea NOT NULL,
    created_at   double precision NOT NULL,
    encryptions  bigint NOT NULL DEFAULT 0 CHECK (encryptions >= 0)
);

CREATE TABLE @schema@.subjects (
    tenant        text NOT NULL,
    subject_id    text NOT NULL,
    created_at    double precision NOT NULL,
    last_seen_at  double precision NOT NULL,
    PRIMARY KEY (tenant, subject_id)
);

CREATE TABLE @schema@.templates (
    template_id  text PRIMARY KEY,
    tenant       text NOT NULL,
    subject_id   text NOT NULL,
    model_id     text NOT NULL,
    dimension    integer NOT NULL CHECK (dimension > 0),
    dtype        text NOT NULL,
    key_version  integer NOT NULL REFERENCES @schema@.data_keys (version),
    record       bytea NOT NULL,
    created_at   double precision NOT NULL,
    FOREIGN KEY (tenant, subject_id) REFERENCES @schema@.subjects (tenant, subject_id)
        ON DELETE CASCADE
);
CREATE INDEX templates_by_subject ON @schema@.templates (tenant, subject_id);
CREATE INDEX templates_by_tenant ON @schema@.templates (tenant, template_id);

-- How many records each data-key version seals, across every tenant. Kept by statement triggers
-- on templates, so that retiring a key never depends on what one login's tenants can see.
CREATE TABLE @schema@.key_usage (
    version  integer PRIMARY KEY,
    records  bigint NOT NULL CHECK (records >= 0)
);

CREATE TABLE @schema@.audit_events (
    seq           bigint PRIMARY KEY CHECK (seq > 0),
    event_id      text NOT NULL UNIQUE,
    occurred_at   double precision NOT NULL,
    principal     text NOT NULL,
    role          text NOT NULL,
    action        text NOT NULL,
    tenant        text,
    subject_id    text,
    template_ids  text[] NOT NULL,
    outcome       text NOT NULL,
    request_id    text NOT NULL,
    detail        text NOT NULL,
    prev_mac      bytea NOT NULL,
    mac           bytea NOT NULL,
    -- The database's own clock when the row went in: a witness independent of the application.
    recorded_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX audit_events_by_tenant ON @schema@.audit_events (tenant, seq);

-- The head of the audit chain: one row, locked by each append (serialises writers).
CREATE TABLE @schema@.audit_head (
    only_row  boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    seq       bigint NOT NULL,
    mac       bytea NOT NULL
);
INSERT INTO @schema@.audit_head (only_row, seq, mac) VALUES (true, 0, ''::bytea);

CREATE TABLE @schema@.principals (
    principal_id  text PRIMARY KEY,
    name          text NOT NULL UNIQUE,
    role          text NOT NULL,
    tenant        text,
    key_id        text NOT NULL UNIQUE,
    key_hash      bytea NOT NULL,
    created_at    double precision NOT NULL,
    revoked_at    double precision
);

CREATE TABLE @schema@.tenants (
    tenant             text PRIMARY KEY,
    retention_seconds  double precision
);

-- Which tenants each login role may touch (tenant NULL: every tenant). Matched on the role's OID,
-- so a dropped and re-created role with the same name starts with no grant.
CREATE TABLE @schema@.tenant_grants (
    role_oid    oid NOT NULL,
    role_name   text NOT NULL,
    tenant      text CHECK (tenant <> ''),
    granted_at  timestamptz NOT NULL DEFAULT now()
);
-- One row per (role, tenant), NULL (every tenant) included; an expression index rather than
-- UNIQUE NULLS NOT DISTINCT keeps the schema usable on PostgreSQL 13 and 14.
CREATE UNIQUE INDEX tenant_grants_once ON @schema@.tenant_grants (role_oid, coalesce(tenant, ''));

-- --- who is asking: the login role's tenant scope ----------------------------------------------

CREATE FUNCTION @schema@.fs_scope_all() RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT EXISTS (
        SELECT 1 FROM @schema@.tenant_grants g
        JOIN pg_catalog.pg_roles r ON r.oid = g.role_oid
        WHERE r.rolname = session_user AND g.tenant IS NULL)
$$;

CREATE FUNCTION @schema@.fs_scope_tenants() RETURNS text[]
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT coalesce(array_agg(g.tenant ORDER BY g.tenant), '{}'::text[])
    FROM @schema@.tenant_grants g
    JOIN pg_catalog.pg_roles r ON r.oid = g.role_oid
    WHERE r.rolname = session_user AND g.tenant IS NOT NULL
$$;

CREATE FUNCTION @schema@.fs_require_tenant(p_tenant text) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    IF p_tenant IS NULL OR NOT (@schema@.fs_scope_all()
                                OR p_tenant = ANY (@schema@.fs_scope_tenants())) THEN
        RAISE EXCEPTION 'tenant % is not granted to database role %', p_tenant, session_user
            USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

CREATE FUNCTION @schema@.fs_require_all_tenants() RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    IF NOT @schema@.fs_scope_all() THEN
        RAISE EXCEPTION 'this operation needs a database role granted every tenant; % is not',
            session_user USING ERRCODE = 'insufficient_privilege';
    END IF;
END
$$;

-- --- row-level security (FORCEd: the owner, hence every function, obeys it) ---------------------

ALTER TABLE @schema@.subjects ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.subjects FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON @schema@.subjects
    USING ((SELECT @schema@.fs_scope_all()) OR tenant = ANY ((SELECT @schema@.fs_scope_tenants())::text[]))
    WITH CHECK ((SELECT @schema@.fs_scope_all())
                OR tenant = ANY ((SELECT @schema@.fs_scope_tenants())::text[]));

ALTER TABLE @schema@.templates ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.templates FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON @schema@.templates
    USING ((SELECT @schema@.fs_scope_all()) OR tenant = ANY ((SELECT @schema@.fs_scope_tenants())::text[]))
    WITH CHECK ((SELECT @schema@.fs_scope_all())
                OR tenant = ANY ((SELECT @schema@.fs_scope_tenants())::text[]));

ALTER TABLE @schema@.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON @schema@.tenants
    USING ((SELECT @schema@.fs_scope_all()) OR tenant = ANY ((SELECT @schema@.fs_scope_tenants())::text[]))
    WITH CHECK ((SELECT @schema@.fs_scope_all())
                OR tenant = ANY ((SELECT @schema@.fs_scope_tenants())::text[]));

-- Audit events: anyone who may append appends (a denial may name a tenant the login does not
-- hold); reading is per tenant, and tenant-less events only for logins granted every tenant.
-- No UPDATE or DELETE policy exists, so row security refuses both as well.
ALTER TABLE @schema@.audit_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE @schema@.audit_events FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_read ON @schema@.audit_events FOR SELECT
    USING ((SELECT @schema@.fs_scope_all()) OR tenant = ANY ((SELECT @schema@.fs_scope_tenants())::text[]));
CREATE POLICY audit_append ON @schema@.audit_events FOR INSERT WITH CHECK (true);

-- --- triggers ----------------------------------------------------------------------------------

CREATE FUNCTION @schema@.fs_refuse_audit_change() RETURNS trigger
LANGUAGE plpgsql SET search_path = @schema@, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON @schema@.audit_events
    FOR EACH ROW EXECUTE FUNCTION @schema@.fs_refuse_audit_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON @schema@.audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION @schema@.fs_refuse_audit_change();

CREATE FUNCTION @schema@.fs_audit_chain() RETURNS trigger
LANGUAGE plpgsql SET search_path = @schema@, pg_temp AS $$
DECLARE
    head record;
BEGIN
    SELECT h.seq, h.mac INTO head FROM @schema@.audit_head h FOR UPDATE;
    IF NEW.seq <> head.seq + 1 OR NEW.prev_mac <> head.mac THEN
        RAISE EXCEPTION 'audit event % does not continue the chain (head is %)', NEW.seq, head.seq
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    UPDATE @schema@.audit_head SET seq = NEW.seq, mac = NEW.mac;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_events_chain BEFORE INSERT ON @schema@.audit_events
    FOR EACH ROW EXECUTE FUNCTION @schema@.fs_audit_chain();

CREATE FUNCTION @schema@.fs_count_inserted() RETURNS trigger
LANGUAGE plpgsql SET search_path = @schema@, pg_temp AS $$
BEGIN
    INSERT INTO @schema@.key_usage AS u (version, records)
        SELECT n.key_version, count(*) FROM new_rows n GROUP BY n.key_version
        ON CONFLICT (version) DO UPDATE SET records = u.records + excluded.records;
    RETURN NULL;
END
$$;
CREATE TRIGGER templates_count_insert AFTER INSERT ON @schema@.templates
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION @schema@.fs_count_inserted();

CREATE FUNCTION @schema@.fs_count_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = @schema@, pg_temp AS $$
BEGIN
    UPDATE @schema@.key_usage u SET records = u.records - d.n
        FROM (SELECT o.key_version, count(*) AS n FROM old_rows o GROUP BY o.key_version) d
        WHERE u.version = d.key_version;
    RETURN NULL;
END
$$;
CREATE TRIGGER templates_count_delete AFTER DELETE ON @schema@.templates
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION @schema@.fs_count_deleted();

CREATE FUNCTION @schema@.fs_count_updated() RETURNS trigger
LANGUAGE plpgsql SET search_path = @schema@, pg_temp AS $$
BEGIN
    UPDATE @schema@.key_usage u SET records = u.records - d.n
        FROM (SELECT o.key_version, count(*) AS n FROM old_rows o GROUP BY o.key_version) d
        WHERE u.version = d.key_version;
    INSERT INTO @schema@.key_usage AS u (version, records)
        SELECT n.key_version, count(*) FROM new_rows n GROUP BY n.key_version
        ON CONFLICT (version) DO UPDATE SET records = u.records + excluded.records;
    RETURN NULL;
END
$$;
CREATE TRIGGER templates_count_update AFTER UPDATE ON @schema@.templates
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION @schema@.fs_count_updated();

-- --- the application's functions ---------------------------------------------------------------

CREATE TYPE @schema@.template_row AS (
    template_id  text,
    tenant       text,
    subject_id   text,
    model_id     text,
    dimension    integer,
    dtype        text,
    key_version  integer,
    record       bytea,
    created_at   double precision
);

CREATE FUNCTION @schema@.fs_schema_version() RETURNS integer
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT coalesce(max(version), 0) FROM @schema@.schema_migrations
$$;

CREATE FUNCTION @schema@.fs_get_meta(p_key text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT m.value FROM @schema@.meta m WHERE m.key = p_key
$$;

CREATE FUNCTION @schema@.fs_set_meta(p_key text, p_value text) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_all_tenants();
    INSERT INTO @schema@.meta AS m (key, value) VALUES (p_key, p_value)
        ON CONFLICT (key) DO UPDATE SET value = excluded.value;
END
$$;

-- Enrol templates (creating their subjects). The rows arrive as arrays: small batches as bound
-- parameters, large ones aggregated from the session's COPY staging table by the caller's own
-- query, so this function never reads a relation the caller controls.
CREATE FUNCTION @schema@.fs_enrol(
    p_template_ids text[], p_tenants text[], p_subject_ids text[], p_model_ids text[],
    p_dimensions integer[], p_dtypes text[], p_key_versions integer[], p_records bytea[],
    p_created_at double precision[], p_now double precision
) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
DECLARE
    n integer := coalesce(cardinality(p_template_ids), 0);
    t text;
    inserted integer;
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
    FOR t IN SELECT DISTINCT x FROM unnest(p_tenants) AS x LOOP
        PERFORM @schema@.fs_require_tenant(t);
    END LOOP;
    INSERT INTO @schema@.subjects AS s (tenant, subject_id, created_at, last_seen_at)
        SELECT DISTINCT x.tenant, x.subject_id, p_now, p_now
        FROM unnest(p_tenants, p_subject_ids) AS x (tenant, subject_id)
        ON CONFLICT (tenant, subject_id) DO UPDATE SET last_seen_at = excluded.last_seen_at;
    INSERT INTO @schema@.templates (template_id, tenant, subject_id, model_id, dimension, dtype,
                                    key_version, record, created_at)
        SELECT * FROM unnest(p_template_ids, p_tenants, p_subject_ids, p_model_ids, p_dimensions,
                             p_dtypes, p_key_versions, p_records, p_created_at);
    GET DIAGNOSTICS inserted = ROW_COUNT;
    RETURN inserted;
END
$$;

CREATE FUNCTION @schema@.fs_subject_templates(p_tenant text, p_subject_id text)
RETURNS SETOF @schema@.template_row
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    RETURN QUERY
        SELECT t.template_id, t.tenant, t.subject_id, t.model_id, t.dimension, t.dtype,
               t.key_version, t.record, t.created_at
        FROM @schema@.templates t
        WHERE t.tenant = p_tenant AND t.subject_id = p_subject_id
        ORDER BY t.created_at, t.template_id;
END
$$;

-- One page of a tenant's gallery (or of every visible tenant's when p_tenant is NULL), in
-- template id order after p_after: the client streams pages with binary COPY.
CREATE FUNCTION @schema@.fs_gallery(p_tenant text, p_after text, p_limit integer)
RETURNS SETOF @schema@.template_row
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    IF p_limit IS NULL OR p_limit < 1 THEN
        RAISE EXCEPTION 'fs_gallery: the page size must be positive'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_tenant IS NULL THEN
        RETURN QUERY
            SELECT t.template_id, t.tenant, t.subject_id, t.model_id, t.dimension, t.dtype,
                   t.key_version, t.record, t.created_at
            FROM @schema@.templates t
            WHERE t.template_id > coalesce(p_after, '')
            ORDER BY t.template_id LIMIT p_limit;
    ELSE
        PERFORM @schema@.fs_require_tenant(p_tenant);
        RETURN QUERY
            SELECT t.template_id, t.tenant, t.subject_id, t.model_id, t.dimension, t.dtype,
                   t.key_version, t.record, t.created_at
            FROM @schema@.templates t
            WHERE t.tenant = p_tenant AND t.template_id > coalesce(p_after, '')
            ORDER BY t.template_id LIMIT p_limit;
    END IF;
END
$$;

CREATE FUNCTION @schema@.fs_subjects(p_tenant text)
RETURNS TABLE (tenant text, subject_id text, created_at double precision,
               last_seen_at double precision, templates bigint)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    RETURN QUERY
        SELECT s.tenant, s.subject_id, s.created_at, s.last_seen_at,
               (SELECT count(*) FROM @schema@.templates t
                WHERE t.tenant = s.tenant AND t.subject_id = s.subject_id)
        FROM @schema@.subjects s
        WHERE s.tenant = p_tenant
        ORDER BY s.subject_id;
END
$$;

CREATE FUNCTION @schema@.fs_subject_exists(p_tenant text, p_subject_id text) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    RETURN EXISTS (SELECT 1 FROM @schema@.subjects s
                   WHERE s.tenant = p_tenant AND s.subject_id = p_subject_id);
END
$$;

CREATE FUNCTION @schema@.fs_touch_subject(p_tenant text, p_subject_id text,
                                          p_when double precision) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    UPDATE @schema@.subjects s SET last_seen_at = greatest(s.last_seen_at, p_when)
        WHERE s.tenant = p_tenant AND s.subject_id = p_subject_id;
END
$$;

CREATE FUNCTION @schema@.fs_erase_subject(p_tenant text, p_subject_id text) RETURNS text[]
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
DECLARE
    ids text[];
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    WITH gone AS (
        DELETE FROM @schema@.templates t
        WHERE t.tenant = p_tenant AND t.subject_id = p_subject_id
        RETURNING t.template_id)
    SELECT coalesce(array_agg(g.template_id ORDER BY g.template_id), '{}'::text[])
        INTO ids FROM gone g;
    DELETE FROM @schema@.subjects s WHERE s.tenant = p_tenant AND s.subject_id = p_subject_id;
    RETURN ids;
END
$$;

-- Re-encryption: new record bytes and key version for existing templates. Row security limits
-- it to templates of the login's tenants.
CREATE FUNCTION @schema@.fs_replace_records(p_template_ids text[], p_records bytea[],
                                            p_key_versions integer[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
DECLARE
    changed integer;
BEGIN
    IF coalesce(cardinality(p_template_ids), 0) <> coalesce(cardinality(p_records), 0)
       OR coalesce(cardinality(p_template_ids), 0) <> coalesce(cardinality(p_key_versions), 0)
    THEN
        RAISE EXCEPTION 'fs_replace_records: the column arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE @schema@.templates t SET record = x.record, key_version = x.key_version
        FROM unnest(p_template_ids, p_records, p_key_versions) AS x (template_id, record, key_version)
        WHERE t.template_id = x.template_id;
    GET DIAGNOSTICS changed = ROW_COUNT;
    RETURN changed;
END
$$;

CREATE FUNCTION @schema@.fs_key_version_counts()
RETURNS TABLE (key_version integer, records bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT u.version, u.records FROM @schema@.key_usage u WHERE u.records > 0 ORDER BY u.version
$$;

-- --- key metadata (wrapped data keys and their counters; never a key in clear) ------------------

CREATE FUNCTION @schema@.fs_load_data_keys()
RETURNS TABLE (version integer, wrapped bytea, created_at double precision, encryptions bigint)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT k.version, k.wrapped, k.created_at, k.encryptions FROM @schema@.data_keys k
    ORDER BY k.version
$$;

CREATE FUNCTION @schema@.fs_insert_data_key(p_version integer, p_wrapped bytea,
                                            p_created_at double precision) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    INSERT INTO @schema@.data_keys (version, wrapped, created_at, encryptions)
        VALUES (p_version, p_wrapped, p_created_at, 0)
        ON CONFLICT (version) DO NOTHING;
    RETURN FOUND;
END
$$;

CREATE FUNCTION @schema@.fs_reserve_encryptions(p_version integer, p_count bigint,
                                                p_limit bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    IF p_count IS NULL OR p_count < 0 THEN
        RAISE EXCEPTION 'fs_reserve_encryptions: the count must not be negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE @schema@.data_keys k SET encryptions = k.encryptions + p_count
        WHERE k.version = p_version AND k.encryptions + p_count <= p_limit
          AND k.version = (SELECT max(d.version) FROM @schema@.data_keys d);
    RETURN FOUND;
END
$$;

CREATE FUNCTION @schema@.fs_replace_wrapped(p_version integer, p_wrapped bytea) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_all_tenants();
    UPDATE @schema@.data_keys k SET wrapped = p_wrapped WHERE k.version = p_version;
END
$$;

-- --- audit log -----------------------------------------------------------------------------------

-- The chain head, locked until the end of the caller's transaction.
CREATE FUNCTION @schema@.fs_audit_head() RETURNS TABLE (seq bigint, mac bytea)
LANGUAGE sql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT h.seq, h.mac FROM @schema@.audit_head h FOR UPDATE
$$;

CREATE FUNCTION @schema@.fs_audit_append(
    p_seq bigint, p_event_id text, p_occurred_at double precision, p_principal text,
    p_role text, p_action text, p_tenant text, p_subject_id text, p_template_ids text[],
    p_outcome text, p_request_id text, p_detail text, p_prev_mac bytea, p_mac bytea
) RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    INSERT INTO @schema@.audit_events (seq, event_id, occurred_at, principal, role, action, tenant,
                                       subject_id, template_ids, outcome, request_id, detail,
                                       prev_mac, mac)
    VALUES (p_seq, p_event_id, p_occurred_at, p_principal, p_role, p_action, p_tenant,
            p_subject_id, p_template_ids, p_outcome, p_request_id, p_detail, p_prev_mac, p_mac)
$$;

CREATE FUNCTION @schema@.fs_audit_events(p_after_seq bigint, p_tenant text,
                                         p_since double precision, p_limit integer)
RETURNS TABLE (seq bigint, event_id text, occurred_at double precision, principal text,
               role text, action text, tenant text, subject_id text, template_ids text[],
               outcome text, request_id text, detail text, prev_mac bytea, mac bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT a.seq, a.event_id, a.occurred_at, a.principal, a.role, a.action, a.tenant,
           a.subject_id, a.template_ids, a.outcome, a.request_id, a.detail, a.prev_mac, a.mac
    FROM @schema@.audit_events a
    WHERE a.seq > coalesce(p_after_seq, 0)
      AND (p_tenant IS NULL OR a.tenant = p_tenant)
      AND (p_since IS NULL OR a.occurred_at >= p_since)
    ORDER BY a.seq
    LIMIT p_limit
$$;

-- --- principals (API-key hashes, never keys) -----------------------------------------------------

CREATE FUNCTION @schema@.fs_add_principal(
    p_principal_id text, p_name text, p_role text, p_tenant text, p_key_id text,
    p_key_hash bytea, p_created_at double precision, p_revoked_at double precision
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    IF p_tenant IS NULL THEN
        PERFORM @schema@.fs_require_all_tenants();
    ELSE
        PERFORM @schema@.fs_require_tenant(p_tenant);
    END IF;
    INSERT INTO @schema@.principals (principal_id, name, role, tenant, key_id, key_hash,
                                     created_at, revoked_at)
    VALUES (p_principal_id, p_name, p_role, p_tenant, p_key_id, p_key_hash, p_created_at,
            p_revoked_at);
END
$$;

CREATE FUNCTION @schema@.fs_principal_by_key_id(p_key_id text)
RETURNS SETOF @schema@.principals
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT * FROM @schema@.principals p WHERE p.key_id = p_key_id
$$;

CREATE FUNCTION @schema@.fs_principals() RETURNS SETOF @schema@.principals
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT * FROM @schema@.principals p
    WHERE @schema@.fs_scope_all() OR p.tenant = ANY (@schema@.fs_scope_tenants())
    ORDER BY p.name
$$;

CREATE FUNCTION @schema@.fs_revoke_principal(p_name text, p_when double precision)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
DECLARE
    found_tenant text;
BEGIN
    SELECT p.tenant INTO found_tenant FROM @schema@.principals p
        WHERE p.name = p_name AND p.revoked_at IS NULL;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF found_tenant IS NULL THEN
        PERFORM @schema@.fs_require_all_tenants();
    ELSE
        PERFORM @schema@.fs_require_tenant(found_tenant);
    END IF;
    UPDATE @schema@.principals p SET revoked_at = p_when
        WHERE p.name = p_name AND p.revoked_at IS NULL;
    RETURN FOUND;
END
$$;

-- --- tenants and retention -------------------------------------------------------------------

CREATE FUNCTION @schema@.fs_set_retention(p_tenant text, p_seconds double precision)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    INSERT INTO @schema@.tenants AS t (tenant, retention_seconds) VALUES (p_tenant, p_seconds)
        ON CONFLICT (tenant) DO UPDATE SET retention_seconds = excluded.retention_seconds;
END
$$;

CREATE FUNCTION @schema@.fs_retention(p_tenant text) RETURNS double precision
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    RETURN (SELECT t.retention_seconds FROM @schema@.tenants t WHERE t.tenant = p_tenant);
END
$$;

CREATE FUNCTION @schema@.fs_tenants() RETURNS SETOF text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT s.tenant FROM @schema@.subjects s
    UNION
    SELECT t.tenant FROM @schema@.tenants t
    ORDER BY 1
$$;

CREATE FUNCTION @schema@.fs_inactive_subjects(p_tenant text, p_before double precision)
RETURNS SETOF text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    RETURN QUERY
        SELECT s.subject_id FROM @schema@.subjects s
        WHERE s.tenant = p_tenant AND s.last_seen_at < p_before
        ORDER BY s.subject_id;
END
$$;

-- --- privileges ----------------------------------------------------------------------------------

REVOKE ALL ON ALL TABLES IN SCHEMA @schema@ FROM PUBLIC;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @schema@ FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    @schema@.fs_schema_version(),
    @schema@.fs_scope_all(),
    @schema@.fs_scope_tenants(),
    @schema@.fs_audit_events(bigint, text, double precision, integer)
TO @app@, @auditor@;

GRANT EXECUTE ON FUNCTION
    @schema@.fs_get_meta(text),
    @schema@.fs_set_meta(text, text),
    @schema@.fs_enrol(text[], text[], text[], text[], integer[], text[], integer[], bytea[],
                      double precision[], double precision),
    @schema@.fs_subject_templates(text, text),
    @schema@.fs_gallery(text, text, integer),
    @schema@.fs_subjects(text),
    @schema@.fs_subject_exists(text, text),
    @schema@.fs_touch_subject(text, text, double precision),
    @schema@.fs_erase_subject(text, text),
    @schema@.fs_replace_records(text[], bytea[], integer[]),
    @schema@.fs_key_version_counts(),
    @schema@.fs_load_data_keys(),
    @schema@.fs_insert_data_key(integer, bytea, double precision),
    @schema@.fs_reserve_encryptions(integer, bigint, bigint),
    @schema@.fs_replace_wrapped(integer, bytea),
    @schema@.fs_audit_head(),
    @schema@.fs_audit_append(bigint, text, double precision, text, text, text, text, text, text[],
                             text, text, text, bytea, bytea),
    @schema@.fs_add_principal(text, text, text, text, text, bytea, double precision,
                              double precision),
    @schema@.fs_principal_by_key_id(text),
    @schema@.fs_principals(),
    @schema@.fs_revoke_principal(text, double precision),
    @schema@.fs_set_retention(text, double precision),
    @schema@.fs_retention(text),
    @schema@.fs_tenants(),
    @schema@.fs_inactive_subjects(text, double precision)
TO @app@;

-- The auditor reads the audit log, and nothing else.
GRANT SELECT ON @schema@.audit_events TO @auditor@;
