//! Who may see which event: history visibility and membership at the event, memoized per state
//! group because consecutive events mostly share one.

use std::collections::HashMap;

use hearth_storage::records::PduRecord;
use ruma::UserId;

use super::Rooms;
use crate::Result;

impl Rooms {
    /// `user`'s membership in the state group `group` (the state after some event), if any.
    pub(super) fn membership_at(&self, group: u64, user: &UserId) -> Result<Option<String>> {
        let Some(id) = self.state_lookup(group, "m.room.member", user.as_str())? else {
            return Ok(None);
        };
        Ok(self.pdu(&id)?.and_then(|p| p.content_str("membership")))
    }
}

/// Decides visibility of many events of one room for one user.
pub struct Viewer<'a> {
    rooms: &'a Rooms,
    user: &'a UserId,
    currently_joined: bool,
    memo: HashMap<u64, bool>,
}

impl<'a> Viewer<'a> {
    pub fn new(rooms: &'a Rooms, room_id: &ruma::RoomId, user: &'a UserId) -> Result<Self> {
        let currently_joined = rooms.membership(room_id, user)?.as_deref() == Some("join");
        Ok(Self { rooms, user, currently_joined, memo: HashMap::new() })
    }

    pub fn can_see(&mut self, record: &PduRecord) -> Result<bool> {
        if let Some(seen) = self.memo.get(&record.state_group) {
            return Ok(*seen);
        }
        let group = record.state_group;
        let content_field = |kind: &str, key: &str, field: &str| -> Result<Option<String>> {
            let Some(id) = self.rooms.state_lookup(group, kind, key)? else { return Ok(None) };
            Ok(self.rooms.pdu(&id)?.and_then(|p| p.content_str(field)))
        };
        let visibility = content_field("m.room.history_visibility", "", "history_visibility")?
            .unwrap_or_else(|| "shared".to_owned());
        let membership = self.rooms.membership_at(group, self.user)?;
        let at = membership.as_deref();
        let visible = match visibility.as_str() {
            "world_readable" => true,
            "joined" => at == Some("join"),
            "invited" => matches!(at, Some("join" | "invite")),
            // "shared", and unknown values, which the spec says to treat as shared.
            _ => at == Some("join") || self.currently_joined,
        };
        self.memo.insert(group, visible);
        Ok(visible)
    }
}
