-- The W3C trace context (`traceparent`) a job was created in: the request's that created
-- it, or for a rollback job the failed job's run (automatic) or the request's asking for
-- it (manual). The remote parent of the job's span on whichever replica runs or resumes
-- it. Written in the job's own transaction; a job created with tracing off has no row.
CREATE TABLE job_trace_contexts (
    job_id      UUID PRIMARY KEY NOT NULL REFERENCES jobs (id),
    traceparent TEXT NOT NULL
);
