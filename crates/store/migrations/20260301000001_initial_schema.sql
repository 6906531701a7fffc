-- leadsync initial schema (docs/design.md §3, docs/adr/0005).
--
-- Every constraint and index is named: `StoreError` maps unique violations
-- to meaningful variants by these names (crates/store/src/error.rs).

-- ---------------------------------------------------------------------------
-- integrations: one connected HubSpot account (portal) per row.
-- ---------------------------------------------------------------------------
CREATE TABLE integrations (
    id                uuid        NOT NULL DEFAULT gen_random_uuid(),
    -- The `{integration}` segment of /webhooks/hubspot/{integration}.
    name              text        NOT NULL,
    portal_id         bigint      NOT NULL,
    app_id            bigint,
    auth_mode         text        NOT NULL,
    -- version byte || 96-bit nonce || AES-256-GCM ciphertext and tag; the key
    -- lives in the environment, never in the database.
    access_token_enc  bytea,
    refresh_token_enc bytea,
    token_expires_at  timestamptz,
    settings          jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT integrations_pkey PRIMARY KEY (id),
    CONSTRAINT integrations_name_key UNIQUE (name),
    CONSTRAINT integrations_portal_id_key UNIQUE (portal_id),
    CONSTRAINT integrations_name_check CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    CONSTRAINT integrations_portal_id_check CHECK (portal_id > 0),
    CONSTRAINT integrations_auth_mode_check CHECK (auth_mode IN ('oauth', 'private_app')),
    CONSTRAINT integrations_settings_check CHECK (jsonb_typeof(settings) = 'object')
);

-- ---------------------------------------------------------------------------
-- leads: the platform's lead model, with its CRM link and sync metadata.
-- ---------------------------------------------------------------------------

-- The lead columns whose changes are synced to HubSpot. The outbox trigger
-- and `field_updated_at` use this one list; `leadsync_domain::LeadField::ALL`
-- mirrors it (a test keeps the two equal). Changing it is a new migration.
CREATE FUNCTION leadsync_synced_lead_columns() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT ARRAY['first_name', 'last_name', 'email', 'phone', 'company',
                   'job_title', 'location', 'country', 'status']::text[] $$;

CREATE TABLE leads (
    id                   uuid        NOT NULL DEFAULT gen_random_uuid(),
    integration_id       uuid        NOT NULL,
    first_name           text,
    last_name            text,
    full_name            text        GENERATED ALWAYS AS (
                             btrim(coalesce(first_name, '') || ' ' || coalesce(last_name, ''))
                         ) STORED,
    email                text,
    phone                text,
    company              text,
    job_title            text,
    location             text,
    country              text,
    source               text,
    platform             text,
    platform_url         text,
    profile_url          text,
    status               text                 DEFAULT 'new',
    -- HubSpot contact id (hs_object_id).
    crm_id               bigint,
    crm_sync_status      text        NOT NULL DEFAULT 'not_synced',
    crm_synced_at        timestamptz,
    -- crmMetadata of the seed plan.
    source_system        text        NOT NULL DEFAULT 'platform',
    last_sync_direction  text,
    sync_version         integer     NOT NULL DEFAULT 1,
    last_modified_in_crm timestamptz,
    -- field -> when the platform last changed it (last_write_wins input).
    field_updated_at     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- field -> hex hash of the value both sides last agreed on (merge base).
    synced_values        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    deleted_at           timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT leads_pkey PRIMARY KEY (id),
    -- Deleting an integration must not silently delete the platform's leads.
    CONSTRAINT leads_integration_id_fkey FOREIGN KEY (integration_id)
        REFERENCES integrations (id) ON DELETE RESTRICT,
    CONSTRAINT leads_crm_id_check CHECK (crm_id IS NULL OR crm_id > 0),
    CONSTRAINT leads_crm_sync_status_check
        CHECK (crm_sync_status IN ('not_synced', 'pending', 'synced', 'failed', 'unlinked')),
    CONSTRAINT leads_source_system_check
        CHECK (source_system IN ('platform', 'hubspot', 'import', 'manual')),
    CONSTRAINT leads_last_sync_direction_check
        CHECK (last_sync_direction IS NULL OR last_sync_direction IN ('to_crm', 'from_crm')),
    CONSTRAINT leads_sync_version_check CHECK (sync_version >= 0),
    CONSTRAINT leads_field_updated_at_check CHECK (jsonb_typeof(field_updated_at) = 'object'),
    CONSTRAINT leads_synced_values_check CHECK (jsonb_typeof(synced_values) = 'object')
);

-- One live lead per e-mail address per integration, case-insensitively. A
-- soft-deleted lead gives its address up.
CREATE UNIQUE INDEX leads_integration_email_key
    ON leads (integration_id, lower(email))
    WHERE email IS NOT NULL AND email <> '' AND deleted_at IS NULL;
-- One lead per HubSpot contact per integration (soft-deleted ones included,
-- so that contact.restore finds its lead again).
CREATE UNIQUE INDEX leads_integration_crm_id_key
    ON leads (integration_id, crm_id)
    WHERE crm_id IS NOT NULL;
-- Keyset pagination of the REST API's list.
CREATE INDEX leads_integration_created_idx
    ON leads (integration_id, created_at, id);

-- ---------------------------------------------------------------------------
-- lead_tombstones: what a privacy deletion leaves behind.
-- ---------------------------------------------------------------------------
CREATE TABLE lead_tombstones (
    id             bigint      GENERATED ALWAYS AS IDENTITY,
    integration_id uuid        NOT NULL,
    crm_id         bigint,
    -- SHA-256 of integration id || normalised address (crates/store/src/leads.rs).
    email_hash     bytea,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT lead_tombstones_pkey PRIMARY KEY (id),
    CONSTRAINT lead_tombstones_integration_id_fkey FOREIGN KEY (integration_id)
        REFERENCES integrations (id) ON DELETE CASCADE,
    CONSTRAINT lead_tombstones_identity_check CHECK (crm_id IS NOT NULL OR email_hash IS NOT NULL)
);
CREATE UNIQUE INDEX lead_tombstones_crm_id_key
    ON lead_tombstones (integration_id, crm_id) WHERE crm_id IS NOT NULL;
CREATE UNIQUE INDEX lead_tombstones_email_hash_key
    ON lead_tombstones (integration_id, email_hash) WHERE email_hash IS NOT NULL;

-- ---------------------------------------------------------------------------
-- lead_changes: the transactional outbox of platform-side lead changes.
-- ---------------------------------------------------------------------------
CREATE TABLE lead_changes (
    id             bigserial   NOT NULL,
    integration_id uuid        NOT NULL,
    -- No foreign key: the row of a hard-deleted lead is gone, its change is not.
    lead_id        uuid        NOT NULL,
    -- The lead's contact id when the change was made (a delete needs it).
    crm_id         bigint,
    operation      text        NOT NULL,
    changed_fields text[]      NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    relayed_at     timestamptz,
    CONSTRAINT lead_changes_pkey PRIMARY KEY (id),
    CONSTRAINT lead_changes_operation_check CHECK (operation IN ('insert', 'update', 'delete'))
);
-- The relay's queue: only pending rows, in order.
CREATE INDEX lead_changes_pending_idx ON lead_changes (id) WHERE relayed_at IS NULL;
CREATE INDEX lead_changes_lead_idx ON lead_changes (lead_id, id);

-- True unless the writing transaction said `SET LOCAL leadsync.origin = 'inbound'`.
CREATE FUNCTION leadsync_is_platform_write() RETURNS boolean
LANGUAGE sql STABLE
AS $$ SELECT current_setting('leadsync.origin', true) IS DISTINCT FROM 'inbound' $$;

-- The synced columns whose values differ between two versions of a lead row.
CREATE FUNCTION leadsync_changed_lead_columns(old_row jsonb, new_row jsonb) RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT coalesce(array_agg(col ORDER BY ord), '{}')
    FROM unnest(leadsync_synced_lead_columns()) WITH ORDINALITY AS c(col, ord)
    -- A JSON null and a missing key both mean "no value".
    WHERE nullif(old_row -> col, 'null'::jsonb) IS DISTINCT FROM nullif(new_row -> col, 'null'::jsonb)
$$;

-- BEFORE trigger: keeps updated_at, and on platform writes field_updated_at.
CREATE FUNCTION leads_before_write() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    changed text[];
    stamps  jsonb;
BEGIN
    IF TG_OP = 'INSERT' THEN
        changed := leadsync_changed_lead_columns('{}'::jsonb, to_jsonb(NEW));
    ELSE
        -- Generated columns are not computed yet in a BEFORE trigger, so
        -- compare without them.
        IF to_jsonb(NEW) - 'full_name' - 'updated_at' = to_jsonb(OLD) - 'full_name' - 'updated_at' THEN
            RETURN NEW;
        END IF;
        NEW.updated_at := now();
        changed := leadsync_changed_lead_columns(to_jsonb(OLD), to_jsonb(NEW));
    END IF;

    IF leadsync_is_platform_write() AND cardinality(changed) > 0 THEN
        SELECT jsonb_object_agg(col, to_jsonb(now())) INTO stamps FROM unnest(changed) AS col;
        NEW.field_updated_at := NEW.field_updated_at || stamps;
    END IF;
    RETURN NEW;
END
$$;

-- AFTER trigger: one outbox row per platform-side change of a synced column.
-- A soft delete is an outbox 'delete', undoing one an 'insert'.
CREATE FUNCTION leads_after_write() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    op      text;
    changed text[];
    row_    leads;
BEGIN
    IF NOT leadsync_is_platform_write() THEN
        RETURN NULL;
    END IF;

    IF TG_OP = 'INSERT' THEN
        row_ := NEW;
        op := 'insert';
        changed := leadsync_changed_lead_columns('{}'::jsonb, to_jsonb(NEW));
    ELSIF TG_OP = 'DELETE' THEN
        row_ := OLD;
        op := 'delete';
        changed := '{}';
    ELSE
        row_ := NEW;
        changed := leadsync_changed_lead_columns(to_jsonb(OLD), to_jsonb(NEW));
        IF OLD.deleted_at IS NULL AND NEW.deleted_at IS NOT NULL THEN
            op := 'delete';
        ELSIF OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL THEN
            op := 'insert';
        ELSIF cardinality(changed) > 0 THEN
            op := 'update';
        ELSE
            -- Bookkeeping only (crm_id, sync status, hashes...): nothing to send.
            RETURN NULL;
        END IF;
    END IF;

    INSERT INTO lead_changes (integration_id, lead_id, crm_id, operation, changed_fields)
    VALUES (row_.integration_id, row_.id, row_.crm_id, op, changed);
    -- Wakes a listening relay. Notifications with the same payload collapse
    -- into one per transaction, so a bulk import sends one per integration.
    PERFORM pg_notify('leadsync_lead_changes', row_.integration_id::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER leads_before_write
    BEFORE INSERT OR UPDATE ON leads
    FOR EACH ROW EXECUTE FUNCTION leads_before_write();
CREATE TRIGGER leads_after_write
    AFTER INSERT OR UPDATE OR DELETE ON leads
    FOR EACH ROW EXECUTE FUNCTION leads_after_write();

-- ---------------------------------------------------------------------------
-- processed_events: Postgres backup of the queue's event dedupe.
-- ---------------------------------------------------------------------------
CREATE TABLE processed_events (
    event_key      text        NOT NULL,
    integration_id uuid,
    processed_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT processed_events_pkey PRIMARY KEY (event_key),
    CONSTRAINT processed_events_integration_id_fkey FOREIGN KEY (integration_id)
        REFERENCES integrations (id) ON DELETE CASCADE
);
-- Pruning keys older than the redelivery window.
CREATE INDEX processed_events_processed_at_idx ON processed_events (processed_at);

-- ---------------------------------------------------------------------------
-- echo_ledger: the last value we wrote to each HubSpot contact property.
-- ---------------------------------------------------------------------------
CREATE TABLE echo_ledger (
    portal_id  bigint      NOT NULL,
    contact_id bigint      NOT NULL,
    property   text        NOT NULL,
    value_hash bytea       NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT echo_ledger_pkey PRIMARY KEY (portal_id, contact_id, property)
);

-- ---------------------------------------------------------------------------
-- audit_log: every sync decision. Never holds tokens.
-- ---------------------------------------------------------------------------
CREATE TABLE audit_log (
    id             bigserial   NOT NULL,
    integration_id uuid,
    lead_id        uuid,
    contact_id     bigint,
    event_key      text,
    direction      text        NOT NULL,
    action         text        NOT NULL,
    reason         text,
    -- field -> {before, after, losing_value}
    changes        jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_log_pkey PRIMARY KEY (id),
    -- The trail outlives an integration's removal.
    CONSTRAINT audit_log_integration_id_fkey FOREIGN KEY (integration_id)
        REFERENCES integrations (id) ON DELETE SET NULL,
    CONSTRAINT audit_log_direction_check CHECK (direction IN ('inbound', 'outbound')),
    CONSTRAINT audit_log_action_check CHECK (action IN (
        'created', 'updated', 'linked', 'unlinked', 'erased', 'merged', 'restored',
        'skipped', 'conflict', 'dead_lettered'))
);
CREATE INDEX audit_log_lead_idx ON audit_log (lead_id, created_at);
CREATE INDEX audit_log_contact_idx ON audit_log (integration_id, contact_id, created_at);

-- ---------------------------------------------------------------------------
-- dead_letters: what failed for good, listed and replayable from the CLI.
-- ---------------------------------------------------------------------------
CREATE TABLE dead_letters (
    id              bigserial   NOT NULL,
    integration_id  uuid,
    portal_id       bigint,
    event_key       text        NOT NULL,
    kind            text        NOT NULL,
    reason          text        NOT NULL,
    payload         jsonb       NOT NULL,
    attempts        integer     NOT NULL DEFAULT 1,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at     timestamptz,
    CONSTRAINT dead_letters_pkey PRIMARY KEY (id),
    CONSTRAINT dead_letters_integration_id_fkey FOREIGN KEY (integration_id)
        REFERENCES integrations (id) ON DELETE SET NULL,
    CONSTRAINT dead_letters_kind_check CHECK (kind IN ('inbound_event', 'outbound_change')),
    CONSTRAINT dead_letters_attempts_check CHECK (attempts >= 1)
);
-- One open letter per event: a re-failure bumps `attempts`; after a replay a
-- new failure opens a new letter.
CREATE UNIQUE INDEX dead_letters_open_key
    ON dead_letters (event_key, kind) WHERE replayed_at IS NULL;
CREATE INDEX dead_letters_integration_idx ON dead_letters (integration_id, id);

-- ---------------------------------------------------------------------------
-- sync_stats: persisted counters per integration (the seed's sync statistics).
-- ---------------------------------------------------------------------------
CREATE TABLE sync_stats (
    integration_id uuid        NOT NULL,
    -- e.g. received, processed, failed, skipped.echo, processing_ms_total
    name           text        NOT NULL,
    value          bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sync_stats_pkey PRIMARY KEY (integration_id, name),
    CONSTRAINT sync_stats_integration_id_fkey FOREIGN KEY (integration_id)
        REFERENCES integrations (id) ON DELETE CASCADE
);

-- ---------------------------------------------------------------------------
-- sync_cursors: resumable backfill and reconciliation.
-- ---------------------------------------------------------------------------
CREATE TABLE sync_cursors (
    integration_id uuid        NOT NULL,
    kind           text        NOT NULL,
    -- Opaque position (HubSpot `after` token, timestamp...); NULL = from the start.
    cursor         text,
    started_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    completed_at   timestamptz,
    CONSTRAINT sync_cursors_pkey PRIMARY KEY (integration_id, kind),
    CONSTRAINT sync_cursors_integration_id_fkey FOREIGN KEY (integration_id)
        REFERENCES integrations (id) ON DELETE CASCADE,
    CONSTRAINT sync_cursors_kind_check CHECK (kind IN ('backfill', 'reconciliation'))
);
