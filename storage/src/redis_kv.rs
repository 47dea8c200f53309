//! Optional Redis, for state that is safe to lose and shared between processes: a TTL'd
//! key-value store (UIA sessions, nonces, tickets). Connections reconnect by themselves; a
//! failed call is an error the caller may degrade around.

use redis::{AsyncCommands, aio::ConnectionManager};

use crate::{Error, Result};

#[derive(Clone)]
pub struct RedisKv {
    conn: ConnectionManager,
    /// For subscriptions, which need a connection of their own.
    client: redis::Client,
    prefix: String,
}

impl std::fmt::Debug for RedisKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKv").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

#[allow(clippy::needless_pass_by_value)] // the shape map_err wants
fn redis_err(e: redis::RedisError) -> Error {
    Error::Engine(format!("redis: {e}"))
}

impl RedisKv {
    /// Connects to `url` (`redis://host:port/db`); keys are namespaced with `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self> {
        let client = redis::Client::open(url).map_err(redis_err)?;
        // Fail fast while Redis is away: callers fall back to storage or degrade, and a request
        // must not wait out a long reconnection schedule. The manager keeps reconnecting.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(std::time::Duration::from_millis(50))
            .set_connection_timeout(Some(std::time::Duration::from_millis(500)))
            .set_response_timeout(Some(std::time::Duration::from_millis(500)));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await.map_err(redis_err)?;
        Ok(Self { conn, client, prefix: prefix.to_owned() })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    pub async fn put(&self, key: &str, value: &[u8], ttl_ms: u64) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: () = conn.pset_ex(self.key(key), value, ttl_ms.max(1)).await.map_err(redis_err)?;
        Ok(())
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        conn.get(self.key(key)).await.map_err(redis_err)
    }

    /// Reads and deletes atomically (`GETDEL`), so only one caller ever gets the value.
    pub async fn take(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let mut conn = self.conn.clone();
        conn.get_del(self.key(key)).await.map_err(redis_err)
    }

    /// One action against a rate-limit bucket kept as its next due time (GCRA; see core's
    /// `ephemeral::Bucket`), decided in one script so that processes sharing Redis never both
    /// take the last token, and on Redis's clock so that theirs need not agree. The wait in
    /// ms when the action is not allowed; with `commit` false nothing is written.
    pub async fn take_token(
        &self,
        key: &str,
        interval_ms: u64,
        tolerance_ms: u64,
        commit: bool,
    ) -> Result<Option<u64>> {
        const SCRIPT: &str = r"
            local t = redis.call('TIME')
            local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
            local tat = tonumber(redis.call('GET', KEYS[1]) or now)
            if tat < now then tat = now end
            local over = tat - now - tonumber(ARGV[2])
            if over > 0 then return over end
            if ARGV[3] == '1' then
                local next = tat + tonumber(ARGV[1])
                redis.call('SET', KEYS[1], next, 'PX', next - now)
            end
            return 0
        ";
        let mut conn = self.conn.clone();
        let wait: u64 = redis::cmd("EVAL")
            .arg(SCRIPT)
            .arg(1)
            .arg(self.key(key))
            .arg(interval_ms.max(1))
            .arg(tolerance_ms)
            .arg(if commit { "1" } else { "0" })
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok((wait > 0).then_some(wait))
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: () = conn.del(self.key(key)).await.map_err(redis_err)?;
        Ok(())
    }

    /// Sends `message` to every current subscriber of `channel` (at most once: pub/sub keeps
    /// nothing for a subscriber that is away).
    pub async fn publish(&self, channel: &str, message: &[u8]) -> Result<()> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.publish(self.key(channel), message).await.map_err(redis_err)?;
        Ok(())
    }

    /// A subscription to `channel` on a connection of its own.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription> {
        let mut pubsub = self.client.get_async_pubsub().await.map_err(redis_err)?;
        pubsub.subscribe(self.key(channel)).await.map_err(redis_err)?;
        Ok(Subscription { messages: pubsub.into_on_message() })
    }
}

/// Messages of one channel, in the order Redis sent them.
pub struct Subscription {
    messages: redis::aio::PubSubStream,
}

impl Subscription {
    /// The next message's payload; `None` once the connection is lost (subscribe again).
    pub async fn next(&mut self) -> Option<Vec<u8>> {
        use futures_util::StreamExt;
        self.messages.next().await.map(|message| message.get_payload_bytes().to_vec())
    }
}
