//! Numbers the server keeps about itself for monitoring: what is open right now (long-polls,
//! WebSockets) and how each federation destination is doing. The binary turns them (and what it
//! reads from storage) into Prometheus series; core only counts.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicI64, Ordering},
    },
};

use ruma::{OwnedServerName, ServerName};

/// Open connections of each kind.
#[derive(Debug, Default)]
pub struct Activity {
    /// `/sync` requests waiting for something new.
    pub sync_long_polls: AtomicI64,
    pub websockets: AtomicI64,
}

/// Counts one open connection until dropped.
#[derive(Debug)]
pub struct Open<'a>(&'a AtomicI64);

impl<'a> Open<'a> {
    pub fn enter(counter: &'a AtomicI64) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How deliveries to one destination went, since this process started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DestinationStatus {
    /// Transactions that failed, in all.
    pub failures: u64,
    /// When the current run of failures began (ms since the epoch); `None` while deliveries
    /// succeed.
    pub failing_since: Option<u64>,
    /// When the last attempt failed, and the wait before the next one.
    pub retry_last_ts: Option<u64>,
    pub retry_interval_ms: u64,
    pub last_success_ts: Option<u64>,
}

/// The status of every destination this process has sent to.
#[derive(Debug, Default)]
pub struct Destinations(Mutex<BTreeMap<OwnedServerName, DestinationStatus>>);

impl Destinations {
    fn with<T>(&self, f: impl FnOnce(&mut BTreeMap<OwnedServerName, DestinationStatus>) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn delivered(&self, destination: &ServerName) {
        let now = crate::util::now_ms();
        self.with(|map| {
            let status = map.entry(destination.to_owned()).or_default();
            status.failing_since = None;
            status.retry_last_ts = None;
            status.retry_interval_ms = 0;
            status.last_success_ts = Some(now);
        });
    }

    pub fn failed(&self, destination: &ServerName, retry_in_ms: u64) {
        let now = crate::util::now_ms();
        self.with(|map| {
            let status = map.entry(destination.to_owned()).or_default();
            status.failures += 1;
            status.failing_since.get_or_insert(now);
            status.retry_last_ts = Some(now);
            status.retry_interval_ms = retry_in_ms;
        });
    }

    /// Forgets a destination's backoff (an admin's reset); false when it was not backing off.
    pub fn reset(&self, destination: &ServerName) -> bool {
        self.with(|map| match map.get_mut(destination) {
            Some(status) if status.retry_last_ts.is_some() => {
                status.failing_since = None;
                status.retry_last_ts = None;
                status.retry_interval_ms = 0;
                true
            }
            _ => false,
        })
    }

    pub fn all(&self) -> BTreeMap<OwnedServerName, DestinationStatus> {
        self.with(|map| map.clone())
    }
}

/// What waits to be delivered, read from storage when asked.
#[derive(Debug, Clone, Default)]
pub struct Backlogs {
    /// Items queued per federation destination.
    pub federation: BTreeMap<String, u64>,
    /// Notifications waiting for a pusher, in all.
    pub push: u64,
    /// Stream positions each application service has yet to acknowledge.
    pub appservices: BTreeMap<String, u64>,
}

impl crate::Homeserver {
    /// The delivery backlogs (a scan of the queues: meant for a scrape every few seconds,
    /// not for every request).
    pub fn backlogs(&self) -> crate::Result<Backlogs> {
        use hearth_storage::schema::{AppserviceCursors, FederationOutbox, PushQueue};
        let mut out = Backlogs::default();
        for entry in self.db.scan_prefix_all::<FederationOutbox>()? {
            let ((destination, _), _) = entry?;
            *out.federation.entry(destination).or_default() += 1;
        }
        for entry in self.db.scan_prefix_all::<PushQueue>()? {
            entry?;
            out.push += 1;
        }
        let head = self.streams.published();
        for service in self.appservices.all() {
            let acked = self.db.get::<AppserviceCursors>(&service.id)?.map_or(0, |c| c.acked);
            out.appservices.insert(service.id.clone(), head.saturating_sub(acked));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_connections_are_counted_while_held() {
        let activity = Activity::default();
        {
            let _a = Open::enter(&activity.websockets);
            let _b = Open::enter(&activity.websockets);
            assert_eq!(activity.websockets.load(Ordering::Relaxed), 2);
        }
        assert_eq!(activity.websockets.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_destination_backs_off_until_a_delivery_or_a_reset() {
        let destinations = Destinations::default();
        let remote = ruma::server_name!("remote.example");
        assert!(!destinations.reset(remote), "never failed");
        destinations.failed(remote, 1000);
        destinations.failed(remote, 2000);
        let status = destinations.all()[remote].clone();
        assert_eq!((status.failures, status.retry_interval_ms), (2, 2000));
        assert!(destinations.reset(remote));
        assert_eq!(destinations.all()[remote].retry_last_ts, None);
        destinations.failed(remote, 1000);
        destinations.delivered(remote);
        let status = destinations.all()[remote].clone();
        assert_eq!((status.failures, status.failing_since), (3, None));
        assert!(status.last_success_ts.is_some());
    }
}
