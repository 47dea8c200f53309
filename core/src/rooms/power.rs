//! Power levels, for the checks the auth rules leave to the server (redaction of others'
//! events, alias deletion).

use ruma::{OwnedUserId, RoomId, UserId};

use super::Rooms;
use crate::{Error, Result};

fn level(value: Option<&serde_json::Value>, default: i64) -> i64 {
    value.and_then(|v| v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))).unwrap_or(default)
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
        if let Some(additional) = create.content_json().get("additional_creators").and_then(|a| a.as_array())
        {
            creators
                .extend(additional.iter().filter_map(|u| u.as_str()).filter_map(|u| UserId::parse(u).ok()));
        }
        Ok(creators)
    }

    /// The user's power level; room creators of versions with privileged creators rank above all.
    pub fn power_level(&self, room_id: &RoomId, user: &UserId) -> Result<i64> {
        if self.privileged_creators(room_id)?.iter().any(|c| c == user) {
            return Ok(i64::MAX);
        }
        match self.current_state_event(room_id, "m.room.power_levels", "")? {
            Some(pl) => {
                let content = pl.content_json();
                let default = level(content.get("users_default"), 0);
                Ok(level(content.get("users").and_then(|u| u.get(user.as_str())), default))
            }
            // Without power levels the creator has 100 and everyone else 0.
            None => {
                let creator = self.current_state_event(room_id, "m.room.create", "")?.map(|c| c.sender);
                Ok(if creator.as_deref() == Some(user) { 100 } else { 0 })
            }
        }
    }

    /// The level a named action (`redact`, `kick`, ...) needs.
    pub fn required_level(&self, room_id: &RoomId, action: &str, default: i64) -> Result<i64> {
        let pl = self.current_state_event(room_id, "m.room.power_levels", "")?;
        Ok(pl.map_or(default, |pl| level(pl.content_json().get(action), default)))
    }

    /// The level a state event of `kind` needs: its own entry in `events`, else `state_default`.
    pub(super) fn required_state_level(&self, room_id: &RoomId, kind: &str) -> Result<i64> {
        let pl = self.current_state_event(room_id, "m.room.power_levels", "")?;
        Ok(pl.map_or(50, |pl| {
            let content = pl.content_json();
            level(content.get("events").and_then(|e| e.get(kind)), level(content.get("state_default"), 50))
        }))
    }

    pub(super) fn has_power_for_state(&self, room_id: &RoomId, user: &UserId, kind: &str) -> Result<bool> {
        Ok(self.power_level(room_id, user)? >= self.required_state_level(room_id, kind)?)
    }

    /// Whether `user` may redact an event sent by `original_sender`.
    pub fn may_redact(&self, room_id: &RoomId, user: &UserId, original_sender: &UserId) -> Result<bool> {
        if user == original_sender {
            return Ok(true);
        }
        Ok(self.power_level(room_id, user)? >= self.required_level(room_id, "redact", 50)?)
    }
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
