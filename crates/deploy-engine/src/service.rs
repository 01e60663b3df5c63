//! The engine as a service: claim the jobs that need a runner (rollback jobs included, like any other) with a lease, run each, renew leases, and release them on shutdown.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use deploy_core::JobId;
use deploy_store::StoreError;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::errors::EngineError;

/// Jobs claimed per poll at most.
const CLAIM_BATCH: u32 = 16;

impl Engine {
    /// Claims and runs jobs until `shutdown` fires, then stops its runners (in-flight
    /// tasks get the shutdown grace) and releases their leases so another replica,
    /// or this one after a restart, resumes them at once. At start it first gives
    /// back the leases its owner still holds ([`deploy_store::Store::release_leases_of`]):
    /// a restart after a crash resumes its own jobs at once, which is safe only
    /// because an owner names one live replica.
    pub async fn serve(&self, shutdown: CancellationToken) {
        let active: Arc<Mutex<BTreeSet<JobId>>> = Arc::default();
        let mut runners = tokio::task::JoinSet::new();
        // Leases still held under our owner belong to a predecessor that died without
        // releasing them (owners are unique among live replicas): resume those jobs now
        // rather than after the lease.
        let owner = &self.inner.config.owner;
        match self.inner.store.release_leases_of(owner).await {
            Ok(ids) if !ids.is_empty() => tracing::warn!(
                owner = %owner,
                jobs = ?ids,
                "resuming jobs this owner held before a restart at once; if another live replica runs under this owner, stop it: owners must be unique"
            ),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot take back this owner's leases; they resume when they expire")
            }
        }
        loop {
            if let Err(e) = self.claim_and_start(&active, &mut runners).await {
                tracing::warn!(error = %e, "cannot claim jobs");
            }
            // A job created here (or announced by another replica) is claimed at once;
            // the poll interval bounds the wait otherwise (lease expiries, retries).
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.inner.job_created.notified() => {}
                () = self.inner.store.wait_for_new_jobs(self.inner.config.poll_interval) => {}
                Some(_) = runners.join_next(), if !runners.is_empty() => {}
            }
        }
        let ids: Vec<JobId> = active
            .lock()
            .map(|a| a.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            self.stop_job(id);
        }
        while runners.join_next().await.is_some() {}
    }

    async fn claim_and_start(
        &self,
        active: &Arc<Mutex<BTreeSet<JobId>>>,
        runners: &mut tokio::task::JoinSet<()>,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        // Queued jobs whose environment is free take it first, then are claimed below.
        match inner.store.dequeue_jobs(inner.clock.now()).await {
            Ok(let_in) if !let_in.is_empty() => {
                tracing::info!(jobs = ?let_in, "queued jobs let into their free environment");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot let queued jobs in"),
        }
        let claimed = inner
            .store
            .claim_jobs(
                &inner.config.owner,
                inner.clock.now(),
                inner.config.lease,
                CLAIM_BATCH,
            )
            .await?;
        for id in claimed {
            if active.lock().map(|a| a.contains(&id)).unwrap_or(true) {
                continue;
            }
            if let Ok(mut a) = active.lock() {
                a.insert(id);
            }
            let engine = self.clone();
            let active = active.clone();
            runners.spawn(async move {
                let renew = engine.keep_lease(id);
                let result = engine.run_job(id).await;
                renew.cancel();
                match &result {
                    // Done, stopped, or stopped by an unreachable database: released,
                    // so that the next claim (any replica's) takes it at once if it
                    // still needs a runner.
                    Ok(_) => engine.release_lease_soon(id).await,
                    Err(EngineError::Store(e)) if e.is_unavailable() => {
                        tracing::warn!(job = %id, error = %e, "job runner stopped: the database is unavailable");
                        engine.release_lease_soon(id).await;
                    }
                    // Any other error would likely recur at once: the lease is kept
                    // until it expires, a lease of back-off before the next claim.
                    Err(e) => {
                        tracing::error!(job = %id, error = %e, "job runner stopped with an error; the job is claimed again when its lease ends");
                    }
                }
                if let Ok(mut a) = active.lock() {
                    a.remove(&id);
                }
            });
        }
        Ok(())
    }

    /// Gives job `id`'s lease back, so the next claim (ours or another replica's)
    /// takes the job at once if it still needs a runner. While the database is
    /// unavailable (the runner may have stopped because of it) this is tried again
    /// every second, for at most a lease: after that the lease has expired and any
    /// claim takes the job anyway.
    async fn release_lease_soon(&self, id: JobId) {
        let inner = &self.inner;
        let give_up = tokio::time::Instant::now() + inner.config.lease;
        loop {
            match inner.store.release_lease(id, &inner.config.owner).await {
                Ok(()) => return,
                Err(e) if e.is_unavailable() && tokio::time::Instant::now() < give_up => {
                    tracing::warn!(job = %id, error = %e, "cannot release the lease yet; the database is unavailable");
                    tokio::time::sleep(RETRY_UNAVAILABLE).await;
                }
                Err(e) => {
                    tracing::warn!(job = %id, error = %e, "cannot release the lease");
                    return;
                }
            }
        }
    }

    /// Renews the lease of job `id` every third of the lease until the returned
    /// token is cancelled; stops the job's runner when the lease is lost. A renewal
    /// that fails because the database is unavailable is tried again every second
    /// while the last renewed lease lasts: a database restart shorter than the lease
    /// does not stop the job; one that outlasts it does (another replica may have
    /// taken the job by then).
    fn keep_lease(&self, id: JobId) -> CancellationToken {
        let done = CancellationToken::new();
        let engine = self.clone();
        let token = done.clone();
        tokio::spawn(async move {
            let inner = &engine.inner;
            let every = inner.config.lease / 3;
            // Claimed just before the runner started: valid for a lease from about now.
            let mut valid_until = tokio::time::Instant::now() + inner.config.lease;
            let mut pause = every;
            loop {
                tokio::select! {
                    () = token.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                let asked = tokio::time::Instant::now();
                let renewed = inner
                    .store
                    .renew_lease(
                        id,
                        &inner.config.owner,
                        inner.clock.now(),
                        inner.config.lease,
                    )
                    .await;
                match renewed {
                    Ok(_) => {
                        valid_until = asked + inner.config.lease;
                        pause = every;
                    }
                    // Keep a margin of a renewal interval: stop while the lease still holds.
                    Err(e)
                        if e.is_unavailable()
                            && tokio::time::Instant::now() + every < valid_until =>
                    {
                        tracing::warn!(job = %id, error = %e, "cannot renew the job's lease yet; the database is unavailable");
                        pause = RETRY_UNAVAILABLE.min(every);
                    }
                    Err(e) => {
                        tracing::error!(job = %id, error = %e, "lost the job's lease; stopping its runner and its tasks at once");
                        engine.abandon_job(id);
                        return;
                    }
                }
            }
        });
        done
    }
}

/// How often a lease write is tried again while the database is unavailable.
const RETRY_UNAVAILABLE: std::time::Duration = std::time::Duration::from_secs(1);
