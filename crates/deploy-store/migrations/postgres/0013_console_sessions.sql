-- Web-console sign-ins: the browser holds a random secret in a cookie, the database only
-- its sha256 (`id_hash`), tied to the API token that signed in. A session of a revoked
-- token, or one past `expires_at` (unix millis), no longer signs anyone in and is pruned.
CREATE TABLE console_sessions (
    id_hash    TEXT   NOT NULL PRIMARY KEY,
    token_id   UUID   NOT NULL REFERENCES api_tokens (id),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX console_sessions_expires_at ON console_sessions (expires_at);
