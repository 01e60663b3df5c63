//! The fault-injection suite: real processes, hosts and networks are killed, stopped, partitioned or filled mid-job, and every job must end settled and consistent with what runs on the targets.
//!
//! These tests form the nextest test group `faults` (`.config/nextest.toml`): they
//! run one at a time, so the timing each one measures is not disturbed by another
//! fault test, and each one is bounded in count and in time. Everything they touch
//! is on loopback or inside a network namespace the test itself creates. Every test
//! ends by checking that each job is settled, that what runs on the targets (`docker
//! inspect`: the container, its `stella.digest`) is what the job's outcome says, that
//! no task ran an attempt twice, and that the stored events form one unbroken chain
//! per job and per task. Measured times are in docs/benchmarks.md.
//!
//! | test | fault | what the system does |
//! |---|---|---|
//! | `kill_deployd` | deployd SIGKILLed at seeded points of 50 jobs (created, dispatch, swap, soak, completion, automatic rollback), SQLite and PostgreSQL | restarted on the same data dir, it takes its own leases back at once and resumes: an attempt cut in flight is reconciled (kept if the target runs it, else retried as `interrupted`); a failed job still winding down is claimed again and its automatic rollback started |
//! | `replicas` | the replica running a job SIGKILLed, another on the same PostgreSQL | the survivor claims the job when the dead lease ends and resumes it, serving the API throughout |
//! | `postgres_outage` | PostgreSQL stopped mid-job for longer than the lease | deployd keeps running, answers 503 `unavailable`; the runner stops when its lease cannot be renewed, and the job is claimed again once the database is back |
//! | `disk_full` | deployd's SQLite volume (a small tmpfs) fills up | writes answer 503 `StorageFull` and commit nothing, reads keep working, the job completes once space is freed, `PRAGMA integrity_check` stays ok |
//! | `agent_partition` | an agent cut off (iptables in the test's network namespace) longer than the heartbeat timeout, then healed | its attempt fails as retryable `AgentLost`; after the heal the retry runs, and the journal keeps a key from running twice |
//! | `ssh_outage` | sshd of one of five targets stopped mid-job | its health check is `Unreachable` and retried, then the task fails, the policy fails the job, and the automatic rollback restores the four reachable targets |
//!
//! Not covered by an assertion of its own: an outage of PostgreSQL shorter than the
//! lease (the job keeps its lease).
//!
//! Run only this group: `cargo nextest run -p deploy-tests faults::`.

mod agent_partition;
mod common;
mod disk_full;
mod kill_deployd;
mod postgres_outage;
mod replicas;
mod ssh_outage;
