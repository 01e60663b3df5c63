-- A failed job whose runner is not done with it (attempts still in flight, an automatic
-- rollback still to start) is marked by `winding_down`: such a job is claimed and run
-- like an active one, and only `failed` without it is settled. A `rolling_back` job is
-- no longer run: it waits for its rollback job, whose end settles it.
ALTER TABLE jobs ADD COLUMN winding_down BOOLEAN NOT NULL DEFAULT FALSE;
-- Until now a failed job still winding down kept its holder with an ended lease. The
-- newest such job of an environment that no job holds winds down again (at most one
-- per environment: the lock below covers it).
UPDATE jobs SET winding_down = TRUE
WHERE status = 'failed' AND claimed_by IS NOT NULL
  AND id = (SELECT f.id FROM jobs f
            WHERE f.environment_id = jobs.environment_id AND f.status = 'failed' AND f.claimed_by IS NOT NULL
            ORDER BY f.created_at DESC, f.id DESC LIMIT 1)
  AND NOT EXISTS (SELECT 1 FROM jobs h
                  WHERE h.environment_id = jobs.environment_id AND h.queued_behind IS NULL
                    AND h.status IN ('pending', 'preparing', 'running', 'completing'));
UPDATE jobs SET claimed_by = NULL, lease_until = NULL WHERE status IN ('failed', 'rolling_back');
DROP INDEX jobs_active_lease;
CREATE INDEX jobs_active_lease ON jobs (lease_until)
    WHERE status IN ('pending', 'preparing', 'running', 'completing') OR winding_down;
-- The environment lock covers a job winding down too: nothing may deploy to its
-- targets while its attempts are cancelled or reconciled, or before its automatic
-- rollback job takes the lock over (in the transaction that clears the flag).
DROP INDEX jobs_one_active_per_environment;
CREATE UNIQUE INDEX jobs_one_active_per_environment ON jobs (environment_id)
    WHERE (status IN ('pending', 'preparing', 'running', 'completing') AND queued_behind IS NULL)
       OR winding_down;
