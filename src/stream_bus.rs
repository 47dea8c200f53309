//! The bus between processes that share a PostgreSQL store, over Redis pub/sub: core's
//! `StreamBus` on `hearth_storage::redis_kv` (the one place that sees both).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use hearth_core::{WeakHomeserver, sync::stream::StreamBus};
use hearth_storage::redis_kv::RedisKv;
use tokio::sync::mpsc;

/// The channel's name under `redis.key_prefix`.
const CHANNEL: &str = "stream";

/// Messages waiting to be published. Past this (Redis unreachable for a while) new ones are
/// dropped: the others catch up on the stream from the store, and typing and presence are
/// safe to lose.
const BACKLOG: usize = 10_000;

#[derive(Debug)]
pub struct RedisStreamBus {
    kv: RedisKv,
    /// To the one task that publishes, which keeps the messages in order.
    outgoing: mpsc::Sender<Vec<u8>>,
    /// Whether messages are being dropped, so that it is said once, not per message.
    dropping: AtomicBool,
}

impl RedisStreamBus {
    /// Call inside a runtime: the publishing task starts here.
    pub fn new(kv: RedisKv) -> Self {
        let (outgoing, mut queue) = mpsc::channel::<Vec<u8>>(BACKLOG);
        let publisher = kv.clone();
        tokio::spawn(async move {
            let mut warned = false;
            while let Some(message) = queue.recv().await {
                match publisher.publish(CHANNEL, &message).await {
                    Ok(()) => warned = false,
                    // The others see the write within a second, by asking the store.
                    Err(error) if !warned => {
                        tracing::warn!(%error, "publishing on the bus failed");
                        warned = true;
                    }
                    Err(_) => {}
                }
            }
        });
        Self { kv, outgoing, dropping: AtomicBool::new(false) }
    }

    /// Hands every message from the other processes to the homeserver while it runs,
    /// subscribing again after a lost connection (stream news said meanwhile is made up by the
    /// stream's own check of the store every second).
    pub fn deliver_to(&self, hs: WeakHomeserver) {
        let kv = self.kv.clone();
        tokio::spawn(async move {
            let mut warned = false;
            loop {
                match kv.subscribe(CHANNEL).await {
                    Ok(mut subscription) => {
                        if warned {
                            tracing::info!("subscribed to the bus again");
                            warned = false;
                        }
                        while let Some(message) = subscription.next().await {
                            let Some(hs) = hs.upgrade() else { return };
                            hs.receive_from_bus(&message);
                        }
                    }
                    Err(error) if !warned => {
                        tracing::error!(%error, "cannot subscribe to the bus; retrying");
                        warned = true;
                    }
                    Err(_) => {}
                }
                if hs.upgrade().is_none() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        });
    }
}

impl StreamBus for RedisStreamBus {
    fn publish(&self, message: Vec<u8>) {
        let dropped = self.outgoing.try_send(message).is_err();
        if self.dropping.swap(dropped, Ordering::Relaxed) != dropped && dropped {
            tracing::warn!("the bus's backlog is full: messages are dropped until Redis takes them again");
        }
    }
}

pub fn shared(kv: RedisKv) -> Arc<RedisStreamBus> {
    Arc::new(RedisStreamBus::new(kv))
}
