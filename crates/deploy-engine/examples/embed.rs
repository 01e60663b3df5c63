//! Embedding the engine in another Rust service: SQLite store, SSH executor, one promotion deployed to one Docker host.
//!
//! Run: `cargo run -p deploy-engine --example embed -- <db-path> <ssh-host> <ssh-port> <user> <image@sha256:...>`
//! with the private key in `$DEPLOY_SSH_KEY` and the host's key in `~/.ssh/known_hosts`.
//! Every value is validated by deploy-core types; a bad one stops the example with its error.

use std::error::Error;
use std::sync::Arc;

use deploy_core::{
    Component, ComponentId, Connection, CredentialRef, Environment, EnvironmentId, ExecutionModel,
    Host, HostKeyPolicy, IdempotencyKey, ImageRef, Labels, Name, Promotion, PromotionDecision,
    PromotionId, PromotionStatus, Release, ReleaseId, SshConnection, Target, TargetId, TargetType,
    Username,
};
use deploy_engine::{Clock, Engine, EngineConfig, JobRequest, SystemClock, random_bytes};
use deploy_exec::DefaultSecrets;
use deploy_exec::ExecutorRegistry;
use deploy_exec::ssh::{SshExecutor, SshExecutorConfig};
use deploy_exec::winrm::{WinrmClientConfig, WinrmExecutor};
use deploy_store::{SqliteConfig, SqliteStore, Store};

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [db, host, port, user, image] = args.as_slice() else {
        return Err(
            "usage: embed <db-path> <ssh-host> <ssh-port> <user> <image@sha256:...>".into(),
        );
    };
    let clock = SystemClock;
    let now = clock.now();

    // 1. The store: an embedded SQLite file, migrated on open.
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&SqliteConfig::new(db)).await?);

    // 2. Executors by execution model: SSH with strict host key checking, and WinRM for
    //    Windows targets (their credential_ref resolves to `user:password`).
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".to_owned());
    let ssh = SshExecutor::new(
        SshExecutorConfig::new(format!("{home}/.ssh/known_hosts")),
        Arc::new(DefaultSecrets),
    );
    let mut executors = ExecutorRegistry::new();
    executors.register(ExecutionModel::Ssh, Arc::new(ssh));
    let winrm = WinrmExecutor::new(WinrmClientConfig::default(), Arc::new(DefaultSecrets));
    executors.register(ExecutionModel::Winrm, Arc::new(winrm));

    // 3. The engine.
    let engine = Engine::new(
        store.clone(),
        executors,
        EngineConfig::new("embed-example"),
        Arc::new(clock),
    )?;

    // 4. What to deploy where (a real service would read these from its own API).
    let environment = Environment {
        id: EnvironmentId::from_parts(now, random_bytes()),
        name: Name::parse("demo")?,
        hooks: Default::default(),
        variables: Default::default(),
        approval: None,
        requires: Vec::new(),
        runtime_policy: Default::default(),
        version: 0,
        created_at: now,
    };
    store.put_environment(&environment).await?;
    let target = Target {
        id: TargetId::from_parts(now, random_bytes()),
        environment_id: environment.id,
        name: Name::parse("host-1")?,
        target_type: TargetType::DockerHost,
        connection: Connection::Ssh(SshConnection {
            host: Host::parse(host)?,
            port: port.parse()?,
            user: Username::parse(user)?,
            credential_ref: CredentialRef::parse("env:DEPLOY_SSH_KEY")?,
            // The default: ~/.local/share/deploy/host-1, created 0700 on first deploy.
            work_dir: None,
            host_key: HostKeyPolicy::KnownHosts,
        }),
        health_endpoint: None,
        health_check: None,
        labels: Labels::default(),
        disabled: false,
        version: 0,
        created_at: now,
    };
    target.validate()?;
    store.put_target(&target).await?;
    let release = Release::new(
        ReleaseId::from_parts(now, random_bytes()),
        Name::parse("example")?,
        vec![Component {
            id: ComponentId::from_parts(now, random_bytes()),
            name: Name::parse("web")?,
            image: ImageRef::parse(image)?,
        }],
        now,
    )?;
    store.put_release(&release).await?;
    let mut promotion = Promotion {
        id: PromotionId::from_parts(now, random_bytes()),
        release_id: release.id,
        environment_id: environment.id,
        status: PromotionStatus::Requested,
        requested_by: "example".to_owned(),
        requested_by_token: None,
        decided_by: None,
        requested_at: now,
        decided_at: None,
        approvals: Vec::new(),
        rejection_reason: None,
        version: 0,
    };
    promotion.decide(PromotionDecision::Approve, "example", now)?;
    store.put_promotion(&promotion).await?;

    // 5. Create the job (idempotent by key) and run it, printing transitions as they happen.
    let job = engine
        .create_job(&JobRequest::new(
            promotion.id,
            IdempotencyKey::parse(&format!("example-{}", promotion.id))?,
        ))
        .await?
        .value;
    let mut events = engine.subscribe();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            eprintln!("{} {} -> {} ({})", e.at, e.event, e.status, e.cause);
        }
    });
    let done = engine.run_to_settled(job.id).await?;
    eprintln!("job {} ended {}", done.id, done.status);
    Ok(())
}
