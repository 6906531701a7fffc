-- A counter of settings replacements, the REST API's ETag of
-- `/v1/integration/settings`: `PUT` with `If-Match` replaces the settings
-- only while the counter is still the one the caller read. `updated_at` does
-- not serve, since a token refresh also moves it.
ALTER TABLE integrations
    ADD COLUMN settings_version bigint NOT NULL DEFAULT 1,
    ADD CONSTRAINT integrations_settings_version_check CHECK (settings_version > 0);
