//! Delayed events (MSC4140): events a client schedules now for the server to send later, unless
//! it restarts the timer in time or cancels them. MatrixRTC calls rest on this: each participant
//! schedules the event that takes it out of the call, and keeps postponing it while it is alive,
//! so a client that dies leaves the call by itself.
//!
//! Scheduled events live in the database (`DelayedEvents`, with `DelayedDue` in due order and
//! `DelayedByUser` per sender), so a restart loses none: the timer task sends at start-up
//! whatever fell due while the server was down. Sending goes through the normal write path as
//! the sender, so power levels and membership are checked then, not when scheduling. A delay ID
//! is a capability: whoever holds it may restart, send or cancel (a call's media server may hold
//! it for the client); listing needs the sender's own access token.

use std::{
    ops::Bound,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use hearth_storage::{
    Batch, Db, Direction,
    records::{DelayedEventRecord, FinalisedDelayedRecord},
    schema::{DelayedByUser, DelayedDue, DelayedEvents, DelayedFinalised, DelayedTxns},
};
use ruma::{DeviceId, OwnedEventId, RoomId, UserId, events::TimelineEventType};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::{
    Error, Homeserver, Result,
    events::NewEvent,
    users::blocking,
    util::{now_ms, random_string},
};

/// How long sent and cancelled events stay in their sender's listing.
const KEEP_FINALISED_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// The most finalised events a listing shows.
const MAX_FINALISED_LISTED: usize = 100;
/// The timer looks again at least this often, and prunes old finalised events.
const IDLE: Duration = Duration::from_secs(60);

/// What a holder of a delay ID may do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DelayAction {
    /// Start the delay again from now.
    Restart,
    /// Send the event now.
    Send,
    /// Never send it.
    Cancel,
}

/// The timer's wake-up and the lock that makes taking a scheduled event out exclusive (the
/// timer and a client's `send` must not both send it).
#[derive(Default)]
pub struct Delayed {
    pub(crate) wake: Notify,
    claim: Mutex<()>,
}

impl std::fmt::Debug for Delayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delayed").finish_non_exhaustive()
    }
}

/// A scheduled event as listings show it.
pub fn listed(delay_id: &str, event: &DelayedEventRecord) -> Value {
    let mut item = json!({
        "delay_id": delay_id,
        "room_id": event.room_id,
        "type": event.event_type,
        "content": event.content,
        "delay": event.delay_ms,
        "running_since": event.running_since,
        // The same two under the names Synapse uses for one event.
        "delay_ms": event.delay_ms,
        "delayed_since_ts": event.running_since,
    });
    if let (Some(key), Some(object)) = (&event.state_key, item.as_object_mut()) {
        object.insert("state_key".to_owned(), json!(key));
    }
    item
}

/// A finalised event as listings show it.
pub fn listed_finalised(record: &FinalisedDelayedRecord) -> Value {
    let mut item = json!({
        "delayed_event": listed(&record.delay_id, &record.event),
        "outcome": record.outcome,
        "reason": record.reason,
        "finalised_ts": record.finalised_ts,
    });
    if let Some(object) = item.as_object_mut() {
        if let Some(error) = &record.error {
            object.insert("error".to_owned(), error.clone());
        }
        if let Some(event_id) = &record.event_id {
            object.insert("event_id".to_owned(), json!(event_id));
            object.insert("origin_server_ts".to_owned(), json!(record.finalised_ts));
        }
    }
    item
}

/// Takes a scheduled event out of the schedule, in `batch`.
fn unschedule(batch: &mut Batch, delay_id: &str, event: &DelayedEventRecord) {
    batch.delete::<DelayedEvents>(&delay_id.to_owned());
    batch.delete::<DelayedDue>(&(event.due(), delay_id.to_owned()));
    batch.delete::<DelayedByUser>(&(event.user_id.clone(), delay_id.to_owned()));
}

/// Records what became of a delayed event, in `batch`, for its sender's listing.
fn finalise(batch: &mut Batch, delay_id: &str, event: DelayedEventRecord, outcome: Finalised) -> Result<()> {
    let Finalised { outcome, reason, error, event_id } = outcome;
    let record = FinalisedDelayedRecord {
        delay_id: delay_id.to_owned(),
        event,
        outcome: outcome.to_owned(),
        reason: reason.to_owned(),
        error,
        event_id,
        finalised_ts: now_ms(),
    };
    let key = (record.event.user_id.clone(), record.finalised_ts, delay_id.to_owned());
    batch.put::<DelayedFinalised>(&key, &record)?;
    Ok(())
}

/// What became of a delayed event: `send` or `cancel`, and why.
struct Finalised {
    outcome: &'static str,
    reason: &'static str,
    error: Option<Value>,
    event_id: Option<OwnedEventId>,
}

/// How sending a claimed event ended.
enum SendOutcome {
    Sent(OwnedEventId),
    /// Someone else set the same state since it was scheduled: that newer state stands.
    Superseded,
    Failed(Error),
}

impl SendOutcome {
    fn into_result(self) -> Result<()> {
        match self {
            Self::Sent(_) => Ok(()),
            Self::Superseded => {
                Err(Error::forbidden("Someone else has set this state since the event was scheduled"))
            }
            Self::Failed(error) => Err(error),
        }
    }
}

/// A Matrix error body for the listing of a finalised event.
fn error_body(error: &Error) -> Value {
    let (_, kind) = error.status_and_kind();
    let message = if error.is_internal() { "Internal server error".to_owned() } else { error.to_string() };
    serde_json::to_value(ruma::api::error::StandardErrorBody::new(kind, message))
        .unwrap_or_else(|_| json!({"errcode": "M_UNKNOWN"}))
}

/// Records how sending a claimed event ended.
fn record_sent(
    db: &Db,
    delay_id: &str,
    event: DelayedEventRecord,
    reason: &'static str,
    sent: &SendOutcome,
) -> Result<()> {
    let outcome = match sent {
        SendOutcome::Sent(event_id) => {
            Finalised { outcome: "send", reason, error: None, event_id: Some(event_id.clone()) }
        }
        SendOutcome::Superseded => Finalised {
            outcome: "cancel",
            reason: "error",
            error: Some(
                json!({"errcode": "M_CANCELLED_BY_STATE_UPDATE", "error": "The state was set again since"}),
            ),
            event_id: None,
        },
        SendOutcome::Failed(error) => {
            Finalised { outcome: "cancel", reason: "error", error: Some(error_body(error)), event_id: None }
        }
    };
    let mut batch = Batch::new();
    finalise(&mut batch, delay_id, event, outcome)?;
    db.write(batch)?;
    Ok(())
}

impl Homeserver {
    /// Schedules an event for `user` to be sent into `room_id` after `delay_ms`; answers the
    /// delay ID. A retried request (same device and transaction, `txn`) gets the same ID.
    #[allow(clippy::too_many_arguments)]
    pub async fn schedule_delayed(
        &self,
        user: &UserId,
        device: &DeviceId,
        room_id: &RoomId,
        event_type: String,
        state_key: Option<String>,
        content: Value,
        delay_ms: u64,
        txn: Option<String>,
    ) -> Result<String> {
        let limits = &self.config.calls;
        if limits.max_delay_ms == 0 {
            return Err(Error::forbidden("Sending delayed events has been disallowed"));
        }
        if delay_ms > limits.max_delay_ms {
            return Err(Error::MaxDelayExceeded { max_delay_ms: limits.max_delay_ms });
        }
        if !self.rooms.exists(room_id)? {
            return Err(Error::not_found("Unknown room"));
        }
        let record = DelayedEventRecord {
            user_id: user.to_owned(),
            device_id: device.to_owned(),
            room_id: room_id.to_owned(),
            event_type,
            state_key,
            content,
            delay_ms,
            running_since: now_ms(),
            scheduled_at_pos: self.streams.published(),
        };
        let hs = self.clone();
        let max = limits.max_delayed_per_user;
        let delay_id = blocking(move || {
            let _claim = hs.delayed.claim.lock().unwrap_or_else(PoisonError::into_inner);
            let _shared = hs.db.shared_lock(hearth_storage::engine::LockKind::Create, "delayed")?;
            let txn_key = txn.map(|t| {
                (record.user_id.clone(), record.device_id.clone(), format!("{}/{t}", record.room_id))
            });
            if let Some(key) = &txn_key
                && let Some(existing) = hs.db.get::<DelayedTxns>(key)?
            {
                return Ok(existing);
            }
            let mut pending = 0;
            let mut soonest = u64::MAX;
            for row in hs.db.scan_prefix::<DelayedByUser, _>(&record.user_id)? {
                let ((_, id), ()) = row?;
                pending += 1;
                if let Some(event) = hs.db.get::<DelayedEvents>(&id)? {
                    soonest = soonest.min(event.due());
                }
            }
            if pending >= max {
                let wait = Duration::from_millis(soonest.saturating_sub(now_ms()).max(1000));
                return Err(Error::limit_exceeded(
                    "The maximum number of delayed events has been reached.",
                    wait,
                ));
            }
            let delay_id = format!("hd_{}", random_string(20));
            let mut batch = Batch::new();
            batch.put::<DelayedEvents>(&delay_id, &record)?;
            batch.put::<DelayedDue>(&(record.due(), delay_id.clone()), &())?;
            batch.put::<DelayedByUser>(&(record.user_id.clone(), delay_id.clone()), &())?;
            if let Some(key) = &txn_key {
                batch.put::<DelayedTxns>(key, &delay_id)?;
            }
            hs.db.write(batch)?;
            Ok(delay_id)
        })
        .await?;
        self.delayed.wake.notify_one();
        Ok(delay_id)
    }

    /// `user`'s scheduled events (soonest first) and what became of the recent others (newest
    /// first).
    pub async fn delayed_events_of(
        &self,
        user: &UserId,
    ) -> Result<(Vec<(String, DelayedEventRecord)>, Vec<FinalisedDelayedRecord>)> {
        let (db, user) = (self.db.clone(), user.to_owned());
        blocking(move || {
            let mut scheduled = Vec::new();
            for row in db.scan_prefix::<DelayedByUser, _>(&user)? {
                let ((_, id), ()) = row?;
                if let Some(event) = db.get_lenient::<DelayedEvents>(&id)? {
                    scheduled.push((id, event));
                }
            }
            scheduled.sort_by_key(|(_, e)| e.due());
            let mut finalised = Vec::new();
            let rows = db.range::<DelayedFinalised>(
                Bound::Included(&(user.clone(), 0, String::new())),
                Bound::Included(&(user.clone(), u64::MAX, String::new())),
                Direction::Backward,
            )?;
            for row in rows.lenient().take(MAX_FINALISED_LISTED) {
                if let (_, Some(record)) = row? {
                    finalised.push(record);
                }
            }
            Ok((scheduled, finalised))
        })
        .await
    }

    /// One of `user`'s scheduled events.
    pub fn delayed_event_of(&self, user: &UserId, delay_id: &str) -> Result<Option<DelayedEventRecord>> {
        Ok(self.db.get::<DelayedEvents>(&delay_id.to_owned())?.filter(|event| event.user_id == user))
    }

    /// Restarts, sends or cancels a scheduled event; whoever holds its ID may.
    pub async fn update_delayed(&self, delay_id: &str, action: DelayAction) -> Result<()> {
        let (hs, id) = (self.clone(), delay_id.to_owned());
        let claimed = blocking(move || {
            let _claim = hs.delayed.claim.lock().unwrap_or_else(PoisonError::into_inner);
            let _shared = hs.db.shared_lock(hearth_storage::engine::LockKind::Create, "delayed")?;
            let Some(mut event) = hs.db.get::<DelayedEvents>(&id)? else {
                return Err(Error::not_found("Delayed event not found"));
            };
            let mut batch = Batch::new();
            match action {
                DelayAction::Restart => {
                    batch.delete::<DelayedDue>(&(event.due(), id.clone()));
                    event.running_since = now_ms();
                    batch.put::<DelayedDue>(&(event.due(), id.clone()), &())?;
                    batch.put::<DelayedEvents>(&id, &event)?;
                    hs.db.write(batch)?;
                    Ok(None)
                }
                DelayAction::Cancel => {
                    unschedule(&mut batch, &id, &event);
                    let cancelled =
                        Finalised { outcome: "cancel", reason: "action", error: None, event_id: None };
                    finalise(&mut batch, &id, event, cancelled)?;
                    hs.db.write(batch)?;
                    Ok(None)
                }
                DelayAction::Send => {
                    unschedule(&mut batch, &id, &event);
                    hs.db.write(batch)?;
                    Ok(Some(event))
                }
            }
        })
        .await?;
        self.delayed.wake.notify_one();
        if let Some(event) = claimed {
            let sent = self.send_delayed(&event).await;
            let (db, id) = (self.db.clone(), delay_id.to_owned());
            let sent = blocking(move || record_sent(&db, &id, event, "action", &sent).map(|()| sent)).await?;
            sent.into_result()?;
        }
        Ok(())
    }

    /// Sends a claimed event as its sender, unless someone else has set the same state since
    /// it was scheduled (that newer state wins).
    async fn send_delayed(&self, event: &DelayedEventRecord) -> SendOutcome {
        match self.try_send_delayed(event).await {
            Ok(Some(event_id)) => SendOutcome::Sent(event_id),
            Ok(None) => SendOutcome::Superseded,
            Err(error) => SendOutcome::Failed(error),
        }
    }

    async fn try_send_delayed(&self, event: &DelayedEventRecord) -> Result<Option<OwnedEventId>> {
        let kind = TimelineEventType::from(event.event_type.as_str());
        let new = match &event.state_key {
            Some(key) => {
                let current = self.rooms.current_state_event(&event.room_id, &event.event_type, key)?;
                if let Some(current) = current
                    && current.sender != event.user_id
                    && let Some(record) = self.rooms.pdu_record(&current.event_id)?
                    && record.stream_pos.is_some_and(|pos| pos > event.scheduled_at_pos)
                {
                    return Ok(None);
                }
                NewEvent::state(kind, key.clone(), event.content.clone())
            }
            None => NewEvent::message(kind, event.content.clone()),
        };
        Ok(Some(self.rooms.append(&event.room_id, &event.user_id, new, None).await?))
    }

    /// Claims the soonest event if it is due: `Ok(None)` when none is, with when the next is.
    fn claim_due(&self) -> Result<Result<(String, DelayedEventRecord), Option<u64>>> {
        let _claim = self.delayed.claim.lock().unwrap_or_else(PoisonError::into_inner);
        let _shared = self.db.shared_lock(hearth_storage::engine::LockKind::Create, "delayed")?;
        let first =
            self.db.range::<DelayedDue>(Bound::Unbounded, Bound::Unbounded, Direction::Forward)?.next();
        let Some(row) = first else { return Ok(Err(None)) };
        let ((due, id), ()) = row?;
        if due > now_ms() {
            return Ok(Err(Some(due)));
        }
        let mut batch = Batch::new();
        match self.db.get_lenient::<DelayedEvents>(&id)? {
            Some(event) => {
                unschedule(&mut batch, &id, &event);
                self.db.write(batch)?;
                Ok(Ok((id, event)))
            }
            None => {
                // An index row without its event (or with one that no longer reads): drop it,
                // so it cannot hold up the ones behind it.
                batch.delete::<DelayedDue>(&(due, id));
                self.db.write(batch)?;
                Ok(Err(Some(now_ms())))
            }
        }
    }

    /// Sends delayed events as they fall due, until `stop` completes.
    pub async fn run_delayed_sender(&self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut prune_at = now_ms();
        loop {
            if now_ms() >= prune_at {
                prune_at = now_ms() + IDLE.as_millis() as u64 * 60;
                let db = self.db.clone();
                if let Err(error) = blocking(move || prune_finalised(&db)).await {
                    tracing::warn!(%error, "pruning finalised delayed events failed");
                }
            }
            let hs = self.clone();
            let next = match blocking(move || hs.claim_due()).await {
                Ok(Ok((id, event))) => {
                    let sent = self.send_delayed(&event).await;
                    if let SendOutcome::Failed(error) = &sent {
                        tracing::info!(delay_id = %id, %error, "a delayed event could not be sent; dropped");
                    }
                    let db = self.db.clone();
                    if let Err(error) = blocking(move || record_sent(&db, &id, event, "delay", &sent)).await {
                        tracing::warn!(%error, "recording a sent delayed event failed");
                    }
                    continue;
                }
                Ok(Err(next)) => next,
                Err(error) => {
                    tracing::warn!(%error, "reading the delayed events failed");
                    Some(now_ms() + 5000)
                }
            };
            let wait = next.map_or(IDLE, |at| Duration::from_millis(at.saturating_sub(now_ms())).min(IDLE));
            tokio::select! {
                () = &mut stop => return,
                () = self.delayed.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// Cancels everything `user` has scheduled, in `batch` (their account is being deactivated:
/// nothing may be sent in their name afterwards).
pub(crate) fn cancel_all_of(db: &Db, batch: &mut Batch, user: &UserId) -> Result<()> {
    for row in db.scan_prefix::<DelayedByUser, _>(&user.to_owned())? {
        let ((_, id), ()) = row?;
        match db.get_lenient::<DelayedEvents>(&id)? {
            Some(event) => unschedule(batch, &id, &event),
            None => batch.delete::<DelayedByUser>(&(user.to_owned(), id)),
        }
    }
    Ok(())
}

/// Drops finalised events older than a week.
fn prune_finalised(db: &Db) -> Result<usize> {
    let before = now_ms().saturating_sub(KEEP_FINALISED_MS);
    let mut batch = Batch::new();
    let mut pruned = 0;
    for row in db.range::<DelayedFinalised>(Bound::Unbounded, Bound::Unbounded, Direction::Forward)?.lenient()
    {
        let (key, _) = row?;
        if key.1 < before {
            batch.delete::<DelayedFinalised>(&key);
            pruned += 1;
        }
    }
    if pruned > 0 {
        db.write(batch)?;
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests;
