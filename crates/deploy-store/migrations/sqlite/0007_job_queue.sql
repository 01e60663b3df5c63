-- Queued jobs: a job approved for a busy environment waits in line, `pending` with the
-- job ahead of it in `queued_behind`, holding no lock; the engine lets the oldest one in
-- (clears the column) once the environment is free. The environment lock now ignores
-- queued jobs.
ALTER TABLE jobs ADD COLUMN queued_behind TEXT REFERENCES jobs (id);
DROP INDEX jobs_one_active_per_environment;
CREATE UNIQUE INDEX jobs_one_active_per_environment ON jobs (environment_id)
    WHERE status IN ('pending', 'preparing', 'running', 'completing') AND queued_behind IS NULL;
CREATE INDEX jobs_queued ON jobs (environment_id, created_at, id) WHERE queued_behind IS NOT NULL;
