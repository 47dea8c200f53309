//! Sliding sync extensions: to-device messages, end-to-end encryption bookkeeping, account
//! data, receipts and typing, each scoped to the lists and rooms it names.

use std::{
    collections::{BTreeSet, HashMap},
    ops::Bound,
};

use hearth_storage::{Direction, records::StreamEntry, schema::StreamLog};
use ruma::{
    OneTimeKeyAlgorithm, OwnedRoomId, OwnedUserId, UserId,
    api::client::sync::sync_events::v5::{
        request::{self, ExtensionRoomConfig},
        response::{self, Extensions},
    },
    events::room::member::MembershipState,
};
use serde_json::json;

use super::{SlidingRequest, Window, conn::Snapshot, lists::Selection, room::raw};
use crate::{Homeserver, Result, sync::sharing::Sharing};

/// To-device messages per response when the client does not say.
const TO_DEVICE_LIMIT: usize = 100;

/// Whether the extensions carry nothing worth answering a long-poll for (key counts alone are
/// not news).
pub(super) fn is_empty(ext: &Extensions) -> bool {
    ext.to_device.as_ref().is_none_or(|t| t.events.is_empty())
        && ext.e2ee.device_lists.is_empty()
        && ext.account_data.is_empty()
        && ext.receipts.is_empty()
        && ext.typing.is_empty()
}

/// The rooms an extension covers: those shown by the lists it names (all by default) and the
/// subscriptions it names (all by default).
fn scope(
    selection: &Selection,
    lists: Option<&Vec<String>>,
    rooms: Option<&Vec<ExtensionRoomConfig>>,
) -> BTreeSet<OwnedRoomId> {
    let mut out = BTreeSet::new();
    for (name, shown) in &selection.in_lists {
        if lists.is_none_or(|l| l.iter().any(|n| n == name || n == "*")) {
            out.extend(shown.iter().cloned());
        }
    }
    match rooms {
        None => out.extend(selection.subscribed.iter().cloned()),
        Some(rooms) => {
            for room in rooms {
                match room {
                    ExtensionRoomConfig::AllSubscribed => out.extend(selection.subscribed.iter().cloned()),
                    ExtensionRoomConfig::Room(id) if selection.candidates.contains_key(id) => {
                        out.insert(id.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

impl Homeserver {
    pub(super) fn sliding_extensions(
        &self,
        w: &Window<'_>,
        req: &SlidingRequest,
        selection: &Selection,
        previous: &Snapshot,
        initial_rooms: &BTreeSet<OwnedRoomId>,
    ) -> Result<Extensions> {
        let ext = &req.extensions;
        let mut out = Extensions::default();
        // Where a room's receipts, typing and account data continue from: all of it for a room
        // new to the client, what came since it was last in a window for one that was away,
        // else (`None`) what the stream says changed in this window.
        let resume = |room: &OwnedRoomId| -> Option<Option<u64>> {
            if initial_rooms.contains(room) || w.since.is_none() {
                return Some(None);
            }
            let seen = previous.rooms.get(room).map_or(0, |sent| sent.seen);
            (w.since.is_some_and(|since| seen < since)).then_some(Some(seen))
        };
        // Receipts and typing are the members' business: a user invited or put out sees none.
        let joined = |room: &OwnedRoomId| {
            selection.candidates.get(room).is_some_and(|c| c.membership == MembershipState::Join)
        };
        if ext.to_device.enabled == Some(true) {
            out.to_device = Some(self.to_device_extension(w, &ext.to_device)?);
        }
        if ext.e2ee.enabled == Some(true) {
            out.e2ee = self.e2ee_extension(w)?;
        }
        if ext.account_data.enabled == Some(true) {
            let c = &ext.account_data;
            if w.since.is_none() || w.changes.global_account_data {
                for event in self.global_account_data(w.user, w.since)? {
                    out.account_data.global.push(raw(&event)?);
                }
            }
            for room in scope(selection, c.lists.as_ref(), c.rooms.as_ref()) {
                let since = match resume(&room) {
                    Some(from) => from,
                    None if w.changes.room_account_data.contains(&room) => w.since,
                    None => continue,
                };
                let events = self.room_account_data(w.user, &room, since)?;
                if !events.is_empty() {
                    out.account_data.rooms.insert(room, events.iter().map(raw).collect::<Result<_>>()?);
                }
            }
        }
        if ext.receipts.enabled == Some(true) {
            let c = &ext.receipts;
            for room in scope(selection, c.lists.as_ref(), c.rooms.as_ref()).into_iter().filter(joined) {
                let since = match resume(&room) {
                    Some(from) => from,
                    None if w.changes.receipts.contains(&room) => w.since,
                    None => continue,
                };
                if let Some(event) = self.receipts_since(w.user, &room, since)? {
                    out.receipts.rooms.insert(room, raw(&event)?);
                }
            }
        }
        if ext.typing.enabled == Some(true) {
            let c = &ext.typing;
            for room in scope(selection, c.lists.as_ref(), c.rooms.as_ref()).into_iter().filter(joined) {
                let typing = self.rooms.typing_users(&room);
                // A room new to the client needs no word that nobody types; a change, or a
                // room back from away (whatever it last showed may have ended), does.
                let send = match resume(&room) {
                    Some(None) => !typing.is_empty(),
                    Some(Some(_)) => true,
                    None => w.changes.typing.contains(&room),
                };
                if send {
                    let event = json!({"type": "m.typing", "content": {"user_ids": typing}});
                    out.typing.rooms.insert(room, raw(&event)?);
                }
            }
        }
        Ok(out)
    }

    fn to_device_extension(&self, w: &Window<'_>, c: &request::ToDevice) -> Result<response::ToDevice> {
        // The extension's own token: the position through which the device has its messages.
        let since = c.since.as_deref().and_then(|s| s.parse::<u64>().ok()).map(|s| s.min(w.now));
        let limit =
            c.limit.map_or(TO_DEVICE_LIMIT, |l| usize::try_from(u64::from(l)).unwrap_or(TO_DEVICE_LIMIT));
        let (events, through) =
            self.to_device_batch(w.user, w.device, since, w.now, limit.clamp(1, TO_DEVICE_LIMIT))?;
        let mut out = response::ToDevice::default();
        out.next_batch = through.to_string();
        out.events = events.iter().map(raw).collect::<Result<_>>()?;
        Ok(out)
    }

    fn e2ee_extension(&self, w: &Window<'_>) -> Result<response::E2EE> {
        let mut out = response::E2EE::default();
        for (algorithm, count) in self.one_time_key_counts(w.user, w.device)? {
            out.device_one_time_keys_count.insert(
                OneTimeKeyAlgorithm::from(algorithm.as_str()),
                ruma::UInt::try_from(count).unwrap_or_default(),
            );
        }
        out.device_unused_fallback_key_types = Some(
            self.unused_fallback_key_types(w.user, w.device)?
                .iter()
                .map(|a| OneTimeKeyAlgorithm::from(a.as_str()))
                .collect(),
        );
        if let Some(since) = w.since {
            let (changed, left) = self.device_list_changes(w, since)?;
            out.device_lists.changed = changed;
            out.device_lists.left = left;
        }
        Ok(out)
    }

    /// Whose device keys the client should fetch again (they changed, or the user has just
    /// come to share a room with them) and whom it no longer shares any room with.
    fn device_list_changes(
        &self,
        w: &Window<'_>,
        since: u64,
    ) -> Result<(Vec<OwnedUserId>, Vec<OwnedUserId>)> {
        let mut newly_sharing: BTreeSet<OwnedUserId> = BTreeSet::new();
        let mut maybe_left: BTreeSet<OwnedUserId> = BTreeSet::new();
        let mut in_room: HashMap<OwnedRoomId, bool> = HashMap::new();
        let entries = self.db.range::<StreamLog>(
            Bound::Excluded(&since),
            Bound::Included(&w.now),
            Direction::Forward,
        )?;
        for entry in entries {
            let (_, StreamEntry::RoomEvent { room_id, event_id }) = entry? else { continue };
            let Some(record) = self.rooms.pdu_record(&event_id)? else { continue };
            let Some(pdu) = crate::rooms::servable(&event_id, &record) else { continue };
            if pdu.kind != ruma::events::TimelineEventType::RoomMember {
                continue;
            }
            if !in_room.contains_key(&room_id) {
                let member = self.rooms.membership(&room_id, w.user)?.is_some();
                in_room.insert(room_id.clone(), member);
            }
            if !in_room[&room_id] {
                continue;
            }
            let Some(target) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok()) else { continue };
            let own = target == w.user;
            match pdu.membership().unwrap_or(MembershipState::Leave) {
                MembershipState::Join if own => {
                    newly_sharing.extend(self.rooms.members(&room_id)?.joined.iter().cloned());
                }
                MembershipState::Join => {
                    newly_sharing.insert(target);
                }
                MembershipState::Leave | MembershipState::Ban if own => {
                    maybe_left.extend(self.rooms.members(&room_id)?.joined.iter().cloned());
                }
                MembershipState::Leave | MembershipState::Ban => {
                    maybe_left.insert(target);
                }
                _ => {}
            }
        }
        let shares = Sharing::new(self, w.user);
        let mut changed = BTreeSet::new();
        for u in w.changes.keys_changed.iter().chain(newly_sharing.iter()) {
            if shares.with(u)? {
                changed.insert(u.clone());
            }
        }
        let mut left = Vec::new();
        for u in maybe_left {
            if u != w.user && !changed.contains(&u) && !shares.with(&u)? {
                left.push(u);
            }
        }
        Ok((changed.into_iter().collect(), left))
    }
}
