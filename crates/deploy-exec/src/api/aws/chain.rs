//! `AwsChain`: walks the default chain's sources in order and caches the result, refreshing before expiry (single-flight; a failed refresh keeps still-valid credentials).

use std::collections::BTreeMap;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use reqwest::Client;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use super::env::AwsEnvironment;
use super::source::{LOCAL_TIMEOUT, Outcome, Session, Source, Sources};
use crate::api::sigv4::AwsCredentials;
use crate::errors::ExecError;
use crate::logs::TaskLog;

/// Session credentials are replaced this long before they expire (or at half their
/// remaining life when shorter), so no signed request goes out with keys about to lapse.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// Long-term keys (environment, profile) are read again after this long, as the AWS
/// SDKs do, so a rotated credentials file is picked up without a restart.
const RELOAD_STATIC: Duration = Duration::from_secs(15 * 60);
/// After a failed refresh with still-valid credentials, the next attempt waits this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

struct Cached {
    session: Session,
    refresh_at: OffsetDateTime,
}

/// The default credential chain of one executor, shared by all its ECS targets without
/// a `credential_ref`.
pub(crate) struct AwsChain {
    env: AwsEnvironment,
    clients: Result<(Client, Client), String>,
    /// The sources walked: all five, or only the profile for a target that names one.
    order: &'static [Source],
    // A tokio mutex held across the refresh: concurrent callers wait for the one
    // refresh in flight and take its result (single-flight).
    cached: Mutex<Option<Cached>>,
}

impl std::fmt::Debug for AwsChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsChain")
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

/// When to refresh credentials fetched at `now` that expire at `expires`.
pub(crate) fn refresh_at(now: OffsetDateTime, expires: Option<OffsetDateTime>) -> OffsetDateTime {
    match expires {
        None => now + RELOAD_STATIC,
        Some(expires) => {
            let life: time::Duration = expires - now;
            let half = (life / 2_i32).max(time::Duration::ZERO);
            expires - half.min(time::Duration::try_from(REFRESH_BEFORE).unwrap_or(half))
        }
    }
}

impl AwsChain {
    /// A chain reading `env`; STS calls are bounded by `request_timeout`.
    pub(crate) fn new(env: AwsEnvironment, request_timeout: Duration) -> Self {
        let local = Client::builder()
            .no_proxy()
            .connect_timeout(LOCAL_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build();
        let remote = Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build();
        let clients = match (local, remote) {
            (Ok(l), Ok(r)) => Ok((l, r)),
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        };
        Self {
            env,
            clients,
            order: &Source::ORDER,
            cached: Mutex::new(None),
        }
    }

    /// A chain of the profile source alone, for a target that names its profile: it
    /// gets that profile's keys or an error, never the environment's or the instance's.
    pub(crate) fn profile_only(env: AwsEnvironment, request_timeout: Duration) -> Self {
        Self {
            order: &[Source::Profile],
            ..Self::new(env, request_timeout)
        }
    }

    /// Current credentials: cached, or loaded from the first source that has them.
    /// `region` is the target's (for the regional STS endpoint); `log` gets one line per
    /// load naming the source and access key id (never a secret).
    pub(crate) async fn credentials(
        &self,
        region: &str,
        log: &TaskLog,
    ) -> Result<AwsCredentials, ExecError> {
        let mut cached = self.cached.lock().await;
        let now = OffsetDateTime::now_utc();
        if let Some(c) = cached.as_ref()
            && now < c.refresh_at
        {
            return Ok(c.session.credentials.clone());
        }
        match self.load(region).await {
            Ok(session) => {
                let until = session.expires.map_or_else(
                    || "long-term keys".to_owned(),
                    |e| format!("valid until {e}"),
                );
                let line = format!(
                    "aws credentials from {} (access key {}, {until})",
                    session.source, session.credentials.access_key_id
                );
                tracing::info!("{line}");
                log.line(&line);
                let credentials = session.credentials.clone();
                *cached = Some(Cached {
                    refresh_at: refresh_at(now, session.expires),
                    session,
                });
                Ok(credentials)
            }
            Err(e) => match cached.as_mut() {
                Some(c) if c.session.expires.is_some_and(|x| now < x) => {
                    let expires = c.session.expires.unwrap_or(now);
                    let line = format!(
                        "warning: refresh aws credentials from {} failed ({e}); keeping access key {} until {expires}",
                        c.session.source, c.session.credentials.access_key_id
                    );
                    tracing::warn!("{line}");
                    log.line(&line);
                    c.refresh_at = (now + RETRY_AFTER_FAILURE).min(expires);
                    Ok(c.session.credentials.clone())
                }
                _ => Err(e),
            },
        }
    }

    /// The first source with credentials; an error of a configured source stops the walk.
    pub(crate) async fn load(&self, region: &str) -> Result<Session, ExecError> {
        let (local, remote) = self.clients.as_ref().map_err(|e| ExecError::Secret {
            reference: "aws default chain".into(),
            detail: format!("build the http client: {e}"),
        })?;
        let sources = Sources {
            env: &self.env,
            local,
            remote,
            region,
        };
        let mut why = Vec::new();
        for &source in self.order {
            match sources.load(source).await? {
                Outcome::Loaded(session) => return Ok(session),
                Outcome::Absent(reason) => why.push(format!("{}: {reason}", source.as_str())),
            }
        }
        Err(ExecError::Secret {
            reference: "aws default chain".into(),
            detail: format!(
                "no source has credentials (the target has no credential_ref): {}",
                why.join("; ")
            ),
        })
    }
}

/// One [`AwsChain`] per profile a target names (`None`: the process's `AWS_PROFILE`),
/// each with its own cache, made on first use.
pub(crate) struct AwsChains {
    env: AwsEnvironment,
    request_timeout: Duration,
    by_profile: std::sync::Mutex<BTreeMap<Option<String>, Arc<AwsChain>>>,
}

impl std::fmt::Debug for AwsChains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsChains")
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

impl AwsChains {
    pub(crate) fn new(env: AwsEnvironment, request_timeout: Duration) -> Self {
        Self {
            env,
            request_timeout,
            by_profile: std::sync::Mutex::default(),
        }
    }

    /// The chain of `profile` (a target's `profile` field), shared by all its targets.
    pub(crate) fn for_profile(&self, profile: Option<&str>) -> Arc<AwsChain> {
        // The map only ever grows; a panic elsewhere cannot leave it half-written.
        let mut map = self
            .by_profile
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(profile.map(str::to_owned))
            .or_insert_with(|| {
                Arc::new(match profile {
                    Some(p) => {
                        AwsChain::profile_only(self.env.with_profile(p), self.request_timeout)
                    }
                    None => AwsChain::new(self.env.clone(), self.request_timeout),
                })
            })
            .clone()
    }
}
