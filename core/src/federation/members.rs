//! Invites, leaves and knocks across servers. Joins are in `join.rs`.
//!
//! - Inviting a user of another server: the invite is built and authorized here, signed by
//!   the invitee's server through `PUT /v2/invite`, and only then stored (and so sent to the
//!   room's other servers).
//! - Being invited while not in the room: the invite is checked, countersigned and kept outside
//!   any timeline with the stripped state that came with it, for the invitee's /sync.
//! - Rejecting such an invite, withdrawing a knock, knocking: through a resident server's
//!   `make_leave`/`send_leave` and `make_knock`/`send_knock`; and the resident side of those.

use ruma::events::room::member::MembershipState;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedServerName, RoomId, RoomVersionId,
    ServerName, UserId,
    api::federation::membership::{
        RawStrippedState, create_invite, create_knock_event, create_leave_event, prepare_knock_event,
        prepare_leave_event,
    },
    canonical_json::redact,
    events::TimelineEventType,
    room_version_rules::RoomVersionRules,
    signatures::{PublicKeyMap, Verified, sign_event, verify_event, verify_json},
};
use serde_json::{Value, json, value::RawValue};

use super::join::{supported_rules, with_reason};
use crate::{
    Error, ErrorCode, Homeserver, Result,
    events::{
        NewEvent, Pdu,
        pdu::{event_id_of, to_json_string},
    },
    rooms::CREATABLE_VERSIONS,
    sync::compute::STRIPPED_STATE,
};
use hearth_storage::records::OutsideRoomRecord;

fn raw(json: String) -> Result<Box<RawValue>> {
    RawValue::from_string(json).map_err(Error::internal)
}

/// The client-visible part of a state event: what stripped state keeps.
fn stripped(event: &Value) -> Value {
    json!({
        "type": event["type"],
        "state_key": event["state_key"],
        "content": event["content"],
        "sender": event["sender"],
    })
}

/// Stripped state another server sent with an invite or a knock, as full PDUs (Matrix 1.16) or
/// in the older stripped form; events of other rooms are dropped.
fn stripped_from_remote(room_id: &RoomId, state: &[RawStrippedState]) -> Vec<Value> {
    state
        .iter()
        .filter_map(|entry| {
            #[allow(deprecated)]
            let json = match entry {
                RawStrippedState::Pdu(pdu) => pdu.get(),
                RawStrippedState::Stripped(raw) => raw.json().get(),
                _ => return None,
            };
            let event: Value = serde_json::from_str(json).ok()?;
            let other_room = event["room_id"].as_str().is_some_and(|r| r != room_id.as_str());
            (event["type"].is_string() && event["state_key"].is_string() && !other_room)
                .then(|| stripped(&event))
        })
        .collect()
}

impl Homeserver {
    /// The room's stripped state as full PDUs, for an invite or a knock sent to another
    /// server: the events that let a client show the room, and `member`'s membership.
    fn stripped_state_pdus(&self, room_id: &RoomId, member: &UserId) -> Result<Vec<RawStrippedState>> {
        let mut ids: Vec<OwnedEventId> = Vec::new();
        for kind in STRIPPED_STATE {
            ids.extend(self.rooms.current_state_event(room_id, kind, "")?.map(|p| p.event_id));
        }
        ids.extend(
            self.rooms.current_state_event(room_id, "m.room.member", member.as_str())?.map(|p| p.event_id),
        );
        let mut out = Vec::new();
        for id in ids {
            if let Some(record) = self.rooms.pdu_record(&id)? {
                out.push(RawStrippedState::Pdu(raw(record.json)?));
            }
        }
        Ok(out)
    }

    /// `POST /rooms/{roomId}/invite`: a local invitee is invited with a local event; a remote
    /// one's server signs the invite before it exists.
    pub async fn invite_user(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<String>,
        is_direct: bool,
    ) -> Result<()> {
        self.check_room_not_blocked(room_id)?;
        let remote = target.server_name() != self.server_name() && self.federation.enabled();
        let already = self.rooms.membership(room_id, target)? == Some(MembershipState::Invite);
        if !remote || already {
            if !remote {
                // A bridge's user may come into being when its service is asked about it, in
                // time for the invite to carry its profile.
                self.user_exists_or_queried(target).await?;
            }
            // The invitee's profile goes in the event, as Synapse puts it, so that clients name
            // them ("invited Bob") before they join.
            let mut content = self.users.member_content(target).await?;
            if is_direct {
                content["is_direct"] = json!(true);
            }
            self.rooms.invite(room_id, sender, target, reason, content).await?;
            return Ok(());
        }
        let room =
            self.rooms.room(room_id)?.ok_or_else(|| Error::not_found("No known servers for this room"))?;
        let (version, rules) = self.rooms.version(&room)?;
        let invite_state = self.stripped_state_pdus(room_id, sender)?;
        let mut content = with_reason(json!({"membership": MembershipState::Invite}), reason);
        if is_direct {
            content["is_direct"] = json!(true);
        }
        let new = NewEvent::state(TimelineEventType::RoomMember, target.as_str(), content);
        let destination = target.server_name().to_owned();
        self.rooms
            .append_countersigned(room_id, sender, new, |event_id, object| async move {
                let request = create_invite::v2::Request::new(
                    room_id.to_owned(),
                    event_id,
                    version,
                    raw(to_json_string(&object)?)?,
                    invite_state,
                );
                let response = self.federation_request(&destination, request).await?;
                let signed = self.add_countersignature(object, &response.event, &destination, &rules).await?;
                to_json_string(&signed)
            })
            .await?;
        tracing::info!(%room_id, %target, "invited a user of another server");
        Ok(())
    }

    /// Takes `signer`'s signature from its copy of our event and adds it to ours, once it
    /// verifies over our event: nothing else of its copy is trusted.
    async fn add_countersignature(
        &self,
        mut ours: CanonicalJsonObject,
        theirs: &RawValue,
        signer: &ServerName,
        rules: &RoomVersionRules,
    ) -> Result<CanonicalJsonObject> {
        let bad = |why: String| Error::new(ErrorCode::RemoteUnavailable, format!("{signer}: {why}"));
        let theirs: CanonicalJsonObject =
            serde_json::from_str(theirs.get()).map_err(|e| bad(format!("unreadable event: {e}")))?;
        let signature = theirs
            .get("signatures")
            .and_then(|s| match s {
                CanonicalJsonValue::Object(s) => s.get(signer.as_str()).cloned(),
                _ => None,
            })
            .ok_or_else(|| bad("the event came back without its signature".to_owned()))?;
        let CanonicalJsonValue::Object(key_sigs) = &signature else {
            return Err(bad("malformed signatures".to_owned()));
        };
        let key_ids: Vec<String> = key_sigs.keys().cloned().collect();
        let keys = self.verify_keys(signer, &key_ids).await?;
        let mut only_theirs = ours.clone();
        only_theirs.insert(
            "signatures".into(),
            CanonicalJsonValue::Object([(signer.to_string(), signature.clone())].into()),
        );
        let redacted = redact(only_theirs, &rules.redaction, None).map_err(Error::internal)?;
        verify_json(&PublicKeyMap::from([(signer.to_string(), keys)]), &redacted)
            .map_err(|e| bad(format!("its signature does not verify: {e}")))?;
        if let Some(CanonicalJsonValue::Object(sigs)) = ours.get_mut("signatures") {
            sigs.insert(signer.to_string(), signature);
        }
        Ok(ours)
    }

    /// `PUT /v2/invite`: a user of `origin` invites one of ours. The invite is checked and
    /// countersigned; when this server is not in the room it is kept for the invitee's /sync
    /// (a resident server gets it again through the room's transactions).
    pub async fn receive_invite(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        version: &RoomVersionId,
        event: &RawValue,
        invite_state: &[RawStrippedState],
    ) -> Result<Box<RawValue>> {
        let rules = supported_rules(version)?;
        let resident = self.rooms.resident(room_id)?;
        if resident {
            self.require_acl(room_id, origin)?;
        }
        let mut object: CanonicalJsonObject =
            serde_json::from_str(event.get()).map_err(|e| Error::bad_json(format!("Invalid event: {e}")))?;
        if event_id_of(&object, &rules)? != event_id {
            return Err(Error::bad_json("The event ID does not match the event"));
        }
        let pdu = Pdu::from_json(event_id.to_owned(), &to_json_string(&object)?)
            .map_err(|_| Error::bad_json("Not a PDU"))?;
        let target = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok());
        let Some(target) = target else { return Err(Error::bad_json("An invite needs a user as state key")) };
        let is_invite = pdu.kind == TimelineEventType::RoomMember
            && pdu.membership() == Some(MembershipState::Invite)
            && pdu.room_id.as_deref() == Some(room_id);
        if !is_invite || pdu.sender.server_name() != origin {
            return Err(Error::bad_json("Not an invite by a user of the requesting server"));
        }
        if target.server_name() != self.server_name() || !self.users.exists(&target)? {
            return Err(Error::not_found("The invited user is not on this server"));
        }
        let keys = self.key_map_for(&object).await?;
        match verify_event(&keys, &object, &rules) {
            Ok(Verified::All) => {}
            Ok(Verified::Signatures) => {
                return Err(Error::bad_json("The invite's content hash does not match"));
            }
            Err(e) => return Err(Error::forbidden(format!("The invite's signature does not verify: {e}"))),
        }
        sign_event(self.server_name().as_str(), &self.signing_key.pair, &mut object, &rules.redaction)
            .map_err(|e| Error::internal(format!("countersigning an invite: {e}")))?;
        let json = to_json_string(&object)?;
        if !resident {
            let mut servers = vec![origin.to_owned()];
            servers.extend(room_id.server_name().filter(|s| *s != origin).map(ToOwned::to_owned));
            let outside = OutsideRoomRecord {
                room_version: version.to_string(),
                stripped_state: stripped_from_remote(room_id, invite_state),
                servers,
            };
            self.rooms
                .record_outside_membership(
                    room_id,
                    &target,
                    event_id.to_owned(),
                    json.clone(),
                    MembershipState::Invite,
                    Some(outside),
                )
                .await?;
            tracing::info!(%room_id, %target, %origin, "received an invite to a room we are not in");
        }
        raw(json)
    }

    /// `POST /rooms/{roomId}/leave`: a local event where this server is in the room; otherwise
    /// (rejecting an invite, withdrawing a knock) through a resident server.
    pub async fn leave_room(&self, room_id: &RoomId, user: &UserId, reason: Option<String>) -> Result<()> {
        if !self.federation.enabled() || self.rooms.resident(room_id)? {
            return self.rooms.leave(room_id, user, reason).await;
        }
        match self.rooms.membership(room_id, user)? {
            Some(MembershipState::Invite | MembershipState::Knock) => {}
            Some(MembershipState::Leave) => return Ok(()),
            _ => return Err(Error::forbidden("You are not a member of this room")),
        }
        let content = with_reason(json!({}), reason);
        let servers = self.servers_to_ask(room_id, user, &[])?;
        self.through_first(&servers, room_id, &MembershipState::Leave, |server| {
            self.leave_via(server, room_id, user, content.clone())
        })
        .await
    }

    async fn leave_via(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        content: Value,
    ) -> Result<()> {
        let request = prepare_leave_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        let template = self.federation_request(server, request).await?;
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        let rules = supported_rules(&version)?;
        let (event_id, json) =
            self.sign_template(&template.event, &rules, user, &MembershipState::Leave, content)?;
        let request =
            create_leave_event::v2::Request::new(room_id.to_owned(), event_id.clone(), raw(json.clone())?);
        self.federation_request(server, request).await?;
        self.rooms
            .record_outside_membership(room_id, user, event_id, json, MembershipState::Leave, None)
            .await?;
        tracing::info!(%room_id, %user, via = %server, "left a room over federation");
        Ok(())
    }

    /// `POST /knock/{roomIdOrAlias}`: a local event where this server is in the room; otherwise
    /// through the first of the known servers that takes the knock.
    pub async fn knock_room(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: Value,
        reason: Option<String>,
        via: &[OwnedServerName],
    ) -> Result<()> {
        super::join::check_names(room_id, via)?;
        if !self.federation.enabled() || self.rooms.resident(room_id)? {
            return self.rooms.knock(room_id, user, profile, reason).await;
        }
        let content = with_reason(profile, reason);
        let servers = self.servers_to_ask(room_id, user, via)?;
        self.through_first(&servers, room_id, &MembershipState::Knock, |server| {
            self.knock_via(server, room_id, user, content.clone())
        })
        .await
    }

    async fn knock_via(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        content: Value,
    ) -> Result<()> {
        let mut request = prepare_knock_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        request.ver = CREATABLE_VERSIONS.to_vec();
        let template = self.federation_request(server, request).await?;
        let rules = supported_rules(&template.room_version)?;
        let (event_id, json) =
            self.sign_template(&template.event, &rules, user, &MembershipState::Knock, content)?;
        let request =
            create_knock_event::v1::Request::new(room_id.to_owned(), event_id.clone(), raw(json.clone())?);
        let response = self.federation_request(server, request).await?;
        let outside = OutsideRoomRecord {
            room_version: template.room_version.to_string(),
            stripped_state: stripped_from_remote(room_id, &response.knock_room_state),
            servers: vec![server.to_owned()],
        };
        self.rooms
            .record_outside_membership(room_id, user, event_id, json, MembershipState::Knock, Some(outside))
            .await?;
        tracing::info!(%room_id, %user, via = %server, "knocked over federation");
        Ok(())
    }

    /// `GET /make_leave`
    pub fn make_leave(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
    ) -> Result<(RoomVersionId, Box<RawValue>)> {
        self.make_membership(origin, room_id, user, &MembershipState::Leave, None)
    }

    /// `PUT /v2/send_leave`
    pub async fn send_leave(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawValue,
    ) -> Result<()> {
        self.accept_membership(origin, room_id, event_id, pdu, MembershipState::Leave).await.map(|_| ())
    }

    /// `GET /make_knock`
    pub fn make_knock(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        supported: &[RoomVersionId],
    ) -> Result<(RoomVersionId, Box<RawValue>)> {
        self.make_membership(origin, room_id, user, &MembershipState::Knock, Some(supported))
    }

    /// `PUT /send_knock`: accepts the knock and answers with the room's stripped state.
    pub async fn send_knock(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawValue,
    ) -> Result<Vec<RawStrippedState>> {
        let knock = self.accept_membership(origin, room_id, event_id, pdu, MembershipState::Knock).await?;
        self.stripped_state_pdus(room_id, &knock.sender)
    }

    /// A membership event for a room this server has no state of, arriving in a transaction:
    /// only news of a local user's pending invite or knock counts (an invite withdrawn, a knock
    /// refused), and only from a server the invite or knock went through.
    pub(crate) async fn receive_outside_member(
        &self,
        room_id: &RoomId,
        raw: &RawValue,
    ) -> Result<OwnedEventId, (Option<OwnedEventId>, Error)> {
        let unknown = || (None, Error::not_found(format!("{room_id} is unknown here")));
        let value: Value = serde_json::from_str(raw.get()).map_err(|_| unknown())?;
        let target = value["state_key"].as_str().and_then(|k| UserId::parse(k).ok()).ok_or_else(unknown)?;
        if value["type"] != "m.room.member" || target.server_name() != self.server_name() {
            return Err(unknown());
        }
        let outside =
            self.rooms.outside_room(&target, room_id).map_err(|e| (None, e))?.ok_or_else(unknown)?;
        let version = RoomVersionId::try_from(outside.room_version.as_str()).map_err(|_| unknown())?;
        let rules = supported_rules(&version).map_err(|e| (None, e))?;
        let (event_id, json) = self.verify_identified_pdu(raw, &rules).await?;
        let pdu = Pdu::from_json(event_id.clone(), &json).map_err(|e| (Some(event_id.clone()), e))?;
        if !outside.servers.iter().any(|s| s == pdu.sender.server_name()) {
            return Err((
                Some(event_id),
                Error::forbidden("Not from a server this invite or knock went through"),
            ));
        }
        if let Some(membership @ (MembershipState::Leave | MembershipState::Ban)) = pdu.membership() {
            // As with Synapse, only the user or whoever invited them may take back an invite
            // here: anyone else's kick would need the room's state, which we do not have.
            if pdu.sender != target
                && let Some(inviter) = self.pending_inviter(&target, room_id).map_err(|e| (None, e))?
                && inviter != pdu.sender
            {
                return Err((Some(event_id), Error::forbidden("Only the inviter can rescind an invite")));
            }
            self.rooms
                .record_outside_membership(room_id, &target, event_id.clone(), json, membership, None)
                .await
                .map_err(|e| (Some(event_id.clone()), e))?;
        }
        Ok(event_id)
    }

    /// Who invited `user` to a room this server is not in, while the invite stands.
    fn pending_inviter(&self, user: &UserId, room_id: &RoomId) -> Result<Option<ruma::OwnedUserId>> {
        let key = (user.to_owned(), room_id.to_owned());
        let Some(record) = self.db.get::<hearth_storage::schema::UserRooms>(&key)? else { return Ok(None) };
        if record.membership != MembershipState::Invite {
            return Ok(None);
        }
        Ok(self.rooms.pdu(&record.event_id)?.map(|invite| invite.sender))
    }
}
