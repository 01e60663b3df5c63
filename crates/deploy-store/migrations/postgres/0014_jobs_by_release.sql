-- A release's jobs, newest first (the console's release page lists them): one index range
-- instead of a scan of every job.
CREATE INDEX jobs_by_release ON jobs (release_id, id);
