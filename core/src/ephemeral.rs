//! Short-lived state that is safe to lose: UIA sessions, registration nonces, presence, typing,
//! WebSocket tickets and rate-limit buckets. The in-process backend is the default; a Redis backend plugs in
//! behind the same trait so that several processes can share it.

use std::{
    collections::HashMap,
    future::Future,
    pin::Pin,
    sync::Mutex,
    time::{Duration, Instant},
};

pub mod spaces;

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
    /// One action against the rate-limit bucket `key` (see [`Bucket`]): `None` when it is
    /// allowed, else how long until it would be. With `commit` an allowed action is counted;
    /// without, the bucket is only looked at. Atomic, so concurrent callers (in any process
    /// sharing the store) never both take the last token.
    fn take_token<'a>(
        &'a self,
        key: &'a str,
        bucket: Bucket,
        commit: bool,
    ) -> BoxFuture<'a, Result<Option<Duration>>>;
    /// Whether other processes see the same entries (Redis), which makes caching in it worth
    /// a round trip.
    fn is_shared(&self) -> bool {
        false
    }
}

/// A token bucket as the generic cell rate algorithm keeps it: one number per key, the time
/// the next action is "due" (`tat`, ms since the epoch). An action is allowed while `tat` is
/// at most `burst - 1` intervals ahead of now, and moves it one interval on; so `burst`
/// actions may come at once, then one per interval. Nothing is stored per action, and an idle
/// bucket expires once `tat` has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Milliseconds between actions in the long run (at least 1).
    pub interval_ms: u64,
    /// Actions allowed at once (at least 1).
    pub burst: u32,
}

impl Bucket {
    /// How far ahead of now `tat` may be for an action to pass.
    pub fn tolerance_ms(self) -> u64 {
        self.interval_ms.saturating_mul(u64::from(self.burst.max(1) - 1))
    }

    /// The decision for a bucket whose `tat` is `stored` at `now`: the wait (`Err`) or the new
    /// `tat` (`Ok`).
    pub fn decide(self, stored: Option<u64>, now: u64) -> std::result::Result<u64, Duration> {
        let tat = stored.unwrap_or(now).max(now);
        let ahead = tat - now;
        match ahead.checked_sub(self.tolerance_ms()) {
            Some(over) if over > 0 => Err(Duration::from_millis(over)),
            _ => Ok(tat.saturating_add(self.interval_ms.max(1))),
        }
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

    fn take_token<'a>(
        &'a self,
        key: &'a str,
        bucket: Bucket,
        commit: bool,
    ) -> BoxFuture<'a, Result<Option<Duration>>> {
        let result = self.with(|map| {
            if map.len() >= SWEEP_THRESHOLD {
                let now = Instant::now();
                map.retain(|_, (expires, _)| *expires > now);
            }
            let now = crate::util::now_ms();
            let stored = Self::live(map.get(key).cloned())
                .and_then(|bytes| <[u8; 8]>::try_from(bytes.as_slice()).ok())
                .map(u64::from_be_bytes);
            match bucket.decide(stored, now) {
                Err(wait) => Some(wait),
                Ok(tat) => {
                    if commit {
                        let expires = Instant::now() + Duration::from_millis(tat - now);
                        map.insert(key.to_owned(), (expires, tat.to_be_bytes().to_vec()));
                    }
                    None
                }
            }
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
    async fn buckets_allow_a_burst_then_one_per_interval() {
        let store = LocalEphemeral::new();
        let bucket = Bucket { interval_ms: 60_000, burst: 3 };
        assert_eq!(store.take_token("k", bucket, false).await.unwrap(), None, "a look takes nothing");
        for _ in 0..3 {
            assert_eq!(store.take_token("k", bucket, true).await.unwrap(), None);
        }
        let wait = store.take_token("k", bucket, true).await.unwrap().expect("the fourth waits");
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60), "{wait:?}");
        assert!(store.take_token("other", bucket, true).await.unwrap().is_none(), "buckets are per key");
    }

    #[test]
    fn a_bucket_refills_one_token_per_interval() {
        let bucket = Bucket { interval_ms: 100, burst: 2 };
        let tat = bucket.decide(None, 1000).unwrap();
        let tat = bucket.decide(Some(tat), 1000).unwrap();
        assert_eq!(bucket.decide(Some(tat), 1000), Err(Duration::from_millis(100)));
        assert_eq!(bucket.decide(Some(tat), 1050), Err(Duration::from_millis(50)));
        assert!(bucket.decide(Some(tat), 1100).is_ok(), "one interval later, one more");
        assert!(bucket.decide(Some(tat), 5000).is_ok(), "an idle bucket is full again");
        let single = Bucket { interval_ms: 100, burst: 1 };
        let tat = single.decide(None, 0).unwrap();
        assert_eq!(single.decide(Some(tat), 0), Err(Duration::from_millis(100)));
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
