//! Short-lived state that is safe to lose: UIA sessions, registration nonces, later presence,
//! typing and WebSocket tickets. The in-process backend is the default; a Redis backend plugs in
//! behind the same trait so that several processes can share it.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::{Error, Result};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A TTL'd key-value store. Keys are namespaced by the caller (`"uiaa:<session>"`).
pub trait EphemeralStore: Send + Sync + 'static {
    fn put(&self, key: String, value: Vec<u8>, ttl: Duration) -> BoxFuture<'_, Result<()>>;
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;
    /// Reads and removes in one step: at most one caller ever gets a given value (single-use
    /// nonces and tickets depend on this).
    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>>;
    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Whether other processes see the same entries (Redis), which makes caching in it worth
    /// a round trip.
    fn is_shared(&self) -> bool {
        false
    }
}

/// The in-process backend: a map with expiry times, swept lazily as it grows.
#[derive(Debug, Default)]
pub struct LocalEphemeral {
    entries: Mutex<HashMap<String, (Instant, Vec<u8>)>>,
}

/// Past this many entries a write first drops the expired ones, which bounds memory without a
/// background task.
const SWEEP_THRESHOLD: usize = 10_000;

impl LocalEphemeral {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, (Instant, Vec<u8>)>) -> T) -> Result<T> {
        let mut map = self.entries.lock().map_err(|_| Error::internal("ephemeral store lock poisoned"))?;
        Ok(f(&mut map))
    }

    fn live(entry: Option<(Instant, Vec<u8>)>) -> Option<Vec<u8>> {
        entry.and_then(|(expires, value)| (expires > Instant::now()).then_some(value))
    }
}

impl EphemeralStore for LocalEphemeral {
    fn put(&self, key: String, value: Vec<u8>, ttl: Duration) -> BoxFuture<'_, Result<()>> {
        let result = self.with(|map| {
            if map.len() >= SWEEP_THRESHOLD {
                let now = Instant::now();
                map.retain(|_, (expires, _)| *expires > now);
            }
            map.insert(key, (Instant::now() + ttl, value));
        });
        Box::pin(async move { result })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        let result = self.with(|map| Self::live(map.get(key).cloned()));
        Box::pin(async move { result })
    }

    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        let result = self.with(|map| Self::live(map.remove(key)));
        Box::pin(async move { result })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        let result = self.with(|map| {
            map.remove(key);
        });
        Box::pin(async move { result })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_expire_and_take_is_single_use() {
        let store = LocalEphemeral::new();
        store.put("a".into(), b"1".to_vec(), Duration::from_secs(60)).await.unwrap();
        store.put("b".into(), b"2".to_vec(), Duration::ZERO).await.unwrap();
        assert_eq!(store.get("a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.get("b").await.unwrap(), None, "expired");
        assert_eq!(store.take("a").await.unwrap(), Some(b"1".to_vec()));
        assert_eq!(store.take("a").await.unwrap(), None, "taken twice");
    }

    #[tokio::test]
    async fn sweeping_bounds_memory() {
        let store = LocalEphemeral::new();
        for i in 0..SWEEP_THRESHOLD + 5 {
            store.put(format!("k{i}"), vec![], Duration::ZERO).await.unwrap();
        }
        let len = store.entries.lock().unwrap().len();
        assert!(len < SWEEP_THRESHOLD, "{len}");
    }
}
