//! `KeyedLocks`: one async mutex per target and component, so deploys, rollbacks and inspects of one slot never interleave.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// Async mutexes by key, created on first use.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for the lock of `key`.
    pub async fn lock(&self, key: &str) -> OwnedMutexGuard<()> {
        let m = {
            let mut map = self
                .map
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Drop entries nobody holds or waits for, so the map does not grow without bound.
            map.retain(|_, m| Arc::strong_count(m) > 1);
            map.entry(key.to_owned()).or_default().clone()
        };
        m.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn same_key_waits_other_key_does_not() {
        let locks = Arc::new(KeyedLocks::default());
        let a = locks.lock("t/web").await;
        let other = tokio::time::timeout(Duration::from_millis(50), locks.lock("t/api")).await;
        assert!(other.is_ok());
        let same = tokio::time::timeout(Duration::from_millis(50), locks.lock("t/web")).await;
        assert!(same.is_err());
        drop(a);
        let same = tokio::time::timeout(Duration::from_millis(50), locks.lock("t/web")).await;
        assert!(same.is_ok());
    }
}
