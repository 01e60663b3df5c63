-- Operator workflow: environment versions (optimistic concurrency of updates), approvals
-- and rejection reasons of promotions, and the append-only audit log of API writes.
ALTER TABLE environments ADD COLUMN version INTEGER NOT NULL DEFAULT 0;

ALTER TABLE promotions ADD COLUMN requested_by_token TEXT;              -- id of the requesting API token
ALTER TABLE promotions ADD COLUMN approvals TEXT NOT NULL DEFAULT '[]'; -- JSON array of {by, token_id, at}
ALTER TABLE promotions ADD COLUMN rejection_reason TEXT;
CREATE INDEX promotions_environment_status ON promotions (environment_id, status, id);

CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    actor_kind   TEXT NOT NULL CHECK (actor_kind IN ('token', 'agent')),
    actor_id     TEXT NOT NULL,
    actor_name   TEXT NOT NULL,
    method       TEXT NOT NULL,
    route        TEXT NOT NULL,              -- the route template, e.g. /api/v1/environments/{id}
    path         TEXT NOT NULL,
    entity_id    TEXT,
    status       INTEGER NOT NULL,
    remote       TEXT,                       -- peer address, and X-Forwarded-For when present
    before       TEXT,                       -- redacted JSON of the entity before the write
    after        TEXT                        -- redacted JSON of the answer
);
CREATE INDEX audit_log_actor ON audit_log (actor_name, seq);
CREATE INDEX audit_log_entity ON audit_log (entity_id, seq);

-- Append-only: rows are never changed or removed.
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
