-- What an API token may do: `read` (GET routes), `write` (leads too) or
-- `admin` (also the integration's settings and dead-letter replay).
--
-- Tokens issued before scopes existed had full access; they become `admin`
-- so that nothing that works today stops working. New tokens name their
-- scope (`leadsync api-token create --scope`); a row inserted without one
-- gets `write`, the CLI's default.
ALTER TABLE api_tokens
    ADD COLUMN scope text NOT NULL DEFAULT 'admin',
    ADD CONSTRAINT api_tokens_scope_check CHECK (scope IN ('read', 'write', 'admin'));
ALTER TABLE api_tokens ALTER COLUMN scope SET DEFAULT 'write';
