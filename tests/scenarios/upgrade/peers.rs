//! The upgrade fixture's peers at the fixed loopback addresses its database names (an sshd on `127.77.0.1:2277`, a registry on `127.77.0.1:5777` serving the fixture's image blobs), held under a machine-wide lock.
//!
//! The fixture's targets and digest-pinned image references were stored with these
//! addresses by the old build, so the peers cannot move to free ports like the rest of
//! the suite's. Fixed ports bring three hazards, each handled here: two runs at once
//! (the upgrade tests of this binary, another checkout's, `make-fixture.sh`) would share
//! the peers and remove each other's containers and images: an exclusive lock on
//! [`LOCK_FILE`] is held from before the peers start until after they and their images
//! are gone; a leftover peer (of a run that was SIGKILLed, so its drops never ran) would
//! answer in place of ours: the testkit refuses a port it cannot bind, and a peer that
//! exits after something else answered. Keys are generated per run: the stored targets
//! name their client key as an environment variable and check the host key against
//! deployd's `--known-hosts` file.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::{Duration, Instant};

use deploy_testkit::{Registry, SshdHosts};

/// The address the fixture's peers listen on (nothing else in the suite uses it).
pub(crate) const PEER_IP: &str = "127.77.0.1";
/// The fixture target's SSH port.
pub(crate) const SSH_PORT: u16 = 2277;
/// The fixture registry's port (the image references name `127.77.0.1:5777`).
pub(crate) const REGISTRY_PORT: u16 = 5777;
/// Held (flock, exclusive) by whoever uses the fixed addresses: these tests and
/// `tests/fixtures/upgrade/make-fixture.sh`.
pub(crate) const LOCK_FILE: &str = "/tmp/deploy-tests-upgrade-peers.lock";
/// Bound on the wait for another holder of the lock (one upgrade test takes ~10 s).
const LOCK_BOUND: Duration = Duration::from_secs(300);
/// Who to suspect when a fixed port is taken.
const SUSPECTS: &str = "a leftover of an upgrade test run that was killed (its sshd or \
                        docker-registry outlives it), or tests/fixtures/upgrade/make-fixture.sh";

/// The sshd and the registry (dropped in this order: the registry's drop removes the
/// images pulled from it), then the lock.
pub(crate) struct Peers {
    _registry: Registry,
    pub(crate) sshd: SshdHosts,
    _lock: File,
}

impl Peers {
    /// Takes the lock (waiting for another holder, bounded), then starts sshd (fresh
    /// keys) and a registry whose storage is a copy of `registry_storage`, and waits
    /// (bounded) until both serve.
    pub(crate) fn start(registry_storage: &Path) -> Self {
        let lock = lock();
        let sshd = SshdHosts::start_at(PEER_IP, SSH_PORT)
            .unwrap_or_else(|e| panic!("the fixture's sshd: {e}\nsuspect {SUSPECTS}"));
        let registry = Registry::start_at(PEER_IP, REGISTRY_PORT, registry_storage)
            .unwrap_or_else(|e| panic!("the fixture's registry: {e}\nsuspect {SUSPECTS}"));
        Self {
            _registry: registry,
            sshd,
            _lock: lock,
        }
    }

    /// The authorised client private key (OpenSSH format).
    pub(crate) fn client_key(&self) -> String {
        std::fs::read_to_string(self.sshd.client_key()).unwrap()
    }
}

/// The exclusive lock on [`LOCK_FILE`], polled: a blocking wait would hang the test
/// without a word if the holder never let go.
fn lock() -> File {
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(LOCK_FILE)
        .unwrap_or_else(|e| panic!("open {LOCK_FILE}: {e}"));
    let started = Instant::now();
    loop {
        match file.try_lock() {
            Ok(()) => return file,
            Err(TryLockError::WouldBlock) => assert!(
                started.elapsed() < LOCK_BOUND,
                "{LOCK_FILE} stayed locked for {LOCK_BOUND:?}: another process uses the \
                 upgrade fixture's addresses ({PEER_IP}:{SSH_PORT}, {PEER_IP}:{REGISTRY_PORT}); \
                 `lslocks` names it"
            ),
            Err(TryLockError::Error(e)) => panic!("lock {LOCK_FILE}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
