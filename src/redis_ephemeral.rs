//! The Redis backend of core's ephemeral store: wires `hearth_storage::redis_kv` (which knows
//! Redis) to `hearth_core::ephemeral::EphemeralStore` (which knows neither Redis nor storage
//! engines). Only this crate sees both.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use hearth_core::{
    Error, Result,
    ephemeral::{BoxFuture, Bucket, EphemeralStore},
};
use hearth_storage::redis_kv::RedisKv;

pub struct RedisEphemeral {
    kv: RedisKv,
    /// Set after the first failure is logged, cleared on the next success: one log line per
    /// outage, not one per request.
    failing: AtomicBool,
    /// While Redis is away, calls before this instant (ms since the epoch) fail at once
    /// instead of each waiting for a connection attempt; one call per interval probes it.
    retry_at_ms: AtomicU64,
}

/// How often a call is let through to probe a Redis that failed.
const PROBE_EVERY_MS: u64 = 1000;

impl RedisEphemeral {
    pub fn new(kv: RedisKv) -> Self {
        Self { kv, failing: AtomicBool::new(false), retry_at_ms: AtomicU64::new(0) }
    }

    /// Whether to skip Redis for now: it failed recently and this is not the probe.
    fn skip(&self) -> bool {
        if !self.failing.load(Ordering::Relaxed) {
            return false;
        }
        let now = hearth_core::util::now_ms();
        let retry_at = self.retry_at_ms.load(Ordering::Relaxed);
        // Exactly one caller wins the probe for each interval.
        !(now >= retry_at
            && self
                .retry_at_ms
                .compare_exchange(retry_at, now + PROBE_EVERY_MS, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok())
    }

    async fn call<T>(&self, op: impl std::future::Future<Output = hearth_storage::Result<T>>) -> Result<T> {
        if self.skip() {
            return Err(Error::internal("redis is unreachable"));
        }
        self.seen(op.await)
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
                self.retry_at_ms.store(hearth_core::util::now_ms() + PROBE_EVERY_MS, Ordering::Relaxed);
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
            self.call(self.kv.put(&key, &value, ms)).await
        })
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move { self.call(self.kv.get(key)).await })
    }

    fn take<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Vec<u8>>>> {
        Box::pin(async move { self.call(self.kv.take(key)).await })
    }

    fn delete<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { self.call(self.kv.delete(key)).await })
    }

    fn take_token<'a>(
        &'a self,
        key: &'a str,
        bucket: Bucket,
        commit: bool,
    ) -> BoxFuture<'a, Result<Option<Duration>>> {
        Box::pin(async move {
            let wait =
                self.call(self.kv.take_token(key, bucket.interval_ms, bucket.tolerance_ms(), commit)).await?;
            Ok(wait.map(Duration::from_millis))
        })
    }

    fn is_shared(&self) -> bool {
        true
    }
}
