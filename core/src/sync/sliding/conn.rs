//! What each sliding sync connection has already been sent, kept by the server between requests.
//!
//! A connection is one client's `(user, device, conn_id)`. Each response gets a new `pos`; the
//! snapshot stored under it says which rooms the client holds and up to which stream position,
//! so the next request sends only what is new. The snapshot a request starts from stays
//! available until the client uses the newer one, because a response lost on the way must be
//! retried from the same `pos`. Older snapshots are dropped.
//!
//! Kept in this process's memory: a restart or an evicted connection answers `M_UNKNOWN_POS`,
//! and the client starts a new connection, as the MSC intends. Processes sharing a store also
//! put each snapshot in the ephemeral store (Redis), so that a client whose next request goes
//! to another process goes on from where it was (`Homeserver::sliding_sync`).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId, events::room::member::MembershipState};

/// A connection not used for this long is forgotten.
pub(crate) const IDLE: Duration = Duration::from_secs(30 * 60);
/// Connections one device may hold (each `conn_id` is one).
const PER_DEVICE: usize = 8;
/// Connections kept in all, the least recently used dropped first beyond it.
const MAX_CONNECTIONS: usize = 50_000;

/// Where a client stands with one room.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SentRoom {
    /// The stream position up to which its timeline and state were sent.
    pub through: u64,
    /// The user's membership when it was sent: a change (an invite accepted) sends it anew.
    pub membership: MembershipState,
    /// The `required_state` it was sent with: a different one sends its state anew.
    pub required_state: Vec<(String, String)>,
    /// The response position at which it was last in a window or subscribed to: its receipts,
    /// typing and account data are sent from there when it comes back.
    pub seen: u64,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// The stream position of the response: extensions and list counts are relative to it.
    pub stream: u64,
    pub rooms: HashMap<OwnedRoomId, SentRoom>,
    pub list_counts: BTreeMap<String, usize>,
    /// Each room's bump stamp at `stream`, kept so that rooms without news are not read again.
    pub bumps: HashMap<OwnedRoomId, u64>,
    /// Its place in the connection's ring of shared copies (`SHARED_SLOTS`).
    #[serde(default)]
    pub slot: u8,
}

/// Shared copies kept per connection: the newest few, each response taking the slot after
/// the one its request came from, so a client that retries or races itself reuses slots
/// instead of adding copies.
pub(crate) const SHARED_SLOTS: u8 = 4;

/// A snapshot as other processes find it: with the `pos` it answers to.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct SharedSnapshot {
    pub pos: String,
    pub snapshot: Snapshot,
}

/// The key of a slot of a connection's shared copies: the connection in full, so that no
/// other connection (of another user or device) can read it.
pub(crate) fn shared_key(user: &OwnedUserId, device: &OwnedDeviceId, conn_id: &str, slot: u8) -> String {
    serde_json::json!([user, device, conn_id, slot]).to_string()
}

type Key = (OwnedUserId, OwnedDeviceId, String);

#[derive(Debug)]
struct Connection {
    last_used: Instant,
    /// At most two: the one the client last used and the one it was answered with.
    snapshots: Vec<(u64, Arc<Snapshot>)>,
}

#[derive(Debug)]
pub struct Connections {
    /// Positions name this process's run, so that one from before a restart is never mistaken
    /// for a new connection's.
    epoch: u32,
    inner: Mutex<HashMap<Key, Connection>>,
    /// Positions are numbered across connections, so that one connection's is never valid
    /// for another.
    next_id: std::sync::atomic::AtomicU64,
}

/// `pos` was not issued to this connection, or was forgotten.
#[derive(Debug)]
pub struct UnknownPos;

impl Connections {
    pub fn new() -> Self {
        Self { epoch: rand::random(), inner: Mutex::default(), next_id: std::sync::atomic::AtomicU64::new(1) }
    }

    /// The snapshot a request's `pos` names; a new connection's empty one without a `pos`,
    /// which also forgets what the connection was sent before.
    pub fn resume(
        &self,
        user: &OwnedUserId,
        device: &OwnedDeviceId,
        conn_id: &str,
        pos: Option<&str>,
    ) -> Result<Arc<Snapshot>, UnknownPos> {
        let key = (user.clone(), device.clone(), conn_id.to_owned());
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(pos) = pos else {
            inner.remove(&key);
            return Ok(Arc::default());
        };
        let id = self.parse(pos).ok_or(UnknownPos)?;
        let connection = inner.get_mut(&key).ok_or(UnknownPos)?;
        if connection.last_used.elapsed() > IDLE {
            inner.remove(&key);
            return Err(UnknownPos);
        }
        connection.last_used = Instant::now();
        let snapshot = connection.snapshots.iter().find(|(n, _)| *n == id).map(|(_, s)| s.clone());
        let snapshot = snapshot.ok_or(UnknownPos)?;
        // The client has the response this position came with: anything older is not needed.
        connection.snapshots.retain(|(n, _)| *n >= id);
        Ok(snapshot)
    }

    /// Stores the snapshot a response leaves the client with, and names its `pos`.
    pub fn store(
        &self,
        user: &OwnedUserId,
        device: &OwnedDeviceId,
        conn_id: &str,
        snapshot: Snapshot,
    ) -> String {
        let key = (user.clone(), device.clone(), conn_id.to_owned());
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if !inner.contains_key(&key) {
            Self::make_room(&mut inner, &key);
        }
        let connection = inner
            .entry(key)
            .or_insert_with(|| Connection { last_used: Instant::now(), snapshots: Vec::new() });
        let id = self.next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        connection.last_used = Instant::now();
        connection.snapshots.push((id, Arc::new(snapshot)));
        // Requests may have been answered from each of several positions (retries, or a
        // client racing itself): keep the newest few.
        if connection.snapshots.len() > 3 {
            connection.snapshots.remove(0);
        }
        format!("{}_{id}", self.epoch)
    }

    fn parse(&self, pos: &str) -> Option<u64> {
        let (epoch, id) = pos.split_once('_')?;
        (epoch.parse::<u32>().ok()? == self.epoch).then_some(())?;
        id.parse().ok()
    }

    /// Frees a place for a new connection: idle ones go, then the device's or everyone's
    /// least recently used beyond the caps.
    fn make_room(inner: &mut HashMap<Key, Connection>, key: &Key) {
        inner.retain(|_, c| c.last_used.elapsed() <= IDLE);
        let oldest = |inner: &HashMap<Key, Connection>, same_device: bool| {
            inner
                .iter()
                .filter(|(k, _)| !same_device || (k.0 == key.0 && k.1 == key.1))
                .min_by_key(|(_, c)| c.last_used)
                .map(|(k, _)| k.clone())
        };
        let on_device = inner.keys().filter(|k| k.0 == key.0 && k.1 == key.1).count();
        if on_device >= PER_DEVICE
            && let Some(k) = oldest(inner, true)
        {
            inner.remove(&k);
        }
        if inner.len() >= MAX_CONNECTIONS
            && let Some(k) = oldest(inner, false)
        {
            inner.remove(&k);
        }
    }
}

impl Default for Connections {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use ruma::{device_id, user_id};

    use super::*;

    #[test]
    fn positions_resume_their_snapshot_and_older_ones_are_dropped() {
        let conns = Connections::new();
        let (alice, dev) = (user_id!("@a:x").to_owned(), device_id!("D").to_owned());
        let first = conns.resume(&alice, &dev, "main", None).unwrap();
        assert_eq!(first.stream, 0);
        let p1 = conns.store(&alice, &dev, "main", Snapshot { stream: 5, ..Snapshot::default() });
        let p2 = conns.store(&alice, &dev, "main", Snapshot { stream: 9, ..Snapshot::default() });
        // A retry from the first position still works until the second is used.
        assert_eq!(conns.resume(&alice, &dev, "main", Some(&p1)).unwrap().stream, 5);
        assert_eq!(conns.resume(&alice, &dev, "main", Some(&p2)).unwrap().stream, 9);
        assert!(conns.resume(&alice, &dev, "main", Some(&p1)).is_err(), "superseded");
        assert!(conns.resume(&alice, &dev, "other", Some(&p2)).is_err(), "another connection");
        assert!(conns.resume(&alice, &dev, "main", Some("1_2")).is_err(), "another run");
        assert!(conns.resume(&alice, &dev, "main", Some("junk")).is_err());
    }

    #[test]
    fn a_device_holds_a_bounded_number_of_connections() {
        let conns = Connections::new();
        let (alice, dev) = (user_id!("@a:x").to_owned(), device_id!("D").to_owned());
        let positions: Vec<String> = (0..PER_DEVICE + 2)
            .map(|i| conns.store(&alice, &dev, &format!("c{i}"), Snapshot::default()))
            .collect();
        assert!(conns.resume(&alice, &dev, "c0", Some(&positions[0])).is_err());
        let last = PER_DEVICE + 1;
        assert!(conns.resume(&alice, &dev, &format!("c{last}"), Some(&positions[last])).is_ok());
    }
}
