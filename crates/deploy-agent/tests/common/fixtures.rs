//! Targets and probes the runtime's integration tests share: an agent-run target, a retried `/version`.

use std::time::Duration;

use deploy_core::testing::{name, ssh_target};
use deploy_core::{AgentConnection, Connection, Labels, Target, TargetType, UnixPath};
use deploy_testkit::http_get;

/// Target 1 of environment 1, `target_type` called `target_name`, run by any agent in `work_dir`.
pub(crate) fn agent_target(target_name: &str, target_type: TargetType, work_dir: &str) -> Target {
    Target {
        name: name(target_name),
        target_type,
        connection: Connection::Agent(AgentConnection {
            agent_id: None,
            selector: Labels::default(),
            work_dir: Some(UnixPath::parse(work_dir).unwrap()),
            stop_first: false,
            registry_auth: None,
        }),
        ..ssh_target(1)
    }
}

/// `/version` as served on `addr` (by `what`), retried while it starts.
pub(crate) fn version_at(addr: &str, what: &str) -> String {
    for _ in 0..50 {
        if let Ok((200, body)) = http_get(addr, "/version") {
            return body.trim().to_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} does not serve /version on {addr}");
}
