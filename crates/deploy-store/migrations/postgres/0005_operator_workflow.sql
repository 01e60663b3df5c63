-- Operator workflow: versions of environments and targets (optimistic concurrency of
-- updates), retirement (deleted environments and targets keep their rows so that history
-- stays readable; their name column gets a `~<id>` suffix to free the name), archived
-- releases, approvals and rejection reasons of promotions, and the append-only audit log.
ALTER TABLE environments ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE environments ADD COLUMN deleted_at BIGINT;
ALTER TABLE targets ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE targets ADD COLUMN deleted_at BIGINT;
ALTER TABLE releases ADD COLUMN archived_at BIGINT;

ALTER TABLE promotions ADD COLUMN requested_by_token TEXT;              -- id of the requesting API token
ALTER TABLE promotions ADD COLUMN approvals TEXT NOT NULL DEFAULT '[]'; -- JSON array of {by, token_id, at}
ALTER TABLE promotions ADD COLUMN rejection_reason TEXT;
CREATE INDEX promotions_environment_status ON promotions (environment_id, status, id);

CREATE TABLE audit_log (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           BIGINT NOT NULL,
    actor_kind   TEXT NOT NULL CHECK (actor_kind IN ('token', 'agent')),
    actor_id     TEXT NOT NULL,
    actor_name   TEXT NOT NULL,
    method       TEXT NOT NULL,
    route        TEXT NOT NULL,              -- the route template, e.g. /api/v1/environments/{id}
    path         TEXT NOT NULL,
    entity_id    TEXT,
    status       BIGINT NOT NULL,
    remote       TEXT,                       -- peer address, and X-Forwarded-For when present
    before       TEXT,                       -- redacted JSON of the entity before the write
    after        TEXT                        -- redacted JSON of the answer
);
CREATE INDEX audit_log_actor ON audit_log (actor_name, seq);
CREATE INDEX audit_log_entity ON audit_log (entity_id, seq);

-- Append-only: rows are never changed or removed.
CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only';
END;
$$;
CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
