-- deploy-store schema v1 (PostgreSQL). Ids are UUID v7; times are integer Unix milliseconds.
-- Never edit an applied migration: add a new numbered file instead.

CREATE TABLE environments (
    id          UUID PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    spec        TEXT NOT NULL,               -- the whole Environment as JSON
    created_at  BIGINT NOT NULL
);

CREATE TABLE targets (
    id              UUID PRIMARY KEY NOT NULL,
    environment_id  UUID NOT NULL REFERENCES environments (id),
    name            TEXT NOT NULL,
    target_type     TEXT NOT NULL,
    spec            TEXT NOT NULL,           -- the whole Target as JSON (connection, health check, labels)
    created_at      BIGINT NOT NULL,
    UNIQUE (environment_id, name)
);

CREATE TABLE releases (
    id          UUID PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

CREATE TABLE release_components (
    release_id    UUID NOT NULL REFERENCES releases (id),
    position      BIGINT NOT NULL,
    component_id  UUID NOT NULL,
    name          TEXT NOT NULL,
    image         TEXT NOT NULL,
    digest        TEXT NOT NULL,
    PRIMARY KEY (release_id, position),
    UNIQUE (release_id, name)
);

CREATE TABLE promotions (
    id              UUID PRIMARY KEY NOT NULL,
    release_id      UUID NOT NULL REFERENCES releases (id),
    environment_id  UUID NOT NULL REFERENCES environments (id),
    status          TEXT NOT NULL CHECK (status IN ('requested', 'approved', 'rejected')),
    requested_by    TEXT NOT NULL,
    decided_by      TEXT,
    requested_at    BIGINT NOT NULL,
    decided_at      BIGINT,
    version         BIGINT NOT NULL DEFAULT 0
);

CREATE TABLE jobs (
    id               UUID PRIMARY KEY NOT NULL,
    promotion_id     UUID NOT NULL REFERENCES promotions (id),
    release_id       UUID NOT NULL REFERENCES releases (id),
    environment_id   UUID NOT NULL REFERENCES environments (id),
    strategy         TEXT NOT NULL,          -- JSON
    parallelism      BIGINT NOT NULL CHECK (parallelism > 0),
    failure_policy   TEXT NOT NULL,          -- JSON
    status           TEXT NOT NULL CHECK (status IN ('pending', 'preparing', 'running', 'completing',
                                                     'completed', 'failed', 'rolling_back', 'rolled_back')),
    started_at       BIGINT,
    completed_at     BIGINT,
    rollback_of      UUID REFERENCES jobs (id),
    previous_job_id  UUID REFERENCES jobs (id),
    idempotency_key  TEXT NOT NULL UNIQUE,
    failure_reason   TEXT,
    version          BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    claimed_by       TEXT,
    lease_until      BIGINT
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
    id                      UUID PRIMARY KEY NOT NULL,
    job_id                  UUID NOT NULL REFERENCES jobs (id),
    position                BIGINT NOT NULL,
    target_id               UUID NOT NULL REFERENCES targets (id),
    component_id            UUID,
    digest                  TEXT NOT NULL,
    status                  TEXT NOT NULL CHECK (status IN ('pending', 'queued', 'dispatched', 'running',
                                                            'verifying', 'succeeded', 'failed', 'retrying')),
    agent_id                UUID,
    started_at              BIGINT,
    completed_at            BIGINT,
    logs                    TEXT NOT NULL,
    previous_digest         TEXT,
    error                   TEXT,
    attempt_number          BIGINT NOT NULL CHECK (attempt_number >= 0),
    max_attempts            BIGINT NOT NULL CHECK (max_attempts >= 0),
    last_failure_retryable  BOOLEAN NOT NULL,
    log_seq                 BIGINT NOT NULL DEFAULT 0,    -- last task_log_chunks.seq handed out
    wave                    BIGINT NOT NULL,
    version                 BIGINT NOT NULL,
    created_at              BIGINT NOT NULL,
    updated_at              BIGINT NOT NULL,
    UNIQUE (job_id, position)
);

CREATE INDEX tasks_target_succeeded ON tasks (target_id) WHERE status = 'succeeded';

CREATE TABLE artifacts (
    id          UUID PRIMARY KEY NOT NULL,
    job_id      UUID NOT NULL REFERENCES jobs (id),
    position    BIGINT NOT NULL,
    target_id   UUID REFERENCES targets (id),
    kind        TEXT NOT NULL,
    file_name   TEXT NOT NULL,
    content     TEXT NOT NULL,
    size        BIGINT NOT NULL CHECK (size >= 0),
    sha256      TEXT NOT NULL,
    UNIQUE (job_id, position)
);

CREATE TABLE task_log_chunks (
    task_id  UUID NOT NULL REFERENCES tasks (id),
    seq      BIGINT NOT NULL,
    at       BIGINT NOT NULL,
    content  TEXT NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE job_events (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       UUID NOT NULL REFERENCES jobs (id),
    task_id      UUID REFERENCES tasks (id),
    event        TEXT NOT NULL,
    from_status  TEXT NOT NULL,
    to_status    TEXT NOT NULL,
    cause        TEXT NOT NULL,
    at           BIGINT NOT NULL
);

CREATE INDEX job_events_job ON job_events (job_id, seq);

CREATE TABLE agents (
    id            UUID PRIMARY KEY NOT NULL,
    name          TEXT NOT NULL UNIQUE,
    labels        TEXT NOT NULL,             -- JSON
    last_seen_at  BIGINT,
    created_at    BIGINT NOT NULL
);

CREATE TABLE api_tokens (
    id          UUID PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL UNIQUE,
    token_hash  TEXT NOT NULL UNIQUE,        -- sha256 of the token; the token itself is never stored
    scopes      TEXT NOT NULL,               -- JSON array
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
