//! Drains the durable outbox: one worker per destination, one transaction in flight at a time,
//! at most 50 PDUs and 100 EDUs each, capped exponential backoff while the peer is away, cut
//! short the moment the peer contacts us (it is evidently back).

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hearth_core::Homeserver;
use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId, ServerName,
    api::federation::transactions::send_transaction_message,
};
use tokio::{
    sync::{Notify, watch},
    task::JoinSet,
};

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);

/// Runs until `stop` flips: resumes every destination with queued items, then serves new work
/// as core reports it. Workers are stopped (and their handles on the homeserver released)
/// before it returns.
pub async fn run(hs: Homeserver, mut stop: watch::Receiver<bool>) {
    let mut workers: HashMap<OwnedServerName, Arc<Notify>> = HashMap::new();
    let mut tasks = JoinSet::new();
    match hs.outbox_destinations() {
        Ok(queued) => hs.federation.poke(queued.iter().map(AsRef::as_ref)),
        Err(error) => tracing::error!(%error, "cannot read the federation outbox"),
    }
    // Transaction IDs must not repeat for a destination, across restarts too.
    let txn_counter = Arc::new(AtomicU64::new(0));
    let epoch = MilliSecondsSinceUnixEpoch::now().get();
    loop {
        let pending = tokio::select! {
            pending = hs.federation.next_pending() => pending,
            _ = stop.changed() => break,
        };
        for destination in pending {
            let notify = workers.entry(destination.clone()).or_insert_with(|| {
                let notify = Arc::new(Notify::new());
                let (hs, notify2, counter) = (hs.clone(), notify.clone(), txn_counter.clone());
                let dest = destination.clone();
                tasks.spawn(async move { worker(hs, dest, notify2, counter, epoch.into()).await });
                notify
            });
            notify.notify_one();
        }
    }
    tasks.shutdown().await;
}

async fn worker(
    hs: Homeserver,
    destination: OwnedServerName,
    wake: Arc<Notify>,
    counter: Arc<AtomicU64>,
    epoch: u64,
) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let batch = match hs.outbox_batch(&destination) {
            Ok(batch) => batch,
            Err(error) => {
                tracing::error!(%destination, %error, "cannot read the outbox");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        if batch.seqs.is_empty() {
            wake.notified().await;
            continue;
        }
        if batch.pdus.is_empty() && batch.edus.is_empty() {
            // Only items that could not be sent (logged by `outbox_batch`): forget them.
            if let Err(error) = hs.outbox_done(&destination, batch.seqs).await {
                tracing::error!(%destination, %error, "cannot clear dropped items");
                tokio::time::sleep(backoff).await;
            }
            continue;
        }
        let txn_id = OwnedTransactionId::from(format!("{epoch}.{}", counter.fetch_add(1, Ordering::Relaxed)));
        let (pdus, edus) = (batch.pdus.len(), batch.edus.len());
        match send(&hs, &destination, txn_id, batch.pdus, batch.edus).await {
            Ok(()) => {
                tracing::debug!(%destination, pdus, edus, "transaction delivered");
                hs.federation.destinations.delivered(&destination);
                if let Err(error) = hs.outbox_done(&destination, batch.seqs).await {
                    tracing::error!(%destination, %error, "cannot clear delivered items");
                }
                backoff = FIRST_BACKOFF;
            }
            Err(error) => {
                tracing::warn!(%destination, %error, retry_in = ?backoff, "transaction failed; will retry");
                let wait_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX);
                hs.federation.destinations.failed(&destination, wait_ms);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = wake.notified() => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

async fn send(
    hs: &Homeserver,
    destination: &ServerName,
    txn_id: OwnedTransactionId,
    pdus: Vec<Box<serde_json::value::RawValue>>,
    edus: Vec<ruma::serde::Raw<ruma::api::federation::transactions::edu::Edu>>,
) -> hearth_core::Result<()> {
    let mut request = send_transaction_message::v1::Request::new(
        txn_id,
        hs.server_name().to_owned(),
        MilliSecondsSinceUnixEpoch::now(),
    );
    request.pdus = pdus;
    request.edus = edus;
    let response = hs.federation_request(destination, request).await?;
    for (event_id, result) in response.pdus {
        if let Err(reason) = result {
            // The peer judged the event; sending it again would not change its mind.
            tracing::info!(%destination, %event_id, %reason, "peer rejected a PDU");
        }
    }
    Ok(())
}
