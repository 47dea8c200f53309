//! Wakes waiting /sync requests and WebSocket connections with a stream position, never with data.
//!
//! A reader first [`Notifier::subscribe`]s, then reads what it needs, then waits for a position
//! above the one it read at. Because a `watch` channel keeps its latest value, a write that lands
//! between the read and the wait is still seen: no wake-up is lost, and a woken reader always
//! re-reads storage, so it can never be told about an event its token has already passed.

use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use ruma::{OwnedUserId, UserId};
use tokio::sync::watch;

#[derive(Debug, Default)]
pub struct Notifier {
    users: Mutex<HashMap<OwnedUserId, watch::Sender<u64>>>,
    latest: AtomicU64,
    /// Flips once, when the server shuts down: every waiter answers at once instead of waiting
    /// out its timeout, so connections drain within the grace period.
    closing: watch::Sender<bool>,
}

impl Notifier {
    pub fn new(current: u64) -> Self {
        Self { users: Mutex::default(), latest: AtomicU64::new(current), closing: watch::Sender::new(false) }
    }

    /// Starts the shutdown: wakes every waiter for good.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Completes once the server is shutting down (at once if it already is).
    pub fn closed(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            // An error means the notifier is gone, which is a shutdown too.
            let _ = rx.wait_for(|closing| *closing).await;
        }
    }

    /// The highest position notified so far.
    pub fn latest(&self) -> u64 {
        self.latest.load(Ordering::Acquire)
    }

    /// A receiver that sees every position notified to `user` from now on.
    pub fn subscribe(&self, user: &UserId) -> watch::Receiver<u64> {
        let mut users = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match users.get(user) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(self.latest());
                users.insert(user.to_owned(), tx);
                rx
            }
        }
    }

    /// Tells each of `users` that something for them exists at `pos`.
    pub fn notify<'a>(&self, users: impl IntoIterator<Item = &'a UserId>, pos: u64) {
        self.latest.fetch_max(pos, Ordering::AcqRel);
        let mut map = self.users.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for user in users {
            if let Some(tx) = map.get(user) {
                if tx.receiver_count() == 0 {
                    // Nobody waits: drop the entry so idle users cost nothing.
                    map.remove(user);
                } else {
                    tx.send_if_modified(|p| {
                        let newer = pos > *p;
                        if newer {
                            *p = pos;
                        }
                        newer
                    });
                }
            }
        }
    }

    /// How many users currently have a channel (for tests and metrics).
    pub fn tracked_users(&self) -> usize {
        self.users.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use ruma::user_id;

    use super::*;

    #[tokio::test]
    async fn a_notification_between_read_and_wait_is_not_lost() {
        let notifier = Notifier::new(5);
        let alice = user_id!("@alice:example.org");
        let mut rx = notifier.subscribe(alice);
        let read_at = 5; // the reader read storage at position 5 ...
        notifier.notify([alice], 6); // ... and a write lands before it starts waiting.
        let woke = tokio::time::timeout(Duration::from_secs(1), rx.wait_for(|p| *p > read_at)).await;
        assert_eq!(*woke.unwrap().unwrap(), 6);
    }

    #[tokio::test]
    async fn closing_wakes_current_and_later_waiters() {
        let notifier = Arc::new(Notifier::new(0));
        let waiter = tokio::spawn(notifier.closed());
        notifier.close();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.expect("woken").expect("joined");
        // One that starts waiting after the close does not wait at all.
        tokio::time::timeout(Duration::from_secs(5), notifier.closed()).await.expect("already closed");
    }

    #[tokio::test]
    async fn only_the_notified_user_wakes() {
        let notifier = Arc::new(Notifier::new(0));
        let (alice, bob) = (user_id!("@alice:x"), user_id!("@bob:x"));
        let mut bob_rx = notifier.subscribe(bob);
        let _alice_rx = notifier.subscribe(alice);
        notifier.notify([alice], 1);
        let waited = tokio::time::timeout(Duration::from_millis(50), bob_rx.wait_for(|p| *p > 0)).await;
        assert!(waited.is_err(), "bob was woken by alice's notification");
        assert_eq!(notifier.latest(), 1);
    }

    #[tokio::test]
    async fn positions_never_go_backwards_and_idle_users_are_dropped() {
        let notifier = Notifier::new(0);
        let alice = user_id!("@alice:x");
        let rx = notifier.subscribe(alice);
        notifier.notify([alice], 9);
        notifier.notify([alice], 3);
        assert_eq!(*rx.borrow(), 9);
        drop(rx);
        notifier.notify([alice], 10);
        assert_eq!(notifier.tracked_users(), 0);
    }
}
