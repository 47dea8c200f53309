//! Memberships of local users in rooms this server is not in: invites from other servers,
//! knocks, and the leaves that reject or withdraw them. The membership event is kept outside
//! any timeline (there is no local graph to put it in); the stripped state that came with it
//! stands in for the room's state in /sync.

use hearth_storage::{
    Batch,
    records::{MembershipRecord, OutsideRoomRecord, StreamEntry},
    schema::{OutsideRooms, Pdus, RoomMembers, UserRooms},
};
use ruma::events::room::member::MembershipState;
use ruma::{OwnedEventId, RoomId, UserId};

use super::Rooms;
use crate::{Result, events::Pdu, users::blocking};

impl Rooms {
    /// Records `user`'s membership `event_id` (an invite, knock or leave) in a room whose state
    /// this server does not have, and wakes their /sync. `outside` is what to show of the room
    /// meanwhile; `None` forgets it (the user left).
    pub async fn record_outside_membership(
        &self,
        room_id: &RoomId,
        user: &UserId,
        event_id: OwnedEventId,
        json: String,
        membership: MembershipState,
        outside: Option<OutsideRoomRecord>,
    ) -> Result<()> {
        let _guard = self.lock(room_id).await?;
        let this = self.clone();
        let (room_id, user) = (room_id.to_owned(), user.to_owned());
        let woken = user.clone();
        let ticket = blocking(move || {
            let mut batch = Batch::new();
            // A copy already in a timeline stays where it is.
            if this.pdu_record(&event_id)?.is_none_or(|r| r.stream_pos.is_none()) {
                batch.put::<Pdus>(&event_id, &super::outlier_record(&room_id, json))?;
            }
            let ticket = this.inner.streams.allocate()?;
            let pos = ticket.pos;
            batch.stream_entry(
                pos,
                &StreamEntry::RoomEvent { room_id: room_id.clone(), event_id: event_id.clone() },
            )?;
            batch.put::<RoomMembers>(&(room_id.clone(), user.clone()), &membership)?;
            let record = MembershipRecord { membership, event_id, stream_pos: pos, forgotten: false };
            let key = (user, room_id);
            batch.put::<UserRooms>(&key, &record)?;
            match outside {
                Some(outside) => batch.put::<OutsideRooms>(&key, &outside)?,
                None => batch.delete::<OutsideRooms>(&key),
            }
            this.commit(batch)?;
            Ok(ticket)
        })
        .await?;
        self.inner.streams.finish(ticket, vec![woken]);
        Ok(())
    }

    /// A local user's latest membership event in a room, whether in the timeline or not.
    pub fn current_member_event(&self, room_id: &RoomId, user: &UserId) -> Result<Option<Pdu>> {
        match self.db().get::<UserRooms>(&(user.to_owned(), room_id.to_owned()))? {
            Some(record) => self.pdu(&record.event_id),
            None => Ok(None),
        }
    }

    /// What a local user was told of a room this server is not in, if anything.
    pub fn outside_room(&self, user: &UserId, room_id: &RoomId) -> Result<Option<OutsideRoomRecord>> {
        Ok(self.db().get::<OutsideRooms>(&(user.to_owned(), room_id.to_owned()))?)
    }

    /// Forgets it once the user is in the room (or has left it) for real.
    pub async fn clear_outside_room(&self, user: &UserId, room_id: &RoomId) -> Result<()> {
        let db = self.db().clone();
        let key = (user.to_owned(), room_id.to_owned());
        blocking(move || Ok(db.delete::<OutsideRooms>(&key)?)).await
    }

    /// Whether this server holds the room's current state: some local user is joined, or the
    /// room is purely local. Otherwise membership changes go through a resident server.
    pub fn resident(&self, room_id: &RoomId) -> Result<bool> {
        let Some(room) = self.room(room_id)? else { return Ok(false) };
        if room.joined_count > 0 {
            return Ok(true);
        }
        let own = &self.inner.server_name;
        for entry in self.db().scan_prefix::<RoomMembers, _>(&room_id.to_owned())? {
            let ((_, user), membership) = entry?;
            if membership == MembershipState::Join && user.server_name() != own {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
