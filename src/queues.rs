//! The delivery queues (the federation outbox, pushers, delayed events, application services)
//! and which process runs them. A process alone on its store runs them all the time. Processes
//! sharing a store take turns through a lease: a lock in the store that its holder keeps while
//! it runs them and that a dead holder's session gives up, so each queue has one sender at a
//! time and another process takes over within about a second of the holder's death.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hearth_core::Homeserver;
use hearth_storage::engine::{LockGuard, LockKind};
use tokio::{sync::watch, task::JoinSet};

use crate::stopped;

/// How often a process without the lease asks for it.
const LEASE_RETRY: Duration = Duration::from_secs(1);

/// Runs the queues (the federation outbox only when `federation` is on) until `stop` flips.
/// `running` is set while this process runs them (other duties that need one process of
/// several, such as announcing presence timeouts, follow it).
pub async fn run(hs: Homeserver, federation: bool, running: Arc<AtomicBool>, stop: watch::Receiver<bool>) {
    let lease = if hs.db.shared().is_some() {
        match wait_for_lease(&hs, stop.clone()).await {
            Some(lease) => Some(lease),
            None => return,
        }
    } else {
        None
    };
    running.store(true, Ordering::Relaxed);
    let mut tasks = JoinSet::new();
    {
        let (hs, stop) = (hs.clone(), stopped(&stop));
        tasks.spawn(async move { hs.run_push_sender(stop).await });
    }
    {
        let (hs, stop) = (hs.clone(), stopped(&stop));
        tasks.spawn(async move { hs.run_delayed_sender(stop).await });
    }
    {
        let (hs, stop) = (hs.clone(), stopped(&stop));
        tasks.spawn(async move { hs.run_appservice_senders(stop).await });
    }
    if federation {
        tasks.spawn(hearth_federation::sender::run(hs.clone(), stop.clone()));
    }
    if lease.is_some() {
        tasks.spawn(poke_on_news(hs.clone(), stop.clone()));
    }
    while tasks.join_next().await.is_some() {}
    running.store(false, Ordering::Relaxed);
    drop(lease);
}

async fn wait_for_lease(hs: &Homeserver, mut stop: watch::Receiver<bool>) -> Option<Box<dyn LockGuard>> {
    let mut told = false;
    loop {
        let db = hs.db.clone();
        let taken = tokio::task::spawn_blocking(move || {
            db.shared().map(|s| s.try_lock(LockKind::Queues, "queues")).transpose()
        })
        .await;
        match taken {
            Ok(Ok(Some(Some(lease)))) => {
                tracing::info!("this process now runs the delivery queues");
                return Some(lease);
            }
            Ok(Ok(_)) if !told => {
                tracing::info!("another process runs the delivery queues; this one takes over if it stops");
                told = true;
            }
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "asking for the delivery queues' lease failed"),
            Err(error) => tracing::warn!(%error, "asking for the delivery queues' lease failed"),
        }
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return None,
            () = tokio::time::sleep(LEASE_RETRY) => {}
        }
    }
}

/// Other processes queue work too, and wake only their own senders: look at the queues
/// whenever the stream moves, a few times a second at most, and every few seconds anyway
/// (delayed events scheduled elsewhere do not move the stream).
async fn poke_on_news(hs: Homeserver, mut stop: watch::Receiver<bool>) {
    let mut published = hs.streams.watch_published();
    let mut timers = tokio::time::interval(Duration::from_secs(2));
    loop {
        let outbox = tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            changed = published.changed() => if changed.is_err() { return } else { true },
            _ = timers.tick() => false,
        };
        hs.poke_queues(outbox).await;
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
