//! Tests of the store: every repository test runs on SQLite and on a real PostgreSQL started by the harness.

mod agents;
mod app_secrets;
mod backup;
mod concurrency;
mod console_reads;
mod console_sessions;
mod counts;
mod durability;
mod harness;
mod job_log;
mod job_summaries;
mod notifications;
mod operator;
mod relay;
mod repository;
mod startup;
mod tls;
mod trace_context;
