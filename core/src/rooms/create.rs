//! Creating a room: the create event, then the creator's join, power levels, preset rules,
//! initial state, name and topic, and invites, each through the normal write path.

use hearth_storage::{
    Batch,
    records::{PduRecord, RoomRecord, StreamEntry},
    schema::{CurrentState, Pdus, RoomTimeline, Rooms as RoomsTable},
};
use ruma::events::room::{
    guest_access::{GuestAccess, RoomGuestAccessEventContent},
    history_visibility::{HistoryVisibility, RoomHistoryVisibilityEventContent},
    join_rules::{JoinRule, RoomJoinRulesEventContent},
    member::MembershipState,
};
use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId, events::TimelineEventType};
use serde_json::{Value, json};

use super::{CREATABLE_VERSIONS, Rooms, state};
use crate::{
    Error, Result,
    events::{
        NewEvent, Pdu, auth,
        pdu::{Placement, build_and_sign, to_json_string},
    },
    users::blocking,
    util::random_string,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    PublicChat,
    TrustedPrivateChat,
}

/// What `POST /createRoom` asks for, already parsed.
#[derive(Debug, Clone)]
pub struct CreateRoom {
    pub version: Option<RoomVersionId>,
    pub preset: Option<Preset>,
    pub public: bool,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub creation_content: Option<serde_json::Map<String, Value>>,
    pub power_level_override: Option<serde_json::Map<String, Value>>,
    /// `(type, state_key, content)`
    pub initial_state: Vec<(String, String, Value)>,
    /// Set by the caller once the alias is known to be free.
    pub canonical_alias: Option<String>,
    /// The member content (profile) each local invitee's invite carries.
    pub invite_profiles: std::collections::BTreeMap<OwnedUserId, Value>,
}

impl CreateRoom {
    pub fn new() -> Self {
        Self {
            version: None,
            preset: None,
            public: false,
            name: None,
            topic: None,
            invite: Vec::new(),
            is_direct: false,
            creation_content: None,
            power_level_override: None,
            initial_state: Vec::new(),
            canonical_alias: None,
            invite_profiles: std::collections::BTreeMap::new(),
        }
    }
}

impl Default for CreateRoom {
    fn default() -> Self {
        Self::new()
    }
}

/// Event content must be a JSON object that canonical JSON can express (no floats).
fn check_content(what: &str, content: &Value) -> Result<()> {
    if !content.is_object() {
        return Err(Error::bad_json(format!("{what} must be a JSON object")));
    }
    ruma::canonical_json::to_canonical_value(content)
        .map_err(|e| Error::bad_json(format!("{what} is not canonical JSON: {e}")))?;
    Ok(())
}

/// `additional_creators` as a create event may carry it: a list of valid user IDs.
fn parse_additional_creators(given: &Value) -> Result<Vec<OwnedUserId>> {
    let list =
        given.as_array().ok_or_else(|| Error::bad_json("additional_creators must be a list of user IDs"))?;
    list.iter()
        .map(|item| {
            item.as_str()
                .and_then(|s| UserId::parse(s).ok())
                .ok_or_else(|| Error::bad_json(format!("additional_creators: {item} is not a valid user ID")))
        })
        .collect()
}

fn state(kind: &str, key: &str, content: Value) -> NewEvent {
    NewEvent::state(TimelineEventType::from(kind), key, content)
}

impl Rooms {
    pub async fn create_room(
        &self,
        creator: &UserId,
        profile: Value,
        req: CreateRoom,
    ) -> Result<OwnedRoomId> {
        let version = req.version.clone().unwrap_or_else(|| self.default_version().clone());
        if !CREATABLE_VERSIONS.contains(&version) {
            return Err(Error::new(
                crate::ErrorCode::UnsupportedRoomVersion,
                format!("This server does not create rooms of version {version}"),
            ));
        }
        let rules = version.rules().ok_or_else(|| Error::internal("room version without rules"))?;
        let preset = req.preset.unwrap_or(if req.public { Preset::PublicChat } else { Preset::PrivateChat });

        let mut create_content = req.creation_content.clone().unwrap_or_default();
        create_content.insert("room_version".into(), json!(version.as_str()));
        if !rules.authorization.use_room_create_sender {
            create_content.insert("creator".into(), json!(creator));
        }
        let mut creators = vec![creator.to_owned()];
        if rules.authorization.additional_room_creators {
            let mut additional = match create_content.get("additional_creators") {
                Some(given) => parse_additional_creators(given)?,
                None => Vec::new(),
            };
            if preset == Preset::TrustedPrivateChat {
                // In v12 trusted invitees are creators rather than power-level 100 users.
                additional.extend(req.invite.iter().cloned());
            }
            additional.retain(|user| user != creator);
            let mut seen = std::collections::HashSet::new();
            additional.retain(|user| seen.insert(user.clone()));
            if additional.is_empty() {
                create_content.remove("additional_creators");
            } else {
                create_content.insert("additional_creators".into(), json!(additional));
            }
            creators.extend(additional);
        }
        // Everything the request carries is checked before the first event is written, so a bad
        // request does not leave half a room behind.
        check_content("creation_content", &Value::Object(create_content.clone()))?;
        if let Some(overrides) = &req.power_level_override {
            check_content("power_level_content_override", &Value::Object(overrides.clone()))?;
            if rules.authorization.explicitly_privilege_room_creators {
                super::power::check_power_levels_content(&creators, &Value::Object(overrides.clone()))?;
            }
        }
        for (kind, _, content) in &req.initial_state {
            if kind.is_empty() {
                return Err(Error::bad_json("initial_state events need a type"));
            }
            if kind == "m.room.create" || kind == "m.room.member" {
                return Err(Error::bad_json(format!("{kind} cannot be part of initial_state")));
            }
            check_content(kind, content)?;
        }
        let room_id = self.write_create_event(creator, Value::Object(create_content), &version).await?;

        let mut join = profile;
        join["membership"] = json!(MembershipState::Join);
        self.append(&room_id, creator, state("m.room.member", creator.as_str(), join), None).await?;

        let trusted = if preset == Preset::TrustedPrivateChat { req.invite.as_slice() } else { &[] };
        let mut power = super::power::initial_power_levels(creator, trusted, &rules);
        if let Some(overrides) = &req.power_level_override {
            for (k, v) in overrides {
                power[k] = v.clone();
            }
        }
        self.append(&room_id, creator, state("m.room.power_levels", "", power), None).await?;

        if let Some(alias) = &req.canonical_alias {
            self.append(
                &room_id,
                creator,
                state("m.room.canonical_alias", "", json!({"alias": alias})),
                None,
            )
            .await?;
        }
        let (join_rule, guest_access) = match preset {
            Preset::PublicChat => (JoinRule::Public, GuestAccess::Forbidden),
            Preset::PrivateChat | Preset::TrustedPrivateChat => (JoinRule::Invite, GuestAccess::CanJoin),
        };
        let join_rules = json!(RoomJoinRulesEventContent::new(join_rule));
        self.append(&room_id, creator, state("m.room.join_rules", "", join_rules), None).await?;
        let visibility = json!(RoomHistoryVisibilityEventContent::new(HistoryVisibility::Shared));
        self.append(&room_id, creator, state("m.room.history_visibility", "", visibility), None).await?;
        // Like Synapse, only a room guests may join says so: no event means "forbidden".
        if guest_access == GuestAccess::CanJoin {
            let guests =
                state("m.room.guest_access", "", json!(RoomGuestAccessEventContent::new(guest_access)));
            self.append(&room_id, creator, guests, None).await?;
        }

        for (kind, key, content) in req.initial_state {
            self.append(&room_id, creator, state(&kind, &key, content), None).await?;
        }
        if let Some(name) = req.name {
            self.append(&room_id, creator, state("m.room.name", "", json!({"name": name})), None).await?;
        }
        if let Some(topic) = req.topic {
            // Both forms (spec v1.15): `m.topic` is `{"m.text": [{"mimetype", "body"}]}`.
            let content = ruma::events::room::topic::RoomTopicEventContent::new(topic);
            let content = serde_json::to_value(content).map_err(Error::internal)?;
            self.append(&room_id, creator, state("m.room.topic", "", content), None).await?;
        }
        for invitee in req.invite {
            if invitee.server_name() != self.inner.server_name && self.inner.federation.enabled() {
                // Their server must sign the invite: the caller sends it through federation.
                continue;
            }
            let mut content = req.invite_profiles.get(&invitee).cloned().unwrap_or_else(|| json!({}));
            content["membership"] = json!(MembershipState::Invite);
            if req.is_direct {
                content["is_direct"] = json!(true);
            }
            self.append(&room_id, creator, state("m.room.member", invitee.as_str(), content), None).await?;
        }
        tracing::info!(%room_id, %creator, %version, "created a room");
        Ok(room_id)
    }

    /// Writes the create event and the room record it starts.
    async fn write_create_event(
        &self,
        creator: &UserId,
        content: Value,
        version: &RoomVersionId,
    ) -> Result<OwnedRoomId> {
        let this = self.clone();
        let creator = creator.to_owned();
        let version = version.clone();
        let (room_id, ticket) = blocking(move || {
            let rules = version.rules().ok_or_else(|| Error::internal("room version without rules"))?;
            let mut new = NewEvent::state(TimelineEventType::RoomCreate, "", content);
            let db = this.db();
            // Until the room record is written below, no other creation may claim an ID.
            let _claim = this.inner.create_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let _shared_claim = db.shared_lock(hearth_storage::engine::LockKind::Create, "room")?;
            let (event_id, object, room_id) = loop {
                let explicit_id = (!rules.authorization.room_create_event_id_as_room_id).then(|| {
                    RoomId::parse(format!("!{}:{}", random_string(18), this.inner.server_name))
                        .map_err(Error::internal)
                });
                let explicit_id = explicit_id.transpose()?;
                let placement = Placement {
                    room_id: explicit_id.as_deref(),
                    prev_events: &[],
                    auth_events: &[],
                    depth: 1,
                };
                let (event_id, object) = build_and_sign(
                    &new,
                    &creator,
                    &placement,
                    &rules,
                    &this.inner.server_name,
                    &this.inner.key,
                )?;
                let room_id = match explicit_id {
                    Some(id) => id,
                    // Since v12 the room ID is the create event's reference hash.
                    None => RoomId::parse(format!("!{}", event_id.as_str().trim_start_matches('$')))
                        .map_err(Error::internal)?,
                };
                if db.get::<RoomsTable>(&room_id)?.is_none() {
                    break (event_id, object, room_id);
                }
                // The same creator, content and millisecond as a room that exists: a later
                // timestamp makes a different event, and so a room of its own.
                let ts = match object.get("origin_server_ts") {
                    Some(ruma::CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
                    _ => 0,
                };
                new.origin_server_ts = Some(ts + 1);
            };
            let json = to_json_string(&object)?;
            let pdu = Pdu::from_json(event_id.clone(), &json)?;
            auth::check(&rules, &pdu, |_| None, |_, _| None)
                .map_err(|reason| Error::forbidden(format!("Create event not allowed: {reason}")))?;

            let mut batch = Batch::new();
            let group = this.new_state_group_id()?;
            let change = [("m.room.create".to_owned(), String::new(), event_id.clone())];
            state::write_group(db, &mut batch, group, None, &change)?;
            batch.put::<CurrentState>(
                &(room_id.clone(), "m.room.create".to_owned(), String::new()),
                &event_id,
            )?;
            let ticket = this.inner.streams.allocate()?;
            let record = PduRecord {
                room_id: room_id.clone(),
                json,
                stream_pos: Some(ticket.pos),
                state_group: group,
                redacted_by: None,
                txn: None,
                replaces_state: None,
                backfill: None,
                gap_before: false,
            };
            batch.put::<Pdus>(&event_id, &record)?;
            batch.put::<RoomTimeline>(&(room_id.clone(), ticket.pos), &event_id)?;
            let entry = StreamEntry::RoomEvent { room_id: room_id.clone(), event_id: event_id.clone() };
            batch.stream_entry(ticket.pos, &entry)?;
            let room = RoomRecord {
                version: version.to_string(),
                forward_extremities: vec![event_id],
                current_state_group: group,
                max_depth: 1,
                joined_count: 0,
            };
            batch.put::<RoomsTable>(&room_id, &room)?;
            db.write(batch)?;
            Ok((room_id, ticket))
        })
        .await?;
        // The create event; the rest of the room's first events go through `append`.
        self.inner.events_persisted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.inner.streams.finish(ticket, Vec::new());
        Ok(room_id)
    }
}
