//! Spaces as this server sees them: a space's children (its `m.space.child` state, in the
//! spec's order) and who may look at a room's place in a hierarchy. The walk across spaces,
//! which may need other servers, is `federation/hierarchy.rs`.

use hearth_storage::schema::CurrentState;
use ruma::events::room::member::MembershipState;
use ruma::room::JoinRuleSummary;
use ruma::{OwnedRoomId, OwnedServerName, RoomId, ServerName, room::RoomType};
use serde_json::{Value, json};

use super::{Rooms, directory::RoomSummaryView};
use crate::Result;

/// One valid `m.space.child` link of a space.
#[derive(Debug, Clone)]
pub struct SpaceChild {
    pub room_id: OwnedRoomId,
    /// Servers that may know the child room, as the link names them.
    pub via: Vec<OwnedServerName>,
    /// The link as a stripped state event with its `origin_server_ts`, as hierarchies show it.
    pub stripped: Value,
}

/// A link is valid when `via` is a non-empty list of server names: anything else (an empty
/// content, the usual way to remove a child) is no link.
pub fn valid_via(content: &Value) -> Option<Vec<OwnedServerName>> {
    let via = content.get("via")?.as_array()?;
    let names: Option<Vec<OwnedServerName>> =
        via.iter().map(|v| v.as_str().and_then(|s| ServerName::parse(s).ok())).collect();
    names.filter(|n| !n.is_empty())
}

/// The spec's `order`: 1-50 printable ASCII characters, or none.
fn valid_order(content: &Value) -> Option<String> {
    let order = content.get("order")?.as_str()?;
    (!order.is_empty() && order.len() <= 50 && order.bytes().all(|b| (0x20..=0x7e).contains(&b)))
        .then(|| order.to_owned())
}

impl Rooms {
    /// The children of `room_id` if it is a space (none otherwise), `suggested` ones only when
    /// asked: those with a valid `order` first by it, then by the link's timestamp, then by
    /// room ID.
    pub fn space_children(&self, room_id: &RoomId, suggested_only: bool) -> Result<Vec<SpaceChild>> {
        let is_space = self.room_type(room_id)? == Some(RoomType::Space);
        if !is_space {
            return Ok(Vec::new());
        }
        let mut children = Vec::new();
        let prefix = (room_id.to_owned(), "m.space.child".to_owned());
        for entry in self.db().scan_prefix::<CurrentState, _>(&prefix)? {
            let ((_, _, state_key), event_id) = entry?;
            let Some(pdu) = self.pdu(&event_id)? else { continue };
            let content = pdu.content_json();
            let (Ok(child), Some(via)) = (RoomId::parse(&state_key), valid_via(&content)) else { continue };
            if suggested_only && content.get("suggested") != Some(&Value::Bool(true)) {
                continue;
            }
            let ts = u64::from(pdu.origin_server_ts.get());
            let order = valid_order(&content);
            let stripped = json!({
                "type": "m.space.child",
                "state_key": state_key,
                "content": content,
                "sender": pdu.sender,
                "origin_server_ts": ts,
            });
            children.push((
                (order.is_none(), order, ts, child.clone()),
                SpaceChild { room_id: child, via, stripped },
            ));
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(children.into_iter().map(|(_, child)| child).collect())
    }

    /// Whether another server may see a room in a hierarchy: anyone may see a room that is
    /// public (or takes knocks) or world-readable; otherwise the server needs a member in it
    /// (joined or invited), or, for a restricted room, a joined member in one of the rooms it
    /// allows, as this server knows them.
    pub fn visible_to_server(
        &self,
        room_id: &RoomId,
        server: &ServerName,
        view: &RoomSummaryView,
    ) -> Result<bool> {
        if view.room.world_readable
            || matches!(
                view.join_rule,
                JoinRuleSummary::Public | JoinRuleSummary::Knock | JoinRuleSummary::KnockRestricted(_)
            )
        {
            return Ok(true);
        }
        let has_member = |room: &RoomId, memberships: &[MembershipState]| -> Result<bool> {
            for membership in memberships {
                if self.members_with(room, membership)?.iter().any(|u| u.server_name() == server) {
                    return Ok(true);
                }
            }
            Ok(false)
        };
        if has_member(room_id, &[MembershipState::Join, MembershipState::Invite])? {
            return Ok(true);
        }
        if let JoinRuleSummary::Restricted(restricted) | JoinRuleSummary::KnockRestricted(restricted) =
            &view.join_rule
        {
            for allowed in &restricted.allowed_room_ids {
                if has_member(allowed, &[MembershipState::Join])? {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}
