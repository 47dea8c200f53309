//! A read-through cache for hot reads that several processes can share: entries live in the
//! ephemeral store (Redis) with a TTL and are deleted when the value they copy changes.
//!
//! Only with Redis: in a single process without it, RocksDB's own block cache answers these
//! reads faster than any copy could, so the cache is off and every read goes to storage. A
//! failing Redis is a miss, never an error: the read falls through to storage.

use crate::ephemeral::spaces::{Json, SharedCacheEntries};
use std::{sync::Arc, time::Duration};

use serde::{Serialize, de::DeserializeOwned};

use crate::{Result, ephemeral::EphemeralStore};

#[derive(Clone)]
pub struct SharedCache {
    store: Option<Arc<dyn EphemeralStore>>,
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache").field("enabled", &self.store.is_some()).finish()
    }
}

impl SharedCache {
    /// A cache over `store` when it is shared between processes; otherwise a cache that always
    /// misses.
    pub fn new(store: &Arc<dyn EphemeralStore>) -> Self {
        Self { store: store.is_shared().then(|| store.clone()) }
    }

    pub fn enabled(&self) -> bool {
        self.store.is_some()
    }

    /// The cached value of `name`, or `load()`'s, which is then cached for `ttl`.
    pub async fn get_or_load<T, F>(&self, name: &str, ttl: Duration, load: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Result<T>,
    {
        let Some(store) = &self.store else { return load() };
        if let Ok(Some(Json(cached))) = store.get_in::<SharedCacheEntries>(name).await
            && let Ok(value) = serde_json::from_value(cached)
        {
            return Ok(value);
        }
        let value = load()?;
        if let Ok(json) = serde_json::to_value(&value) {
            let _ = store.put_in_for::<SharedCacheEntries>(name, &Json(json), ttl).await;
        }
        Ok(value)
    }

    /// Drops the cached copy of `name` after the value it copies changed. A failure leaves a
    /// stale copy for at most its TTL, so the TTLs of entries that change are kept short.
    pub async fn invalidate(&self, name: &str) {
        if let Some(store) = &self.store {
            let _ = store.delete_in::<SharedCacheEntries>(name).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ephemeral::{BoxFuture, LocalEphemeral};

    /// The in-process store, claiming to be shared, to exercise the cache without Redis.
    struct Shared(LocalEphemeral);

    impl EphemeralStore for Shared {
        fn put(&self, key: String, value: Vec<u8>, ttl: Duration) -> BoxFuture<'_, Result<()>> {
            self.0.put(key, value, ttl)
        }
        fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
            self.0.get(key)
        }
        fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
            self.0.take(key)
        }
        fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
            self.0.delete(key)
        }
        fn take_token<'a>(
            &'a self,
            key: &'a str,
            bucket: crate::ephemeral::Bucket,
            commit: bool,
        ) -> BoxFuture<'a, Result<Option<Duration>>> {
            self.0.take_token(key, bucket, commit)
        }
        fn is_shared(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn reads_through_and_invalidates() {
        let store: Arc<dyn EphemeralStore> = Arc::new(Shared(LocalEphemeral::new()));
        let cache = SharedCache::new(&store);
        let ttl = Duration::from_secs(60);
        assert_eq!(cache.get_or_load("k", ttl, || Ok(1)).await.unwrap(), 1);
        assert_eq!(cache.get_or_load("k", ttl, || Ok(2)).await.unwrap(), 1, "served from the cache");
        cache.invalidate("k").await;
        assert_eq!(cache.get_or_load("k", ttl, || Ok(3)).await.unwrap(), 3, "reloaded after invalidation");
    }

    #[tokio::test]
    async fn without_a_shared_store_every_read_loads() {
        let store: Arc<dyn EphemeralStore> = Arc::new(LocalEphemeral::new());
        let cache = SharedCache::new(&store);
        assert!(!cache.enabled());
        assert_eq!(cache.get_or_load("k", Duration::from_secs(60), || Ok(1)).await.unwrap(), 1);
        assert_eq!(cache.get_or_load("k", Duration::from_secs(60), || Ok(2)).await.unwrap(), 2);
    }
}
