-- Agent identity set by the server (issue #19): every agent bootstrap token is bound to
-- the agent name, labels and capabilities it may register with; the agent cannot claim
-- others. A bootstrap token without a binding registers nothing (no compatibility path:
-- tokens created before this migration must be created again).
CREATE TABLE agent_bootstrap_bindings (
    token_id      UUID PRIMARY KEY NOT NULL REFERENCES api_tokens (id),
    agent_name    TEXT NOT NULL,
    labels        TEXT NOT NULL,             -- JSON object: the agent's labels, exactly
    capabilities  TEXT NOT NULL              -- JSON array: the capabilities it may claim
);
-- Labels change only by an admin call, which names the version it read.
ALTER TABLE agents ADD COLUMN labels_version BIGINT NOT NULL DEFAULT 1;
-- Unbound bootstrap tokens can no longer be used: mark them spent.
UPDATE api_tokens SET revoked_at = created_at
    WHERE scopes = '["agent_bootstrap"]' AND revoked_at IS NULL;
