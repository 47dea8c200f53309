//! Who shares a room with the syncing user, for the presence and device-list sections.

use ruma::events::room::member::MembershipState;
use std::collections::BTreeSet;

use ruma::{OwnedRoomId, OwnedUserId, UserId};
use serde_json::Value;

use crate::{Homeserver, Result, rooms::view::type_matches};

impl Homeserver {
    /// Presence of users sharing a room: all known ones initially; after that, the changed
    /// ones and the known ones the user has just come to share a room with (whose earlier
    /// changes the client was never sent).
    pub(super) fn presence_events(
        &self,
        initial: bool,
        changed: &BTreeSet<OwnedUserId>,
        newly_sharing: &BTreeSet<OwnedUserId>,
        filter: &ruma::api::client::filter::Filter,
        shares: &Sharing<'_>,
    ) -> Result<Vec<Value>> {
        let wanted = |t: &str| {
            !filter.not_types.iter().any(|p| type_matches(p, t))
                && filter.types.as_ref().is_none_or(|types| types.iter().any(|p| type_matches(p, t)))
        };
        if !self.config.presence.enabled
            || !wanted("m.presence")
            || (!initial && changed.is_empty() && newly_sharing.is_empty())
        {
            return Ok(Vec::new());
        }
        let known = |u: &OwnedUserId| self.presence(u).last_active_ago_ms.is_some();
        let mut users: BTreeSet<OwnedUserId> = BTreeSet::new();
        if initial {
            users.extend(self.users_sharing_rooms(shares.user)?.into_iter().filter(|u| known(u)));
        } else {
            for u in changed {
                if shares.with(u)? {
                    users.insert(u.clone());
                }
            }
            for u in newly_sharing {
                if known(u) && shares.with(u)? {
                    users.insert(u.clone());
                }
            }
        }
        Ok(users.iter().map(|u| self.presence_event(u)).collect())
    }
}

/// What the rooms of one sync window did to who shares a room with the syncing user.
#[derive(Default)]
pub(super) struct MembershipMoves {
    /// Members of rooms the user joined, and users the timelines show joining.
    pub newly_sharing: BTreeSet<OwnedUserId>,
    /// Members of rooms the user left, and users the timelines show leaving or banned.
    pub maybe_left: BTreeSet<OwnedUserId>,
    /// Whether the user joined a room in this window: then their own devices are listed too,
    /// as Synapse does, for their other devices to learn who now shares a room with them.
    pub joined_now: bool,
}

/// Whether others share a room with one user, answered per person from that user's joined
/// rooms and remembered for the response.
pub(super) struct Sharing<'a> {
    hs: &'a Homeserver,
    user: &'a UserId,
    rooms: std::cell::OnceCell<Vec<OwnedRoomId>>,
    answers: std::cell::RefCell<std::collections::HashMap<OwnedUserId, bool>>,
}

impl<'a> Sharing<'a> {
    pub(super) fn new(hs: &'a Homeserver, user: &'a UserId) -> Self {
        Self { hs, user, rooms: std::cell::OnceCell::new(), answers: std::cell::RefCell::default() }
    }

    /// The device-list section: whose keys the client should fetch again (they changed, or the
    /// user has just come to share a room with them) and whom it shares no room with any more.
    pub(super) fn device_lists(
        &self,
        keys_changed: &BTreeSet<OwnedUserId>,
        moves: &MembershipMoves,
    ) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
        let mut changed = BTreeSet::new();
        for u in keys_changed {
            if self.with(u)? {
                changed.insert(u.clone());
            }
        }
        for u in &moves.newly_sharing {
            if (u != self.user || moves.joined_now) && self.with(u)? {
                changed.insert(u.clone());
            }
        }
        let mut left = Vec::new();
        for u in &moves.maybe_left {
            if u != self.user && !self.with(u)? {
                left.push(u.clone());
            }
        }
        Ok((changed.into_iter().collect(), left))
    }

    pub(super) fn with(&self, other: &UserId) -> Result<bool> {
        if other == self.user {
            return Ok(true);
        }
        if let Some(known) = self.answers.borrow().get(other) {
            return Ok(*known);
        }
        let rooms = match self.rooms.get() {
            Some(rooms) => rooms,
            None => {
                let rooms = self.hs.rooms.joined_rooms(self.user)?;
                self.rooms.get_or_init(|| rooms)
            }
        };
        let mut shared = false;
        for room in rooms {
            if self.hs.rooms.membership(room, other)? == Some(MembershipState::Join) {
                shared = true;
                break;
            }
        }
        self.answers.borrow_mut().insert(other.to_owned(), shared);
        Ok(shared)
    }
}
