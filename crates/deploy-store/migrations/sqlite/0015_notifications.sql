-- Webhook notifications. A subscription asks for some events of one environment to be
-- POSTed to `url`, signed with its own key: 32 random bytes deployd generated when it
-- was created (shown once, to the admin who created it), sealed under the application
-- secrets key like a secret (`key_id` names the sealing key) and opened at send time.
-- It is no application secret, so no release template can reference it.
CREATE TABLE notification_subscriptions (
    id             TEXT    NOT NULL PRIMARY KEY,
    environment_id TEXT    NOT NULL REFERENCES environments (id),
    url            TEXT    NOT NULL,
    events         TEXT    NOT NULL,          -- space-separated event names
    key_id         TEXT    NOT NULL,          -- the secrets key that sealed it
    sealed_key     TEXT    NOT NULL,          -- the signing key, sealed
    created_at     INTEGER NOT NULL,
    created_by     TEXT    NOT NULL,
    deleted_at     INTEGER                    -- removed: kept for its delivery log
);

CREATE INDEX notification_subscriptions_env ON notification_subscriptions (environment_id);

-- One row per event per subscription, written in the transaction of the change that
-- raised it (a job transition, a promotion request), so none is lost and a replayed
-- write adds none (`source_key` names the change). Sent in `seq` order per
-- (subscription, `ordering_key`: the job or the promotion); claimed by a lease.
CREATE TABLE notification_deliveries (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT    NOT NULL UNIQUE,
    subscription_id TEXT    NOT NULL REFERENCES notification_subscriptions (id),
    environment_id  TEXT    NOT NULL,
    source_key      TEXT    NOT NULL,
    ordering_key    TEXT    NOT NULL,
    event           TEXT    NOT NULL,
    job_id          TEXT,
    promotion_id    TEXT,
    detail          TEXT    NOT NULL,         -- the cause of the change
    occurred_at     INTEGER NOT NULL,
    status          TEXT    NOT NULL,         -- pending, delivered, failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    body            TEXT,                     -- fixed at the first attempt, resent as is
    last_error      TEXT,
    finished_at     INTEGER,
    UNIQUE (subscription_id, source_key)
);

CREATE INDEX notification_deliveries_due ON notification_deliveries (status, next_attempt_at);
CREATE INDEX notification_deliveries_order
    ON notification_deliveries (subscription_id, ordering_key, seq);
CREATE INDEX notification_deliveries_env ON notification_deliveries (environment_id, seq);

-- Every attempt of a delivery: the HTTP status, or the error when none came back.
CREATE TABLE notification_attempts (
    delivery_id TEXT    NOT NULL REFERENCES notification_deliveries (id),
    n           INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    http_status INTEGER,
    error       TEXT,
    PRIMARY KEY (delivery_id, n)
);
