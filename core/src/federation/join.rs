//! Joins across servers, from both sides: as the resident server (`make_join`, `send_join`) and
//! as the server of a user joining a room it is not in yet.

use ruma::events::room::member::MembershipState;
use std::collections::{BTreeMap, BTreeSet};

use hearth_storage::records::OutboxItem;
use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedServerName, RoomId, RoomVersionId,
    ServerName, UserId,
    api::federation::membership::{create_join_event, prepare_join_event},
    events::TimelineEventType,
    signatures::{hash_and_sign_event, sign_event},
};
use serde_json::{Value, json, value::RawValue};

use crate::{
    Error, ErrorCode, Homeserver, Result,
    events::{
        Pdu, auth,
        pdu::{event_id_of, new_event_id, references, to_json_string},
        state_res::auth_chain,
    },
    rooms::{CREATABLE_VERSIONS, remote::Received},
    util::now_ms,
};

/// Most events of a `send_join` answer (state and auth chain) we look at.
const MAX_JOIN_EVENTS: usize = 100_000;

fn raw(json: String) -> Result<Box<RawValue>> {
    RawValue::from_string(json).map_err(Error::internal)
}

impl Homeserver {
    /// `GET /make_join`: an unsigned join event for `user` built on the room's current state,
    /// refused up front when the auth rules would refuse it.
    pub fn make_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        supported: &[RoomVersionId],
    ) -> Result<(RoomVersionId, Box<RawValue>)> {
        self.make_membership(origin, room_id, user, &MembershipState::Join, Some(supported))
    }

    /// A membership template (`make_join`, `make_leave`, `make_knock`) for a user of `origin`:
    /// built on the room's current state and checked against it, so a refusal comes now
    /// rather than after signing. `supported`: the origin's room versions, when it says.
    pub(crate) fn make_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        membership: &MembershipState,
        supported: Option<&[RoomVersionId]>,
    ) -> Result<(RoomVersionId, Box<RawValue>)> {
        if user.server_name() != origin {
            return Err(Error::forbidden("The user is not of the requesting server"));
        }
        let room = self.rooms.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        if !self.rooms.resident(room_id)? {
            return Err(Error::not_found("This server is no longer in the room"));
        }
        self.require_acl(room_id, origin)?;
        let (version, rules) = self.rooms.version(&room)?;
        let lacks_knocking = *membership == MembershipState::Knock && !rules.authorization.knocking;
        if supported.is_some_and(|s| !s.contains(&version)) || lacks_knocking {
            return Err(Error::IncompatibleRoomVersion(version));
        }
        let mut content = json!({"membership": membership});
        if *membership == MembershipState::Join
            && rules.authorization.restricted_join_rule
            && let Some(authoriser) = self.rooms.restricted_join_authoriser(room_id, user)?
        {
            // The joining server cannot vouch for its own user: one of ours does, and our
            // signature goes on the join at send_join.
            content["join_authorised_via_users_server"] = json!(authoriser);
        }
        let raw_content = serde_json::value::to_raw_value(&content).map_err(Error::internal)?;
        let types =
            auth::auth_types(&TimelineEventType::RoomMember, user, Some(user.as_str()), &raw_content, &rules)
                .map_err(Error::internal)?;
        let mut auth_events: Vec<OwnedEventId> = types
            .iter()
            .filter_map(|(kind, key)| {
                self.rooms
                    .current_state_event(room_id, &kind.to_string(), key)
                    .ok()
                    .flatten()
                    .map(|p| p.event_id)
            })
            .collect();
        auth_events.sort();
        auth_events.dedup();
        let template = json!({
            "type": "m.room.member",
            "room_id": room_id,
            "sender": user,
            "state_key": user,
            "content": content,
            "origin_server_ts": now_ms(),
            "depth": room.max_depth + 1,
            "prev_events": references(&room.forward_extremities, &rules),
            "auth_events": references(&auth_events, &rules),
        });
        let probe =
            Pdu::from_json(EventId::parse("$probe").map_err(Error::internal)?, &template.to_string())?;
        let reads = crate::rooms::Reads::default();
        let checked = auth::check(
            &rules,
            &probe,
            |id| reads.keep(self.rooms.pdu(id)),
            |kind, key| reads.keep(self.rooms.current_state_event(room_id, &kind.to_string(), key)),
        );
        reads
            .finish(checked)?
            .map_err(|reason| Error::forbidden(format!("You cannot {membership} here: {reason}")))?;
        Ok((version, raw(template.to_string())?))
    }

    /// `send_join`, `send_leave`, `send_knock`: accepts a membership event a user of `origin`
    /// signed from our template and relays it to the room's other servers. What the endpoint
    /// does not take is refused (400) before any key is fetched; a join vouched for by one of
    /// our users gets our signature, which the auth rules require.
    pub(crate) async fn accept_membership(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawValue,
        membership: MembershipState,
    ) -> Result<Pdu> {
        let room = self.rooms.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let (version, rules) = self.rooms.version(&room)?;
        if membership == MembershipState::Knock && !rules.authorization.knocking {
            return Err(Error::forbidden(format!("Room version {version} does not allow knocking")));
        }
        let mut object: CanonicalJsonObject = serde_json::from_str(pdu.get())
            .map_err(|e| Error::bad_json(format!("PDU is not canonical JSON: {e}")))?;
        check_membership_shape(&object, room_id, &membership)?;
        self.require_acl(room_id, origin)?;
        if membership == MembershipState::Join {
            self.countersign_restricted_join(room_id, &mut object, &rules)?;
        }
        let signed = raw(to_json_string(&object)?)?;
        let (computed, json) = self.verify_pdu(&signed, &rules).await?;
        if computed != event_id {
            return Err(Error::bad_json("The event ID does not match the event"));
        }
        let event = Pdu::from_json(computed.clone(), &json)?;
        if event.sender.server_name() != origin {
            return Err(Error::forbidden(format!(
                "The {membership} is not of a user of the requesting server"
            )));
        }
        let others: BTreeSet<OwnedServerName> =
            self.servers_in_room(room_id)?.into_iter().filter(|s| s != origin).collect();
        match self.rooms.receive_pdu(room_id, &computed, json).await? {
            Received::Accepted | Received::Duplicate => {}
            Received::SoftFailed => {
                return Err(Error::forbidden(format!("The {membership} is not allowed by the room's state")));
            }
        }
        self.enqueue(others, vec![OutboxItem::Pdu { event_id: computed }]).await?;
        Ok(event)
    }

    /// Signs a join whose `join_authorised_via_users_server` names one of our users, once the
    /// joining user is seen to meet the room's allow rules: the signature is our word for that,
    /// which the auth rules take without checking. A join naming another server's user is left
    /// for the signature check and the auth rules to refuse.
    fn countersign_restricted_join(
        &self,
        room_id: &RoomId,
        object: &mut CanonicalJsonObject,
        rules: &ruma::room_version_rules::RoomVersionRules,
    ) -> Result<()> {
        if !rules.authorization.restricted_join_rule {
            return Ok(());
        }
        let authoriser = match object.get("content") {
            Some(CanonicalJsonValue::Object(content)) => content
                .get("join_authorised_via_users_server")
                .and_then(CanonicalJsonValue::as_str)
                .and_then(|u| UserId::parse(u).ok()),
            _ => None,
        };
        if authoriser.is_none_or(|u| u.server_name() != self.server_name()) {
            return Ok(());
        }
        let joiner =
            object.get("sender").and_then(CanonicalJsonValue::as_str).and_then(|u| UserId::parse(u).ok());
        let Some(joiner) = joiner else { return Err(Error::bad_json("The join has no valid sender")) };
        if self.rooms.restricted_join_authoriser(room_id, &joiner)?.is_none() {
            return Err(Error::forbidden(
                "This server cannot vouch for that join: the room's rules do not allow it",
            ));
        }
        sign_event(self.server_name().as_str(), &self.signing_key.pair, object, &rules.redaction)
            .map_err(|e| Error::bad_json(format!("Cannot sign the join: {e}")))
    }

    /// `PUT /v2/send_join`: accepts the signed join, relays it to the room's other servers, and
    /// answers with the room's state before it and the auth chain of that state.
    pub async fn send_join(
        &self,
        origin: &ServerName,
        room_id: &RoomId,
        event_id: &EventId,
        pdu: &RawValue,
    ) -> Result<create_join_event::v2::RoomState> {
        let join = self.accept_membership(origin, room_id, event_id, pdu, MembershipState::Join).await?;
        let computed = join.event_id.clone();
        let record = self.rooms.pdu_record(&computed)?.ok_or_else(|| Error::internal("join vanished"))?;
        let mut state = crate::rooms::state::load(&self.db, record.state_group)?;
        let member_key = ("m.room.member".to_owned(), join.sender.to_string());
        match &record.replaces_state {
            Some(previous) => state.insert(member_key, previous.clone()),
            None => state.remove(&member_key),
        };
        let reads = crate::rooms::Reads::default();
        let fetch = |id: &EventId| reads.keep(self.rooms.pdu(id));
        let mut chain_from: Vec<OwnedEventId> = state.values().cloned().collect();
        chain_from.extend(join.auth_events.iter().cloned());
        let chain = auth_chain(chain_from.iter(), &fetch);
        let mut chain: BTreeSet<OwnedEventId> = reads.finish(chain)?.into_iter().collect();
        chain.extend(join.auth_events.iter().cloned());
        let json_of = |id: &OwnedEventId| -> Result<Option<Box<RawValue>>> {
            self.rooms.pdu_record(id)?.map(|r| raw(r.json)).transpose()
        };
        let mut room_state = create_join_event::v2::RoomState::new();
        for id in state.values() {
            room_state.state.extend(json_of(id)?);
        }
        for id in &chain {
            room_state.auth_chain.extend(json_of(id)?);
        }
        let vouched = join.content_json().get("join_authorised_via_users_server").is_some();
        if vouched {
            // The joining server needs the copy with our signature.
            room_state.event = Some(raw(record.json)?);
        }
        Ok(room_state)
    }

    /// Joins a local user to a room this server is not in, through the first of `servers` that
    /// lets them in.
    pub async fn join_remote(
        &self,
        room_id: &RoomId,
        user: &UserId,
        servers: &[OwnedServerName],
        content: Value,
    ) -> Result<()> {
        self.through_first(servers, room_id, &MembershipState::Join, |server| {
            self.join_via(server, room_id, user, content.clone())
        })
        .await
    }

    /// Tries `attempt` with each of `servers` (but ourselves) in turn until one succeeds;
    /// otherwise the last refusal.
    pub(crate) async fn through_first<'s, F, Fut>(
        &self,
        servers: &'s [OwnedServerName],
        room_id: &RoomId,
        membership: &MembershipState,
        attempt: F,
    ) -> Result<()>
    where
        F: Fn(&'s ServerName) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let mut last_error = Error::not_found("No known servers for this room");
        for server in servers.iter().filter(|s| *s != self.server_name()) {
            match attempt(server).await {
                Ok(()) => return Ok(()),
                Err(error) => {
                    tracing::info!(%server, %room_id, %error, %membership, "remote membership change failed");
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }

    async fn join_via(
        &self,
        server: &ServerName,
        room_id: &RoomId,
        user: &UserId,
        content: Value,
    ) -> Result<()> {
        let mut request = prepare_join_event::v1::Request::new(room_id.to_owned(), user.to_owned());
        request.ver = CREATABLE_VERSIONS.to_vec();
        let template = self.federation_request(server, request).await?;
        let version = template.room_version.unwrap_or(RoomVersionId::V1);
        let rules = supported_rules(&version)?;
        let (event_id, join_json) =
            self.sign_template(&template.event, &rules, user, &MembershipState::Join, content)?;

        let request = create_join_event::v2::Request::new(
            room_id.to_owned(),
            event_id.clone(),
            raw(join_json.clone())?,
        );
        let response = self.federation_request(server, request).await?;
        let room_state = response.room_state;

        // Events that cannot be verified (no or bad signatures, keys that cannot be had) are
        // dropped rather than failing the join, as are those whose auth events are dropped or
        // that fail their auth checks; what remains is the state we join on.
        let mut outliers = Vec::new();
        let mut state_ids = BTreeSet::new();
        let state_count = room_state.state.len();
        let events = room_state
            .auth_chain
            .iter()
            .map(|e| (false, e))
            .chain(room_state.state.iter().map(|e| (true, e)));
        for (is_state, raw_event) in events.take(MAX_JOIN_EVENTS) {
            match self.verify_pdu(raw_event, &rules).await {
                Ok((id, json)) => {
                    if is_state {
                        state_ids.insert(id.clone());
                    }
                    outliers.push((id, json));
                }
                Err(error) => {
                    tracing::info!(%room_id, %server, %error, "dropped an unverifiable event of a join");
                }
            }
        }
        self.store_checked_outliers(room_id, outliers, &rules).await?;
        let mut state = BTreeMap::new();
        for id in &state_ids {
            // Stored now, or before: checked either way.
            let Some(pdu) = self.rooms.pdu(id)? else { continue };
            if let Some(key) = pdu.state_key {
                state.insert((pdu.kind.to_string(), key), id.clone());
            }
        }
        if state.len() < state_count {
            tracing::info!(%room_id, kept = state.len(), of = state_count, "joined on the state events that could be checked");
        }
        let (event_id, join_json) = match &room_state.event {
            // For restricted rooms the resident server countersigns; its copy is the one to keep.
            Some(signed) => {
                let (id, json) = self.verify_pdu(signed, &rules).await?;
                if id != event_id {
                    return Err(Error::new(
                        ErrorCode::RemoteUnavailable,
                        "the resident server changed our join",
                    ));
                }
                (id, json)
            }
            None => (event_id, join_json),
        };
        self.rooms.persist_remote_join(room_id, &version, state, (event_id, join_json)).await?;
        self.rooms.clear_outside_room(user, room_id).await?;
        tracing::info!(%room_id, %user, via = %server, "joined a room over federation");
        Ok(())
    }
}

/// What `send_join`, `send_leave` and `send_knock` take: the sender's own membership event of
/// that kind, in this room. Anything else is a malformed request (400), whoever signed it.
fn check_membership_shape(
    object: &CanonicalJsonObject,
    room_id: &RoomId,
    membership: &MembershipState,
) -> Result<()> {
    let text = |field: &str| object.get(field).and_then(CanonicalJsonValue::as_str);
    if text("type") != Some("m.room.member") {
        return Err(Error::bad_json("Not an m.room.member event"));
    }
    let Some(state_key) = text("state_key") else {
        return Err(Error::bad_json("A membership event needs a state_key"));
    };
    let actual = match object.get("content") {
        Some(CanonicalJsonValue::Object(content)) => {
            content.get("membership").and_then(CanonicalJsonValue::as_str)
        }
        _ => None,
    };
    if actual != Some(membership.as_str()) {
        return Err(Error::bad_json(format!("Not a {membership} event")));
    }
    if text("sender") != Some(state_key) {
        return Err(Error::bad_json("The state_key and the sender must match"));
    }
    if text("room_id").is_some_and(|r| r != room_id.as_str()) {
        return Err(Error::bad_json("The event's room is not the one in the path"));
    }
    Ok(())
}

/// Membership content with the user's reason, when they gave one.
pub(crate) fn with_reason(mut content: Value, reason: Option<String>) -> Value {
    if let Some(reason) = reason {
        content["reason"] = json!(reason);
    }
    content
}

/// The rules of a room version we can take part in.
pub(crate) fn supported_rules(version: &RoomVersionId) -> Result<ruma::room_version_rules::RoomVersionRules> {
    if !CREATABLE_VERSIONS.contains(version) {
        return Err(Error::new(
            ErrorCode::UnsupportedRoomVersion,
            format!("room version {version} is not supported"),
        ));
    }
    version.rules().ok_or_else(|| Error::internal(format!("no rules for room version {version}")))
}

impl Homeserver {
    /// Completes a membership template a resident server made for `user` (`make_join`,
    /// `make_leave`, `make_knock`): our content on top of its own, a fresh timestamp, our
    /// hashes and signature. Returns the event's ID and JSON.
    pub(crate) fn sign_template(
        &self,
        template: &RawValue,
        rules: &ruma::room_version_rules::RoomVersionRules,
        user: &UserId,
        membership: &MembershipState,
        content: Value,
    ) -> Result<(OwnedEventId, String)> {
        let mut object: CanonicalJsonObject =
            serde_json::from_str(template.get()).map_err(|e| Error::bad_json(e.to_string()))?;
        let member_ok = object.get("type").and_then(CanonicalJsonValue::as_str) == Some("m.room.member")
            && object.get("state_key").and_then(CanonicalJsonValue::as_str) == Some(user.as_str())
            && object.get("sender").and_then(CanonicalJsonValue::as_str) == Some(user.as_str());
        if !member_ok {
            return Err(Error::new(
                ErrorCode::RemoteUnavailable,
                format!("the {membership} template is for something else"),
            ));
        }
        // Our profile and reason go in; the template's own fields (e.g. the authorising user of
        // a restricted join) stay.
        let mut merged = match object.remove("content") {
            Some(CanonicalJsonValue::Object(c)) => c,
            _ => CanonicalJsonObject::new(),
        };
        if let Value::Object(extra) = content {
            for (k, v) in extra {
                if let Ok(v) = serde_json::from_value::<CanonicalJsonValue>(v) {
                    merged.insert(k, v);
                }
            }
        }
        merged.insert("membership".into(), CanonicalJsonValue::String(membership.as_str().to_owned()));
        object.insert("content".into(), CanonicalJsonValue::Object(merged));
        object.insert(
            "origin_server_ts".into(),
            CanonicalJsonValue::Integer(ruma::Int::new_saturating(
                i64::try_from(now_ms()).unwrap_or(i64::MAX),
            )),
        );
        for field in ["event_id", "hashes", "signatures", "unsigned"] {
            object.remove(field);
        }
        if let Some(event_id) = new_event_id(rules, self.server_name())? {
            object.insert("event_id".into(), CanonicalJsonValue::String(event_id.to_string()));
        }
        hash_and_sign_event(
            self.server_name().as_str(),
            &self.signing_key.pair,
            &mut object,
            &rules.redaction,
        )
        .map_err(|e| Error::internal(format!("signing the {membership}: {e}")))?;
        let event_id = event_id_of(&object, rules).map_err(Error::internal)?;
        Ok((event_id, to_json_string(&object)?))
    }
}

impl Homeserver {
    /// Joins a local user to a room: locally when this server is in the room, otherwise over
    /// federation through `via` (and the server in a pre-v12 room ID).
    pub async fn join_room(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: Value,
        reason: Option<String>,
        via: &[OwnedServerName],
    ) -> Result<()> {
        check_names(room_id, via)?;
        self.check_room_not_blocked(room_id)?;
        if !self.federation.enabled() {
            return self.rooms.join(room_id, user, profile, reason).await;
        }
        let known = self.servers_sharing_rooms(user)?;
        if self.rooms.resident(room_id)? {
            self.rooms.join(room_id, user, profile, reason).await?;
        } else {
            if self.rooms.membership(room_id, user)? == Some(MembershipState::Join) {
                return Ok(());
            }
            let servers = self.servers_to_ask(room_id, user, via)?;
            self.join_remote(room_id, user, &servers, with_reason(profile, reason)).await?;
        }
        let new: BTreeSet<_> =
            self.servers_in_room(room_id)?.into_iter().filter(|s| !known.contains(s)).collect();
        // The join stands whatever happens to this courtesy; a failure only delays what the
        // other servers would otherwise learn at the first encrypted message.
        if let Err(error) = self.announce_devices_to(user, new).await {
            tracing::warn!(%error, %user, %room_id, "could not announce devices to the room's servers");
        }
        Ok(())
    }

    /// Servers that may let a local user into (or out of) a room this server is not in: those
    /// the client named, the one that invited them or took their knock, the room ID's, and
    /// those last seen in the room.
    pub(crate) fn servers_to_ask(
        &self,
        room_id: &RoomId,
        user: &UserId,
        via: &[OwnedServerName],
    ) -> Result<Vec<OwnedServerName>> {
        let mut servers: Vec<OwnedServerName> = via.to_vec();
        let mut add = |server: &ServerName| {
            if server != self.server_name() && !servers.iter().any(|s| s == server) {
                servers.push(server.to_owned());
            }
        };
        if let Some(event) = self.rooms.current_member_event(room_id, user)? {
            add(event.sender.server_name());
        }
        if let Some(outside) = self.rooms.outside_room(user, room_id)? {
            outside.servers.iter().for_each(|s| add(s));
        }
        if let Some(server) = room_id.server_name() {
            add(server);
        }
        self.servers_in_room(room_id)?.iter().for_each(|s| add(s));
        Ok(servers)
    }
}

/// The server names a client gave for a join or knock (the room ID's and `via`), refused with
/// 400 before anything is looked up when they are outside the spec's grammar.
pub(crate) fn check_names(room_id: &RoomId, via: &[OwnedServerName]) -> Result<()> {
    for server in via.iter().map(AsRef::as_ref).chain(room_id.server_name()) {
        crate::server_name::check_server_name(server)?;
    }
    Ok(())
}
