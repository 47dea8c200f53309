//! Unread counts in /sync: messages from others since the user's read receipt, cached per
//! user and room so each sync extends the last count instead of recounting.

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId, events::TimelineEventType};

use crate::{Homeserver, Result, events::Pdu, rooms::PageDirection};

impl Homeserver {
    /// Messages from others after the user's read receipt. An approximation until push rules
    /// are evaluated (which decides what notifies); it never counts the user's own events.
    /// Counts are cached per user and room and extended by the new events only.
    pub(super) fn unread_count(&self, user: &UserId, room_id: &RoomId, now: u64) -> Result<u64> {
        const MAX_COUNT: usize = 100;
        let read_at = self
            .rooms
            .receipts(room_id)?
            .into_iter()
            .filter(|(kind, reader, ..)| reader == user && kind.starts_with("m.read"))
            .filter_map(|(.., record)| self.rooms.pdu_record(&record.event_id).ok().flatten()?.stream_pos)
            .max();
        let notifying = |pdu: &Pdu| {
            pdu.sender != user
                && matches!(pdu.kind, TimelineEventType::RoomMessage | TimelineEventType::RoomEncrypted)
        };
        let key = (user.to_owned(), room_id.to_owned());
        let count = match self.unread.get(&key) {
            Some(c) if c.read_at == read_at && c.pos <= now => {
                let page = self.rooms.page(
                    room_id,
                    user,
                    Some(c.pos),
                    Some(now),
                    PageDirection::Forward,
                    MAX_COUNT,
                    &notifying,
                )?;
                (c.count + page.events.len()).min(MAX_COUNT)
            }
            _ => {
                let page = self.rooms.page(
                    room_id,
                    user,
                    Some(now),
                    read_at,
                    PageDirection::Backward,
                    MAX_COUNT,
                    &notifying,
                )?;
                page.events.len()
            }
        };
        self.unread.put(key, UnreadCount { read_at, pos: now, count });
        Ok(u64::try_from(count).unwrap_or(0))
    }
}

/// A cached unread count: valid while the read receipt stays at `read_at`, up to `pos`.
#[derive(Debug, Clone, Copy)]
pub struct UnreadCount {
    read_at: Option<u64>,
    pos: u64,
    count: usize,
}

/// Unread counts per user and room, so a sync extends the last count instead of recounting.
#[derive(Debug, Default)]
pub struct UnreadCache {
    counts: std::sync::Mutex<std::collections::HashMap<(OwnedUserId, OwnedRoomId), UnreadCount>>,
}

impl UnreadCache {
    fn get(&self, key: &(OwnedUserId, OwnedRoomId)) -> Option<UnreadCount> {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(key).copied()
    }

    fn put(&self, key: (OwnedUserId, OwnedRoomId), value: UnreadCount) {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(key, value);
    }
}
