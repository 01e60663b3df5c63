-- Agents (issue #8): capabilities, version, the sha256 of their credential and revocation;
-- bootstrap tokens are api_tokens with scope `agent_bootstrap` and an expiry.
ALTER TABLE agents ADD COLUMN capabilities TEXT NOT NULL DEFAULT '[]';   -- JSON array
ALTER TABLE agents ADD COLUMN agent_version TEXT NOT NULL DEFAULT '';
ALTER TABLE agents ADD COLUMN credential_hash TEXT;                       -- sha256 of the credential, never the credential
ALTER TABLE agents ADD COLUMN revoked_at INTEGER;
CREATE UNIQUE INDEX agents_credential_hash ON agents (credential_hash);
ALTER TABLE api_tokens ADD COLUMN expires_at INTEGER;
