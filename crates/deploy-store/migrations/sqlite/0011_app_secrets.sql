-- Application secrets (`secret:NAME` in env values): only the AEAD ciphertext is stored.
-- The key lives in deployd's key file, outside the database; `key_id` names the key that
-- sealed `sealed` (base64 of nonce || ciphertext || tag), so rotation can re-seal rows.
CREATE TABLE app_secrets (
    name       TEXT   NOT NULL PRIMARY KEY,
    key_id     TEXT   NOT NULL,
    sealed     TEXT   NOT NULL,
    version    BIGINT NOT NULL,              -- 1 at creation, +1 at every replacement
    -- The environments (ids, space-separated) the secret may be used in; '' = every one.
    environments TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    created_by TEXT   NOT NULL,
    updated_at BIGINT NOT NULL,
    updated_by TEXT   NOT NULL
);

-- One check value per key id, sealed under that key by the first deployd that used it:
-- a replica (or a restart) whose key file holds another key under the same id cannot
-- open it and refuses to start, instead of sealing what the others cannot open.
CREATE TABLE secret_key_checks (
    key_id     TEXT   NOT NULL PRIMARY KEY,
    sealed     TEXT   NOT NULL,
    created_at BIGINT NOT NULL
);
