-- The agent relay (issue #18): what one replica's executor hands to an agent that polls
-- another replica, and what comes back, so that any replica answers any agent.
-- Ids are text in both dialects: ad-hoc keys (inspect, probe, health command) name no task row.
CREATE TABLE agent_deliveries (
    task_id     TEXT   NOT NULL,
    attempt     BIGINT NOT NULL,
    agent_id    TEXT   NOT NULL,
    payload     TEXT   NOT NULL,            -- TaskDelivery JSON, never with registry credentials
    state       TEXT   NOT NULL,            -- queued | done | cancelled | lost
    result      TEXT,                       -- TaskResultRequest JSON once done
    log_seq     BIGINT NOT NULL DEFAULT 0,  -- lines relayed so far (the next sequence number)
    created_at  BIGINT NOT NULL,
    finished_at BIGINT,
    PRIMARY KEY (task_id, attempt)
);
CREATE INDEX agent_deliveries_queued ON agent_deliveries (agent_id) WHERE state = 'queued';
CREATE INDEX agent_deliveries_finished ON agent_deliveries (finished_at);

-- Log lines an agent sent to a replica other than the one waiting for the key.
CREATE TABLE agent_log_lines (
    task_id TEXT   NOT NULL,
    attempt BIGINT NOT NULL,
    seq     BIGINT NOT NULL,
    stream  TEXT   NOT NULL,
    text    TEXT   NOT NULL,
    PRIMARY KEY (task_id, attempt, seq)
);

-- Liveness shared by the replicas: the last poll any replica answered (written in batches).
ALTER TABLE agents ADD COLUMN last_poll_at BIGINT;
ALTER TABLE agents ADD COLUMN draining BOOLEAN NOT NULL DEFAULT FALSE;
