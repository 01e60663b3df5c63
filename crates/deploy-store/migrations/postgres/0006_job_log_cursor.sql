-- A job-wide position for every log chunk (`Store::read_job_log`): one stream follows the
-- logs of all the tasks of a job, and a reconnect resumes after the last chunk it saw.
-- `jobs.log_cursor` is the last position handed out. `append_log` bumps it first in the
-- chunk's transaction, so positions are committed in the order they are handed out (the
-- row lock holds a second append to the job until the first commits; a sequence would
-- not): a reader never sees a position while a smaller one is still to come.
ALTER TABLE jobs ADD COLUMN log_cursor BIGINT NOT NULL DEFAULT 0;
ALTER TABLE task_log_chunks ADD COLUMN job_id UUID REFERENCES jobs (id);
ALTER TABLE task_log_chunks ADD COLUMN job_cursor BIGINT NOT NULL DEFAULT 0;

-- The chunks already written, numbered per job in the order they were written.
UPDATE task_log_chunks SET job_id = numbered.job_id, job_cursor = numbered.n
FROM (SELECT c.task_id, c.seq, t.job_id,
             ROW_NUMBER() OVER (PARTITION BY t.job_id ORDER BY c.at, t.position, c.seq) AS n
      FROM task_log_chunks c JOIN tasks t ON t.id = c.task_id) AS numbered
WHERE task_log_chunks.task_id = numbered.task_id AND task_log_chunks.seq = numbered.seq;
ALTER TABLE task_log_chunks ALTER COLUMN job_id SET NOT NULL;

CREATE UNIQUE INDEX task_log_chunks_job_cursor ON task_log_chunks (job_id, job_cursor);

UPDATE jobs SET log_cursor = (SELECT COALESCE(MAX(c.job_cursor), 0) FROM task_log_chunks c WHERE c.job_id = jobs.id);
