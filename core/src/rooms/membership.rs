//! Membership changes by local users: join, leave, invite, kick, ban, unban, knock, forget.

use hearth_storage::schema::UserRooms;
use ruma::events::room::join_rules::{AllowRule, JoinRule, RoomJoinRulesEventContent};
use ruma::events::room::member::MembershipState;
use ruma::{OwnedEventId, RoomId, UserId, events::TimelineEventType};
use serde_json::{Value, json};

use super::Rooms;
use crate::{Error, Result, events::NewEvent, users::blocking};

fn member_event(target: &UserId, mut content: Value, reason: Option<String>) -> NewEvent {
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    NewEvent::state(TimelineEventType::RoomMember, target.as_str(), content)
}

impl Rooms {
    fn require_room(&self, room_id: &RoomId) -> Result<()> {
        if !self.exists(room_id)? {
            // Joining a room over federation comes with the federation layer.
            return Err(Error::not_found("No known servers for this room"));
        }
        Ok(())
    }

    /// Joins `user` to a room; `profile` holds their `displayname` and `avatar_url`.
    pub async fn join(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: Value,
        reason: Option<String>,
    ) -> Result<()> {
        if self.membership(room_id, user)? == Some(MembershipState::Join) {
            return Ok(());
        }
        let mut content = profile;
        if let Some(authoriser) = self.restricted_join_authoriser(room_id, user)? {
            content["join_authorised_via_users_server"] = json!(authoriser);
        }
        self.self_membership(room_id, user, MembershipState::Join, content, reason).await
    }

    /// For a restricted room the user is not invited to: when they are in one of the rooms the
    /// join rule allows, a local member who may invite vouches for the join (the
    /// `join_authorised_via_users_server` the auth rules check). `None` when no vouching is
    /// needed or possible; the auth rules then decide.
    pub(crate) fn restricted_join_authoriser(
        &self,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<Option<ruma::OwnedUserId>> {
        let (JoinRule::Restricted(restricted) | JoinRule::KnockRestricted(restricted)) =
            self.join_rule(room_id)?
        else {
            return Ok(None);
        };
        if self.membership(room_id, user)? == Some(MembershipState::Invite) {
            return Ok(None);
        }
        let mut allowed = false;
        for rule in &restricted.allow {
            if let AllowRule::RoomMembership(rule) = rule
                && self.membership(&rule.room_id, user)? == Some(MembershipState::Join)
            {
                allowed = true;
                break;
            }
        }
        if !allowed {
            return Ok(None);
        }
        let levels = self.power_levels(room_id)?;
        for member in self.members_with(room_id, &MembershipState::Join)? {
            if member.server_name() == self.inner.server_name && levels.user_can_invite(&member) {
                return Ok(Some(member));
            }
        }
        Ok(None)
    }

    /// The room's join rule now, typed; without a join rules event, `invite`, as the spec says.
    pub fn join_rule(&self, room_id: &RoomId) -> Result<JoinRule> {
        let Some(event) = self.current_state_event(room_id, "m.room.join_rules", "")? else {
            return Ok(JoinRule::Invite);
        };
        match serde_json::from_str::<RoomJoinRulesEventContent>(event.content.get()) {
            Ok(content) => Ok(content.join_rule),
            Err(error) => {
                // Past the auth rules, so a shape ruma reads more strictly: the safest reading.
                tracing::warn!(%room_id, event_id = %event.event_id, %error, "unreadable join rules");
                Ok(JoinRule::Invite)
            }
        }
    }

    pub async fn knock(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: Value,
        reason: Option<String>,
    ) -> Result<()> {
        self.self_membership(room_id, user, MembershipState::Knock, profile, reason).await
    }

    /// A membership a user sets for themselves, carrying their profile.
    async fn self_membership(
        &self,
        room_id: &RoomId,
        user: &UserId,
        membership: MembershipState,
        profile: Value,
        reason: Option<String>,
    ) -> Result<()> {
        self.require_room(room_id)?;
        let mut content = profile;
        content["membership"] = json!(membership);
        self.append(room_id, user, member_event(user, content, reason), None).await?;
        Ok(())
    }

    /// Leaves a room, or rejects an invite, or withdraws a knock.
    pub async fn leave(&self, room_id: &RoomId, user: &UserId, reason: Option<String>) -> Result<()> {
        self.require_room(room_id)?;
        match self.membership(room_id, user)? {
            Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock) => {}
            Some(MembershipState::Leave) => return Ok(()),
            _ => return Err(Error::forbidden("You are not a member of this room")),
        }
        self.append(
            room_id,
            user,
            member_event(user, json!({"membership": MembershipState::Leave}), reason),
            None,
        )
        .await?;
        Ok(())
    }

    /// Invites, kicks, bans and unbans: `sender` changes `target`'s membership, as far as the
    /// auth rules and the sender's power allow.
    pub async fn change_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        action: MembershipAction,
        reason: Option<String>,
        is_direct: bool,
    ) -> Result<OwnedEventId> {
        self.require_room(room_id)?;
        let current = self.membership(room_id, target)?;
        let membership = match action {
            MembershipAction::Invite => {
                let content = if is_direct { json!({"is_direct": true}) } else { json!({}) };
                return self.invite(room_id, sender, target, reason, content).await;
            }
            MembershipAction::Kick => {
                if !matches!(
                    current,
                    Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock)
                ) {
                    return Err(Error::forbidden("The target user is not in the room"));
                }
                MembershipState::Leave
            }
            MembershipAction::Ban => MembershipState::Ban,
            MembershipAction::Unban => {
                if current != Some(MembershipState::Ban) {
                    return Err(Error::forbidden("The target user is not banned"));
                }
                MembershipState::Leave
            }
        };
        let mut content = json!({"membership": membership});
        if is_direct {
            content["is_direct"] = json!(true);
        }
        self.append(room_id, sender, member_event(target, content, reason), None).await
    }

    /// Invites `target` with the member content given (besides `membership`): its profile,
    /// which clients show as the invitee's name, and `is_direct`.
    pub async fn invite(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<String>,
        mut content: serde_json::Value,
    ) -> Result<OwnedEventId> {
        self.require_room(room_id)?;
        if self.membership(room_id, target)? == Some(MembershipState::Invite) {
            // Inviting again changes nothing, as on Synapse.
            return self.current_member_event_id(room_id, target);
        }
        content["membership"] = json!(MembershipState::Invite);
        self.append(room_id, sender, member_event(target, content, reason), None).await
    }

    fn current_member_event_id(&self, room_id: &RoomId, target: &UserId) -> Result<OwnedEventId> {
        self.current_state_event(room_id, "m.room.member", target.as_str())?
            .map(|pdu| pdu.event_id)
            .ok_or_else(|| Error::internal("membership without its event"))
    }

    /// Carries a changed profile field (`displayname`, `avatar_url`) into the user's membership
    /// in every room they are joined to, as a new `m.room.member` event, so room members see
    /// it. A room that refuses the event is logged and skipped: the profile itself changed.
    pub async fn propagate_profile_field(
        &self,
        user: &UserId,
        field: &str,
        value: Option<&Value>,
    ) -> Result<()> {
        for room_id in self.joined_rooms(user)? {
            let Some(current) = self.current_state_event(&room_id, "m.room.member", user.as_str())? else {
                continue;
            };
            let mut content = current.content_json();
            if content.get(field) == value || current.membership() != Some(MembershipState::Join) {
                continue;
            }
            let Some(object) = content.as_object_mut() else { continue };
            // What belonged to the join itself (who authorised it, why) does not carry over.
            object.remove("join_authorised_via_users_server");
            object.remove("reason");
            match value {
                Some(v) => object.insert(field.to_owned(), v.clone()),
                None => object.remove(field),
            };
            if let Err(err) = self.append(&room_id, user, member_event(user, content, None), None).await {
                tracing::warn!(%room_id, %user, %err, "profile change not carried into the room");
            }
        }
        Ok(())
    }

    /// Forgets a room the user has left: it no longer appears for them.
    pub async fn forget(&self, room_id: &RoomId, user: &UserId) -> Result<()> {
        let key = (user.to_owned(), room_id.to_owned());
        let db = self.db().clone();
        blocking(move || {
            let Some(mut record) = db.get::<UserRooms>(&key)? else {
                return Err(Error::not_found("You have never been in this room"));
            };
            if matches!(
                record.membership,
                MembershipState::Join | MembershipState::Invite | MembershipState::Knock
            ) {
                return Err(Error::bad_request("You must leave the room before forgetting it"));
            }
            record.forgotten = true;
            db.put::<UserRooms>(&key, &record)?;
            Ok(())
        })
        .await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipAction {
    Invite,
    Kick,
    Ban,
    Unban,
}

impl Rooms {
    /// Redacts an event as `user`: allowed for one's own events, and for others' with the
    /// redact power level (a check the auth rules leave to the server since room version 3).
    /// An event this server does not have can be redacted too, as with Synapse.
    pub async fn redact(
        &self,
        room_id: &RoomId,
        user: &UserId,
        event_id: &ruma::EventId,
        reason: Option<String>,
        txn: Option<super::append::Txn>,
    ) -> Result<OwnedEventId> {
        match self.visible_event(room_id, event_id, user)? {
            Some((target, _)) if !self.may_redact(room_id, user, &target.sender)? => {
                return Err(Error::forbidden("You may not redact this event"));
            }
            Some(_) => {}
            // Here but not for this user (another room, hidden history).
            None if self.has_event(event_id)? => return Err(Error::not_found("Event not found")),
            // Not here (yet): like Synapse, the redaction is still sent; each server applies it
            // to the event, if it has it, under its own checks.
            None => {}
        }
        let mut content = json!({});
        if let Some(reason) = reason {
            content["reason"] = json!(reason);
        }
        let new = NewEvent {
            kind: TimelineEventType::RoomRedaction,
            content,
            state_key: None,
            redacts: Some(event_id.to_owned()),
            origin_server_ts: None,
        };
        self.append(room_id, user, new, txn).await
    }
}
