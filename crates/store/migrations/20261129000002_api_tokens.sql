-- Bearer tokens of the platform's REST API, each scoped to one integration.
--
-- Only the SHA-256 of a token is stored: the token itself is shown once when
-- it is issued (`leadsync api-token create`). A request's token is hashed and
-- looked up by that hash, so no stored secret is ever compared byte by byte.
CREATE TABLE api_tokens (
    id             uuid        NOT NULL DEFAULT gen_random_uuid(),
    integration_id uuid        NOT NULL,
    -- What the operator called it (e.g. "crm-dashboard"); never the token.
    label          text        NOT NULL DEFAULT '',
    -- The token's first characters, to recognise it in a list.
    token_prefix   text        NOT NULL,
    token_hash     bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz,
    revoked_at     timestamptz,
    CONSTRAINT api_tokens_pkey PRIMARY KEY (id),
    -- A token is worthless without its integration.
    CONSTRAINT api_tokens_integration_id_fkey FOREIGN KEY (integration_id)
        REFERENCES integrations (id) ON DELETE CASCADE,
    CONSTRAINT api_tokens_token_hash_key UNIQUE (token_hash),
    CONSTRAINT api_tokens_token_hash_check CHECK (octet_length(token_hash) = 32),
    CONSTRAINT api_tokens_label_check CHECK (char_length(label) <= 100)
);
CREATE INDEX api_tokens_integration_idx ON api_tokens (integration_id, created_at);
