//! The Redis backend of core's ephemeral store: wires `hearth_storage::redis_kv` (which knows
//! Redis) to `hearth_core::ephemeral::EphemeralStore` (which knows neither Redis nor storage
//! engines). Only this crate sees both.

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use hearth_core::{
    Error, Result,
    ephemeral::{BoxFuture, EphemeralStore},
};
use hearth_storage::redis_kv::RedisKv;

pub struct RedisEphemeral {
    kv: RedisKv,
    /// Set after the first failure is logged, cleared on the next success: one log line per
    /// outage, not one per request.
    failing: AtomicBool,
}

impl RedisEphemeral {
    pub fn new(kv: RedisKv) -> Self {
        Self { kv, failing: AtomicBool::new(false) }
    }

    fn seen<T>(&self, result: hearth_storage::Result<T>) -> Result<T> {
        match result {
            Ok(value) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("redis is reachable again");
                }
                Ok(value)
            }
            Err(error) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(%error, "redis is unreachable; short-lived state is unavailable until it returns");
                }
                Err(Error::from(error))
            }
        }
    }
}

impl EphemeralStore for RedisEphemeral {
    fn put(&self, key: String, value: Vec<u8>, ttl: Duration) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            self.seen(self.kv.put(&key, &value, ms).await)
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move { self.seen(self.kv.get(key).await) })
    }

    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move { self.seen(self.kv.take(key).await) })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.seen(self.kv.delete(key).await) })
    }
}
