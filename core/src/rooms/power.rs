//! Power levels, for the checks the auth rules leave to the server (redaction of others'
//! events, alias deletion).

use ruma::{
    OwnedUserId, RoomId, UserId,
    events::{
        StateEventType,
        room::power_levels::{
            RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource, UserPowerLevel,
        },
    },
};

use serde_json::{Value, json};

use super::Rooms;
use crate::{Error, Result};

/// The one field of a create event's content that names privileged creators.
#[derive(serde::Deserialize)]
struct AdditionalCreators {
    #[serde(default)]
    additional_creators: Vec<OwnedUserId>,
}

impl Rooms {
    /// The room's creators where the version privileges them (v12: the create event's sender
    /// and its `additional_creators`); empty for older versions.
    pub fn privileged_creators(&self, room_id: &RoomId) -> Result<Vec<OwnedUserId>> {
        let Some(room) = self.room(room_id)? else { return Ok(Vec::new()) };
        let (_, rules) = self.version(&room)?;
        if !rules.authorization.explicitly_privilege_room_creators {
            return Ok(Vec::new());
        }
        let Some(create) = self.current_state_event(room_id, "m.room.create", "")? else {
            return Ok(Vec::new());
        };
        let mut creators = vec![create.sender.clone()];
        // Only this field, as the auth rules read it: the rest of the content may hold what
        // ruma's full type refuses (a malformed predecessor) without changing who the creators
        // are. The v12 auth rules refuse a create event whose additional creators are not user IDs.
        if let Some(content) = create.content_as::<AdditionalCreators>() {
            creators.extend(content.additional_creators);
        }
        Ok(creators)
    }

    /// The room's power levels now, read through ruma's typed content with the room version's
    /// rules: privileged creators (v12) rank above every level; without a power-levels event the
    /// spec's defaults apply, the creator at 100 in older versions.
    pub fn power_levels(&self, room_id: &RoomId) -> Result<RoomPowerLevels> {
        let room = self.room(room_id)?.ok_or_else(|| Error::not_found("Unknown room"))?;
        let (_, rules) = self.version(&room)?;
        let creators = if rules.authorization.explicitly_privilege_room_creators {
            self.privileged_creators(room_id)?
        } else {
            self.current_state_event(room_id, "m.room.create", "")?.map(|c| c.sender).into_iter().collect()
        };
        let source = match self.current_state_event(room_id, "m.room.power_levels", "")? {
            Some(pl) => match serde_json::from_str::<RoomPowerLevelsEventContent>(pl.content.get()) {
                Ok(content) => RoomPowerLevelsSource::Original(content),
                Err(error) => {
                    // The auth rules accepted it, so this is a field ruma reads more strictly.
                    // The spec's defaults stand in, but without the creator's 100 of a room that
                    // never had power levels: a demoted creator must not get their power back.
                    tracing::warn!(%room_id, event_id = %pl.event_id, %error, "unreadable power levels");
                    let privileged = rules.authorization.explicitly_privilege_room_creators;
                    let creators = if privileged { creators } else { Vec::new() };
                    return Ok(RoomPowerLevels::new(
                        RoomPowerLevelsSource::None,
                        &rules.authorization,
                        creators,
                    ));
                }
            },
            None => RoomPowerLevelsSource::None,
        };
        Ok(RoomPowerLevels::new(source, &rules.authorization, creators))
    }

    /// The user's power level; privileged creators rank above all (`i64::MAX`).
    pub fn power_level(&self, room_id: &RoomId, user: &UserId) -> Result<i64> {
        Ok(match self.power_levels(room_id)?.for_user(user) {
            UserPowerLevel::Int(level) => level.into(),
            _ => i64::MAX,
        })
    }

    /// Whether `user` may send a state event of `kind` now.
    pub(super) fn has_power_for_state(&self, room_id: &RoomId, user: &UserId, kind: &str) -> Result<bool> {
        Ok(self.power_levels(room_id)?.user_can_send_state(user, StateEventType::from(kind)))
    }

    /// Whether `user` may redact an event sent by `original_sender`.
    pub fn may_redact(&self, room_id: &RoomId, user: &UserId, original_sender: &UserId) -> Result<bool> {
        let levels = self.power_levels(room_id)?;
        Ok(if user == original_sender {
            levels.user_can_redact_own_event(user)
        } else {
            levels.user_can_redact_event_of_other(user)
        })
    }
}

/// A new room's power levels, as Synapse writes them (every level spelled out): the creator at
/// 100 (and `trusted`, a trusted private chat's invitees) where the version does not privilege
/// creators; where it does, replacing the room needs more than an ordinary admin's 100.
pub(super) fn initial_power_levels(
    creator: &UserId,
    trusted: &[OwnedUserId],
    rules: &ruma::room_version_rules::RoomVersionRules,
) -> Value {
    let mut power = json!({
        "users_default": 0, "events_default": 0, "state_default": 50,
        "ban": 50, "kick": 50, "redact": 50, "invite": 0,
        "events": {
            "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
            "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
            "m.room.server_acl": 100, "m.room.encryption": 100,
        },
        "notifications": {"room": 50},
    });
    let mut users = serde_json::Map::new();
    if rules.authorization.explicitly_privilege_room_creators {
        power["events"]["m.room.tombstone"] = json!(150);
    } else {
        for user in std::iter::once(creator).chain(trusted.iter().map(AsRef::as_ref)) {
            users.insert(user.to_string(), json!(100));
        }
    }
    power["users"] = Value::Object(users);
    power
}

/// A `power_level_override` for createRoom that mutes everyone but the creator (server notice
/// rooms, the room that replaces a shut-down one).
pub fn muted_members_override() -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    map.insert("users_default".to_owned(), json!(-10));
    map
}

/// What a client may not put in a power-levels event although the auth rules would let the
/// event through or fail it with a less helpful error: privileged creators listed in `users`
/// (their power is implied, and v12's auth rules reject the event).
pub(super) fn check_power_levels_content(
    creators: &[OwnedUserId],
    content: &serde_json::Value,
) -> Result<()> {
    if let Some(users) = content.get("users").and_then(|u| u.as_object())
        && let Some(creator) = creators.iter().find(|c| users.contains_key(c.as_str()))
    {
        return Err(Error::bad_json(format!(
            "{creator} is a creator of this room: creators cannot be given a power level"
        )));
    }
    Ok(())
}
