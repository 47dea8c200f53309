//! The channels beyond push gateways: notification e-mails (one mail for everything still
//! unread once the oldest has waited `email.notif_delay_secs`) and text messages for mentions.

use std::time::{Duration, Instant};

use base64::{Engine, engine::general_purpose::STANDARD};
use ruma::{RoomId, events::TimelineEventType, push::Action};

use super::{
    mail::{Mail, Shown, render, sms_text},
    pushers::{self, StoredPusher},
    sender::{Outcome, Queued},
};
use crate::{Error, Homeserver, Result, util::now_ms};
use hearth_storage::records::PushQueueItem;

/// What an e-mail pusher does after a round.
pub(super) enum MailNext {
    /// Nothing left to send.
    Idle,
    /// Something is unread but not yet due: look again then.
    At(Instant),
    /// The mail could not be sent now.
    Retry(String),
}

pub(super) struct MailRound {
    /// Queue positions that are done with: mailed, read meanwhile, or given up on.
    pub delivered: Vec<u64>,
    pub next: MailNext,
}

impl Homeserver {
    /// One round of an e-mail pusher over its queue (oldest first).
    pub(super) async fn deliver_mail(&self, pusher: &StoredPusher, items: &Queued) -> Result<MailRound> {
        let mut delivered = Vec::new();
        let mut unread: Vec<(u64, &PushQueueItem)> = Vec::new();
        for (pos, item) in items {
            match item {
                Some(item) if !self.settled(pusher, *pos, item)? => unread.push((*pos, item)),
                _ => delivered.push(*pos),
            }
        }
        let Some(oldest) = unread.iter().map(|(_, item)| item.ts).min() else {
            return Ok(MailRound { delivered, next: MailNext::Idle });
        };
        let delay_ms = self.config.email.notif_delay_secs.saturating_mul(1000);
        let due = oldest.saturating_add(delay_ms);
        let now = now_ms();
        if now < due {
            let at = Instant::now() + Duration::from_millis(due - now);
            return Ok(MailRound { delivered, next: MailNext::At(at) });
        }
        let Some(mailer) = &self.mailer else {
            // E-mail was switched off after the pusher was made: nothing can be sent.
            delivered.extend(unread.iter().map(|(pos, _)| *pos));
            return Ok(MailRound { delivered, next: MailNext::Idle });
        };
        let mut shown = Vec::with_capacity(unread.len());
        for (_, item) in &unread {
            shown.push(self.shown(&item.room_id, &item.event_id)?);
        }
        let ids = &pusher.pusher.ids;
        let unsubscribe_url = self.unsubscribe_url(&pusher.user_id, &ids.app_id, &ids.pushkey);
        let (subject, text, html) = render(&self.config.email.app_name, &shown, &unsubscribe_url);
        let mail = Mail { to: ids.pushkey.clone(), subject, text, html, unsubscribe_url };
        match mailer.send(mail).await {
            Ok(()) => {
                delivered.extend(unread.iter().map(|(pos, _)| *pos));
                Ok(MailRound { delivered, next: MailNext::Idle })
            }
            Err(error) if error.transient => {
                Ok(MailRound { delivered, next: MailNext::Retry(error.message) })
            }
            Err(error) => {
                tracing::warn!(user = %pusher.user_id, %error, "the SMTP server refused a notification e-mail");
                delivered.extend(unread.iter().map(|(pos, _)| *pos));
                Ok(MailRound { delivered, next: MailNext::Idle })
            }
        }
    }

    /// Sends a text message for a mention (other notifications send none).
    pub(super) async fn deliver_sms(&self, pusher: &StoredPusher, item: &PushQueueItem) -> Result<Outcome> {
        let actions: Vec<Action> = serde_json::from_value(item.actions.clone()).unwrap_or_default();
        let sms = &self.config.sms;
        let Some(api_url) = sms.api_url.as_deref().filter(|_| pusher.kind() == pushers::SMS_KIND) else {
            return Ok(Outcome::Done);
        };
        if !actions.iter().any(Action::is_highlight) {
            return Ok(Outcome::Done);
        }
        let text = sms_text(&self.config.email.app_name, &self.shown(&item.room_id, &item.event_id)?);
        let url = format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            api_url.trim_end_matches('/'),
            sms.account_sid
        );
        let form = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("To", &pusher.pusher.ids.pushkey)
            .append_pair("From", &sms.from)
            .append_pair("Body", &text)
            .finish();
        let credentials = STANDARD.encode(format!("{}:{}", sms.account_sid, sms.auth_token));
        let request = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::AUTHORIZATION, format!("Basic {credentials}"))
            .body(form.into_bytes())
            .map_err(|e| Error::internal(format!("SMS request: {e}")))?;
        Ok(match self.gateway_exchange(request, "SMS gateway", &pusher.user_id).await {
            Ok(_) => Outcome::Done,
            Err(outcome) => outcome,
        })
    }

    /// A notification as mails and texts show it: the room's name, the sender's display name,
    /// and the text of a message (never of an encrypted one).
    fn shown(&self, room_id: &RoomId, event_id: &ruma::EventId) -> Result<Shown> {
        let summary = self.rooms.summary(room_id)?;
        let room = summary.name.or(summary.canonical_alias).unwrap_or_else(|| room_id.to_string());
        let Some(event) = self.rooms.pdu(event_id)? else {
            return Ok(Shown { room, sender: "Someone".to_owned(), body: None });
        };
        let sender = self
            .rooms
            .member_display_name(room_id, &event.sender)?
            .unwrap_or_else(|| event.sender.to_string());
        let body =
            (event.kind == TimelineEventType::RoomMessage).then(|| event.content_str("body")).flatten();
        Ok(Shown { room, sender, body })
    }
}
