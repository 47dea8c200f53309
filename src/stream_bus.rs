//! Stream news between processes that share a PostgreSQL store, over Redis pub/sub: core's
//! `StreamBus` on `hearth_storage::redis_kv` (the one place that sees both).

use std::sync::{Arc, Weak};

use hearth_core::sync::stream::{StreamBus, Streams};
use hearth_storage::redis_kv::RedisKv;

/// The channel's name under `redis.key_prefix`.
const CHANNEL: &str = "stream";

#[derive(Debug)]
pub struct RedisStreamBus {
    kv: RedisKv,
}

impl RedisStreamBus {
    pub fn new(kv: RedisKv) -> Self {
        Self { kv }
    }

    /// Hands every message from the other processes to `streams` while it lives, subscribing
    /// again after a lost connection (what was said meanwhile is made up by the stream's own
    /// check of the store every second).
    pub fn deliver_to(&self, streams: Weak<Streams>) {
        let kv = self.kv.clone();
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                match kv.subscribe(CHANNEL).await {
                    Ok(mut subscription) => {
                        if warned {
                            tracing::info!("subscribed to the stream news again");
                            warned = false;
                        }
                        while let Some(message) = subscription.next().await {
                            let Some(streams) = streams.upgrade() else { return };
                            streams.receive(&message);
                        }
                    }
                    Err(error) if !warned => {
                        tracing::error!(%error, "cannot subscribe to the stream news; retrying");
                        warned = true;
                    }
                    Err(_) => {}
                }
                if streams.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        });
    }
}

impl StreamBus for RedisStreamBus {
    fn publish(&self, message: Vec<u8>) {
        let kv = self.kv.clone();
        tokio::spawn(async move {
            if let Err(error) = kv.publish(CHANNEL, &message).await {
                // The others see the write within a second, by asking the store.
                tracing::warn!(%error, "publishing stream news failed");
            }
        });
    }
}

pub fn shared(kv: RedisKv) -> Arc<RedisStreamBus> {
    Arc::new(RedisStreamBus::new(kv))
}
