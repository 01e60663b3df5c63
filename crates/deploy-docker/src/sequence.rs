//! The docker_host deploy sequence, once for every transport: no-op when the definition runs, instant revert from the kept `<name>-previous`, else pull, create `<name>-next`, start (stop-first or start-first), verify, swap names, retire the old; and recovery after a cut.
//!
//! Start-first (the default): the new container starts as `<name>-next` beside the
//! running `<name>`; only when it runs (and still runs after a short settle, and is
//! healthy when it has a healthcheck) are the names swapped (`<name>` becomes
//! `<name>-previous`, `-next` becomes `<name>`), then the old one is stopped in the
//! background (its grace period on nobody's path) or kept running (blue-green).
//!
//! Stop-first: a container that binds fixed host ports cannot run beside its
//! predecessor (the port is taken), so the running `<name>` is stopped first (its
//! grace period is then on the deploy's path: that is the downtime of the change),
//! and started again if the new one does not come up. The caller may also ask for it.
//!
//! The instant revert: when `<name>-previous` carries the wanted digest and the same
//! definition (it served it before), it is started again instead of a new container:
//! no pull, no create. A rollback is usually this.
//!
//! `DockerHost::deploy`, step by step:
//!
//! 1. `inspect` `<name>`: a container whose `stella.target` label names another target
//!    is refused and never touched (one without the label is used). The wanted digest
//!    *and* `stella.config` (the sha256 of the definition) running: success without
//!    change (`changed: false`).
//! 2. The instant revert, as above (a kept container still running outside blue-green
//!    is killed first, so a pending background stop cannot undo the start); if it does
//!    not stay up it is removed and the sequence goes on.
//! 3. Pull unless the image is present; named volumes and networks created unless
//!    `external` (a missing external one is an error); create `<name>-next`.
//! 4. Start it, start-first or stop-first. Stop-first when the definition publishes a
//!    fixed host port, asks for it (`deploy.update_config.order: stop-first`), shares a
//!    writable named volume or bind mount (as Compose recreates; `order: start-first`
//!    allows it), or the agent target asks; never under blue-green
//!    (`keep_previous_running`). Any failure removes `-next` and leaves, or puts back,
//!    the old container serving.
//! 5. `inspect` again: the new digest must run; its published ports are the result.
//!
//! `DockerHost::recover`, after a cancel, a timeout or a crash cut a deploy: removes
//! `<name>-next` (looked at again briefly: a create the cut dropped may still finish),
//! renames `-previous` back and starts it when `<name>` is missing (cut between the two
//! renames), and starts a `<name>` that stop-first left stopped.
//!
//! The sequence is tested through its users: the agent's and the SSH executor's tests
//! against the real Docker Engine, the WinRM executor's against its fake.

use std::collections::BTreeMap;
use std::time::Duration;

use deploy_core::{ContainerSpec, Digest, Mount, Name, PublishedPort};

use crate::api::{Container, DockerApi, DockerError, Health, PullAuth, StepLog};
use crate::identity::config_digest;
use deploy_core::naming::{labels, next_name, previous_name};

/// Longest recovery of a docker_host deploy an executor's cancel or timeout cut (see
/// [`DockerHost::recover_cut`]).
pub const RECOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Timings of the sequence.
#[derive(Debug, Clone, Copy)]
pub struct SequenceConfig {
    /// How long a new container must keep running before it is swapped in.
    pub settle: Duration,
    /// The settle of the instant revert: the kept `-previous` served before.
    pub settle_known: Duration,
    /// How often a container with a healthcheck is looked at while it starts.
    pub health_poll: Duration,
}

impl Default for SequenceConfig {
    fn default() -> Self {
        Self {
            settle: Duration::from_millis(300),
            settle_known: Duration::from_millis(100),
            health_poll: Duration::from_millis(200),
        }
    }
}

/// What one docker_host deploy is asked to do.
#[derive(Debug, Clone)]
pub struct DeploySpec<'a> {
    /// The target it runs for (written as `stella.target`; other targets' containers
    /// of the same name on this host are never touched).
    pub target: &'a Name,
    /// The task that starts it (written as `stella.task`).
    pub task: &'a str,
    /// The container name.
    pub name: &'a Name,
    pub spec: &'a ContainerSpec,
    /// Leave the old container running as `<name>-previous` (blue-green).
    pub keep_previous_running: bool,
    /// Stop the running container before the new one starts, whatever the definition
    /// says (the target asks for it).
    pub stop_first: bool,
    pub auth: Option<&'a PullAuth>,
}

impl DeploySpec<'_> {
    /// Why the running container stops before the new one starts (`None`: start-first).
    /// Blue-green keeps both running by design (the job refuses fixed host ports and an
    /// explicit stop-first for it); otherwise the definition's rule
    /// ([`ContainerSpec::stop_first`]), or the target's request.
    pub fn stop_first_reason(&self) -> Option<&'static str> {
        if self.keep_previous_running {
            return None;
        }
        self.spec.stop_first().or(self
            .stop_first
            .then_some("the target asks for it (stop_first)"))
    }

    /// True when the running container stops before the new one starts.
    pub fn stops_first(&self) -> bool {
        self.stop_first_reason().is_some()
    }
}

/// What runs under a container name: its image digest and definition identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    pub digest: Digest,
    /// `stella.config`; `None` on a container started before definitions were recorded.
    pub config: Option<String>,
}

/// A successful deploy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployed {
    pub digest: Digest,
    /// What ran before (running containers only).
    pub previous: Option<Digest>,
    /// False when the definition already ran and nothing was done.
    pub changed: bool,
    /// Where the new container's ports are published.
    pub published: Vec<PublishedPort>,
}

/// A failed deploy and what ran before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub error: DockerError,
    pub previous: Option<Digest>,
}

fn digest_of(c: &Container) -> Option<Digest> {
    c.labels
        .get(labels::DIGEST)
        .and_then(|d| Digest::parse(d).ok())
}

/// What a running container runs (`None` when it is not running or carries no digest).
pub fn running_of(c: &Container) -> Option<Running> {
    if !c.running {
        return None;
    }
    Some(Running {
        digest: digest_of(c)?,
        config: c.labels.get(labels::CONFIG).cloned(),
    })
}

/// The docker_host sequence over one `DockerApi`.
pub struct DockerHost<'a> {
    pub api: &'a dyn DockerApi,
    pub config: SequenceConfig,
}

impl DockerHost<'_> {
    /// Container `name`, refused when its `stella.target` label names another target:
    /// container names are per host, and another target's container must never be
    /// swapped, reverted or removed. A container without the label is accepted.
    pub async fn inspect_owned(
        &self,
        name: &str,
        target: &Name,
    ) -> Result<Option<Container>, DockerError> {
        let c = self.api.inspect(name).await?;
        if let Some(owner) = c.as_ref().and_then(|c| c.labels.get(labels::TARGET))
            && owner != target.as_str()
        {
            return Err(DockerError::invalid(format!(
                "use container {name} for target `{target}`: it belongs to target `{owner}` on this host; give one of the two targets a `deploy.container-prefix` label"
            )));
        }
        Ok(c)
    }

    /// What runs under `name` for `target`.
    pub async fn running(
        &self,
        name: &Name,
        target: &Name,
    ) -> Result<Option<Running>, DockerError> {
        Ok(self
            .inspect_owned(name.as_str(), target)
            .await?
            .as_ref()
            .and_then(running_of))
    }

    /// Waits until `name` runs steadily for `settle`, and is healthy when it has a
    /// healthcheck (however long that takes: the caller's timeout bounds it). The error
    /// says what was seen.
    async fn verify_started(&self, name: &str, settle: Duration) -> Result<(), String> {
        let look = || async {
            match self.api.inspect(name).await.map_err(|e| e.message)? {
                Some(c) if c.steady() => Ok(c),
                Some(c) => Err(format!("{name} is not running ({})", c.describe_state())),
                None => Err(format!("{name} disappeared")),
            }
        };
        look().await?;
        tokio::time::sleep(settle).await;
        let mut c = look().await?;
        loop {
            match c.health {
                None | Some(Health::Healthy) => return Ok(()),
                Some(Health::Unhealthy) => {
                    return Err(format!("{name} is unhealthy (its healthcheck)"));
                }
                Some(Health::Starting) => {
                    tokio::time::sleep(self.config.health_poll).await;
                    c = look().await?;
                }
            }
        }
    }

    /// Named volumes and networks the spec uses exist (created unless external).
    async fn prepare_storage(&self, spec: &ContainerSpec) -> Result<(), DockerError> {
        for m in &spec.mounts {
            if let Mount::Volume {
                name,
                driver,
                driver_opts,
                external,
                ..
            } = m
            {
                self.api
                    .ensure_volume(name, driver.as_deref(), driver_opts, *external)
                    .await?;
            }
        }
        for n in &spec.networks {
            self.api.ensure_network(n).await?;
        }
        Ok(())
    }

    /// The labels the sequence adds to the spec's own.
    fn our_labels(d: &DeploySpec<'_>, config: &str) -> BTreeMap<String, String> {
        [
            (labels::COMPONENT, d.name.as_str()),
            (labels::DIGEST, d.spec.image.digest().as_str()),
            (labels::TARGET, d.target.as_str()),
            (labels::TASK, d.task),
            (labels::CONFIG, config),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Stop-first: stops `<name>` before the new container starts; returns whether it ran.
    async fn stop_current(
        &self,
        d: &DeploySpec<'_>,
        current: Option<&Container>,
        log: &dyn StepLog,
    ) -> Result<bool, DockerError> {
        if !current.is_some_and(|c| c.running) {
            return Ok(false);
        }
        let why = d.stop_first_reason().unwrap_or("stop-first was asked for");
        log.step(&format!(
            "stopping {} before the new container starts ({why})",
            d.name
        ));
        self.api
            .stop(d.name.as_str(), Duration::from_secs(d.spec.stop_grace_secs))
            .await?;
        Ok(true)
    }

    /// After a failed start under stop-first: the old container serves again.
    async fn restart_current(&self, name: &Name, log: &dyn StepLog) {
        log.step(&format!("starting {name} again"));
        if let Err(e) = self.api.start(name.as_str()).await {
            log.step(&format!("could not start {name} again: {e}"));
        }
    }

    async fn log_tail(&self, name: &str, log: &dyn StepLog) {
        if let Ok(tail) = self.api.logs_tail(name, 20).await {
            for line in tail.lines() {
                log.output(line);
            }
        }
    }

    /// The swap once `<name>-next` runs: `<name>` -> `<name>-previous`, `-next` ->
    /// `<name>`, then the old one is stopped in the background (unless it is stopped
    /// already, or kept running). On a failed rename the old container is put back.
    async fn swap(
        &self,
        d: &DeploySpec<'_>,
        restart_old_on_failure: bool,
    ) -> Result<(), DockerError> {
        let name = d.name.as_str();
        let (next, prev) = (next_name(d.name), previous_name(d.name));
        // Until `<name>` moved aside, a failure leaves it serving (started again under
        // stop-first) and `-next` removed.
        let undo = || async {
            let _ = self.api.remove(&next).await;
            if restart_old_on_failure {
                let _ = self.api.start(name).await;
            }
        };
        let had_current = match self.api.inspect(name).await {
            Ok(found) => found.is_some(),
            Err(e) => {
                undo().await;
                return Err(e);
            }
        };
        if had_current {
            let moved = match self.api.remove(&prev).await {
                Ok(()) => self.api.rename(name, &prev).await,
                Err(e) => Err(e),
            };
            if let Err(e) = moved {
                undo().await;
                return Err(e);
            }
        }
        if let Err(e) = self.api.rename(&next, name).await {
            if had_current {
                let _ = self.api.rename(&prev, name).await;
                let _ = self.api.start(name).await;
            }
            let _ = self.api.remove(&next).await;
            return Err(e);
        }
        if had_current
            && !d.keep_previous_running
            && let Some(old) = self.api.inspect(&prev).await?
            && old.running
        {
            self.api
                .stop_in_background(&old.id, Duration::from_secs(d.spec.stop_grace_secs))
                .await;
        }
        Ok(())
    }

    /// The instant revert: `<name>-previous` runs the wanted definition (same digest,
    /// same `stella.config`), so it is started again as `-next` and swapped in.
    /// `Ok(false)`: not possible, a new container is needed (the previous is left as
    /// it was, or removed when it could not run).
    async fn try_revert(
        &self,
        d: &DeploySpec<'_>,
        config: &str,
        current: Option<&Container>,
        log: &dyn StepLog,
    ) -> Result<bool, DockerError> {
        let (prev, next) = (previous_name(d.name), next_name(d.name));
        let Some(kept) = self.inspect_owned(&prev, d.target).await? else {
            return Ok(false);
        };
        let same = digest_of(&kept).as_ref() == Some(d.spec.image.digest())
            && kept.labels.get(labels::CONFIG).map(String::as_str) == Some(config);
        if !same {
            return Ok(false);
        }
        self.api.remove(&next).await?;
        if self.api.rename(&prev, &next).await.is_err() {
            return Ok(false);
        }
        // A kept container that still runs outside blue-green is being stopped in the
        // background (possibly by a process that has since gone away): that stop would
        // undo the start below, so it is ended now with a kill (it was stopping anyway).
        // Blue-green keeps blue running on purpose and swaps it in as it is.
        if kept.running && !d.keep_previous_running {
            self.api.kill(&next).await?;
        }
        let stopped = if d.stops_first() {
            self.stop_current(d, current, log).await?
        } else {
            false
        };
        let started = match self.api.start(&next).await {
            Ok(()) => self.verify_started(&next, self.config.settle_known).await,
            Err(e) => Err(e.message),
        };
        if let Err(why) = started {
            log.step(&format!(
                "{prev} could not be started again, starting a new container: {why}"
            ));
            self.log_tail(&next, log).await;
            // The old container serves again even when the removal failed (the new
            // container's path below removes `-next` again, and reports that error).
            let removed = self.api.remove(&next).await;
            if stopped {
                self.restart_current(d.name, log).await;
            }
            removed?;
            return Ok(false);
        }
        self.swap(d, stopped).await?;
        Ok(true)
    }

    /// Deploys `d`: no-op when its definition runs, else the instant revert, else pull +
    /// create + start + swap. The old container serves again on any failure.
    pub async fn deploy(&self, d: &DeploySpec<'_>, log: &dyn StepLog) -> Result<Deployed, Failed> {
        let wanted = d.spec.image.digest().clone();
        let config = config_digest(d.spec);
        let current = self
            .inspect_owned(d.name.as_str(), d.target)
            .await
            .map_err(|error| Failed {
                error,
                previous: None,
            })?;
        let before = current.as_ref().and_then(running_of);
        let previous = before.as_ref().map(|r| r.digest.clone());
        let fail = |error: DockerError| Failed {
            error,
            previous: previous.clone(),
        };
        if before
            .as_ref()
            .is_some_and(|r| r.digest == wanted && r.config.as_deref() == Some(config.as_str()))
        {
            log.step(&format!(
                "{} already runs {wanted} with this definition: nothing to do",
                d.name
            ));
            let published = current.map(|c| c.published).unwrap_or_default();
            return Ok(Deployed {
                digest: wanted,
                previous,
                changed: false,
                published,
            });
        }
        if self
            .try_revert(d, &config, current.as_ref(), log)
            .await
            .map_err(fail)?
        {
            log.step(&format!(
                "{} was on {wanted} with this definition: started again and swapped in (no new container)",
                previous_name(d.name)
            ));
        } else {
            self.start_new(d, &config, current.as_ref(), log)
                .await
                .map_err(fail)?;
        }
        let after = self
            .inspect_owned(d.name.as_str(), d.target)
            .await
            .map_err(fail)?;
        match after.as_ref().and_then(running_of) {
            Some(r) if r.digest == wanted => {}
            found => {
                return Err(fail(DockerError::not_running(format!(
                    "after the swap {} runs {}, expected {wanted}",
                    d.name,
                    found.map_or_else(|| "nothing".to_owned(), |r| r.digest.to_string())
                ))));
            }
        }
        if previous.is_none() {
            log.step(&format!("{} runs {wanted} (no previous container)", d.name));
        } else {
            let kept = if d.keep_previous_running {
                "still running"
            } else if d.stops_first() {
                "stopped"
            } else {
                "stopping in the background"
            };
            log.step(&format!(
                "{} runs {wanted}; previous kept as {} ({kept})",
                d.name,
                previous_name(d.name)
            ));
        }
        Ok(Deployed {
            digest: wanted,
            previous,
            changed: true,
            published: after.map(|c| c.published).unwrap_or_default(),
        })
    }

    /// Pull when missing, volumes and networks, create `-next`, (stop-first: stop the
    /// running one), start, verify, swap.
    async fn start_new(
        &self,
        d: &DeploySpec<'_>,
        config: &str,
        current: Option<&Container>,
        log: &dyn StepLog,
    ) -> Result<(), DockerError> {
        let image = &d.spec.image;
        if self.api.image_present(image).await? {
            log.step(&format!("{image} is present: no pull"));
        } else {
            log.step(&format!("pulling {image}"));
            self.api.pull(image, d.auth, log).await?;
        }
        self.prepare_storage(d.spec).await?;
        let next = next_name(d.name);
        self.api.remove(&next).await?;
        self.api
            .create(&next, d.spec, &Self::our_labels(d, config))
            .await?;
        let stopped = if d.stops_first() {
            match self.stop_current(d, current, log).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = self.api.remove(&next).await;
                    return Err(e);
                }
            }
        } else {
            false
        };
        log.step(&format!(
            "starting {next}, then swapping it in for {}",
            d.name
        ));
        let started = match self.api.start(&next).await {
            Ok(()) => self
                .verify_started(&next, self.config.settle)
                .await
                .map_err(DockerError::not_running),
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            log.step(&format!("the new container did not start: {}", e.message));
            self.log_tail(&next, log).await;
            let _ = self.api.remove(&next).await;
            if stopped {
                self.restart_current(d.name, log).await;
            }
            return Err(e);
        }
        self.swap(d, stopped).await
    }

    /// [`DockerHost::recover`] after deploy `d` was cut by a cancel or a timeout, within
    /// [`RECOVER_TIMEOUT`]: the cut call's own token and deadline are spent, so its
    /// recovery gets a bound of its own; past it, a line says it gave up (`None`) and the
    /// caller reports the deploy's own error.
    pub async fn recover_cut(&self, d: &DeploySpec<'_>, log: &dyn StepLog) -> Option<Vec<String>> {
        let recover = self.recover(d.name, d.target, log);
        let recovered = tokio::time::timeout(RECOVER_TIMEOUT, recover).await;
        if recovered.is_err() {
            log.step(&format!(
                "recovery of {} gave up after {} s",
                d.name,
                RECOVER_TIMEOUT.as_secs()
            ));
        }
        recovered.ok()
    }

    /// After a deploy was cancelled, timed out or cut halfway: removes `<name>-next`
    /// and, when `<name>` is missing (cut between the two renames), puts `-previous`
    /// back as `<name>` and starts it; a `<name>` stopped by stop-first is started
    /// again. Containers of another target are left alone. Returns what it did.
    pub async fn recover(&self, name: &Name, target: &Name, log: &dyn StepLog) -> Vec<String> {
        let mut done = Vec::new();
        let mut note = |text: String| {
            log.step(&format!("recovery: {text}"));
            done.push(text);
        };
        let next = next_name(name);
        match self.inspect_owned(&next, target).await {
            Ok(found) => {
                // Removed even when not seen: a create the cut dropped may still be
                // finishing in the engine; looked at again briefly for the same reason.
                for _ in 0..3 {
                    if let Err(e) = self.api.remove(&next).await {
                        note(e.message);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if !matches!(self.api.inspect(&next).await, Ok(Some(_))) {
                        break;
                    }
                }
                if found.is_some() {
                    note(format!("removed {next}"));
                }
            }
            Err(e) => note(e.message),
        }
        match self.inspect_owned(name.as_str(), target).await {
            Ok(None) => {
                let prev = previous_name(name);
                match self.inspect_owned(&prev, target).await {
                    Ok(Some(_)) => match self.api.rename(&prev, name.as_str()).await {
                        Err(e) => note(format!("could not rename {prev} to {name}: {e}")),
                        Ok(()) => {
                            let _ = self.api.start(name.as_str()).await;
                            note(format!("{prev} became {name} again and was started"));
                        }
                    },
                    Ok(None) => {}
                    Err(e) => note(e.message),
                }
            }
            Ok(Some(c)) if !c.running => {
                let _ = self.api.start(name.as_str()).await;
                note(format!("started {name} again (stopped before the cut)"));
            }
            Ok(Some(_)) => {}
            Err(e) => note(e.message),
        }
        done
    }

    /// Where container `port` of `<name>` and of a running `<name>-previous` is published.
    pub async fn published(
        &self,
        name: &Name,
        port: u16,
    ) -> Result<(Option<PublishedPort>, Option<PublishedPort>), DockerError> {
        let find = |c: Option<Container>| {
            c.filter(|c| c.running)
                .and_then(|c| c.published.into_iter().find(|b| b.container_port == port))
        };
        let current = find(self.api.inspect(name.as_str()).await?);
        let previous = find(self.api.inspect(&previous_name(name)).await?);
        Ok((current, previous))
    }

    /// Stops `<name>-previous` if it runs (blue retired after a blue-green job); it is
    /// kept, stopped, for an instant revert.
    pub async fn retire_previous(&self, name: &Name, grace: Duration) -> Result<(), DockerError> {
        let prev = previous_name(name);
        if self.api.inspect(&prev).await?.is_some_and(|c| c.running) {
            self.api.stop(&prev, grace).await?;
        }
        Ok(())
    }
}
