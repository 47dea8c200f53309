//! Push rules evaluated for every event that lands in a room, local or received: whom it
//! notifies (and highlights), written in the event's own batch so that the counts a sync reads
//! always match the timeline it reads.

use ruma::events::room::member::MembershipState;
use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

use hearth_storage::{
    Batch,
    records::{NotificationRecord, PushActionRecord},
    schema::{Notifications, PushActions},
};
use ruma::{
    OwnedUserId, RoomId, UInt, UserId,
    events::{
        TimelineEventType,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    },
    push::{Action, AnyPushRuleRef, FlattenedJson, PushCondition, PushConditionRoomCtx, Ruleset},
    room_version_rules::RoomVersionRules,
    serde::Raw,
};

use super::{Rooms, members::Members};
use crate::{
    Error, Result,
    events::Pdu,
    push::{self, ReadScope},
    util::now_ms,
};

/// Runs a future that never waits. Rule evaluation is `async` in ruma only for thread
/// subscriptions (MSC4306), which Hearth does not enable, so every condition is ready at once;
/// one that were not would simply not match.
fn ready<F: Future>(future: F) -> Option<F::Output> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => Some(out),
        Poll::Pending => None,
    }
}

/// Whether a rule needs the user's display name (the legacy `contains_display_name`).
#[allow(deprecated)]
fn needs_display_name(rule: AnyPushRuleRef<'_>) -> bool {
    match rule {
        AnyPushRuleRef::Override(rule) | AnyPushRuleRef::Underride(rule) => {
            rule.conditions.iter().any(|c| matches!(c, PushCondition::ContainsDisplayName))
        }
        _ => false,
    }
}

/// The actions of the first rule that applies. A user without a display name is never matched
/// by one (as Synapse): an empty name would otherwise match an empty body.
fn actions_for<'a>(rules: &'a Ruleset, event: &FlattenedJson, ctx: &PushConditionRoomCtx) -> &'a [Action] {
    for rule in rules {
        if ctx.user_display_name.is_empty() && needs_display_name(rule) {
            continue;
        }
        if ready(rule.applies(event, ctx)).unwrap_or(false) {
            return rule.actions();
        }
    }
    &[]
}

/// An event about to be stored: parsed, as stored, and at its stream position.
#[derive(Clone, Copy)]
pub(super) struct Landing<'a> {
    pub pdu: &'a Pdu,
    pub json: &'a str,
    pub pos: u64,
}

impl Rooms {
    /// Evaluates the push rules of the room's local members (and of a local invitee) for an
    /// event at stream position `pos`, and writes what notifies into `batch`. The sender's own
    /// event marks what they had unread in its thread as read.
    pub(super) fn record_push_actions(
        &self,
        batch: &mut Batch,
        room_id: &RoomId,
        event: Landing<'_>,
        members: &Members,
        rules: &RoomVersionRules,
    ) -> Result<()> {
        let Landing { pdu, json, pos } = event;
        let own = &self.inner.server_name;
        let db = self.db();
        let thread = push::thread_of(pdu);
        if pdu.sender.server_name() == own {
            let scope = thread.clone().map_or(ReadScope::Main, ReadScope::Thread);
            push::mark_read(db, batch, &pdu.sender, room_id, pos, &scope)?;
        }
        let mut targets: Vec<&UserId> =
            members.local.iter().map(AsRef::as_ref).filter(|u| *u != pdu.sender).collect();
        let invitee = (pdu.kind == TimelineEventType::RoomMember
            && pdu.membership() == Some(MembershipState::Invite))
        .then(|| pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok()))
        .flatten()
        .filter(|u| u.server_name() == own && *u != pdu.sender);
        if let Some(invitee) = &invitee
            && !targets.contains(&invitee.as_ref())
        {
            targets.push(invitee);
        }
        if targets.is_empty() {
            return Ok(());
        }

        let raw = Raw::<serde_json::Value>::from_json_string(json.to_owned()).map_err(Error::internal)?;
        let flattened = FlattenedJson::from_raw(&raw);
        let member_count = UInt::try_from(members.joined.len()).unwrap_or(UInt::MAX);
        let mut ctx =
            PushConditionRoomCtx::new(room_id.to_owned(), member_count, pdu.sender.clone(), String::new())
                .with_power_levels(self.power_levels_for_push(room_id, rules)?.into());
        let ts = now_ms();
        for user in targets {
            let ruleset = self.inner.push.rules.get(db, user)?;
            ctx.user_id = user.to_owned();
            ctx.user_display_name =
                self.display_name(members, room_id, user)?.as_deref().unwrap_or("").to_owned();
            let actions = actions_for(&ruleset, &flattened, &ctx);
            if !actions.iter().any(Action::should_notify) {
                continue;
            }
            let highlight = actions.iter().any(Action::is_highlight);
            let user: OwnedUserId = user.to_owned();
            let record = PushActionRecord { thread: thread.clone(), highlight };
            batch.put::<PushActions>(&(user.clone(), room_id.to_owned(), pos), &record)?;
            let actions = serde_json::to_value(actions).map_err(Error::internal)?;
            let notification = NotificationRecord {
                room_id: room_id.to_owned(),
                event_id: pdu.event_id.clone(),
                actions,
                highlight,
                ts,
            };
            batch.put::<Notifications>(&(user.clone(), pos), &notification)?;
            push::pushers::queue(db, batch, &user, &notification, pos)?;
        }
        Ok(())
    }

    /// The room's power levels as push rules read them (who may notify `@room`).
    fn power_levels_for_push(&self, room_id: &RoomId, rules: &RoomVersionRules) -> Result<RoomPowerLevels> {
        let content = match self.current_state_event(room_id, "m.room.power_levels", "")? {
            Some(event) => serde_json::from_str::<RoomPowerLevelsEventContent>(event.content.get()).ok(),
            None => None,
        };
        let mut creators = self.privileged_creators(room_id)?;
        if creators.is_empty()
            && let Some(create) = self.current_state_event(room_id, "m.room.create", "")?
        {
            creators.push(create.sender);
        }
        Ok(RoomPowerLevels::new(RoomPowerLevelsSource::from(content), &rules.authorization, creators))
    }
}
