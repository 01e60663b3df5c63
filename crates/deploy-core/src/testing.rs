//! Deterministic fixtures (ids, timestamps, releases, targets, jobs) for tests of this crate and of crates that embed it.
//!
//! Compiled for this crate's tests and, for other crates, behind the `testing`
//! feature. Every value is derived from small integers, so tests read plainly
//! and never depend on the clock or a random source.

#![expect(
    clippy::expect_used,
    reason = "fixtures are built from constants that are valid by construction"
)]

use std::num::NonZeroU32;

use crate::*;

/// The instant `n` milliseconds after 2026-01-01T00:00:00Z.
pub fn ts(n: u64) -> Timestamp {
    Timestamp::from_unix_millis(1_767_225_600_000 + n).expect("in range")
}

fn random(n: u64) -> [u8; 10] {
    let mut r = [0u8; 10];
    r[2..].copy_from_slice(&n.to_be_bytes());
    r
}

macro_rules! fixture_id {
    ($fn_name:ident, $ty:ty) => {
        #[doc = concat!("The `", stringify!($ty), "` numbered `n`.")]
        pub fn $fn_name(n: u64) -> $ty {
            <$ty>::from_parts(ts(0), random(n))
        }
    };
}

fixture_id!(job_id, JobId);
fixture_id!(task_id, TaskId);
fixture_id!(promotion_id, PromotionId);
fixture_id!(release_id, ReleaseId);
fixture_id!(environment_id, EnvironmentId);
fixture_id!(target_id, TargetId);
fixture_id!(component_id, ComponentId);
fixture_id!(agent_id, AgentId);
fixture_id!(artifact_id, ArtifactId);

/// A valid digest derived from `n`.
pub fn digest(n: u64) -> Digest {
    let mut bytes = [0u8; 32];
    bytes[24..].copy_from_slice(&n.to_be_bytes());
    Digest::from_sha256(bytes)
}

/// A name, which must be valid.
pub fn name(s: &str) -> Name {
    Name::parse(s).expect("fixture names are valid")
}

/// Release `r1` with one component per name, images in `127.0.0.1:5000/<name>`.
pub fn release(components: &[&str]) -> Release {
    let components = components
        .iter()
        .zip(1..)
        .map(|(c, i)| Component {
            id: component_id(i),
            name: name(c),
            image: ImageRef::from_parts(&format!("127.0.0.1:5000/{c}"), &digest(i))
                .expect("valid image"),
        })
        .collect();
    Release::new(release_id(1), name("r1"), components, ts(0)).expect("valid release")
}

/// One sample connection per execution model.
pub fn sample_connections() -> Vec<(ExecutionModel, Connection)> {
    let cred = || CredentialRef::parse("env:SECRET").expect("valid");
    let url = |u: &str| HttpUrl::parse(u).expect("valid");
    let res = |r: &str| ResourceName::parse(r).expect("valid");
    vec![
        (
            ExecutionModel::Agent,
            Connection::Agent(AgentConnection {
                agent_id: None,
                selector: Labels::default(),
                work_dir: Some(UnixPath::parse("/srv/deploy").expect("valid")),
                stop_first: false,
                registry_auth: None,
            }),
        ),
        (ExecutionModel::Ssh, ssh_connection(1)),
        (
            ExecutionModel::Winrm,
            Connection::Winrm(WinrmConnection {
                endpoint: url("https://win:5986/wsman"),
                auth: WinrmAuth::Ntlm,
                credential_ref: cred(),
                ca_ref: None,
                allow_insecure_http: false,
            }),
        ),
        (
            ExecutionModel::Api,
            Connection::Api(ApiConnection::Kubernetes {
                api_server: Some(url("https://k8s:6443")),
                namespace: res("prod"),
                deployment: res("web"),
                container: res("web"),
                credential_ref: Some(cred()),
                ca_ref: None,
                auth: crate::KubeAuth::Token,
            }),
        ),
    ]
}

/// An SSH connection to `127.0.0.<n>`.
pub fn ssh_connection(n: u8) -> Connection {
    Connection::Ssh(SshConnection {
        host: Host::parse(&format!("127.0.0.{n}")).expect("valid"),
        port: 22,
        user: Username::parse("deploy").expect("valid"),
        credential_ref: CredentialRef::parse("env:SSH_KEY").expect("valid"),
        work_dir: Some(UnixPath::parse("/srv/deploy").expect("valid")),
        host_key: HostKeyPolicy::KnownHosts,
    })
}

/// Docker host `host-<n>` reached over SSH at `127.0.0.<n>`.
pub fn ssh_target(n: u8) -> Target {
    Target {
        id: target_id(u64::from(n)),
        environment_id: environment_id(1),
        name: name(&format!("host-{n}")),
        target_type: TargetType::DockerHost,
        connection: ssh_connection(n),
        health_endpoint: None,
        health_check: None,
        labels: Labels::default(),
        disabled: false,
        version: 0,
        created_at: ts(0),
    }
}

/// A requested promotion of release 1 to environment 1.
pub fn promotion(n: u64) -> Promotion {
    Promotion {
        id: promotion_id(n),
        release_id: release_id(1),
        environment_id: environment_id(1),
        status: PromotionStatus::Requested,
        requested_by: "tester".to_owned(),
        requested_by_token: None,
        decided_by: None,
        requested_at: ts(0),
        decided_at: None,
        approvals: Vec::new(),
        rejection_reason: None,
        version: 0,
    }
}

/// Promotion `n` of `release` to environment 1, approved by `tester`.
pub fn approved_promotion(n: u64, release: ReleaseId) -> Promotion {
    let mut p = promotion(n);
    p.release_id = release;
    p.decide(PromotionDecision::Approve, "tester", ts(n))
        .expect("a requested promotion can be approved");
    p
}

/// Environment 1, called `env`, without hooks.
pub fn environment(env: &str) -> Environment {
    Environment {
        id: environment_id(1),
        name: name(env),
        hooks: Hooks::default(),
        variables: Default::default(),
        approval: None,
        requires: Vec::new(),
        runtime_policy: Default::default(),
        version: 0,
        created_at: ts(0),
    }
}

/// A pending task of job 1 on target `n` with the given attempt budget.
pub fn task(n: u64, max_attempts: u32) -> DeploymentTask {
    DeploymentTask::pending(
        NewTask {
            id: task_id(n),
            job_id: job_id(1),
            target_id: target_id(n),
            component_id: Some(component_id(1)),
            digest: digest(1),
            max_attempts,
            wave: 0,
        },
        ts(0),
    )
}

/// A pending all-at-once job `n` with one task per target `1..=targets`.
pub fn job(n: u64, targets: u64) -> DeploymentJob {
    DeploymentJob {
        id: job_id(n),
        promotion_id: promotion_id(n),
        release_id: release_id(1),
        environment_id: environment_id(1),
        strategy: Strategy::AllAtOnce,
        parallelism: NonZeroU32::new(10).expect("non-zero"),
        failure_policy: FailurePolicy::default(),
        status: JobStatus::Pending,
        started_at: None,
        completed_at: None,
        artifacts: Vec::new(),
        rollback_of: None,
        previous_job_id: None,
        queued_behind: None,
        winding_down: false,
        tasks: (1..=targets)
            .map(|t| task(t, DEFAULT_MAX_ATTEMPTS))
            .collect(),
        idempotency_key: IdempotencyKey::parse(&format!("job-{n}")).expect("valid"),
        failure_reason: None,
        version: 0,
        created_at: ts(0),
        updated_at: ts(0),
    }
}
