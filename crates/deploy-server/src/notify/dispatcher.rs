//! `Notifier`: claims due deliveries (a lease, so replicas sharing a database never send one twice at once), POSTs each signed with its subscription's key under a timeout, records the attempt and schedules the retry.
//!
//! It runs beside the engine and never inside it: the engine only writes delivery rows
//! in its own transactions, so a slow or dead receiver cannot hold up a deploy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use deploy_api::{DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER};
use deploy_core::{Secret, Timestamp};
use deploy_engine::Clock;
use deploy_store::{
    AttemptOutcome, NotificationAttempt, NotificationDelivery, NotificationStatus,
    NotificationSubscription, Store, StoreError,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::keys;
use super::payload;
use super::schedule::RetrySchedule;
use super::signature::sign;
use crate::app_secrets::SecretKeys;

/// How the dispatcher sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifierConfig {
    /// The lease owner (deployd's replica owner).
    pub owner: String,
    /// Bound of one POST, connection included.
    pub timeout: Duration,
    /// Bound of the connection alone.
    pub connect_timeout: Duration,
    pub retry: RetrySchedule,
    /// Wait between claims when nothing was due: the floor of a retry's delay, whatever
    /// the backoff asks for.
    pub poll_interval: Duration,
    /// Most deliveries in flight at once.
    pub batch: u32,
    /// Most deliveries of one subscription in flight at once: a receiver that hangs
    /// holds that many of `batch`, never all of them.
    pub per_subscription: u32,
    /// Delivered and failed deliveries older than this are deleted (with their attempts).
    pub retention: Duration,
    /// The `User-Agent` of the POSTs.
    pub user_agent: String,
}

impl NotifierConfig {
    pub fn new(owner: impl Into<String>) -> Self {
        Self {
            owner: owner.into(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            retry: RetrySchedule::default(),
            poll_interval: Duration::from_secs(1),
            batch: 16,
            per_subscription: 4,
            retention: Duration::from_secs(30 * 86_400),
            user_agent: format!("deployd/{}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// A claim outlives the slowest send it covers, so it is never taken over mid-send.
    fn lease(&self) -> Duration {
        self.timeout + self.connect_timeout + Duration::from_secs(30)
    }
}

/// How often the housekeeping (the pending gauge, the prune) runs.
const HOUSEKEEPING: Duration = Duration::from_secs(10);
/// Least wait between two "cannot claim" warnings while the store is down.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Deliveries sent, and given up, by this process (for `/metrics`).
#[derive(Debug, Default)]
pub struct NotifierCounters {
    pub delivered: AtomicU64,
    pub failed_attempts: AtomicU64,
    pub given_up: AtomicU64,
    /// Deliveries pending in the store (all replicas), as last counted.
    pub pending: AtomicU64,
}

impl NotifierCounters {
    /// Appends `deployd_webhook_attempts_total{outcome}` and
    /// `deployd_webhook_deliveries_pending` (Prometheus text).
    pub(crate) fn render(&self, out: &mut String) {
        out.push_str(
            "# HELP deployd_webhook_attempts_total Webhook delivery attempts by outcome \
             (delivered; failed, to be retried; given_up: the delivery was marked failed).\n",
        );
        out.push_str("# TYPE deployd_webhook_attempts_total counter\n");
        for (outcome, n) in [
            ("delivered", &self.delivered),
            ("failed", &self.failed_attempts),
            ("given_up", &self.given_up),
        ] {
            out.push_str(&format!(
                "deployd_webhook_attempts_total{{outcome=\"{outcome}\"}} {}\n",
                n.load(Ordering::Relaxed)
            ));
        }
        out.push_str(
            "# HELP deployd_webhook_deliveries_pending Webhook deliveries not yet delivered \
             nor given up (counted every 10 s).\n",
        );
        out.push_str("# TYPE deployd_webhook_deliveries_pending gauge\n");
        out.push_str(&format!(
            "deployd_webhook_deliveries_pending {}\n",
            self.pending.load(Ordering::Relaxed)
        ));
    }
}

/// The dispatcher of webhook deliveries.
pub struct Notifier {
    store: Arc<dyn Store>,
    keys: Arc<SecretKeys>,
    clock: Arc<dyn Clock>,
    config: NotifierConfig,
    client: reqwest::Client,
    counters: Arc<NotifierCounters>,
}

/// Why an attempt did not deliver; `last`: no later attempt can do better (the
/// subscription was removed), so the delivery is given up now.
struct Failure {
    reason: String,
    last: bool,
}

impl Failure {
    fn retry(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            last: false,
        }
    }
}

/// What an attempt stands on before its POST.
struct Prepared {
    subscription: NotificationSubscription,
    key: Secret,
}

impl Notifier {
    /// A dispatcher over `store`, opening signing keys with `keys`.
    pub fn new(
        store: Arc<dyn Store>,
        keys: Arc<SecretKeys>,
        clock: Arc<dyn Clock>,
        config: NotifierConfig,
    ) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            // A receiver's redirect is not followed: deployd POSTs only where admins
            // pointed it.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| format!("cannot build the webhook HTTP client: {e}"))?;
        Ok(Self {
            store,
            keys,
            clock,
            config,
            client,
            counters: Arc::new(NotifierCounters::default()),
        })
    }

    /// What this dispatcher sent and gave up.
    pub fn counters(&self) -> Arc<NotifierCounters> {
        self.counters.clone()
    }

    /// Sends due deliveries until `stop`, up to `batch` at once: a slot freed by an
    /// answered (or timed-out) send is refilled at once, so a receiver that hangs holds
    /// only its own slots (at most `per_subscription`), never the others' deliveries.
    /// A send cut by `stop` is not recorded: its lease is released at the next start.
    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        // The previous process of this owner (the data directory's lock makes it the
        // only one) may have been cut mid-send: its claims are free again now.
        match this
            .store
            .release_notification_leases(&this.config.owner)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(released = n, "webhook deliveries of the last run released"),
            Err(e) => tracing::warn!(error = %e, "cannot release the last run's webhook leases"),
        }
        let slots = Arc::new(Semaphore::new(this.config.batch as usize));
        let mut sending = JoinSet::new();
        let mut last_warning: Option<Instant> = None;
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rounds: u64 = 0;
        loop {
            // Finished sends are reaped here too, not only when idle, so the set stays
            // as small as what is in flight.
            while sending.try_join_next().is_some() {}
            let free = u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
            let claimed = if free == 0 {
                Vec::new()
            } else {
                match this.claim(free).await {
                    Ok(c) => c,
                    Err(e) => {
                        if last_warning.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
                            tracing::warn!(error = %e, "cannot claim webhook deliveries");
                            last_warning = Some(Instant::now());
                        }
                        Vec::new()
                    }
                }
            };
            let idle = claimed.is_empty();
            for delivery in claimed {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let me = this.clone();
                sending.spawn(async move {
                    me.attempt(&delivery).await;
                    drop(permit);
                });
            }
            if !idle && slots.available_permits() > 0 {
                continue;
            }
            tokio::select! {
                () = stop.cancelled() => return,
                Some(_) = sending.join_next(), if !sending.is_empty() => {}
                _ = housekeeping.tick() => {
                    // The prune scans finished rows: every tenth round (100 s) is enough.
                    this.housekeeping(rounds.is_multiple_of(10)).await;
                    rounds += 1;
                }
                () = tokio::time::sleep(this.config.poll_interval) => {}
            }
        }
    }

    /// Counts what is pending (the gauge) and, with `prune`, deletes what finished long
    /// ago.
    async fn housekeeping(&self, prune: bool) {
        if let Ok(n) = self.store.pending_notification_deliveries().await {
            self.counters.pending.store(n, Ordering::Relaxed);
        }
        if !prune {
            return;
        }
        let retention = u64::try_from(self.config.retention.as_millis()).unwrap_or(u64::MAX);
        let Ok(cut) =
            Timestamp::from_unix_millis(self.clock.now().unix_millis().saturating_sub(retention))
        else {
            return;
        };
        if let Err(e) = self.store.prune_notification_deliveries(cut).await {
            tracing::debug!(error = %e, "cannot prune old webhook deliveries");
        }
    }

    async fn claim(&self, limit: u32) -> Result<Vec<NotificationDelivery>, StoreError> {
        self.store
            .claim_notification_deliveries(
                &self.config.owner,
                self.clock.now(),
                self.config.lease(),
                limit,
                self.config.per_subscription,
            )
            .await
    }

    /// Claims what is due and sends it, waiting for every send; how many were claimed
    /// (tests step the dispatcher with it; [`Self::run`] never waits for a batch).
    pub async fn run_once(&self) -> usize {
        let claimed = match self.claim(self.config.batch).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot claim webhook deliveries");
                return 0;
            }
        };
        for d in &claimed {
            self.attempt(d).await;
        }
        claimed.len()
    }

    /// One attempt of a claimed delivery, recorded.
    pub(crate) async fn attempt(&self, delivery: &NotificationDelivery) {
        let started = Instant::now();
        let at = self.clock.now();
        let (body, result, http_status) = match self.prepare(delivery).await {
            Err(Some(failure)) => (delivery.body.clone(), Err(failure), None),
            // The store could not be read: no attempt was made, the lease runs out and
            // the delivery is claimed again (it is not counted as an attempt).
            Err(None) => return,
            Ok((prepared, Err(failure))) => {
                drop(prepared);
                (None, Err(failure), None)
            }
            Ok((prepared, Ok(body))) => {
                let (result, status) = self.post(&prepared, delivery, &body).await;
                (Some(body), result, status)
            }
        };
        self.record(delivery, started, at, body, result, http_status)
            .await;
    }

    async fn record(
        &self,
        delivery: &NotificationDelivery,
        started: Instant,
        at: Timestamp,
        body: Option<String>,
        result: Result<(), Failure>,
        http_status: Option<u16>,
    ) {
        let n = delivery.attempts + 1;
        let now = self.clock.now();
        let random = u16::from_be_bytes({
            let r = deploy_engine::random_bytes();
            [r[0], r[1]]
        });
        let (status, next, error) = match result {
            Ok(()) => (NotificationStatus::Delivered, now, None),
            Err(Failure { reason, last: true }) => (NotificationStatus::Failed, now, Some(reason)),
            Err(Failure {
                reason,
                last: false,
            }) => match self.config.retry.next(n, delivery.occurred_at, now, random) {
                Some(next) => (NotificationStatus::Pending, next, Some(reason)),
                None => (NotificationStatus::Failed, now, Some(reason)),
            },
        };
        let counter = match status {
            NotificationStatus::Delivered => &self.counters.delivered,
            NotificationStatus::Pending => &self.counters.failed_attempts,
            NotificationStatus::Failed => &self.counters.given_up,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let outcome = AttemptOutcome {
            attempt: NotificationAttempt {
                delivery_id: delivery.id,
                n,
                at,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                http_status,
                error: error.clone(),
            },
            body,
            status,
            next_attempt_at: next,
        };
        tracing::info!(
            delivery = %delivery.id,
            event = %delivery.event,
            subscription = %delivery.subscription_id,
            attempt = n,
            status = status.as_str(),
            http_status,
            error = error.as_deref().unwrap_or(""),
            "webhook attempt"
        );
        match self
            .store
            .record_notification_attempt(&self.config.owner, &outcome)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                delivery = %delivery.id,
                "webhook delivery lease lost before its attempt was recorded"
            ),
            Err(e) => {
                tracing::warn!(delivery = %delivery.id, error = %e, "cannot record a webhook attempt")
            }
        }
    }

    /// The subscription and its opened key, then the body (kept, or built now): a body
    /// that cannot be built fails the attempt with none kept, so the next one builds
    /// it. `Err(None)`: the store could not be read (no attempt is recorded);
    /// `Err(Some)`: the attempt failed before any body was built.
    async fn prepare(
        &self,
        delivery: &NotificationDelivery,
    ) -> Result<(Prepared, Result<String, Failure>), Option<Failure>> {
        let subscription = match self
            .store
            .get_notification_subscription(delivery.subscription_id)
            .await
        {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(Some(Failure {
                    reason: "the subscription is gone".to_owned(),
                    last: true,
                }));
            }
            Err(e) => {
                tracing::warn!(delivery = %delivery.id, error = %e, "cannot read a webhook subscription");
                return Err(None);
            }
        };
        // Removed after this delivery was written (its removal gives up what is pending,
        // but a claim may have raced it): never sent.
        if subscription.deleted_at.is_some() {
            return Err(Some(Failure {
                reason: "the subscription was removed".to_owned(),
                last: true,
            }));
        }
        let key = keys::open(&self.keys, &subscription)
            .map_err(|e| Some(Failure::retry(format!("cannot open the signing key: {e}"))))?;
        let body = match &delivery.body {
            Some(b) => Ok(b.clone()),
            None => payload::body(self.store.as_ref(), delivery)
                .await
                .map_err(|e| Failure::retry(format!("cannot build the body: {e}"))),
        };
        Ok((Prepared { subscription, key }, body))
    }

    async fn post(
        &self,
        prepared: &Prepared,
        delivery: &NotificationDelivery,
        body: &str,
    ) -> (Result<(), Failure>, Option<u16>) {
        let t = self.clock.now().unix_millis() / 1000;
        let id = delivery.id.to_string();
        let signature = sign(
            prepared.key.expose().as_bytes(),
            t,
            &id,
            delivery.event.as_str(),
            body.as_bytes(),
        );
        let sent = self
            .client
            .post(&prepared.subscription.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(EVENT_HEADER, delivery.event.as_str())
            .header(DELIVERY_HEADER, id)
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    (Ok(()), Some(status.as_u16()))
                } else {
                    (
                        Err(Failure::retry(format!(
                            "the receiver answered HTTP {}",
                            status.as_u16()
                        ))),
                        Some(status.as_u16()),
                    )
                }
            }
            Err(e) => (Err(Failure::retry(describe(&e, self.config.timeout))), None),
        }
    }
}

/// A send error in a few words (the URL is left out: the log names the subscription).
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {} ms", timeout.as_millis())
    } else if e.is_connect() {
        "cannot connect to the receiver".to_owned()
    } else if e.is_redirect() {
        "the receiver redirected; redirects are not followed".to_owned()
    } else {
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        reason.replace(e.url().map_or("", |u| u.as_str()), "<url>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_one_line_per_outcome() {
        let c = NotifierCounters::default();
        c.delivered.fetch_add(3, Ordering::Relaxed);
        c.given_up.fetch_add(1, Ordering::Relaxed);
        let mut text = String::new();
        c.render(&mut text);
        for line in [
            "# TYPE deployd_webhook_attempts_total counter",
            "deployd_webhook_attempts_total{outcome=\"delivered\"} 3",
            "deployd_webhook_attempts_total{outcome=\"failed\"} 0",
            "deployd_webhook_attempts_total{outcome=\"given_up\"} 1",
            "# TYPE deployd_webhook_deliveries_pending gauge",
            "deployd_webhook_deliveries_pending 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} not in {text}");
        }
    }

    #[test]
    fn a_claim_outlives_the_slowest_send() {
        let mut config = NotifierConfig::new("o");
        config.timeout = Duration::from_secs(60);
        assert!(config.lease() > config.timeout + config.connect_timeout);
    }
}
