//! One room of a sliding sync response: everything on its first appearance in the
//! connection, what changed afterwards, nothing when nothing did.

use std::collections::BTreeSet;

use ruma::JsOption;
use ruma::{
    OwnedEventId, OwnedMxcUri, RoomId, UInt, UserId,
    api::client::sync::sync_events::v5::response::{Hero, Room},
    events::room::member::MembershipState,
    serde::Raw,
};
use serde_json::Value;

use super::{RoomConfig, Window, conn::SentRoom, lists::Candidate};
use crate::{Homeserver, Result};

const MEMBER: &str = "m.room.member";

fn uint(n: u64) -> UInt {
    UInt::try_from(n).unwrap_or(UInt::MAX)
}

pub(super) fn raw<T>(value: &Value) -> Result<Raw<T>> {
    Ok(Raw::from_json(serde_json::value::to_raw_value(value).map_err(crate::Error::internal)?))
}

/// Whether a state entry is one `required_state` asks for (`$LAZY` members aside).
fn wanted(config: &RoomConfig, user: &UserId, kind: &str, key: &str) -> bool {
    config.required_state.iter().any(|(t, k)| {
        (t == "*" || t == kind) && (k == "*" || k == key || (k == "$ME" && key == user.as_str()))
    })
}

fn lazy_members(config: &RoomConfig) -> bool {
    config.required_state.iter().any(|(t, k)| t == MEMBER && k == "$LAZY")
}

/// Whether the entries asked for can be looked up one by one, without reading the whole state.
fn exact(config: &RoomConfig) -> bool {
    config.required_state.iter().all(|(t, k)| t != "*" && k != "*")
}

impl Homeserver {
    pub(super) fn sliding_room(
        &self,
        w: &Window<'_>,
        room_id: &RoomId,
        candidate: &Candidate,
        config: &RoomConfig,
        sent: Option<&SentRoom>,
    ) -> Result<(Option<Room>, SentRoom)> {
        let membership = candidate.membership.clone();
        let mut room = Room::new();
        room.bump_stamp = Some(uint(candidate.bump));
        room.is_dm = candidate.dm.then_some(true);
        let record = &candidate.record;
        if matches!(membership, MembershipState::Invite | MembershipState::Knock) {
            if let Some(sent) = sent.filter(|s| s.membership == membership && s.through >= record.stream_pos)
            {
                return Ok((None, sent.clone()));
            }
            if membership == MembershipState::Invite {
                let stripped = self.stripped_state(w.user, room_id, record)?;
                room.invite_state = Some(stripped.iter().map(raw).collect::<Result<_>>()?);
            }
            room.initial = Some(true);
            let sent = SentRoom {
                through: record.stream_pos,
                membership,
                required_state: config.required_state.clone(),
                seen: w.now,
            };
            return Ok((Some(room), sent));
        }
        // Outside the room, nothing after the user's own leave is theirs to see.
        let joined = membership == MembershipState::Join;
        if !joined && (record.forgotten || !self.rooms.exists(room_id)?) {
            // A room this server is not in (a rejected or withdrawn invite from elsewhere), or
            // whose history the user gave up: the leave itself is all there is.
            return self.leave_only(w, room_id, candidate, sent, room);
        }
        let until = if joined { w.now } else { record.stream_pos };
        let previous =
            sent.filter(|s| !matches!(s.membership, MembershipState::Invite | MembershipState::Knock));
        let initial = previous.is_none();
        let state_changed = previous.is_some_and(|s| s.required_state != config.required_state);
        let moved = previous.is_some_and(|s| s.membership != membership);
        let counts_moved = w.changes.own_receipts.contains(room_id);
        // What the client holds once this response reaches it, news or not.
        let now_sent = SentRoom {
            through: until,
            membership: membership.clone(),
            required_state: config.required_state.clone(),
            seen: w.now,
        };
        if let Some(sent) = previous
            && !state_changed
            && !moved
            && !counts_moved
            && w.since.is_some_and(|s| sent.through >= s)
            && !w.changes.rooms.contains(room_id)
        {
            // Sent up to the last response, and nothing of it in the stream since.
            return Ok((None, now_sent));
        }
        let from = previous.map(|s| s.through);
        let limit = config.timeline_limit;
        let keep = |_: &crate::events::Pdu| Ok(true);
        let (events, more, gap) = self.rooms.latest_window(room_id, w.user, from, until, limit, &keep)?;
        if !initial && !state_changed && !moved && !counts_moved && events.is_empty() && !more {
            return Ok((None, now_sent));
        }
        room.initial = initial.then_some(true);
        room.limited = more || gap;
        room.num_live =
            Some(uint(events.iter().filter(|(pos, ..)| w.since.is_some_and(|s| *pos > s)).count() as u64));
        let prev = events.first().map_or(until, |(pos, ..)| pos.saturating_sub(1));
        room.prev_batch = Some(crate::rooms::history_token(i64::try_from(prev).unwrap_or(i64::MAX)));
        let mut lazy = crate::rooms::Window::lazy(lazy_members(config));
        let mut timeline_ids = BTreeSet::new();
        for (_, pdu, record) in &events {
            lazy.add(&pdu.sender);
            timeline_ids.insert(pdu.event_id.clone());
            room.timeline.push(raw(&self.rooms.client_event(
                &pdu.event_id,
                record,
                w.user,
                Some(w.device),
            )?)?);
        }

        if let Some(group) = self.rooms.state_group_at_position(room_id, until)? {
            let full = initial || state_changed;
            let since_group = match previous {
                Some(sent) if !full => self.rooms.state_group_at_position(room_id, sent.through)?,
                _ => None,
            };
            let mut chosen: BTreeSet<OwnedEventId> = BTreeSet::new();
            if full && exact(config) {
                for (kind, key) in &config.required_state {
                    let key = match key.as_str() {
                        "$ME" => w.user.as_str(),
                        "$LAZY" => continue,
                        key => key,
                    };
                    chosen.extend(self.rooms.state_entry(group, kind, key)?);
                }
            } else if full || since_group != Some(group) {
                let before = match since_group {
                    Some(g) if !full => self.rooms.state_map(g)?,
                    _ => Default::default(),
                };
                for ((kind, key), event_id) in self.rooms.state_map(group)? {
                    if before.get(&(kind.clone(), key.clone())) != Some(&event_id)
                        && wanted(config, w.user, &kind, &key)
                    {
                        chosen.insert(event_id);
                    }
                }
            }
            chosen.extend(self.rooms.window_members(group, &lazy)?.into_values());
            for event_id in chosen {
                let Some(record) = self.rooms.pdu_record(&event_id)? else { continue };
                if crate::rooms::servable(&event_id, &record).is_none() {
                    continue;
                }
                let event = self.rooms.client_event(&event_id, &record, w.user, Some(w.device))?;
                room.required_state.push(raw(&event)?);
            }
            self.describe(w.user, room_id, group, (initial, joined), &mut room)?;
        }
        if joined {
            let members = self.rooms.members(room_id)?;
            room.joined_count = Some(uint(members.joined.len() as u64));
            room.invited_count = Some(uint(members.invited.len() as u64));
            let unread = crate::push::unread_counts(&self.db, w.user, room_id, w.now)?.total();
            room.unread_notifications.notification_count = Some(uint(unread.notifications));
            room.unread_notifications.highlight_count = Some(uint(unread.highlights));
        }
        Ok((Some(room), now_sent))
    }

    fn leave_only(
        &self,
        w: &Window<'_>,
        room_id: &RoomId,
        candidate: &Candidate,
        sent: Option<&SentRoom>,
        mut room: Room,
    ) -> Result<(Option<Room>, SentRoom)> {
        let record = &candidate.record;
        let now_sent = SentRoom {
            through: record.stream_pos,
            membership: candidate.membership.clone(),
            required_state: Vec::new(),
            seen: w.now,
        };
        if sent.is_some_and(|s| s.membership == candidate.membership && s.through >= record.stream_pos) {
            return Ok((None, now_sent));
        }
        let event = match self.outside_event(record)? {
            Some(event) => Some(event),
            None => match self.rooms.pdu_record(&record.event_id)? {
                Some(own) => Some(self.rooms.client_event(&record.event_id, &own, w.user, Some(w.device))?),
                None => None,
            },
        };
        room.timeline = event.iter().map(raw).collect::<Result<_>>()?;
        room.initial = sent.is_none().then_some(true);
        tracing::debug!(%room_id, "sliding sync: a leave without the room's history");
        Ok((Some(room), now_sent))
    }

    /// The room's name and avatar, or the members a client names it after.
    fn describe(
        &self,
        user: &UserId,
        room_id: &RoomId,
        group: u64,
        (initial, joined): (bool, bool),
        room: &mut Room,
    ) -> Result<()> {
        let content = |kind: &str, key: &str| -> Result<Option<Value>> {
            let Some(event_id) = self.rooms.state_entry(group, kind, key)? else { return Ok(None) };
            let Some(record) = self.rooms.pdu_record(&event_id)? else { return Ok(None) };
            Ok(crate::rooms::servable(&event_id, &record).map(|pdu| pdu.content_json()))
        };
        room.name = content("m.room.name", "")?
            .and_then(|c| c["name"].as_str().map(str::to_owned))
            .filter(|n| !n.is_empty());
        let avatar = content("m.room.avatar", "")?
            .and_then(|c| c["url"].as_str().map(OwnedMxcUri::from))
            .filter(|u| u.is_valid());
        room.avatar = match avatar {
            Some(url) => JsOption::Some(url),
            // Said only to a client that may hold an older one.
            None if !initial => JsOption::Null,
            None => JsOption::Undefined,
        };
        if room.name.is_none() {
            let candidates = if joined {
                super::lists::heroes(&*self.rooms.members(room_id)?, user)
            } else {
                // Someone who left sees the members as they were when they left.
                self.heroes_at(user, group)?
            };
            let mut heroes = Vec::new();
            for hero in candidates {
                let member = content(MEMBER, hero.as_str())?.unwrap_or_default();
                let mut entry = Hero::new(hero);
                entry.name = member["displayname"].as_str().filter(|n| !n.is_empty()).map(str::to_owned);
                entry.avatar = member["avatar_url"].as_str().map(OwnedMxcUri::from).filter(|u| u.is_valid());
                heroes.push(entry);
            }
            room.heroes = Some(heroes);
        }
        Ok(())
    }

    /// Up to five others joined or invited in a state group, reading at most a hundred member
    /// events.
    fn heroes_at(&self, user: &UserId, group: u64) -> Result<Vec<ruma::OwnedUserId>> {
        let mut heroes = Vec::new();
        let members = self
            .rooms
            .state_map(group)?
            .into_iter()
            .filter(|((kind, key), _)| kind == MEMBER && key != user.as_str());
        for ((_, key), event_id) in members.take(100) {
            let Some(record) = self.rooms.pdu_record(&event_id)? else { continue };
            let Some(pdu) = crate::rooms::servable(&event_id, &record) else { continue };
            let membership = pdu.membership().unwrap_or(MembershipState::Leave);
            if matches!(membership, MembershipState::Join | MembershipState::Invite)
                && let Ok(hero) = UserId::parse(&key)
            {
                heroes.push(hero);
                if heroes.len() == 5 {
                    break;
                }
            }
        }
        Ok(heroes)
    }
}
