-- deploy-store schema v1 (SQLite). Ids are UUID v7 text; times are integer Unix milliseconds.
-- Never edit an applied migration: add a new numbered file instead.

CREATE TABLE environments (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    spec        TEXT NOT NULL,               -- the whole Environment as JSON
    created_at  INTEGER NOT NULL
);

CREATE TABLE targets (
    id              TEXT PRIMARY KEY NOT NULL,
    environment_id  TEXT NOT NULL REFERENCES environments (id),
    name            TEXT NOT NULL,
    target_type     TEXT NOT NULL,
    spec            TEXT NOT NULL,           -- the whole Target as JSON (connection, health check, labels)
    created_at      INTEGER NOT NULL,
    UNIQUE (environment_id, name)
);

CREATE TABLE releases (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

CREATE TABLE release_components (
    release_id    TEXT NOT NULL REFERENCES releases (id),
    position      INTEGER NOT NULL,
    component_id  TEXT NOT NULL,
    name          TEXT NOT NULL,
    image         TEXT NOT NULL,
    digest        TEXT NOT NULL,
    PRIMARY KEY (release_id, position),
    UNIQUE (release_id, name)
);

CREATE TABLE promotions (
    id              TEXT PRIMARY KEY NOT NULL,
    release_id      TEXT NOT NULL REFERENCES releases (id),
    environment_id  TEXT NOT NULL REFERENCES environments (id),
    status          TEXT NOT NULL CHECK (status IN ('requested', 'approved', 'rejected')),
    requested_by    TEXT NOT NULL,
    decided_by      TEXT,
    requested_at    INTEGER NOT NULL,
    decided_at      INTEGER,
    version         INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE jobs (
    id               TEXT PRIMARY KEY NOT NULL,
    promotion_id     TEXT NOT NULL REFERENCES promotions (id),
    release_id       TEXT NOT NULL REFERENCES releases (id),
    environment_id   TEXT NOT NULL REFERENCES environments (id),
    strategy         TEXT NOT NULL,          -- JSON
    parallelism      INTEGER NOT NULL CHECK (parallelism > 0),
    failure_policy   TEXT NOT NULL,          -- JSON
    status           TEXT NOT NULL CHECK (status IN ('pending', 'preparing', 'running', 'completing',
                                                     'completed', 'failed', 'rolling_back', 'rolled_back')),
    started_at       INTEGER,
    completed_at     INTEGER,
    rollback_of      TEXT REFERENCES jobs (id),
    previous_job_id  TEXT REFERENCES jobs (id),
    idempotency_key  TEXT NOT NULL UNIQUE,
    failure_reason   TEXT,
    version          INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    claimed_by       TEXT,
    lease_until      INTEGER
);

-- The environment lock: at most one job per environment that holds it. A
-- rolling_back job does not: its rollback job (pending..completing) holds it.
CREATE UNIQUE INDEX jobs_one_active_per_environment ON jobs (environment_id)
    WHERE status IN ('pending', 'preparing', 'running', 'completing');
-- Previous successful job / last-known-good lookups.
CREATE INDEX jobs_environment_completed ON jobs (environment_id, status, completed_at);
-- Claimable jobs.
CREATE INDEX jobs_active_lease ON jobs (lease_until)
    WHERE status IN ('pending', 'preparing', 'running', 'completing', 'rolling_back');

CREATE TABLE tasks (
    id                      TEXT PRIMARY KEY NOT NULL,
    job_id                  TEXT NOT NULL REFERENCES jobs (id),
    position                INTEGER NOT NULL,
    target_id               TEXT NOT NULL REFERENCES targets (id),
    component_id            TEXT,
    digest                  TEXT NOT NULL,
    status                  TEXT NOT NULL CHECK (status IN ('pending', 'queued', 'dispatched', 'running',
                                                            'verifying', 'succeeded', 'failed', 'retrying')),
    agent_id                TEXT,
    started_at              INTEGER,
    completed_at            INTEGER,
    logs                    TEXT NOT NULL,
    previous_digest         TEXT,
    error                   TEXT,
    attempt_number          INTEGER NOT NULL CHECK (attempt_number >= 0),
    max_attempts            INTEGER NOT NULL CHECK (max_attempts >= 0),
    last_failure_retryable  INTEGER NOT NULL,
    log_seq                 INTEGER NOT NULL DEFAULT 0,   -- last task_log_chunks.seq handed out
    wave                    INTEGER NOT NULL,
    version                 INTEGER NOT NULL,
    created_at              INTEGER NOT NULL,
    updated_at              INTEGER NOT NULL,
    UNIQUE (job_id, position)
);

CREATE INDEX tasks_target_succeeded ON tasks (target_id) WHERE status = 'succeeded';

CREATE TABLE artifacts (
    id          TEXT PRIMARY KEY NOT NULL,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    position    INTEGER NOT NULL,
    target_id   TEXT REFERENCES targets (id),
    kind        TEXT NOT NULL,
    file_name   TEXT NOT NULL,
    content     TEXT NOT NULL,
    size        INTEGER NOT NULL CHECK (size >= 0),
    sha256      TEXT NOT NULL,
    UNIQUE (job_id, position)
);

CREATE TABLE task_log_chunks (
    task_id  TEXT NOT NULL REFERENCES tasks (id),
    seq      INTEGER NOT NULL,
    at       INTEGER NOT NULL,
    content  TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE job_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       TEXT NOT NULL REFERENCES jobs (id),
    task_id      TEXT REFERENCES tasks (id),
    event        TEXT NOT NULL,
    from_status  TEXT NOT NULL,
    to_status    TEXT NOT NULL,
    cause        TEXT NOT NULL,
    at           INTEGER NOT NULL
);

CREATE INDEX job_events_job ON job_events (job_id, seq);

CREATE TABLE agents (
    id            TEXT PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL UNIQUE,
    labels        TEXT NOT NULL,             -- JSON
    last_seen_at  INTEGER,
    created_at    INTEGER NOT NULL
);

CREATE TABLE api_tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    token_hash  TEXT NOT NULL UNIQUE,        -- sha256 of the token; the token itself is never stored
    scopes      TEXT NOT NULL,               -- JSON array
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
