//! Delivery of queued notifications to push gateways (Push Gateway API), one pusher's queue in
//! order, each pusher on its own backoff so that one gateway that is down delays no other.
//!
//! The queue is durable (`PushQueue`, written in the event's batch): a restart resumes where
//! delivery stopped, and a gateway that was down gets what it missed once it answers again,
//! unless the notification has meanwhile been read or is older than [`MAX_AGE_MS`].

use std::{
    collections::HashMap,
    ops::Bound,
    time::{Duration, Instant},
};

use hearth_storage::{Direction, records::PushQueueItem, schema::PushActions, schema::PushQueue};
use ruma::{
    OwnedUserId, UInt, UserId,
    api::{
        client::push::PusherKind,
        push_gateway::send_event_notification::v1::{
            Device, Notification, NotificationCounts, NotificationPriority, PusherData,
        },
    },
    push::{Action, PushFormat, Tweak},
};

use super::{
    channels::MailNext,
    pushers::{self, StoredPusher},
};
use crate::{Homeserver, Result, users::blocking, util::now_ms};

/// Notifications older than this are dropped rather than delivered late (a day).
pub const MAX_AGE_MS: u64 = 24 * 60 * 60 * 1000;
/// Notifications one pusher delivers per round, so that a long backlog shares the sender.
const PER_ROUND: usize = 50;
/// How long a gateway may take to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often notifications older than [`super::KEEP_NOTIFICATIONS_MS`] are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60 * 60);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);

type PusherKey = (OwnedUserId, String, String);

/// What one delivery attempt came to.
pub(super) enum Outcome {
    /// Delivered, or given up on for good (the gateway refused it): the next one can go.
    Done,
    /// The gateway named the pushkey as rejected: the pusher is deleted.
    Rejected,
    /// Try again later.
    Retry(String),
}

/// Per-pusher retry state, in memory: a restart retries everything at once, which is right
/// after a restart.
#[derive(Debug, Default)]
struct Backoffs {
    pushers: HashMap<PusherKey, (Instant, Duration)>,
}

impl Backoffs {
    fn failed(&mut self, key: PusherKey) {
        let entry = self.pushers.entry(key).or_insert((Instant::now(), FIRST_BACKOFF / 2));
        entry.1 = (entry.1 * 2).min(MAX_BACKOFF);
        entry.0 = Instant::now() + entry.1;
    }

    /// Holds a pusher back until `at` without counting a failure (a mail not yet due).
    fn wait_until(&mut self, key: PusherKey, at: Instant) {
        self.pushers.insert(key, (at, FIRST_BACKOFF / 2));
    }

    fn succeeded(&mut self, key: &PusherKey) {
        self.pushers.remove(key);
    }

    /// When the soonest waiting pusher may try again.
    fn next_retry(&self) -> Option<Instant> {
        self.pushers.values().map(|(until, _)| *until).min()
    }
}

impl Homeserver {
    /// Delivers queued notifications until `stop` completes. Woken by `pusher_wake` (new work)
    /// and by the soonest backoff running out.
    pub async fn run_push_sender(&self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut backoffs = Backoffs::default();
        let mut prune_at = Instant::now();
        loop {
            if Instant::now() >= prune_at {
                prune_at = Instant::now() + PRUNE_EVERY;
                let db = self.db.clone();
                let before = now_ms().saturating_sub(super::KEEP_NOTIFICATIONS_MS);
                match blocking(move || super::prune_notifications(&db, before)).await {
                    Ok(0) => {}
                    Ok(pruned) => tracing::info!(pruned, "pruned old notifications"),
                    Err(error) => tracing::warn!(%error, "pruning old notifications failed"),
                }
            }
            let more = match self.push_round(&mut backoffs).await {
                Ok(more) => more,
                Err(error) => {
                    tracing::warn!(%error, "push delivery round failed");
                    false
                }
            };
            if more {
                continue;
            }
            let retry = backoffs.next_retry().map(tokio::time::Instant::from_std);
            let retry = retry.unwrap_or_else(|| tokio::time::Instant::now() + MAX_BACKOFF);
            tokio::select! {
                () = &mut stop => return,
                () = self.pusher_wake.notified() => {}
                () = tokio::time::sleep_until(retry) => {}
            }
        }
    }

    /// One round over every pusher with queued notifications. Returns whether a pusher still
    /// has some it could send now.
    async fn push_round(&self, backoffs: &mut Backoffs) -> Result<bool> {
        let db = self.db.clone();
        let now = Instant::now();
        // Pushers backing off are left out of the round.
        let waiting: Vec<PusherKey> =
            backoffs.pushers.iter().filter(|(_, (until, _))| *until > now).map(|(k, _)| k.clone()).collect();
        let work = blocking(move || pending(&db, &waiting)).await?;
        let mut more = false;
        for (key, items) in work {
            more |= items.len() == PER_ROUND;
            let (user, app_id, pushkey) = &key;
            let Some(pusher) = pushers::get(&self.db, user, app_id, pushkey)? else {
                // Queued for a pusher that is gone: nothing will ever send it.
                self.drop_queued(&key, items.iter().map(|(pos, _)| *pos).collect()).await?;
                continue;
            };
            if pusher.kind() == pushers::EMAIL_KIND {
                let round = self.deliver_mail(&pusher, &items).await?;
                self.drop_queued(&key, round.delivered).await?;
                match round.next {
                    MailNext::Idle => backoffs.succeeded(&key),
                    MailNext::At(at) => backoffs.wait_until(key.clone(), at),
                    MailNext::Retry(reason) => {
                        tracing::info!(%user, %reason, "notification e-mail failed; will retry");
                        backoffs.failed(key.clone());
                    }
                }
                continue;
            }
            for (pos, item) in items {
                let Some(item) = item else {
                    tracing::warn!(%user, pos, "dropped a queued notification that does not decode");
                    self.drop_queued(&key, vec![pos]).await?;
                    continue;
                };
                match self.deliver(&pusher, pos, &item).await? {
                    Outcome::Done => {
                        backoffs.succeeded(&key);
                        self.drop_queued(&key, vec![pos]).await?;
                    }
                    Outcome::Rejected => {
                        tracing::info!(%user, %app_id, "push gateway rejected the pushkey; pusher removed");
                        backoffs.succeeded(&key);
                        self.delete_pusher(user, app_id, pushkey).await?;
                        break;
                    }
                    Outcome::Retry(reason) => {
                        tracing::info!(%user, %app_id, %reason, "push delivery failed; will retry");
                        backoffs.failed(key.clone());
                        break;
                    }
                }
            }
        }
        Ok(more)
    }

    async fn drop_queued(&self, (user, app_id, pushkey): &PusherKey, positions: Vec<u64>) -> Result<()> {
        let db = self.db.clone();
        let keys: Vec<_> =
            positions.into_iter().map(|pos| (user.clone(), app_id.clone(), pushkey.clone(), pos)).collect();
        blocking(move || {
            let mut batch = hearth_storage::Batch::new();
            for key in &keys {
                batch.delete::<PushQueue>(key);
            }
            Ok(db.write(batch)?)
        })
        .await
    }

    /// Whether a queued notification no longer needs sending: read meanwhile, or too old.
    pub(super) fn settled(&self, pusher: &StoredPusher, pos: u64, item: &PushQueueItem) -> Result<bool> {
        let key = (pusher.user_id.clone(), item.room_id.clone(), pos);
        Ok(!self.db.contains::<PushActions>(&key)? || now_ms().saturating_sub(item.ts) > MAX_AGE_MS)
    }

    /// Sends one notification through one pusher (HTTP or SMS).
    async fn deliver(&self, pusher: &StoredPusher, pos: u64, item: &PushQueueItem) -> Result<Outcome> {
        if self.settled(pusher, pos, item)? {
            return Ok(Outcome::Done);
        }
        let user = &pusher.user_id;
        let PusherKind::Http(data) = &pusher.pusher.kind else {
            return self.deliver_sms(pusher, item).await;
        };
        let notification = self.gateway_notification(pusher, item)?;
        let body = serde_json::to_vec(&serde_json::json!({ "notification": notification }))
            .map_err(crate::Error::internal)?;
        let request = http::Request::post(&data.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body)
            .map_err(|e| crate::Error::internal(format!("push request: {e}")))?;
        let response = match self.gateway_exchange(request, "push gateway", user).await {
            Ok(response) => response,
            Err(outcome) => return Ok(outcome),
        };
        #[derive(serde::Deserialize)]
        struct Answer {
            #[serde(default)]
            rejected: Vec<String>,
        }
        let rejected =
            serde_json::from_slice::<Answer>(response.body()).map(|a| a.rejected).unwrap_or_default();
        Ok(if rejected.contains(&pusher.pusher.ids.pushkey) { Outcome::Rejected } else { Outcome::Done })
    }

    /// Sends a request to a gateway (push or SMS) and hands back a successful response. A
    /// refusal of the request as such (4xx but 429) ends its delivery (logged): sending it
    /// again would not help; anything else is retried later.
    pub(super) async fn gateway_exchange(
        &self,
        request: http::Request<Vec<u8>>,
        gateway: &str,
        user: &UserId,
    ) -> std::result::Result<http::Response<Vec<u8>>, Outcome> {
        let response = match tokio::time::timeout(REQUEST_TIMEOUT, self.http.send(request)).await {
            Err(_) => return Err(Outcome::Retry(format!("the {gateway} did not answer in time"))),
            Ok(Err(error)) => return Err(Outcome::Retry(error.to_string())),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        if status.is_client_error() && status != http::StatusCode::TOO_MANY_REQUESTS {
            tracing::warn!(%status, %user, "the {gateway} refused a notification; dropped");
            return Err(Outcome::Done);
        }
        Err(Outcome::Retry(format!("the {gateway} answered {status}")))
    }

    /// The Push Gateway API's notification for one queued item.
    fn gateway_notification(&self, pusher: &StoredPusher, item: &PushQueueItem) -> Result<Notification> {
        let PusherKind::Http(data) = &pusher.pusher.kind else {
            return Err(crate::Error::internal("not an HTTP pusher"));
        };
        let actions: Vec<Action> = serde_json::from_value(item.actions.clone()).unwrap_or_default();
        let mut device = Device::new(pusher.pusher.ids.app_id.clone(), pusher.pusher.ids.pushkey.clone());
        let mut device_data = PusherData::new();
        device_data.format = data.format.clone();
        device_data.data = data.data.clone();
        device.data = device_data;
        device.tweaks = actions
            .iter()
            .filter_map(|a| match a {
                Action::SetTweak(tweak) => Some(tweak.clone()),
                _ => None,
            })
            .collect::<Vec<Tweak>>();
        let mut notification = Notification::new(vec![device]);
        let unread = self.rooms_with_unread(&pusher.user_id)?;
        notification.counts = NotificationCounts::new(UInt::try_from(unread).unwrap_or(UInt::MAX), UInt::MIN);
        notification.event_id = Some(item.event_id.clone());
        notification.room_id = Some(item.room_id.clone());
        let urgent = actions.iter().any(|a| a.is_highlight() || a.sound().is_some());
        notification.prio = if urgent { NotificationPriority::High } else { NotificationPriority::Low };
        if data.format == Some(PushFormat::EventIdOnly) {
            return Ok(notification);
        }
        let Some(event) = self.rooms.pdu(&item.event_id)? else { return Ok(notification) };
        notification.event_type = Some(event.kind.clone());
        notification.user_is_target = event.state_key.as_deref() == Some(pusher.user_id.as_str());
        notification.sender_display_name = self.rooms.member_display_name(&item.room_id, &event.sender)?;
        notification.sender = Some(event.sender.clone());
        let summary = self.rooms.summary(&item.room_id)?;
        notification.room_name = summary.name;
        notification.room_alias = summary.canonical_alias.and_then(|a| a.try_into().ok());
        notification.content = Some(event.content.clone());
        Ok(notification)
    }

    /// The badge a phone shows: the rooms with unread notifications (as Synapse counts by
    /// default).
    pub fn rooms_with_unread(&self, user: &UserId) -> Result<u64> {
        let mut rooms = 0;
        let mut last = None;
        for row in self.db.scan_prefix::<PushActions, _>(&user.to_owned())? {
            let ((_, room_id, _), _) = row?;
            if last.as_ref() != Some(&room_id) {
                rooms += 1;
                last = Some(room_id);
            }
        }
        Ok(rooms)
    }
}

/// Queued notifications of one pusher, by position; `None` for a row that does not decode.
pub(super) type Queued = Vec<(u64, Option<PushQueueItem>)>;

/// Each pusher with queued notifications (leaving out those in `waiting`), with up to
/// [`PER_ROUND`] of them in order.
fn pending(db: &hearth_storage::Db, waiting: &[PusherKey]) -> Result<Vec<(PusherKey, Queued)>> {
    let mut out: Vec<(PusherKey, Queued)> = Vec::new();
    let mut lower: Option<(OwnedUserId, String, String, u64)> = None;
    loop {
        let from = lower.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut rows = db.range::<PushQueue>(from, Bound::Unbounded, Direction::Forward)?.lenient();
        let Some(first) = rows.next() else { break };
        let ((user, app_id, pushkey, pos), item) = first?;
        let key: PusherKey = (user, app_id, pushkey);
        // Next time, start after every row of this pusher.
        lower = Some((key.0.clone(), key.1.clone(), key.2.clone(), u64::MAX));
        if waiting.contains(&key) {
            continue;
        }
        let mut items: Queued = vec![(pos, item)];
        for row in rows {
            let ((u, a, p, pos), item) = row?;
            if (&u, &a, &p) != (&key.0, &key.1, &key.2) || items.len() == PER_ROUND {
                break;
            }
            items.push((pos, item));
        }
        out.push((key, items));
    }
    Ok(out)
}
