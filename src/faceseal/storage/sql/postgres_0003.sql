-- faceseal PostgreSQL schema, version 3: signed principals (issue 12).
--
-- Every principal row carries a MAC under a key derived from the vault's audit key, which lives
-- only wrapped by the KEK in the key directory: a login that can call fs_add_principal (or an
-- owner who edits the table) can insert a row, but not one the vault will accept. Rows from
-- before this version get an empty MAC and are refused until `faceseal migrate` signs them.
-- Placeholders as in postgres_0001.sql.

ALTER TABLE @schema@.principals ADD COLUMN mac bytea NOT NULL DEFAULT ''::bytea;

DROP FUNCTION @schema@.fs_add_principal(text, text, text, text, text, bytea, double precision,
                                        double precision);
CREATE FUNCTION @schema@.fs_add_principal(
    p_principal_id text, p_name text, p_role text, p_tenant text, p_key_id text,
    p_key_hash bytea, p_created_at double precision, p_revoked_at double precision, p_mac bytea
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    IF p_tenant IS NULL THEN
        PERFORM @schema@.fs_require_all_tenants();
    ELSE
        PERFORM @schema@.fs_require_tenant(p_tenant);
    END IF;
    INSERT INTO @schema@.principals (principal_id, name, role, tenant, key_id, key_hash,
                                     created_at, revoked_at, mac)
    VALUES (p_principal_id, p_name, p_role, p_tenant, p_key_id, p_key_hash, p_created_at,
            p_revoked_at, coalesce(p_mac, ''::bytea));
END
$$;

-- The row type of principals gained a column: name the columns so the result is explicit.
DROP FUNCTION @schema@.fs_principal_by_key_id(text);
CREATE FUNCTION @schema@.fs_principal_by_key_id(p_key_id text)
RETURNS TABLE (principal_id text, name text, role text, tenant text, key_id text,
               key_hash bytea, created_at double precision, revoked_at double precision,
               mac bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT p.principal_id, p.name, p.role, p.tenant, p.key_id, p.key_hash, p.created_at,
           p.revoked_at, p.mac
    FROM @schema@.principals p WHERE p.key_id = p_key_id
$$;

DROP FUNCTION @schema@.fs_principals();
CREATE FUNCTION @schema@.fs_principals()
RETURNS TABLE (principal_id text, name text, role text, tenant text, key_id text,
               key_hash bytea, created_at double precision, revoked_at double precision,
               mac bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
    SELECT p.principal_id, p.name, p.role, p.tenant, p.key_id, p.key_hash, p.created_at,
           p.revoked_at, p.mac
    FROM @schema@.principals p
    WHERE @schema@.fs_scope_all() OR p.tenant = ANY (@schema@.fs_scope_tenants())
    ORDER BY p.name
$$;

DROP FUNCTION @schema@.fs_revoke_principal(text, double precision);
CREATE FUNCTION @schema@.fs_revoke_principal(p_name text, p_when double precision,
                                             p_mac bytea)
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
    UPDATE @schema@.principals p SET revoked_at = p_when, mac = coalesce(p_mac, ''::bytea)
        WHERE p.name = p_name AND p.revoked_at IS NULL;
    RETURN FOUND;
END
$$;

-- Signing the rows of a vault made before version 3 (`faceseal migrate`): every tenant only.
CREATE FUNCTION @schema@.fs_set_principal_mac(p_principal_id text, p_mac bytea)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_all_tenants();
    UPDATE @schema@.principals p SET mac = p_mac WHERE p.principal_id = p_principal_id;
    RETURN FOUND;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @schema@ FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    @schema@.fs_add_principal(text, text, text, text, text, bytea, double precision,
                              double precision, bytea),
    @schema@.fs_principal_by_key_id(text),
    @schema@.fs_principals(),
    @schema@.fs_revoke_principal(text, double precision, bytea),
    @schema@.fs_set_principal_mac(text, bytea)
TO @app@;

-- --- subject inventories ---------------------------------------------------------------------
-- Each subject's set of template ids, authenticated by the vault (count, a keyed set digest and
-- a MAC): a template deleted, added or moved behind the vault's back no longer matches it.

ALTER TABLE @schema@.subjects ADD COLUMN inventory bytea NOT NULL DEFAULT ''::bytea;

DROP FUNCTION @schema@.fs_subjects(text);
CREATE FUNCTION @schema@.fs_subjects(p_tenant text)
RETURNS TABLE (tenant text, subject_id text, created_at double precision,
               last_seen_at double precision, templates bigint, inventory bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    RETURN QUERY
        SELECT s.tenant, s.subject_id, s.created_at, s.last_seen_at,
               (SELECT count(*) FROM @schema@.templates t
                WHERE t.tenant = s.tenant AND t.subject_id = s.subject_id),
               s.inventory
        FROM @schema@.subjects s
        WHERE s.tenant = p_tenant
        ORDER BY s.subject_id;
END
$$;

CREATE FUNCTION @schema@.fs_inventories(p_tenant text, p_subject_ids text[])
RETURNS TABLE (subject_id text, inventory bytea)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    RETURN QUERY
        SELECT s.subject_id, s.inventory FROM @schema@.subjects s
        WHERE s.tenant = p_tenant AND s.subject_id = ANY (p_subject_ids);
END
$$;

CREATE FUNCTION @schema@.fs_set_inventories(p_tenant text, p_subject_ids text[],
                                            p_inventories bytea[]) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_tenant(p_tenant);
    IF coalesce(cardinality(p_subject_ids), 0) <> coalesce(cardinality(p_inventories), 0) THEN
        RAISE EXCEPTION 'fs_set_inventories: the arrays differ in length'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE @schema@.subjects s SET inventory = x.inventory
        FROM unnest(p_subject_ids, p_inventories) AS x (subject_id, inventory)
        WHERE s.tenant = p_tenant AND s.subject_id = x.subject_id;
END
$$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA @schema@ FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    @schema@.fs_subjects(text),
    @schema@.fs_inventories(text, text[]),
    @schema@.fs_set_inventories(text, text[], bytea[])
TO @app@;

-- --- data keys ---------------------------------------------------------------------------------
-- Only a login granted every tenant may add a data key (rotation and key custody are global;
-- a tenant's login never needs to). Counting no longer insists on the newest row: which version
-- is active is the vault's decision, made from the versions its key side recorded, so a planted
-- "newest" row cannot block every enrolment.

CREATE OR REPLACE FUNCTION @schema@.fs_insert_data_key(p_version integer, p_wrapped bytea,
                                                       p_created_at double precision)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    PERFORM @schema@.fs_require_all_tenants();
    INSERT INTO @schema@.data_keys (version, wrapped, created_at, encryptions)
        VALUES (p_version, p_wrapped, p_created_at, 0)
        ON CONFLICT (version) DO NOTHING;
    RETURN FOUND;
END
$$;

CREATE OR REPLACE FUNCTION @schema@.fs_reserve_encryptions(p_version integer, p_count bigint,
                                                           p_limit bigint) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    IF p_count IS NULL OR p_count < 0 THEN
        RAISE EXCEPTION 'fs_reserve_encryptions: the count must not be negative'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE @schema@.data_keys k SET encryptions = k.encryptions + p_count
        WHERE k.version = p_version AND k.encryptions + p_count <= p_limit;
    RETURN FOUND;
END
$$;

-- --- audit appends ------------------------------------------------------------------------------
-- A login appends events of its own tenants, or naming no tenant (refused credentials, global
-- operations); a tenant-scoped login can no longer write events into another tenant's history.

CREATE OR REPLACE FUNCTION @schema@.fs_audit_append(
    p_seq bigint, p_event_id text, p_occurred_at double precision, p_principal text,
    p_role text, p_action text, p_tenant text, p_subject_id text, p_template_ids text[],
    p_outcome text, p_request_id text, p_detail text, p_prev_mac bytea, p_mac bytea
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = @schema@, pg_temp AS $$
BEGIN
    IF p_tenant IS NOT NULL THEN
        PERFORM @schema@.fs_require_tenant(p_tenant);
    END IF;
    INSERT INTO @schema@.audit_events (seq, event_id, occurred_at, principal, role, action, tenant,
                                       subject_id, template_ids, outcome, request_id, detail,
                                       prev_mac, mac)
    VALUES (p_seq, p_event_id, p_occurred_at, p_principal, p_role, p_action, p_tenant,
            p_subject_id, p_template_ids, p_outcome, p_request_id, p_detail, p_prev_mac, p_mac);
END
$$;
