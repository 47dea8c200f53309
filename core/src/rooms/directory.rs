//! The room directory, room summaries, upgrades, and finding events by time.

use hearth_storage::schema::{NetworkRooms, PublicRooms, RoomTimeline};
use ruma::EventEncryptionAlgorithm;
use ruma::directory::RoomNetwork;
use ruma::events::room::{
    guest_access::{GuestAccess, RoomGuestAccessEventContent},
    history_visibility::HistoryVisibility,
};
use ruma::events::room::{member::MembershipState, power_levels::RoomPowerLevelsEventContent};
use ruma::room::{JoinRuleSummary, RoomType};
use ruma::{
    OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId, events::TimelineEventType,
};
use serde_json::{Value, json};

use super::{CREATABLE_VERSIONS, CreateRoom, Rooms, state::StateMap};
use crate::{Error, ErrorCode, Result, events::NewEvent};

/// What the directory shows of a room.
#[derive(Debug, Clone)]
pub struct PublicRoom {
    pub room_id: OwnedRoomId,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub canonical_alias: Option<String>,
    pub avatar_url: Option<String>,
    pub joined_members: u64,
    pub world_readable: bool,
    pub guest_can_join: bool,
    pub join_rule: Option<String>,
    pub room_type: Option<RoomType>,
}

/// A room summary as one viewer may see it ([`Rooms::summary_for`]).
#[derive(Debug, Clone)]
pub struct RoomSummaryView {
    pub room: PublicRoom,
    /// With the rooms whose members a restricted join rule lets in.
    pub join_rule: JoinRuleSummary,
    pub encryption: Option<EventEncryptionAlgorithm>,
    pub version: RoomVersionId,
    /// The viewer's own membership, if any.
    pub membership: Option<MembershipState>,
}

impl RoomSummaryView {
    /// The summary in the spec's shape (`allowed_room_ids` only for restricted join rules).
    pub fn to_summary(&self) -> ruma::room::RoomSummary {
        let join_rule = self.join_rule.clone();
        let room = &self.room;
        let mut summary = ruma::room::RoomSummary::new(
            room.room_id.clone(),
            join_rule,
            room.guest_can_join,
            ruma::UInt::new_saturating(room.joined_members),
            room.world_readable,
        );
        summary.canonical_alias = room.canonical_alias.as_deref().and_then(|a| a.try_into().ok());
        summary.name.clone_from(&room.name);
        summary.topic.clone_from(&room.topic);
        summary.avatar_url = room.avatar_url.as_deref().map(Into::into);
        summary.room_type.clone_from(&room.room_type);
        summary.encryption.clone_from(&self.encryption);
        summary.room_version = Some(self.version.clone());
        summary
    }
}

impl From<PublicRoom> for ruma::directory::PublicRoomsChunk {
    fn from(room: PublicRoom) -> Self {
        let mut chunk: Self = ruma::directory::PublicRoomsChunkInit {
            num_joined_members: ruma::UInt::new_saturating(room.joined_members),
            room_id: room.room_id,
            world_readable: room.world_readable,
            guest_can_join: room.guest_can_join,
        }
        .into();
        chunk.name = room.name;
        chunk.topic = room.topic;
        chunk.canonical_alias = room.canonical_alias.and_then(|a| a.try_into().ok());
        chunk.avatar_url = room.avatar_url.map(Into::into);
        chunk.join_rule = room
            .join_rule
            .map_or(ruma::room::JoinRuleKind::Public, |r| ruma::room::JoinRuleKind::from(r.as_str()));
        chunk.room_type = room.room_type;
        chunk
    }
}

/// State types an upgrade carries over to the replacement room.
const CARRIED_OVER: &[&str] = &[
    "m.room.server_acl",
    "m.room.encryption",
    "m.room.name",
    "m.room.avatar",
    "m.room.topic",
    "m.room.guest_access",
    "m.room.history_visibility",
    "m.room.join_rules",
];

impl Rooms {
    /// Whether guests may join (`forbidden` without a guest-access event, as the spec says).
    fn guest_access(&self, room_id: &RoomId) -> Result<GuestAccess> {
        let event = self.current_state_event(room_id, "m.room.guest_access", "")?;
        let content = event.and_then(|e| e.content_as::<RoomGuestAccessEventContent>());
        Ok(content.map_or(GuestAccess::Forbidden, |c| c.guest_access))
    }

    /// The room's encryption algorithm, if it is encrypted.
    pub fn encryption(&self, room_id: &RoomId) -> Result<Option<EventEncryptionAlgorithm>> {
        // The algorithm alone: a room stays encrypted whatever else its content holds.
        #[derive(serde::Deserialize)]
        struct AlgorithmOnly {
            algorithm: EventEncryptionAlgorithm,
        }
        let event = self.current_state_event(room_id, "m.room.encryption", "")?;
        Ok(event.and_then(|e| e.content_as::<AlgorithmOnly>()).map(|c| c.algorithm))
    }

    fn state_field(&self, room_id: &RoomId, kind: &str, field: &str) -> Result<Option<String>> {
        Ok(self.current_state_event(room_id, kind, "")?.and_then(|p| p.content_str(field)))
    }

    pub fn summary(&self, room_id: &RoomId) -> Result<PublicRoom> {
        Ok(PublicRoom {
            room_id: room_id.to_owned(),
            name: self.state_field(room_id, "m.room.name", "name")?,
            topic: self.state_field(room_id, "m.room.topic", "topic")?,
            canonical_alias: self.state_field(room_id, "m.room.canonical_alias", "alias")?,
            avatar_url: self.state_field(room_id, "m.room.avatar", "url")?,
            joined_members: u64::try_from(self.members(room_id)?.joined.len()).unwrap_or(u64::MAX),
            world_readable: self.current_visibility(room_id)? == HistoryVisibility::WorldReadable,
            guest_can_join: self.guest_access(room_id)? == GuestAccess::CanJoin,
            join_rule: self.state_field(room_id, "m.room.join_rules", "join_rule")?,
            room_type: self.room_type(room_id)?,
        })
    }

    /// A room this server is in, as summaries show it, before any question of who asks.
    pub fn room_view(&self, room_id: &RoomId) -> Result<Option<RoomSummaryView>> {
        let Some(room) = self.room(room_id)? else { return Ok(None) };
        if !self.resident(room_id)? {
            return Ok(None);
        }
        let summary = self.summary(room_id)?;
        let (version, _) = self.version(&room)?;
        Ok(Some(RoomSummaryView {
            encryption: self.encryption(room_id)?,
            version,
            membership: None,
            join_rule: JoinRuleSummary::from(self.join_rule(room_id)?),
            room: summary,
        }))
    }

    /// What a room summary (`GET /room_summary`, a space hierarchy) shows `viewer` (`None`: a
    /// caller without a token) of a room this server is in, or `None` when they may not see
    /// it, so that it reads as not found: members (joined, invited, knocking), anyone for a
    /// world-readable room or one whose join rule lets them ask in (public, knock), and for a
    /// restricted room members of a room it allows (the spec's room summary rules).
    pub fn summary_for(&self, room_id: &RoomId, viewer: Option<&UserId>) -> Result<Option<RoomSummaryView>> {
        let Some(mut view) = self.room_view(room_id)? else { return Ok(None) };
        view.membership = viewer.map(|v| self.membership(room_id, v)).transpose()?.flatten();
        let mut visible = matches!(
            view.membership,
            Some(MembershipState::Join | MembershipState::Invite | MembershipState::Knock)
        ) || view.room.world_readable
            || matches!(
                view.join_rule,
                JoinRuleSummary::Public | JoinRuleSummary::Knock | JoinRuleSummary::KnockRestricted(_)
            );
        if let (false, JoinRuleSummary::Restricted(restricted), Some(viewer)) =
            (visible, &view.join_rule, viewer)
        {
            for allowed in &restricted.allowed_room_ids {
                if self.membership(allowed, viewer)? == Some(MembershipState::Join) {
                    visible = true;
                    break;
                }
            }
        }
        Ok(visible.then_some(view))
    }

    /// Published rooms, most joined members first, then by room ID for a stable order.
    pub fn public_rooms(&self, search: Option<&str>, network: &RoomNetwork) -> Result<Vec<PublicRoom>> {
        let mut listed = std::collections::BTreeSet::new();
        if matches!(network, RoomNetwork::Matrix | RoomNetwork::All) {
            for entry in self.db().scan_prefix_all::<PublicRooms>()? {
                listed.insert(entry?.0);
            }
        }
        let networks = match network {
            RoomNetwork::Matrix => None,
            RoomNetwork::ThirdParty(instance) => Some(self.db().scan_prefix::<NetworkRooms, _>(instance)?),
            _ => Some(self.db().scan_prefix_all::<NetworkRooms>()?),
        };
        for entry in networks.into_iter().flatten() {
            listed.insert(entry?.0.1);
        }
        let mut rooms = Vec::new();
        for room_id in listed {
            let summary = self.summary(&room_id)?;
            if let Some(term) = search.map(str::to_lowercase).filter(|t| !t.is_empty()) {
                let haystack = [&summary.name, &summary.topic, &summary.canonical_alias]
                    .iter()
                    .filter_map(|f| f.as_deref())
                    .map(str::to_lowercase)
                    .collect::<Vec<_>>()
                    .join(" ");
                if !haystack.contains(&term) {
                    continue;
                }
            }
            rooms.push(summary);
        }
        rooms.sort_by(|a, b| b.joined_members.cmp(&a.joined_members).then_with(|| a.room_id.cmp(&b.room_id)));
        Ok(rooms)
    }

    /// The event closest to `ts` in the given direction, among those `user` may see.
    pub fn event_by_timestamp(
        &self,
        room_id: &RoomId,
        user: &UserId,
        ts: u64,
        forward: bool,
    ) -> Result<Option<(OwnedEventId, u64)>> {
        let horizon = self.read_access(room_id, user)?;
        let mut best: Option<(OwnedEventId, u64)> = None;
        let mut viewer = super::Viewer::new(self, room_id, user)?;
        for entry in self.db().scan_prefix::<RoomTimeline, _>(&room_id.to_owned())? {
            let ((_, pos), event_id) = entry?;
            if pos > horizon {
                break;
            }
            let Some(record) = self.pdu_record(&event_id)? else { continue };
            let Some(pdu) = super::servable(&event_id, &record) else { continue };
            let event_ts = u64::from(pdu.origin_server_ts.get());
            let candidate = if forward { event_ts >= ts } else { event_ts <= ts };
            if !candidate || !viewer.can_see(&pdu, &record)? {
                continue;
            }
            let better = match &best {
                None => true,
                Some((_, best_ts)) => {
                    if forward {
                        event_ts < *best_ts
                    } else {
                        event_ts >= *best_ts
                    }
                }
            };
            if better {
                best = Some((event_id, event_ts));
            }
        }
        Ok(best)
    }

    /// Replaces a room by a new one of another version: the new room gets the old one's
    /// important state, the old one a tombstone and power levels that silence it.
    pub async fn upgrade(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: Value,
        new_version: RoomVersionId,
        additional_creators: Vec<OwnedUserId>,
    ) -> Result<OwnedRoomId> {
        if !CREATABLE_VERSIONS.contains(&new_version) {
            return Err(Error::new(
                ErrorCode::UnsupportedRoomVersion,
                "This server cannot create rooms of that version",
            ));
        }
        if self.membership(room_id, user)? != Some(MembershipState::Join) {
            return Err(Error::forbidden("You are not joined to this room"));
        }
        if !self.has_power_for_state(room_id, user, "m.room.tombstone")? {
            return Err(Error::forbidden("You do not have the power to upgrade this room"));
        }
        let old_state: StateMap = {
            let room = self.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
            super::state::load(self.db(), room.current_state_group)?
        };
        let tombstone_placeholder = self.current_state_event(room_id, "m.room.create", "")?;
        let mut create = CreateRoom::new();
        create.version = Some(new_version.clone());
        let mut creation = serde_json::Map::new();
        if let Some(old_create) = &tombstone_placeholder {
            if let Some(room_type) = old_create.content_json().get("type") {
                creation.insert("type".into(), room_type.clone());
            }
            // The room ID alone: `event_id` is deprecated (it could name no event the new room's
            // members can fetch), and v12 rooms name their predecessor by room only.
            creation.insert("predecessor".into(), json!({"room_id": room_id}));
        }
        if !additional_creators.is_empty() {
            creation.insert("additional_creators".into(), json!(additional_creators));
        }
        create.creation_content = Some(creation);
        for kind in CARRIED_OVER {
            if let Some(id) = old_state.get(&((*kind).to_owned(), String::new()))
                && let Some(pdu) = self.pdu(id)?
            {
                create.initial_state.push(((*kind).to_owned(), String::new(), pdu.content_json()));
            }
        }
        let new_rules = new_version.rules().ok_or_else(|| Error::internal("room version without rules"))?;
        if let Some(pl) = self.current_state_event(room_id, "m.room.power_levels", "")? {
            let mut content = pl.content_json();
            if content.get("users").is_none_or(|u| !u.is_object()) {
                content["users"] = json!({});
            }
            if let Some(users) = content.get_mut("users").and_then(Value::as_object_mut) {
                if new_rules.authorization.explicitly_privilege_room_creators {
                    // The new room's creators (the upgrader and whom they name) have power
                    // without an entry, and may not have one.
                    users.remove(user.as_str());
                    for creator in &additional_creators {
                        users.remove(creator.as_str());
                    }
                } else {
                    // The upgrader keeps at least the level that let them upgrade.
                    let kept = users.get(user.as_str()).and_then(Value::as_i64).unwrap_or(0).max(100);
                    users.insert(user.to_string(), json!(kept));
                }
            }
            if let Value::Object(map) = content {
                create.power_level_override = Some(map);
            }
        }
        let new_room = self.create_room(user, profile, create).await?;

        let tombstone = NewEvent::state(
            TimelineEventType::RoomTombstone,
            "",
            json!({"body": "This room has been replaced", "replacement_room": new_room}),
        );
        self.append(room_id, user, tombstone, None).await?;
        // Silence the old room: only moderators may speak or invite.
        if let Some(pl) = self.current_state_event(room_id, "m.room.power_levels", "")?
            && let Ok(mut levels) = serde_json::from_str::<RoomPowerLevelsEventContent>(pl.content.get())
        {
            let restricted = levels.users_default.max(ruma::int!(50));
            levels.events_default = restricted;
            levels.invite = restricted;
            // Fields ruma does not know stay as they were.
            let mut content = pl.content_json();
            if let (Value::Object(target), Ok(Value::Object(typed))) =
                (&mut content, serde_json::to_value(&levels))
            {
                target.extend(typed);
            }
            let event = NewEvent::state(TimelineEventType::RoomPowerLevels, "", content);
            self.append(room_id, user, event, None).await?;
        }
        let aliases = self.local_aliases(room_id)?;
        for alias in aliases {
            self.move_alias(&alias, &new_room).await?;
        }
        if self.db().contains::<PublicRooms>(&room_id.to_owned())? {
            self.set_published(room_id, false).await?;
            self.set_published(&new_room, true).await?;
        }
        Ok(new_room)
    }
}
